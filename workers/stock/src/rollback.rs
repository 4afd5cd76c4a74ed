//! The `stock-rollback` durable pull consumer on `STOCK_ROLLBACK` (CONTRACT section 5):
//! every rollback event is applied as `stock.return` and acked only after that commits.
//! One consumer for all partitions: the worker that receives an event returns the order in
//! the partitions owning the goods the event names (every partition when it names none),
//! its own directly and the others through their `stock.part.<p>.return`.
//!
//! - Transient failure (database down): nak with a delay, redelivered forever
//!   (`max_deliver: -1`).
//! - Malformed payload: it can never succeed, so it is terminated and logged.
//! - Duplicates and replays: the sell record makes a second return a no-op.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use shop_contracts::txn::RollbackEvent;
use shop_kit::jetstream::{
    consumer_config, ensure_consumer, ensure_stream, stream_config, SetupError,
    STOCK_ROLLBACK_CONSUMER_JSON, STOCK_ROLLBACK_STREAM_JSON,
};

use crate::route::Router;

/// Creates or updates the stream and the consumer from `nats-config/`.
pub async fn setup(js: &jetstream::Context, replicas: usize) -> Result<PullConsumer, SetupError> {
    let stream = ensure_stream(
        js,
        stream_config("STOCK_ROLLBACK", STOCK_ROLLBACK_STREAM_JSON)?,
        replicas,
    )
    .await?;
    ensure_consumer(
        &stream,
        consumer_config("stock-rollback", STOCK_ROLLBACK_CONSUMER_JSON)?,
    )
    .await
}

/// Rollback events applied at once by one worker, well under the pool size so requests keep
/// their connections. Returns of different orders are independent and lock their goods in
/// ascending order, so they cannot deadlock; two deliveries of one order serialise on its
/// sell record.
const CONCURRENCY: usize = 8;

/// Consumes until the worker stops (`stopping`), settling every event it holds.
pub async fn run(
    consumer: PullConsumer,
    router: Router,
    retry_delay: Duration,
    stopping: tokio_util::sync::CancellationToken,
) -> Result<(), async_nats::Error> {
    tracing::info!("consuming STOCK_ROLLBACK");
    let router = &router;
    shop_kit::jetstream::consume(
        consumer,
        stopping,
        1,
        CONCURRENCY,
        retry_delay,
        Duration::ZERO,
        |events| async move {
            for event in events {
                apply(router, event, retry_delay).await;
            }
        },
    )
    .await
}

async fn apply(router: &Router, message: jetstream::Message, retry_delay: Duration) {
    let subject = message.subject.to_string();
    let event: RollbackEvent = match serde_json::from_slice(&message.payload) {
        Ok(event) => event,
        Err(error) => {
            tracing::error!(%subject, %error, payload = %String::from_utf8_lossy(&message.payload),
                "malformed rollback event: terminated, never retried");
            if let Err(e) = message.ack_with(AckKind::Term).await {
                tracing::warn!(%subject, error = %e, "could not terminate a rollback event");
            }
            return;
        }
    };
    let sn = event.order_sn;
    let ack = match router.return_in(sn, event.goods_ids.as_deref()).await {
        Ok(returned) => {
            shop_kit::crash::point("stock.return.after_commit");
            tracing::info!(order_sn = %sn, reason = ?event.reason, returned, "rollback applied");
            AckKind::Ack
        }
        Err(error) => {
            // Every failure of a return is a database or partition that is away (there is
            // nothing else to go wrong with a well-formed event): retry later, forever.
            tracing::warn!(order_sn = %sn, %error, transient = error.is_transient(),
                "rollback failed; redelivering after {retry_delay:?}");
            AckKind::Nak(Some(retry_delay))
        }
    };
    // A lost ack means a redelivery, which the sell record turns into a no-op.
    if let Err(error) = message.ack_with(ack).await {
        tracing::warn!(order_sn = %sn, %error, "could not ack a rollback event");
    }
}
