//! Metrics and traces of real worker processes: `/metrics` scraped over HTTP before and
//! after requests, the order worker's gauges, the Grafana dashboard's metric names, and one
//! trace id across goods, stock and order for one create (read from the workers' JSON logs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use shop_devstack::free_port;
use shop_tests::{eventually, TestApp, Worker};

const WAIT: Duration = Duration::from_secs(30);

/// One scrape: every sample, keyed by name and labels as written
/// (`shop_requests_total{endpoint="goods.detail",code="ok"}`).
type Samples = BTreeMap<String, f64>;

async fn scrape(port: u16) -> Samples {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scraping /metrics");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("the metrics text");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (key, value) = line.rsplit_once(' ').expect("a sample line");
            (key.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn sample(samples: &Samples, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

fn requests(endpoint: &str, code: &str) -> String {
    format!(r#"shop_requests_total{{endpoint="{endpoint}",code="{code}"}}"#)
}

fn latency_count(endpoint: &str) -> String {
    format!(r#"shop_request_duration_seconds_count{{endpoint="{endpoint}"}}"#)
}

/// Starts a worker of `kind` serving `/metrics` on a port of its own; returns the port.
async fn spawn_with_metrics(app: &mut TestApp, kind: Worker, extra: &[(&str, &str)]) -> u16 {
    let port = free_port().expect("a free port");
    let listen = format!("127.0.0.1:{port}");
    let mut env = vec![("SHOP_METRICS__LISTEN", listen.as_str())];
    env.extend_from_slice(extra);
    let process = app.spawn_process(kind, &env);
    app.adopt(process);
    app.wait_for_workers(kind, 1).await;
    port
}

#[tokio::test]
async fn metrics_count_requests_by_endpoint_and_code_and_time_them() {
    let mut app = TestApp::start(&[]).await;
    let port = spawn_with_metrics(&mut app, Worker::Goods, &[]).await;
    let before = scrape(port).await;
    // Registered at start-up, before any request: a dashboard sees zeros, not gaps.
    assert!(
        before.contains_key(&requests("goods.detail", "not_found")),
        "{before:#?}"
    );

    let goods = app
        .ok(
            "goods.upsert",
            json!({"category_id": 1, "title": "tea", "price_cents": 100}),
        )
        .await["goods_id"]
        .as_i64()
        .unwrap();
    for _ in 0..3 {
        app.ok("goods.detail", json!({"goods_id": goods})).await;
    }
    for _ in 0..2 {
        app.err("goods.detail", json!({"goods_id": 999_999}), "not_found")
            .await;
    }
    app.err("goods.detail", json!({"goods_id": "x"}), "bad_request")
        .await;

    let after = scrape(port).await;
    let moved = |key: &str| sample(&after, key) - sample(&before, key);
    assert_eq!(moved(&requests("goods.upsert", "ok")), 1.0);
    assert_eq!(moved(&requests("goods.detail", "ok")), 3.0);
    assert_eq!(moved(&requests("goods.detail", "not_found")), 2.0);
    assert_eq!(moved(&requests("goods.detail", "bad_request")), 1.0);
    assert_eq!(moved(&requests("goods.detail", "internal")), 0.0);
    assert_eq!(moved(&latency_count("goods.detail")), 6.0);
    assert!(
        moved(r#"shop_request_duration_seconds_sum{endpoint="goods.detail"}"#) > 0.0,
        "{after:#?}"
    );
    assert_eq!(
        sample(
            &after,
            r#"shop_requests_in_flight{endpoint="goods.detail"}"#
        ),
        0.0
    );
    // The pool: its bound, and at least the connection the requests used.
    assert_eq!(
        sample(&after, r#"shop_db_pool_max_connections{service="goods"}"#),
        20.0
    );
    assert!(sample(&after, r#"shop_db_pool_connections{service="goods"}"#) >= 1.0);

    let response = reqwest::get(format!("http://127.0.0.1:{port}/other"))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// Metric names in a dashboard expression: `shop_` identifiers, histogram suffixes removed.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("shop_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The family a sample belongs to, as a dashboard names it (`shop_x_bucket{..}` → `shop_x_bucket`).
fn family(key: &str) -> &str {
    key.split('{').next().unwrap_or(key)
}

#[tokio::test]
async fn every_worker_exports_its_gauges_and_the_dashboard_uses_only_exported_names() {
    let mut app = TestApp::start(&[]).await;
    let fast = [
        ("SHOP_ORDER__PAY_TIMEOUT", "60s"),
        ("SHOP_ORDER__CHECK_DELAY", "2s"),
    ];
    let goods_port = spawn_with_metrics(&mut app, Worker::Goods, &fast).await;
    let stock_port = spawn_with_metrics(&mut app, Worker::Stock, &fast).await;
    let order_port = spawn_with_metrics(&mut app, Worker::Order, &fast).await;

    let goods = app
        .ok(
            "goods.upsert",
            json!({"category_id": 1, "title": "tea", "price_cents": 100}),
        )
        .await["goods_id"]
        .as_i64()
        .unwrap();
    app.ok("stock.set", json!({"goods_id": goods, "available": 5}))
        .await;
    app.ok("order.create", create_body(goods)).await;
    app.err(
        "order.create",
        json!({"user_id": 1, "items": [{"goods_id": goods, "quantity": 9}],
               "address": "a", "receiver_name": "b", "receiver_phone": "c"}),
        "insufficient_stock",
    )
    .await;

    let order = scrape(order_port).await;
    assert_eq!(sample(&order, &requests("order.create", "ok")), 1.0);
    assert_eq!(
        sample(&order, &requests("order.create", "insufficient_stock")),
        1.0
    );
    assert_eq!(sample(&order, &latency_count("order.create")), 2.0);
    let stock = scrape(stock_port).await;
    assert_eq!(sample(&stock, &requests("stock.deduct", "ok")), 1.0);
    assert_eq!(
        sample(&stock, &requests("stock.deduct", "insufficient_stock")),
        1.0
    );
    for key in [
        r#"shop_consumer_pending{consumer="stock-rollback"}"#,
        r#"shop_consumer_ack_pending{consumer="stock-rollback"}"#,
        r#"shop_db_pool_connections{service="stock"}"#,
    ] {
        assert!(stock.contains_key(key), "no {key} in {stock:#?}");
    }

    // The unpaid order waits for its deadline: as a schedule (timer = schedule) once the
    // checker has looked at it, or as an ack-pending half message (nak_delay). The gauges
    // come from the order worker's probe of the server, every few seconds.
    eventually("the waiting order in the timer gauges", WAIT, || async {
        let order = scrape(order_port).await;
        let waiting =
            sample(&order, "shop_scheduled_timers") + sample(&order, "shop_checker_pending_timers");
        (waiting >= 1.0).then_some(())
    })
    .await;
    let order = scrape(order_port).await;
    for key in [
        "shop_outbox_backlog",
        r#"shop_consumer_pending{consumer="order-txn-checker"}"#,
        r#"shop_consumer_ack_pending{consumer="order-txn-checker"}"#,
        r#"shop_db_pool_idle_connections{service="order"}"#,
    ] {
        assert!(order.contains_key(key), "no {key} in {order:#?}");
    }

    // Every metric the dashboard plots is exported by some worker.
    let mut exported = BTreeSet::new();
    for port in [goods_port, stock_port, order_port] {
        exported.extend(scrape(port).await.keys().map(|k| family(k).to_owned()));
    }
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/shop-dashboard.json"))
            .expect("the dashboard is JSON");
    let mut plotted = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            plotted.extend(metric_names(target["expr"].as_str().expect("an expr")));
        }
    }
    assert!(plotted.len() >= 8, "{plotted:?}");
    let missing: Vec<_> = plotted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard plots {missing:?}, which no worker exports ({exported:?})"
    );
}

fn create_body(goods: i64) -> Value {
    json!({"user_id": 7, "items": [{"goods_id": goods, "quantity": 1}],
           "address": "1 Main St", "receiver_name": "Ann", "receiver_phone": "555-0100"})
}

/// Sends `order.create` with `headers`; the reply must be an order.
async fn create_with_headers(app: &TestApp, goods: i64, headers: async_nats::HeaderMap) -> Value {
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(serde_json::to_vec(&create_body(goods)).unwrap().into())
        .timeout(Some(Duration::from_secs(15)));
    let reply = app
        .client()
        .send_request("order.create", request)
        .await
        .expect("order.create answers");
    let order: Value = serde_json::from_slice(&reply.payload).expect("a JSON reply");
    assert!(order["order_sn"].is_string(), "{order}");
    order
}

/// A `traceparent` header (W3C, sampled) for span `span` of trace `trace`.
fn traceparent(trace: &str, span: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", format!("00-{trace}-{span}-01").as_str());
    headers
}

/// Goods, stock and order worker processes started with `env`, and a goods with 10 units
/// in stock to create orders for. Returns the app, each worker's log file by kind, and the
/// goods id.
async fn three_workers_and_a_stocked_goods(
    env: &[(&str, &str)],
) -> (TestApp, BTreeMap<&'static str, PathBuf>, i64) {
    let mut app = TestApp::start(&[]).await;
    let mut logs = BTreeMap::new();
    for kind in [Worker::Goods, Worker::Stock, Worker::Order] {
        let process = app.spawn_process(kind, env);
        logs.insert(kind.name(), process.log.clone());
        app.adopt(process);
        app.wait_for_workers(kind, 1).await;
    }
    let goods = app
        .ok(
            "goods.upsert",
            json!({"category_id": 1, "title": "tea", "price_cents": 100}),
        )
        .await["goods_id"]
        .as_i64()
        .unwrap();
    app.ok("stock.set", json!({"goods_id": goods, "available": 10}))
        .await;
    (app, logs, goods)
}

/// The trace ids of the requests to `endpoint` that a worker's JSON log says it answered.
fn answered_trace_ids(log: &str, endpoint: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"] == "answered" && event["span"]["endpoint"] == endpoint)
        .filter_map(|event| event["span"]["trace_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn one_create_shares_one_trace_id_across_goods_stock_and_order() {
    // JSON logs with the debug line each request ends with: the test reads the trace ids
    // the workers logged, as an operator would.
    let env = [
        ("SHOP_LOG__FORMAT", "json"),
        ("SHOP_LOG__FILTER", "info,shop_kit::endpoint=debug"),
    ];
    let (app, logs, goods) = three_workers_and_a_stocked_goods(&env).await;
    let read = |kind: &str| std::fs::read_to_string(&logs[kind]).unwrap_or_default();

    // 1. The caller starts the trace: its traceparent reaches all three workers.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    create_with_headers(&app, goods, traceparent(trace, "b7ad6b7169203331")).await;
    for (kind, endpoint) in [
        ("order", "order.create"),
        ("goods", "goods.batch"),
        ("stock", "stock.deduct"),
    ] {
        eventually(
            &format!("{endpoint} answered in trace {trace} in the {kind} log"),
            WAIT,
            || async move {
                answered_trace_ids(&read(kind), endpoint)
                    .iter()
                    .any(|t| t == trace)
                    .then_some(())
            },
        )
        .await;
    }

    // 2. No traceparent: the order worker starts a trace, and passes it on.
    create_with_headers(&app, goods, async_nats::HeaderMap::new()).await;
    let started = eventually("the second create's trace id", WAIT, || async move {
        let ids = answered_trace_ids(&read("order"), "order.create");
        let others: Vec<String> = ids.into_iter().filter(|t| t != trace).collect();
        match others.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    })
    .await;
    assert_eq!(started.len(), 32, "{started}");
    for (kind, endpoint) in [("goods", "goods.batch"), ("stock", "stock.deduct")] {
        let started = &started;
        eventually(
            &format!("{endpoint} in trace {started} in the {kind} log"),
            WAIT,
            || async move {
                answered_trace_ids(&read(kind), endpoint)
                    .iter()
                    .any(|t| t == started)
                    .then_some(())
            },
        )
        .await;
    }
}

/// A stand-in OTLP/HTTP collector on a free port: answers every POST with an empty
/// (valid) protobuf response and hands each request body to the test.
async fn collector() -> (u16, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (bodies, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                // Requests on a kept-alive connection, one after another.
                loop {
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < end + 4 + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = bodies.send(buffer[end + 4..end + 4 + length].to_vec());
                    buffer.drain(..end + 4 + length);
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn with_an_otlp_endpoint_the_three_workers_export_one_creates_spans() {
    let (port, mut received) = collector().await;
    let endpoint = format!("http://127.0.0.1:{port}/v1/traces");
    let env = [
        ("SHOP_TRACE__OTLP_ENDPOINT", endpoint.as_str()),
        // The batch exporter's delay: spans arrive within a second, not five.
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let (app, _logs, goods) = three_workers_and_a_stocked_goods(&env).await;
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    // Sampled by the caller: every worker records and exports its spans of this trace.
    create_with_headers(&app, goods, traceparent(trace, "00f067aa0ba902b7")).await;

    // OTLP/protobuf carries the trace id as its 16 raw bytes and the service name as text.
    let trace_bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut services = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while services.len() < 3 {
        let body = tokio::time::timeout_at(deadline, received.recv())
            .await
            .unwrap_or_else(|_| panic!("spans of {trace} from only {services:?} within {WAIT:?}"))
            .expect("the collector runs");
        if contains(&body, &trace_bytes) {
            for service in ["shop-goods", "shop-stock", "shop-order"] {
                if contains(&body, service.as_bytes()) {
                    services.insert(service);
                }
            }
        }
    }
}
