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

use crate::{repo, OrderError};

const BATCH: i64 = 200;
const SWEEP: Duration = Duration::from_secs(2);

pub async fn relay_forever(pool: PgPool, js: jetstream::Context, wake: Arc<Notify>) {
    loop {
        match relay_once(&pool, &js).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "outbox relay failed; retrying"),
        }
        let _ = tokio::time::timeout(SWEEP, wake.notified()).await;
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
