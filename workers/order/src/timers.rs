//! Pay deadlines as JetStream message schedules (`order.timer = "schedule"`, CONTRACT
//! section 5 "Timer at scale"). Owns stream `ORDER_TIMERS`, the server version check, and the
//! publishing of schedules; the closer that consumes fired deadlines is the checker's
//! machinery run on `order-timer-closer` ([`crate::checker`]).
//!
//! One schedule per order, on `order.timer.at.<order_sn>` with `Nats-Schedule: @at
//! <pay_deadline>` and target `order.timer.due.<order_sn>`. Storing it again replaces it (the
//! server keeps one schedule per subject) and `Nats-Msg-Id` drops a repeat inside the
//! duplicate window, so the checker may schedule the same order twice. When the deadline
//! comes the server stores the due message and removes the schedule; the closer acks the due
//! message, and the work queue deletes it. So the stream holds only deadlines still waiting.
//!
//! The server clock fires a deadline, the database clock decides it: a due message that
//! arrives before `pay_deadline` by the database's `now()` is nakked until then, and one for
//! an order already paid or cancelled is acked and does nothing. A fired message carries no
//! `Nats-Msg-Id` and may be produced twice around a leader change; the close is a conditional
//! update, so twice is once.

use async_nats::header::{NATS_MESSAGE_ID, NATS_SCHEDULE, NATS_SCHEDULE_TARGET};
use async_nats::jetstream::{self, consumer::PullConsumer, stream};
use async_nats::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::join_all;
use shop_contracts::txn::{deadline_msg_id, OrderStreams, PayDeadline};
use shop_contracts::OrderSn;
use shop_kit::jetstream::{
    consumer_config, ensure_consumer, ensure_stream, partition_stream_config, SetupError,
    ORDER_TIMERS_STREAM_JSON, ORDER_TIMER_CLOSER_JSON,
};

/// The first nats-server release with message schedules (ADR-51).
const SCHEDULES_SINCE: (u64, u64) = (2, 12);

/// Whether a nats-server of `version` (as in its INFO, e.g. `2.15.1`) stores message
/// schedules.
pub fn server_has_schedules(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= SCHEDULES_SINCE,
        _ => false,
    }
}

/// Creates or updates this partition's `ORDER_TIMERS` (`streams`; with `replicas` if it is
/// new, placed by `tags`) and the closer's durable consumer; returns both (the stream for
/// the waiting-timers probe).
pub async fn setup(
    js: &jetstream::Context,
    streams: OrderStreams,
    replicas: usize,
    tags: &[String],
) -> Result<(stream::Stream, PullConsumer), SetupError> {
    let config = partition_stream_config(
        "ORDER_TIMERS",
        ORDER_TIMERS_STREAM_JSON,
        streams.timers_stream(),
        streams.timers_subjects(),
        tags,
    )?;
    let stream = ensure_stream(js, config, replicas).await?;
    let mut closer = consumer_config("order-timer-closer", ORDER_TIMER_CLOSER_JSON)?;
    closer.filter_subject = streams.due_filter();
    let closer = ensure_consumer(&stream, closer).await?;
    Ok((stream, closer))
}

/// Stores the schedule of each `(order_sn, pay_deadline)`, all at once, and says for each
/// whether JetStream acknowledged it (only then may its half message be acked).
pub async fn schedule(
    js: &jetstream::Context,
    streams: OrderStreams,
    deadlines: &[(OrderSn, DateTime<Utc>)],
) -> Vec<Result<(), async_nats::Error>> {
    join_all(
        deadlines
            .iter()
            .map(|&(sn, deadline)| schedule_one(js, streams, sn, deadline)),
    )
    .await
}

async fn schedule_one(
    js: &jetstream::Context,
    streams: OrderStreams,
    sn: OrderSn,
    deadline: DateTime<Utc>,
) -> Result<(), async_nats::Error> {
    let mut headers = HeaderMap::new();
    headers.insert(NATS_SCHEDULE, at(deadline).as_str());
    headers.insert(
        NATS_SCHEDULE_TARGET,
        streams.deadline_due_subject(sn).as_str(),
    );
    headers.insert(NATS_MESSAGE_ID, deadline_msg_id(sn).as_str());
    let body = serde_json::to_vec(&PayDeadline { order_sn: sn })?;
    js.publish_with_headers(streams.deadline_schedule_subject(sn), headers, body.into())
        .await?
        .await?;
    Ok(())
}

/// The `Nats-Schedule` value that fires once at `deadline`.
fn at(deadline: DateTime<Utc>) -> String {
    format!(
        "@at {}",
        deadline.to_rfc3339_opts(SecondsFormat::Millis, true)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_with_schedules() {
        assert!(server_has_schedules("2.12.0"));
        assert!(server_has_schedules("2.15.1"));
        assert!(server_has_schedules("v2.14.0-RC.1"));
        assert!(server_has_schedules("3.0.0"));
        assert!(!server_has_schedules("2.11.9"));
        assert!(!server_has_schedules("2.9.25"));
        assert!(!server_has_schedules("nonsense"));
    }

    #[test]
    fn schedule_is_at_an_rfc3339_instant_in_utc() {
        let deadline = DateTime::parse_from_rfc3339("2026-11-23T18:30:00.250+08:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(at(deadline), "@at 2026-11-23T10:30:00.250Z");
    }
}
