//! Prometheus metrics of one worker process: the registry, the per-endpoint handles that
//! [`crate::endpoint`] moves on every request, gauges the workers set, and the tiny HTTP
//! server that answers `GET /metrics` when `metrics.listen` is configured.
//!
//! Every metric lives in one process-wide registry ([`global`]): a process runs one worker,
//! and `serve` has no other way to reach it without every worker threading a handle
//! through. Metrics are always counted (a counter is one atomic add); only the HTTP
//! endpoint is optional.
//!
//! The hot path is a request: its handles ([`EndpointMetrics`]) are registered once per
//! endpoint, one counter per contract code, so a request builds no label and takes no
//! lock on the registry: an atomic add for its count, one for the gauge of requests in
//! flight, and a histogram observation (a short uncontended lock inside
//! `prometheus-client`'s histogram, the one non-atomic step).

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use shop_contracts::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Label sets: fixed-size arrays of `&'static str` pairs, so a label costs no allocation.
type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// The process's metrics. Names carry the `shop_` prefix.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<Labels2, Counter>,
    latency: Family<Labels1, Histogram, fn() -> Histogram>,
    in_flight: Family<Labels1, Gauge>,
    consumer_pending: Family<Labels1, Gauge>,
    consumer_ack_pending: Family<Labels1, Gauge>,
    pool_connections: Family<Labels1, Gauge>,
    pool_idle: Family<Labels1, Gauge>,
    pool_max: Family<Labels1, Gauge>,
    queue_depth: Family<Labels1, Gauge>,
    /// Read just before each scrape (pool sizes): cheaper and fresher than a polling task.
    on_scrape: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

/// Latency buckets: 0.5 ms doubling to 8 s (15 buckets). A create takes a few ms; a
/// request that waits for a dead peer times out after seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// The process-wide metrics, created on first use.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("shop");
        let requests = Family::<Labels2, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by endpoint and code (ok, or the contract error code)",
            requests.clone(),
        );
        let latency = Family::<Labels1, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its reply, by endpoint",
            latency.clone(),
        );
        // Every gauge family has one label; registered once, set by whoever owns the figure.
        let mut gauge = |name: &str, help: &str| {
            let family = Family::<Labels1, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let in_flight = gauge("requests_in_flight", "Requests being handled, by endpoint");
        let consumer_pending = gauge(
            "consumer_pending",
            "Messages of a durable consumer not yet delivered, by consumer",
        );
        let consumer_ack_pending = gauge(
            "consumer_ack_pending",
            "Messages of a durable consumer delivered and not yet acked, by consumer",
        );
        let pool_connections = gauge(
            "db_pool_connections",
            "Open database connections of this process, by service",
        );
        let pool_idle = gauge(
            "db_pool_idle_connections",
            "Open database connections not in use, by service",
        );
        let pool_max = gauge(
            "db_pool_max_connections",
            "The pool's bound on connections, by service",
        );
        let queue_depth = gauge(
            "queue_depth",
            "Jobs waiting in a coalescing queue for their batch, by queue",
        );
        Metrics {
            registry: Mutex::new(registry),
            queue_depth,
            requests,
            latency,
            in_flight,
            consumer_pending,
            consumer_ack_pending,
            pool_connections,
            pool_idle,
            pool_max,
            on_scrape: Mutex::new(Vec::new()),
        }
    }

    /// The handles of one endpoint, registered now so that a request only moves atomics.
    pub fn endpoint(&self, endpoint: &'static str) -> EndpointMetrics {
        // One statement per handle: `get_or_create` returns a read guard on the family, and
        // a guard still alive in the same expression would deadlock the next insert.
        let counter = |code: &'static str| -> Counter {
            let handle = self
                .requests
                .get_or_create(&[("endpoint", endpoint), ("code", code)]);
            handle.clone()
        };
        let ok = counter("ok");
        let errors = ALL_CODES.map(|code| counter(code.as_str()));
        let label = [("endpoint", endpoint)];
        let latency = self.latency.get_or_create(&label).clone();
        let in_flight = self.in_flight.get_or_create(&label).clone();
        EndpointMetrics {
            ok,
            errors,
            latency,
            in_flight,
        }
    }

    /// A gauge of its own name (`shop_<name>`), for a figure a worker sets.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let gauge = Gauge::default();
        self.lock_registry().register(name, help, gauge.clone());
        gauge
    }

    /// The pending and ack-pending gauges of a durable consumer.
    pub fn consumer(&self, consumer: &'static str) -> ConsumerGauges {
        let label = [("consumer", consumer)];
        let pending = self.consumer_pending.get_or_create(&label).clone();
        let ack_pending = self.consumer_ack_pending.get_or_create(&label).clone();
        ConsumerGauges {
            pending,
            ack_pending,
        }
    }

    /// Reports `pool`'s size and idle connections at every scrape, as `service`'s.
    pub fn watch_pool(&self, service: &'static str, pool: sqlx::PgPool) {
        let label = [("service", service)];
        let connections = self.pool_connections.get_or_create(&label).clone();
        let idle = self.pool_idle.get_or_create(&label).clone();
        self.pool_max
            .get_or_create(&label)
            .set(i64::from(pool.options().get_max_connections()));
        self.on_scrape(move || {
            connections.set(i64::from(pool.size()));
            idle.set(pool.num_idle() as i64);
        });
    }

    /// Reports `depth()` of the coalescing queue `queue` at every scrape.
    pub fn watch_queue(
        &self,
        queue: &'static str,
        depth: impl Fn() -> usize + Send + Sync + 'static,
    ) {
        let gauge = self.queue_depth.get_or_create(&[("queue", queue)]).clone();
        self.on_scrape(move || {
            gauge.set(depth() as i64);
        });
    }

    /// Runs `read` before every scrape, to set gauges from state that is cheap to read.
    pub fn on_scrape(&self, read: impl Fn() + Send + Sync + 'static) {
        self.on_scrape
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(read));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        for read in self
            .on_scrape
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            read();
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.lock_registry());
        text
    }

    fn lock_registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while registering leaves the registry usable: take it anyway.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every contract error code, in the order of [`code_index`].
