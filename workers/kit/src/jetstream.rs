//! Stream and consumer definitions from `nats-config/`, applied at worker start-up.
//!
//! The JSON files are the server API's own format, the one `nats stream add --config` reads,
//! so operators and workers agree on one definition. They are embedded at compile time so a
//! worker binary needs no files beside it.
//!
//! Replicas are the exception: a worker creates a stream (and a KV bucket) with the replicas
//! of its `nats.replicas` setting, not the files' `num_replicas`, and never changes the
//! replicas of a stream that exists (see [`ensure_stream`]).

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use thiserror::Error;
use tokio::time::Instant;

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
    #[error("could not open or create KV bucket {name}: {source}")]
    Bucket {
        name: String,
        source: async_nats::Error,
    },
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

/// A partition's own stream from a definition: `json`'s settings under `name` and
/// `subjects`, placed on the servers tagged with every one of `tags` (their `server_tags`),
/// so a partition's streams sit on the nodes meant for it. No tags: wherever the server puts
/// it, as before.
pub fn partition_stream_config(
    what: &'static str,
    json: &str,
    name: String,
    subjects: Vec<String>,
    tags: &[String],
) -> Result<stream::Config, SetupError> {
    let mut config = stream_config(what, json)?;
    config.name = name;
    config.subjects = subjects;
    if !tags.is_empty() {
        config.placement = Some(stream::Placement {
            tags: tags.to_vec(),
            ..Default::default()
        });
    }
    Ok(config)
}

/// Parses a pull consumer definition; callers may adjust configurable fields before
/// [`ensure_consumer`].
pub fn consumer_config(
    what: &'static str,
    json: &str,
) -> Result<consumer::pull::Config, SetupError> {
    serde_json::from_str(json).map_err(|source| SetupError::BadDefinition { what, source })
}

/// How long start-up keeps retrying a JetStream step that failed for a reason that passes:
/// a cluster that has just started is still electing its leaders, and when several workers
/// create one replicated stream at once, some of their requests time out.
pub const SETUP_PATIENCE: Duration = Duration::from_secs(60);
const SETUP_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Creates or updates a stream from its definition, then reads it back from the server and
/// checks the fields the design depends on, so a hand-edited stream cannot silently change
/// the semantics (a work queue becoming a limits stream, say).
///
/// `replicas` (`nats.replicas`) is what a stream gets when this call creates it. A stream
/// that exists keeps its live `num_replicas`, whatever `replicas` and the definition say:
/// an operator who scaled a stream (`nats stream edit ORDER_TXN --replicas 3`) is never
/// undone by the next worker start-up, and a worker started with another setting by mistake
/// cannot shrink a replicated stream. The read-back checks the replicas held too.
///
/// A step that times out or finds the cluster not ready is tried again, from the look-up,
/// for up to [`SETUP_PATIENCE`]; a refusal (a definition the server rejects) or a drift is
/// final at once.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
    replicas: usize,
) -> Result<stream::Stream, SetupError> {
    let name = config.name.clone();
    patiently(&name, || try_ensure_stream(js, config.clone(), replicas)).await
}

