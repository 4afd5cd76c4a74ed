//! A NATS micro service (the `$SRV` protocol of ADR-32: `PING`, `INFO` and `STATS`, and
//! endpoints in queue group `q`) whose endpoints stop without losing a request.
//!
//! Why not `async_nats::service`: its `stop` unsubscribes each endpoint, and the client
//! forgets a subscription the moment it sends `UNSUB`. Requests the server routed to this
//! process before it read the `UNSUB` are still on the wire; they arrive for a subscription
//! the client no longer knows and are dropped, and their callers time out not knowing what
//! happened. (The client's `drain` forgets it one read later, which narrows the gap without
//! closing it.) Here an endpoint stops by *fencing* ([`Endpoint::fence`]): `UNSUB <sid>
//! <max>` with `max` above what the server can have sent so far, so the server stops routing
//! here after exactly `max` messages and the client keeps the subscription until it has
//! received exactly those; every one is served. The replies, stats and discovery subjects
//! are the ones `nats micro ls|info|stats` read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, Message, Subscriber};
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// Custom `data` of an endpoint's `STATS` entry, by endpoint subject.
pub type StatsHandler = Box<dyn Fn(&str) -> Value + Send + Sync>;

/// What a service says of itself.
pub struct ServiceConfig {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    pub metadata: HashMap<String, String>,
    pub stats: Option<StatsHandler>,
}

/// A running service instance: its discovery subjects answer while it lives.
pub struct Service {
    inner: Arc<Inner>,
    verbs: JoinSet<()>,
}

struct Inner {
    client: Client,
    config: ServiceConfig,
    id: String,
    started: String,
    endpoints: Mutex<Vec<Arc<EndpointStats>>>,
}

/// Counts of one endpoint, as `STATS` reports them.
#[derive(Default)]
pub struct EndpointStats {
    subject: &'static str,
    requests: AtomicU64,
    errors: AtomicU64,
    processing_ns: AtomicU64,
    last_error: Mutex<String>,
    /// The server's share of each request's latency, by outcome (`data.latency_us`).
    pub latency: crate::latency::Latencies,
}

impl EndpointStats {
    /// One request answered after `took`, with `error` (`"code:status"` style text) or not.
    pub fn record(&self, took: Duration, error: Option<&str>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.processing_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        if let Some(error) = error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_error.lock() {
                error.clone_into(&mut last);
            }
        }
    }
}

/// The queue group of every endpoint (CONTRACT section 1).
pub const QUEUE_GROUP: &str = shop_contracts::subjects::QUEUE_GROUP;

impl Service {
    /// Starts answering `$SRV.{PING,INFO,STATS}`, `$SRV.<verb>.<name>` and
    /// `$SRV.<verb>.<name>.<id>` on `client`.
    pub async fn start(
        client: Client,
        config: ServiceConfig,
    ) -> Result<Service, async_nats::Error> {
        let id = format!(
            "{:016x}{:08x}",
            crate::random::random_u64(),
            std::process::id()
        );
        let inner = Arc::new(Inner {
            client: client.clone(),
            id,
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            endpoints: Mutex::new(Vec::new()),
            config,
        });
        let mut verbs = JoinSet::new();
        for verb in ["PING", "INFO", "STATS"] {
            for subject in [
                format!("$SRV.{verb}"),
                format!("$SRV.{verb}.{}", inner.config.name),
                format!("$SRV.{verb}.{}.{}", inner.config.name, inner.id),
            ] {
                let mut requests = client.subscribe(subject).await?;
                let inner = inner.clone();
                verbs.spawn(async move {
                    while let Some(request) = requests.next().await {
                        let Some(reply) = request.reply else { continue };
                        let body = inner.answer(verb);
                        // A lost discovery answer costs the asker one retry.
                        let _ = inner.client.publish(reply, body.to_string().into()).await;
                    }
                });
            }
        }
        Ok(Service { inner, verbs })
    }

    /// Subscribes `subject` in the queue group; its requests arrive on the returned endpoint.
    pub async fn endpoint(&self, subject: &'static str) -> Result<Endpoint, async_nats::Error> {
        let requests = self
            .inner
            .client
            .queue_subscribe(subject, QUEUE_GROUP.to_owned())
            .await?;
        let stats = Arc::new(EndpointStats {
            subject,
            ..EndpointStats::default()
        });
        if let Ok(mut endpoints) = self.inner.endpoints.lock() {
            endpoints.push(stats.clone());
        }
        Ok(Endpoint {
            requests,
            taken: 0,
            fence: None,
            ready: std::collections::VecDeque::new(),
            client: self.inner.client.clone(),
            stats,
        })
    }

    /// The instance id of `$SRV.<verb>.<name>.<id>`.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Stops answering discovery: the instance leaves `nats micro ls`.
    pub fn stop(mut self) {
        self.verbs.abort_all();
    }
}