const ALL_CODES: [ErrorCode; 10] = [
    ErrorCode::BadRequest,
    ErrorCode::NotFound,
    ErrorCode::InsufficientStock,
    ErrorCode::OffSale,
    ErrorCode::OrderCancelled,
    ErrorCode::NotPayable,
    ErrorCode::AmountMismatch,
    ErrorCode::Conflict,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

/// The position of `code` in [`ALL_CODES`]; a new code fails to compile here first.
const fn code_index(code: ErrorCode) -> usize {
    match code {
        ErrorCode::BadRequest => 0,
        ErrorCode::NotFound => 1,
        ErrorCode::InsufficientStock => 2,
        ErrorCode::OffSale => 3,
        ErrorCode::OrderCancelled => 4,
        ErrorCode::NotPayable => 5,
        ErrorCode::AmountMismatch => 6,
        ErrorCode::Conflict => 7,
        ErrorCode::Unavailable => 8,
        ErrorCode::Internal => 9,
    }
}

/// One endpoint's counters, latency histogram and in-flight gauge.
#[derive(Clone)]
pub struct EndpointMetrics {
    ok: Counter,
    errors: [Counter; ALL_CODES.len()],
    latency: Histogram,
    in_flight: Gauge,
}

impl EndpointMetrics {
    /// A request was admitted and is being handled.
    pub fn started(&self) {
        self.in_flight.inc();
    }

    /// A request [`EndpointMetrics::started`] was answered with `code` (`None`: success).
    pub fn finished(&self, code: Option<ErrorCode>, took: Duration) {
        self.in_flight.dec();
        self.answered(code, took);
    }

    /// A request was answered without being handled (a refusal at admission).
    pub fn answered(&self, code: Option<ErrorCode>, took: Duration) {
        match code {
            None => self.ok.inc(),
            Some(code) => self.errors[code_index(code)].inc(),
        };
        self.latency.observe(took.as_secs_f64());
    }
}

/// Gauges of one durable consumer, set by whoever reads its info.
#[derive(Clone)]
pub struct ConsumerGauges {
    pending: Gauge,
    ack_pending: Gauge,
}

impl ConsumerGauges {
    /// Sets both gauges from a consumer info just read.
    pub fn set(&self, info: &async_nats::jetstream::consumer::Info) {
        self.set_counts(info.num_pending, info.num_ack_pending as u64);
    }

    /// Sets both gauges: messages not yet delivered, and delivered but not acked.
    pub fn set_counts(&self, pending: u64, ack_pending: u64) {
        self.pending.set(pending as i64);
        self.ack_pending.set(ack_pending as i64);
    }

    /// Reads `consumer`'s info every `every` and sets the gauges, forever. Failed reads
    /// leave the last figures: a gauge that drops to zero would look like an empty queue.
    /// Reads the consumer's counts every `every` until `done` fires.
    pub async fn watch_until(
        self,
        mut consumer: async_nats::jetstream::consumer::PullConsumer,
        every: Duration,
        done: tokio_util::sync::CancellationToken,
    ) -> Result<(), std::convert::Infallible> {
        while !done.is_cancelled() {
            if let Ok(info) = consumer.info().await {
                self.set(info);
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = done.cancelled() => {}
            }
        }
        Ok(())
    }
}

/// Binds `addr` for `GET /metrics` (port 0 picks a free one); [`MetricsHttp::serve`]
/// answers there.
pub async fn bind_http(addr: SocketAddr) -> std::io::Result<MetricsHttp> {
    Ok(MetricsHttp {
        listener: TcpListener::bind(addr).await?,
    })
}

/// The bound `GET /metrics` listener, to be served as a task of its worker.
pub struct MetricsHttp {
    listener: TcpListener,
}

impl MetricsHttp {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers scrapes until `done` fires (each in a task this one owns).
    pub async fn serve(
        self,
        done: tokio_util::sync::CancellationToken,
    ) -> Result<(), std::convert::Infallible> {
        let mut scrapes = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        scrapes.spawn(answer(stream));
                    }
                    Err(error) => {
                        // Out of file descriptors, say: wait rather than spin.
                        tracing::warn!(%error, "metrics endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                // Reap finished scrapes so the set does not grow.
                Some(_) = scrapes.join_next() => {}
                _ = done.cancelled() => return Ok(()),
            }
        }
    }
}