async fn try_ensure_stream(
    js: &jetstream::Context,
    mut config: stream::Config,
    replicas: usize,
) -> Result<stream::Stream, Attempt> {
    let name = config.name.clone();
    let err = |transient: bool, source: async_nats::Error| Attempt {
        error: SetupError::Stream {
            name: name.clone(),
            source,
        },
        transient,
    };
    config.num_replicas = match js.get_stream(&name).await {
        Ok(live) => {
            // Sources are added by the streams they source ([`ensure_source`]): a definition
            // that names none keeps those the stream has.
            if config.sources.is_none() {
                config.sources = live.cached_info().config.sources.clone();
            }
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
        Err(e) => return Err(err(get_stream_passes(&e), e.into())),
    };
    // A stream created by another worker between the look-up and this call is updated
    // with the replicas this worker would have created it with: the same setting.
    if let Err(e) = js.create_or_update_stream(config.clone()).await {
        return Err(err(create_stream_passes(&e), e.into()));
    }
    let mut stream = js
        .get_stream(&name)
        .await
        .map_err(|e| err(get_stream_passes(&e), e.into()))?;
    let live = match stream.info().await {
        Ok(info) => info.config.clone(),
        Err(e) => return Err(err(request_passes(e.kind()), e.into())),
    };
    let drift = |field| Attempt {
        error: SetupError::Drift {
            name: name.clone(),
            field,
        },
        transient: false,
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

/// Makes stream `into` source `source` (by its name, with its filter and transforms),
/// adding it to the sources `into` has: a read, an update, and a read back, tried again for
/// up to [`SETUP_PATIENCE`] when another worker's update raced this one's (each adds its own
/// source, and the last update would otherwise drop the other's).
pub async fn ensure_source(
    js: &jetstream::Context,
    into: &str,
    source: stream::Source,
) -> Result<(), SetupError> {
    let failed = |source: async_nats::Error| SetupError::Stream {
        name: into.to_owned(),
        source,
    };
    let deadline = tokio::time::Instant::now() + SETUP_PATIENCE;
    loop {
        let mut stream = js.get_stream(into).await.map_err(|e| failed(e.into()))?;
        let mut config = stream
            .info()
            .await
            .map_err(|e| failed(e.into()))?
            .config
            .clone();
        let sources = config.sources.get_or_insert_with(Vec::new);
        // Compared by what the server keeps as given (it fills in defaults of the rest).
        let same = |s: &stream::Source| {
            s.name == source.name && s.subject_transforms == source.subject_transforms
        };
        if sources.iter().any(same) {
            return Ok(());
        }
        sources.retain(|s| s.name != source.name);
        sources.push(source.clone());
        let updated = js.update_stream(config).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(failed(match updated {
                Ok(_) => format!("source {} not kept by the server", source.name).into(),
                Err(e) => e.into(),
            }));
        }
        match updated {
            Ok(_) => {} // read back: another update may have raced this one
            Err(e) => {
                tracing::warn!(stream = into, error = %e, "adding a source failed; trying again");
                tokio::time::sleep(SETUP_RETRY_DELAY).await;
            }
        }
    }
}

/// Opens a KV bucket, creating it from `config` when absent. `config.num_replicas`
/// (`nats.replicas`) applies only to a bucket this call creates: one that exists is used as
/// it is, its replicas and TTL included. A create that fails is tried again, looking for the
/// bucket first (another worker may have created it meanwhile), for up to
/// [`SETUP_PATIENCE`].
pub async fn ensure_bucket(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, SetupError> {
    let name = config.bucket.clone();
    patiently(&name, || async {
        if let Ok(store) = js.get_key_value(&name).await {
            return Ok(store);
        }
        js.create_key_value(config.clone())
            .await
            .map_err(|source| Attempt {
                error: SetupError::Bucket {
                    name: name.clone(),
                    source: source.into(),
                },
                // Nothing exists to contradict (the look-up found no bucket): whatever
                // failed can only be the cluster not being ready yet.
                transient: true,
            })
    })
    .await
}

/// Creates or updates a durable pull consumer on `stream`, trying again for up to
/// [`SETUP_PATIENCE`] while it times out (a new replicated stream elects its leader first).
pub async fn ensure_consumer(
    stream: &stream::Stream,
    config: consumer::pull::Config,
) -> Result<consumer::PullConsumer, SetupError> {
    let name = config.durable_name.clone().unwrap_or_default();
    patiently(&name, || async {
        stream
            .create_consumer(config.clone())
            .await
            .map_err(|e| Attempt {
                transient: consumer_passes(&e),
                error: SetupError::Consumer {
                    name: name.clone(),
                    source: e.into(),
                },
            })
    })
    .await
}

/// One try of a start-up step, and whether its failure may pass.
struct Attempt {
    error: SetupError,
    transient: bool,
}

async fn patiently<T, F, Fut>(what: &str, mut step: F) -> Result<T, SetupError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let deadline = Instant::now() + SETUP_PATIENCE;
    loop {
        match step().await {
            Ok(done) => return Ok(done),
            Err(Attempt {
                error,
                transient: true,
            }) if Instant::now() + SETUP_RETRY_DELAY < deadline => {
                tracing::warn!(%what, %error, "JetStream set-up step failed; trying again");
                tokio::time::sleep(SETUP_RETRY_DELAY).await;
            }
            Err(Attempt { error, .. }) => return Err(error),
        }
    }
}

/// Server answers that say "not now" rather than "no": the cluster has no meta leader, not
/// enough peers are known yet, or the request reached a server that is not the leader.
fn code_passes(error: &jetstream::Error) -> bool {
    use jetstream::ErrorCode;
    [
        ErrorCode::CLUSTER_NOT_AVAILABLE,
        ErrorCode::INSUFFICIENT_RESOURCES,
        ErrorCode::CLUSTER_NOT_LEADER,
    ]
    .contains(&error.error_code())
}

fn get_stream_passes(error: &jetstream::context::GetStreamError) -> bool {
    use jetstream::context::GetStreamErrorKind as Kind;
    match error.kind() {
        Kind::Request => true,
        Kind::JetStream(e) => code_passes(&e),
        _ => false,
    }
}

fn create_stream_passes(error: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::context::CreateStreamErrorKind as Kind;
    match error.kind() {
        Kind::TimedOut | Kind::JetStreamUnavailable => true,
        Kind::JetStream(e) => code_passes(&e),
        _ => false,
    }
}

fn request_passes(kind: jetstream::context::RequestErrorKind) -> bool {
    use jetstream::context::RequestErrorKind as Kind;
    matches!(kind, Kind::TimedOut | Kind::NoResponders)
}

fn consumer_passes(error: &jetstream::stream::ConsumerError) -> bool {
    use jetstream::stream::ConsumerErrorKind as Kind;
    match error.kind() {
        Kind::TimedOut | Kind::Request => true,
        Kind::JetStream(e) => code_passes(&e),
        _ => false,
    }
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Pull-consumes `consumer` until `stopping` fires: whatever has arrived together (up to
/// `chunk` messages) goes to one `handle` call, at most `concurrency` calls at once, and
/// each call acks or naks its messages. At a stop it takes no more, lets the calls in hand
/// finish, and naks what was delivered and not yet handed out, to be redelivered (to
/// another worker) after `unseen_back_after`, so a stopping worker settles every message
/// it holds. (Zero for "at once"; a consumer whose redelivery *means* something, like the
/// checker's "held for the check delay", gives that delay.) A broken pull (the server
/// away) is retried after `retry`, for as long as the worker runs.
pub async fn consume<F, Fut>(
    consumer: consumer::PullConsumer,
    stopping: tokio_util::sync::CancellationToken,
    chunk: usize,
    concurrency: usize,
    retry: Duration,
    unseen_back_after: Duration,
    mut handle: F,
) -> Result<(), async_nats::Error>
where
    F: FnMut(Vec<jetstream::Message>) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures::{FutureExt, StreamExt};

    let name = consumer.cached_info().name.clone();
    while !stopping.is_cancelled() {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(consumer = %name, %error, "could not pull; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => continue,
                    _ = stopping.cancelled() => break,
                }
            }
        };
        let arrived = messages
            .by_ref()
            .filter_map(|next| async {
                // Missed heartbeats and the like: the consumer goes on.
                next.map_err(|error| tracing::debug!(%error, "pull error"))
                    .ok()
            })
            .ready_chunks(chunk.max(1))
            .take_until(stopping.cancelled());
        arrived
            .for_each_concurrent(concurrency.max(1), &mut handle)
            .await;
        // Delivered to this process and not handed out: back to the server now rather
        // than after the ack wait.
        let nak =
            jetstream::AckKind::Nak((!unseen_back_after.is_zero()).then_some(unseen_back_after));
        while let Some(Some(Ok(message))) = messages.next().now_or_never() {
            if let Err(error) = message.ack_with(nak).await {
                tracing::debug!(%error, "could not nak a message at stop");
            }
        }
    }
    Ok(())
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
