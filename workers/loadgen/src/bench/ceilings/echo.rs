//! Ceiling (a): NATS request/reply to a trivial responder. The bench subscribes a responder
//! on a subject of its own (in queue group `q`, on a second connection, as a worker would
//! be) that answers every request at once with a body the size of an order, and requests
//! it with the same bodies and concurrency as the creates: what NATS and the client alone
//! cost per request, with no service work at all.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde_json::{json, Value};
use shop_contracts::order::CreateOrderRequest;
use shop_contracts::subjects::QUEUE_GROUP;

use crate::bench::drive::{self, Mode};
use crate::bench::record::Figures;
use crate::bench::request::NatsRequest;
use crate::BenchConfig;

pub async fn measure(
    config: &BenchConfig,
    client: &async_nats::Client,
    concurrency: usize,
    window: Duration,
    body: impl Fn(u64) -> CreateOrderRequest + Send + Sync + 'static,
) -> anyhow::Result<Figures> {
    let responder_client = shop_kit::server::connect(&config.nats_target("shop-bench-echo"))
        .await
        .context("connecting the echo responder to NATS")?;
    let subject = format!(
        "shop.bench.echo.{}.{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let mut requests = responder_client
        .queue_subscribe(subject.clone(), QUEUE_GROUP.into())
        .await
        .context("subscribing the echo responder")?;
    responder_client
        .flush()
        .await
        .context("flushing the echo subscription")?;
    let reply = serde_json::to_vec(&order_sized_reply())?;
    let responder = {
        let responder_client = responder_client.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(to) = request.reply {
                    if let Err(error) = responder_client.publish(to, reply.clone().into()).await {
                        tracing::debug!(%error, "echo reply not sent");
                    }
                }
            }
        })
    };
    // The responder's own subject, no contract endpoint: the bodies are the creates'.
    let request = Arc::new(NatsRequest {
        client: client.clone(),
        subject,
        body,
    });
    let figures = drive::run(
        request,
        Mode::closed(concurrency),
        window,
        "ceiling (a) NATS request/reply",
        "requests",
    )
    .await;
    responder.abort();
    figures
}

/// A reply shaped and sized like `order.create`'s.
fn order_sized_reply() -> Value {
    json!({
        "order_sn": "383211497207996416", "user_id": 7, "status": "unpaid",
        "items": [{"goods_id": 2000001, "title": "bench goods 2000001", "price_cents": 100, "quantity": 1}],
        "total_cents": 100, "address": "1 Bench St", "receiver_name": "Bench",
        "receiver_phone": "555-0100", "note": "", "created_at": "2026-11-23T08:00:00.123Z",
        "pay_deadline": "2026-11-23T08:30:00.123Z", "paid_at": null, "closed_at": null
    })
}