/// Answers one HTTP/1.x request and closes the connection. One route and `Connection:
/// close` need no HTTP library: a scrape every few seconds is all this serves.
async fn answer(mut stream: TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let (status, content_type, body) = match request_target(&head) {
        Some(("GET", "/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            global().encode(),
        ),
        Some(("GET", _)) => ("404 Not Found", "text/plain", "try /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Method and path of a request head (`GET /metrics?x HTTP/1.1` → `("GET", "/metrics")`).
fn request_target(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    Some((method, target.split('?').next().unwrap_or(target)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_counter() {
        for (i, code) in ALL_CODES.iter().enumerate() {
            assert_eq!(code_index(*code), i, "{code}");
        }
    }

    #[test]
    fn request_targets() {
        assert_eq!(
            request_target(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_target(b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_target(b"\xff\r\n"), None);
    }

    /// The dashboard in the repository parses, and every panel queries something. (The
    /// integration tests check its metric names against live workers' `/metrics`.)
    #[test]
    fn the_grafana_dashboard_is_json_with_a_query_in_every_panel() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../deploy/grafana/shop-dashboard.json"))
                .expect("deploy/grafana/shop-dashboard.json is JSON");
        let panels = dashboard["panels"].as_array().expect("panels");
        assert!(panels.len() >= 8);
        for panel in panels {
            let targets = panel["targets"].as_array().expect("targets");
            assert!(
                !targets.is_empty()
                    && targets
                        .iter()
                        .all(|t| t["expr"].as_str().is_some_and(|e| e.contains("shop_"))),
                "{panel}"
            );
        }
    }

    #[test]
    fn an_endpoint_counts_by_code_and_observes_latency() {
        let metrics = Metrics::new();
        let endpoint = metrics.endpoint("test.echo");
        endpoint.started();
        endpoint.finished(None, Duration::from_millis(3));
        endpoint.started();
        endpoint.finished(Some(ErrorCode::NotFound), Duration::from_millis(1));
        endpoint.answered(Some(ErrorCode::Unavailable), Duration::ZERO);
        let text = metrics.encode();
        for line in [
            r#"shop_requests_total{endpoint="test.echo",code="ok"} 1"#,
            r#"shop_requests_total{endpoint="test.echo",code="not_found"} 1"#,
            r#"shop_requests_total{endpoint="test.echo",code="unavailable"} 1"#,
            r#"shop_requests_total{endpoint="test.echo",code="internal"} 0"#,
            r#"shop_request_duration_seconds_count{endpoint="test.echo"} 3"#,
            r#"shop_requests_in_flight{endpoint="test.echo"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }
}
