//! The relay of the transactional outbox: publishes rows written by order transactions
//! (ORDER_EVENTS facts, STOCK_ROLLBACK events) with their `Nats-Msg-Id`, then deletes them.
//!
//! Woken right after each commit; a slow sweep picks up rows left by a worker that died
//! between its commit and its relay (rows are claimed with `SKIP LOCKED`, so workers share).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{repo, OrderError};

const BATCH: i64 = 200;
const SWEEP: Duration = Duration::from_secs(2);

/// Relays until `draining` fires, then once more, so that every row committed before the
/// stop leaves with this worker rather than wait for another one's sweep.
pub async fn relay_until(
    pool: PgPool,
    js: jetstream::Context,
    wake: Arc<Notify>,
    draining: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    loop {
        let last = draining.is_cancelled();
        match relay_once(&pool, &js).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "outbox relay failed; retrying"),
        }
        if last {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::timeout(SWEEP, wake.notified()) => {}
            _ = draining.cancelled() => {}
        }
    }
}

/// Sets the `shop_outbox_backlog` gauge every few seconds: rows committed and not yet
/// published. It stays near zero while NATS answers; a growing backlog means the relay is
/// stuck. The relay deletes what it publishes, so the count reads a small table.
pub async fn measure_backlog_until(
    pool: PgPool,
    done: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    const EVERY: Duration = Duration::from_secs(5);
    let backlog = shop_kit::metrics::global().gauge(
        "outbox_backlog",
        "Outbox rows committed and not yet published to JetStream",
    );
    loop {
        match repo::outbox_backlog(&pool).await {
            Ok(rows) => {
                backlog.set(rows);
            }
            // The last figure stays: a failed read says nothing about the backlog.
            Err(error) => tracing::debug!(%error, "could not count the outbox"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = done.cancelled() => return Ok(()),
        }
    }
}

/// Publishes one batch; returns how many rows it published.
async fn relay_once(pool: &PgPool, js: &jetstream::Context) -> Result<usize, OrderError> {
    let mut tx = pool.begin().await?;
    let rows = repo::outbox_claim(&mut tx, BATCH).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    // Send all, then wait for all acks: the stream stores them in this order.
    let mut acks = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", row.msg_id.as_str());
        let ack = js
            .publish_with_headers(row.subject.clone(), headers, row.payload.clone().into())
            .await
            .map_err(|e| OrderError::Unavailable(format!("outbox publish: {e}")))?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await
            .map_err(|e| OrderError::Unavailable(format!("outbox publish ack: {e}")))?;
    }
    shop_kit::crash::point("order.outbox.after_publish");
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    repo::outbox_delete(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(rows.len())
}
