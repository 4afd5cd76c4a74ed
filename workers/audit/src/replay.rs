//! Reads `STOCK_ROLLBACK` from its first message to the last one stored when the audit
//! began, through an ordered (ephemeral, unacknowledged) consumer: the durable
//! `stock-rollback` consumer and the stream are left exactly as they were.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use shop_contracts::txn::RollbackEvent;

use crate::check::Replayed;
use crate::AuditError;

pub const STREAM: &str = "STOCK_ROLLBACK";

/// What one stored message turned out to be.
pub enum Stored {
    Event(Replayed),
    Malformed { sequence: u64 },
}

/// Calls `each` for every message stored in `STOCK_ROLLBACK` up to its last sequence now;
/// returns how many were read. `progress` learns the total first, then each step.
pub async fn replay(
    js: &jetstream::Context,
    progress: &indicatif::ProgressBar,
    mut each: impl FnMut(Stored),
) -> Result<u64, AuditError> {
    let mut stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| AuditError::NoStream(STREAM, e))?;
    let info = stream
        .info()
        .await
        .map_err(|e| AuditError::nats("reading the stream's state", e))?;
    let (stored, last_sequence) = (info.state.messages, info.state.last_sequence);
    progress.set_length(stored);
    if stored == 0 {
        return Ok(0);
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            description: Some("shop audit: one read of the whole stream".into()),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| AuditError::nats("creating an ordered consumer", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| AuditError::nats("reading the stream", e))?;
    let mut read = 0;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .map_err(|e| AuditError::nats("the stream stopped delivering", e))?
            .ok_or_else(|| AuditError::nats("reading the stream", Ended))?
            .map_err(|e| AuditError::nats("reading a message", e))?;
        let info = message.info().map_err(|e| {
            AuditError::nats(
                "a message without JetStream metadata",
                Metadata(e.to_string()),
            )
        })?;
        let sequence = info.stream_sequence;
        let published = DateTime::<Utc>::from_timestamp_nanos(
            i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX),
        );
        each(
            match serde_json::from_slice::<RollbackEvent>(&message.payload) {
                Ok(event) => Stored::Event(Replayed {
                    order_sn: event.order_sn.get(),
                    reason: event.reason,
                    published,
                }),
                Err(_) => Stored::Malformed { sequence },
            },
        );
        read += 1;
        progress.inc(1);
        if sequence >= last_sequence {
            return Ok(read);
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the stream ended early")]
struct Ended;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Metadata(String);
