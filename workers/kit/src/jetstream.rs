//! Stream and consumer definitions from `nats-config/`, applied at worker start-up.
//!
//! The JSON files are the server API's own format, the one `nats stream add --config` reads,
//! so operators and workers agree on one definition. They are embedded at compile time so a
//! worker binary needs no files beside it.
//!
//! Replicas are the exception: a worker creates a stream (and a KV bucket) with the replicas
//! of its `nats.replicas` setting, not the files' `num_replicas`, and never changes the
//! replicas of a stream that exists (see [`ensure_stream`]).

use async_nats::jetstream::{self, consumer, stream};
use thiserror::Error;

pub const ORDER_TXN_STREAM_JSON: &str = include_str!("../../../nats-config/streams/ORDER_TXN.json");
pub const STOCK_ROLLBACK_STREAM_JSON: &str =
    include_str!("../../../nats-config/streams/STOCK_ROLLBACK.json");
pub const ORDER_EVENTS_STREAM_JSON: &str =
    include_str!("../../../nats-config/streams/ORDER_EVENTS.json");
pub const ORDER_TXN_CHECKER_JSON: &str =
    include_str!("../../../nats-config/consumers/ORDER_TXN.order-txn-checker.json");
pub const ORDER_TIMERS_STREAM_JSON: &str =
    include_str!("../../../nats-config/streams/ORDER_TIMERS.json");
pub const ORDER_TIMER_CLOSER_JSON: &str =
    include_str!("../../../nats-config/consumers/ORDER_TIMERS.order-timer-closer.json");
pub const STOCK_ROLLBACK_CONSUMER_JSON: &str =
    include_str!("../../../nats-config/consumers/STOCK_ROLLBACK.stock-rollback.json");

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("the definition of {what} in nats-config/ is not valid: {source}")]
    BadDefinition {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("could not create or update stream {name}: {source}")]
    Stream {
        name: String,
        source: async_nats::Error,
    },
    #[error("stream {name} on the server differs from nats-config/ in {field}")]
    Drift { name: String, field: &'static str },
    #[error("could not create or update consumer {name}: {source}")]
    Consumer {
        name: String,
        source: async_nats::Error,
    },
}

/// Parses a stream definition.
pub fn stream_config(what: &'static str, json: &str) -> Result<stream::Config, SetupError> {
    serde_json::from_str(json).map_err(|source| SetupError::BadDefinition { what, source })
}

/// Parses a pull consumer definition; callers may adjust configurable fields before
/// [`ensure_consumer`].
pub fn consumer_config(
    what: &'static str,
    json: &str,
) -> Result<consumer::pull::Config, SetupError> {
    serde_json::from_str(json).map_err(|source| SetupError::BadDefinition { what, source })
}

/// Creates or updates a stream from its definition, then reads it back from the server and
/// checks the fields the design depends on, so a hand-edited stream cannot silently change
/// the semantics (a work queue becoming a limits stream, say).
///
/// `replicas` (`nats.replicas`) is what a stream gets when this call creates it. A stream
/// that exists keeps its live `num_replicas`, whatever `replicas` and the definition say:
/// an operator who scaled a stream (`nats stream edit ORDER_TXN --replicas 3`) is never
/// undone by the next worker start-up, and a worker started with another setting by mistake
/// cannot shrink a replicated stream. The read-back checks the replicas held too.
pub async fn ensure_stream(
    js: &jetstream::Context,
    mut config: stream::Config,
    replicas: usize,
) -> Result<stream::Stream, SetupError> {
    let name = config.name.clone();
    let err = |source: async_nats::Error| SetupError::Stream {
        name: name.clone(),
        source,
    };
    config.num_replicas = match js.get_stream(&name).await {
        Ok(live) => {
            let kept = live.cached_info().config.num_replicas;
            if kept != replicas {
                tracing::warn!(
                    stream = %name,
                    live = kept,
                    setting = replicas,
                    "the stream keeps its replicas; nats.replicas applies only to streams a worker creates"
                );
            }
            kept
        }
        Err(e) if is_not_found(&e) => replicas,
        Err(e) => return Err(err(e.into())),
    };
    // A stream created by another worker between the look-up and this call is updated
    // with the replicas this worker would have created it with: the same setting.
    js.create_or_update_stream(config.clone())
        .await
        .map_err(|e| err(e.into()))?;
    let mut stream = js.get_stream(&name).await.map_err(|e| err(e.into()))?;
    let live = stream
        .info()
        .await
        .map_err(|e| err(e.into()))?
        .config
        .clone();
    let drift = |field| SetupError::Drift {
        name: name.clone(),
        field,
    };
    if live.subjects != config.subjects {
        return Err(drift("subjects"));
    }
    if live.retention != config.retention {
        return Err(drift("retention"));
    }
    if live.duplicate_window != config.duplicate_window {
        return Err(drift("duplicate_window"));
    }
    if live.max_age != config.max_age {
        return Err(drift("max_age"));
    }
    if live.num_replicas != config.num_replicas {
        return Err(drift("num_replicas"));
    }
    Ok(stream)
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Creates or updates a durable pull consumer on `stream`.
pub async fn ensure_consumer(
    stream: &stream::Stream,
    config: consumer::pull::Config,
) -> Result<consumer::PullConsumer, SetupError> {
    let name = config.durable_name.clone().unwrap_or_default();
    stream
        .create_consumer(config)
        .await
        .map_err(|e| SetupError::Consumer {
            name,
            source: e.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_parse_and_say_what_the_contract_says() {
        let txn = stream_config("ORDER_TXN", ORDER_TXN_STREAM_JSON).unwrap();
        assert_eq!(txn.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(txn.subjects, vec!["order.txn.*"]);
        let rollback = stream_config("STOCK_ROLLBACK", STOCK_ROLLBACK_STREAM_JSON).unwrap();
        assert_eq!(rollback.retention, stream::RetentionPolicy::Limits);
        assert_eq!(
            rollback.max_age,
            std::time::Duration::from_secs(7 * 24 * 3600)
        );
        let events = stream_config("ORDER_EVENTS", ORDER_EVENTS_STREAM_JSON).unwrap();
        assert_eq!(events.subjects, vec!["order.events.*.*"]);

        let checker = consumer_config("checker", ORDER_TXN_CHECKER_JSON).unwrap();
        assert_eq!(checker.durable_name.as_deref(), Some("order-txn-checker"));
        assert_eq!(checker.max_deliver, -1);
        assert!(checker.backoff.is_empty());
        assert_eq!(checker.max_ack_pending, 100_000);
        assert_eq!(checker.ack_policy, consumer::AckPolicy::Explicit);
        let rollback = consumer_config("stock-rollback", STOCK_ROLLBACK_CONSUMER_JSON).unwrap();
        assert_eq!(rollback.durable_name.as_deref(), Some("stock-rollback"));
        assert_eq!(rollback.max_deliver, -1);

        let timers = stream_config("ORDER_TIMERS", ORDER_TIMERS_STREAM_JSON).unwrap();
        assert!(timers.allow_message_schedules);
        assert_eq!(timers.retention, stream::RetentionPolicy::WorkQueue);
        let closer = consumer_config("order-timer-closer", ORDER_TIMER_CLOSER_JSON).unwrap();
        assert_eq!(closer.filter_subject, "order.timer.due.*");
        assert_eq!(closer.max_deliver, -1);
        assert!(closer.backoff.is_empty());
    }
}