impl Inner {
    fn answer(&self, verb: &str) -> Value {
        let c = &self.config;
        let endpoints: Vec<Arc<EndpointStats>> =
            self.endpoints.lock().map(|e| e.clone()).unwrap_or_default();
        let mut body = json!({
            "name": c.name,
            "id": self.id,
            "version": c.version,
            "metadata": c.metadata,
        });
        match verb {
            "PING" => body["type"] = "io.nats.micro.v1.ping_response".into(),
            "INFO" => {
                body["type"] = "io.nats.micro.v1.info_response".into();
                body["description"] = c.description.into();
                body["endpoints"] = endpoints
                    .iter()
                    .map(|e| {
                        json!({"name": e.subject, "subject": e.subject,
                               "queue_group": QUEUE_GROUP, "metadata": {}})
                    })
                    .collect();
            }
            _ => {
                body["type"] = "io.nats.micro.v1.stats_response".into();
                body["started"] = self.started.clone().into();
                body["endpoints"] = endpoints
                    .iter()
                    .map(|e| {
                        let requests = e.requests.load(Ordering::Relaxed);
                        let ns = e.processing_ns.load(Ordering::Relaxed);
                        let mut stats = json!({
                            "name": e.subject,
                            "subject": e.subject,
                            "queue_group": QUEUE_GROUP,
                            "num_requests": requests,
                            "num_errors": e.errors.load(Ordering::Relaxed),
                            "processing_time": ns,
                            "average_processing_time": ns / requests.max(1),
                            "last_error": e.last_error.lock().map(|l| l.clone()).unwrap_or_default(),
                        });
                        let mut data = c
                            .stats
                            .as_ref()
                            .map(|f| f(e.subject))
                            .filter(Value::is_object)
                            .unwrap_or_else(|| json!({}));
                        data["latency_us"] = e.latency.to_json();
                        stats["data"] = data;
                        stats
                    })
                    .collect();
            }
        }
        body
    }
}

/// The requests of one endpoint of this instance.
pub struct Endpoint {
    requests: Subscriber,
    /// Messages taken from the subscription: what the client has delivered, less what waits
    /// in its buffer.
    taken: u64,
    /// The `max` of the last `UNSUB <sid> <max>` sent: the server routes no more than that.
    fence: Option<u64>,
    /// Requests already delivered to the client, moved out of its buffer by the fence.
    ready: std::collections::VecDeque<Message>,
    client: Client,
    stats: Arc<EndpointStats>,
}

/// Requests the fence leaves room for beyond those the client has delivered: more than can
/// be on the wire to one process at once (a handful even at thousands a second: the client
/// reads its socket continuously), so the server's count stays below the fence, and few
/// enough that a stopping instance takes only a moment's share more: 50 ms at 2,500
/// requests a second to it, a second at 130.
const FENCE_ROOM: u64 = 128;

impl Endpoint {
    /// The next request, or `None` once the endpoint has stopped (after a fence, when the
    /// server has sent its last one and it has been taken).
    pub async fn next(&mut self) -> Option<Message> {
        if let Some(message) = self.ready.pop_front() {
            return Some(message);
        }
        let message = self.requests.next().await?;
        self.taken += 1;
        Some(message)
    }

    pub fn stats(&self) -> Arc<EndpointStats> {
        self.stats.clone()
    }

    /// Stops the server from routing new requests here without losing one already routed:
    /// first everything the client has delivered is taken out of its buffer (so `taken` is
    /// its count), then `UNSUB <sid> <taken + FENCE_ROOM>`, then a round trip so the server
    /// has read it. The server sends at most `FENCE_ROOM` more (the queue group's other
    /// members get the rest as soon as this one has had its share) and the client keeps
    /// the subscription until it has received exactly as many as the server sent.
    /// [`Endpoint::next`] ends when the last has been taken.
    pub async fn fence(&mut self) -> Result<(), async_nats::Error> {
        self.fence_to(FENCE_ROOM).await
    }

    /// Moves the fence to `room` requests beyond those the client has delivered, if that is
    /// nearer than where it stands: the server then stops routing here once it has sent that
    /// many. `room` must exceed what can be on the wire to this process right now, or the
    /// requests beyond it would be dropped on arrival.
    pub async fn fence_to(&mut self, room: u64) -> Result<(), async_nats::Error> {
        while let Some(Some(message)) = self.requests.next().now_or_never() {
            self.taken += 1;
            self.ready.push_back(message);
        }
        let max = self.taken + room;
        if self.fence.is_some_and(|fence| fence <= max) {
            return Ok(());
        }
        self.requests.unsubscribe_after(max).await?;
        self.client.flush().await?;
        self.fence = Some(max);
        Ok(())
    }

    /// Ends a fenced endpoint that went quiet before using up its room: with no request
    /// routed here for a while, nothing is on the wire, so a plain `UNSUB` drops nothing
    /// but in the unlikely case that one is routed in the microseconds the `UNSUB` takes
    /// to reach the server. Requests already buffered are still taken.
    pub async fn close(&mut self) -> Result<(), async_nats::Error> {
        self.requests.unsubscribe().await?;
        Ok(())
    }
}
