//! Stock service through NATS (CONTRACT section 3, the STOCK_ROLLBACK half of section 5, and
//! invariants 1, 2, 4, 5 and 6 of section 6), run for each of the five lock strategies, plus
//! the properties only the `batch` strategy (group commit) can break.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{conservation, level};
use async_nats::HeaderMap;
use serde_json::{json, Value};
use shop_tests::{eventually, TestApp, Worker};

/// Order numbers unique within a test (each test has its own database anyway).
fn sn(n: u64) -> String {
    (7_260_000_000_000_000_000u64 + n).to_string()
}

async fn start(strategy: &str, workers: usize) -> TestApp {
    let mut app = TestApp::start_with_env(
        &[Worker::Stock],
        &[
            ("SHOP_STOCK__STRATEGY", strategy),
            // A crashed kv_lock holder frees its goods quickly in tests.
            ("SHOP_STOCK__LOCK_TTL", "2s"),
            ("SHOP_STOCK__ROLLBACK_RETRY_DELAY", "200ms"),
        ],
    )
    .await;
    for _ in 1..workers {
        app.spawn(Worker::Stock).await;
    }
    app
}

async fn set(app: &TestApp, goods_id: i64, available: i64) {
    let reply = app
        .ok(
            "stock.set",
            json!({"goods_id": goods_id, "available": available}),
        )
        .await;
    assert_eq!(reply["available"], available);
}

fn goods_of(items: &[(i64, i64)]) -> Vec<i64> {
    items.iter().map(|&(goods, _)| goods).collect()
}

fn deduct_body(order: u64, items: &[(i64, i64)]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(g, q)| json!({"goods_id": g, "quantity": q}))
        .collect();
    json!({"order_sn": sn(order), "items": items})
}

/// One `stock.deduct` request, waiting up to 20 s for its reply.
async fn send_deduct(client: &async_nats::Client, body: &Value) -> async_nats::Message {
    let request = async_nats::Request::new()
        .payload(serde_json::to_vec(body).unwrap().into())
        .timeout(Some(Duration::from_secs(20)));
    client
        .send_request("stock.deduct", request)
        .await
        .expect("stock.deduct answers")
}

/// A deduct that retries the "try again" answers (`conflict` from contention, `unavailable`)
/// with the same order_sn, as a client must; returns the final error code or `None`.
async fn deduct_until_answered(client: &async_nats::Client, body: &Value) -> Option<String> {
    for _ in 0..50 {
        let code = error_code(&send_deduct(client, body).await);
        match code.as_deref() {
            Some("conflict") | Some("unavailable") => continue,
            _ => return code,
        }
    }
    panic!("stock.deduct kept answering conflict/unavailable for {body}");
}

fn error_code(reply: &async_nats::Message) -> Option<String> {
    reply.headers.as_ref()?.get("Nats-Service-Error-Code")?;
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    Some(body["error"]["code"].as_str().unwrap().to_owned())
}

/// CONTRACT section 6.2 per goods, plus the ledger agreeing with the counts.
/// In every stock partition (each holds its goods' counts and its share of each record).
async fn assert_conserved(app: &TestApp) {
    let mut goods = 0;
    for db in app.stock_dbs().await {
        goods += sqlx::query_scalar::<_, i64>("SELECT count(*) FROM stock")
            .fetch_one(&db)
            .await
            .unwrap();
        if let Err(wrong) = conservation(&db).await {
            panic!("conservation does not hold: {wrong}");
        }
    }
    assert!(goods > 0, "no stock to check");
}

/// Waits until the `stock-rollback` consumer has acked everything in the stream.
async fn rollback_settled(app: &TestApp) {
    let js = app.jetstream();
    eventually(
        "stock-rollback to catch up",
        Duration::from_secs(90),
        || {
            let js = js.clone();
            async move {
                let mut stream = js.get_stream("STOCK_ROLLBACK").await.ok()?;
                let last = stream.info().await.ok()?.state.last_sequence;
                let info = stream.consumer_info("stock-rollback").await.ok()?;
                (info.num_pending == 0
                    && info.num_ack_pending == 0
                    && info.ack_floor.stream_sequence >= last)
                    .then_some(())
            }
        },
    )
    .await;
}

async fn publish_rollback(js: &async_nats::jetstream::Context, order: u64, msg_id: &str) -> bool {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    let payload = json!({"order_sn": sn(order), "reason": "cancelled"}).to_string();
    js.publish_with_headers(
        format!("stock.rollback.{}", sn(order)),
        headers,
        payload.into(),
    )
    .await
    .expect("publish")
    .await
    .expect("publish ack")
    .duplicate
}

async fn ledger_rows(app: &TestApp, order: u64, kind: &str) -> i64 {
    let db = app.db(Worker::Stock).await;
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM stock_ledger WHERE order_sn = $1::TEXT::BIGINT AND kind = $2",
    )
    .bind(sn(order))
    .bind(kind)
    .fetch_one(&db)
    .await
    .unwrap()
}

/// 200 single-unit deducts of distinct orders against 50 units, over two worker processes.
async fn oversell(strategy: &str) {
    let app = start(strategy, 2).await;
    set(&app, 1, 50).await;
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let client = app.client().clone();
            tokio::spawn(
                async move { deduct_until_answered(&client, &deduct_body(i, &[(1, 1)])).await },
            )
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            None => ok += 1,
            Some(code) => assert_eq!(code, "insufficient_stock", "{strategy}"),
        }
    }
    assert_eq!(ok, 50, "{strategy}: exactly the available units are sold");
    assert_eq!(level(&app, 1).await, (0, 50), "{strategy}");
    assert_conserved(&app).await;
}

/// 100 concurrent two-item orders over the same two goods, half listing them reversed.
async fn deadlock(strategy: &str) {
    let app = start(strategy, 1).await;
    set(&app, 1, 1000).await;
    set(&app, 2, 1000).await;
    let tasks: Vec<_> = (0..100u64)
        .map(|i| {
            let client = app.client().clone();
            let items = if i % 2 == 0 {
                [(1, 1), (2, 2)]
            } else {
                [(2, 2), (1, 1)]
            };
            tokio::spawn(
                async move { deduct_until_answered(&client, &deduct_body(i, &items)).await },
            )
        })
        .collect();
    for task in tasks {
        assert_eq!(
            task.await.unwrap(),
            None,
            "{strategy}: every order is deducted"
        );
    }
    assert_eq!(level(&app, 1).await, (900, 100), "{strategy}");
    assert_eq!(level(&app, 2).await, (800, 200), "{strategy}");
    assert_conserved(&app).await;
}

/// Idempotency, conflict, insufficient stock, unknown goods, return once, null compensation
/// and anti-hanging.
async fn rules(strategy: &str) {
    let app = start(strategy, 1).await;
    set(&app, 1, 10).await;
    set(&app, 2, 5).await;

    // Duplicates are summed and the reply is in ascending goods_id order.
    let first = app
        .ok("stock.deduct", deduct_body(1, &[(2, 1), (1, 2), (1, 1)]))
        .await;
    assert_eq!(first["status"], "deducted");
    assert_eq!(
        first["items"],
        json!([{"goods_id": 1, "quantity": 3}, {"goods_id": 2, "quantity": 1}])
    );
    assert_eq!(level(&app, 1).await, (7, 3));
    // The same order again (in another order of lines): the first result, nothing more taken.
    let again = app
        .ok("stock.deduct", deduct_body(1, &[(1, 3), (2, 1)]))
        .await;
    assert_eq!(again, first);
    assert_eq!(level(&app, 1).await, (7, 3));
    // The same order_sn with other items, in part or in whole: refused, and the first
    // deduct stands (across partitions one share of the second is the first's own, answered
    // again, and must not be given back).
    app.err("stock.deduct", deduct_body(1, &[(1, 1)]), "conflict")
        .await;
    app.err(
        "stock.deduct",
        deduct_body(1, &[(1, 3), (2, 2)]),
        "conflict",
    )
    .await;
    assert_eq!(level(&app, 1).await, (7, 3));
    assert_eq!(level(&app, 2).await, (4, 1));
    let standing = app
        .ok("stock.sell_detail", json!({"order_sn": sn(1)}))
        .await;
    assert_eq!(standing["status"], "deducted");

    // Insufficient stock: details of the short item, and nothing changes.
    let e = app
        .err(
            "stock.deduct",
            deduct_body(2, &[(1, 1), (2, 6)]),
            "insufficient_stock",
        )
        .await;
    assert_eq!(e.status, "409");
    assert_eq!(
        Value::Object(e.body.error.details.clone()),
        json!({"goods_id": 2, "requested": 6, "available": 4})
    );
    assert_eq!(level(&app, 1).await, (7, 3));
    assert_eq!(level(&app, 2).await, (4, 1));
    let refused = app
        .ok("stock.sell_detail", json!({"order_sn": sn(2)}))
        .await;
    if app.stock_split(&[1, 2]) {
        // Across partitions the share that was taken came back before the refusal was
        // answered (the levels above), and its record says so.
        assert_eq!(refused["status"], "returned");
        assert_eq!(refused["items"], json!([{"goods_id": 1, "quantity": 1}]));
        app.err("stock.deduct", deduct_body(2, &[(1, 1)]), "order_cancelled")
            .await;
        app.ok("stock.deduct", deduct_body(5, &[(2, 4)])).await;
    } else {
        assert_eq!(refused["status"], "none");
        assert_eq!(refused["updated_at"], Value::Null);
        // The failed order can still be deducted later with what is there.
        app.ok("stock.deduct", deduct_body(2, &[(2, 4)])).await;
    }
    assert_eq!(level(&app, 2).await, (0, 5));

    // Unknown goods.
    app.err(
        "stock.deduct",
        deduct_body(3, &[(1, 1), (999, 1)]),
        "not_found",
    )
    .await;
    app.err("stock.get", json!({"goods_ids": [1, 999]}), "not_found")
        .await;
    assert_eq!(level(&app, 1).await, (7, 3));

    // Return once.
    let returned = app.ok("stock.return", json!({"order_sn": sn(1)})).await;
    assert_eq!(returned["returned"], true);
    assert_eq!(returned["status"], "returned");
    assert_eq!(level(&app, 1).await, (10, 0));
    assert_eq!(level(&app, 2).await, (1, 4));
    let twice = app.ok("stock.return", json!({"order_sn": sn(1)})).await;
    assert_eq!(twice["returned"], false);
    assert_eq!(level(&app, 1).await, (10, 0));
    let detail = app
        .ok("stock.sell_detail", json!({"order_sn": sn(1)}))
        .await;
    assert_eq!(detail["status"], "returned");
    assert_eq!(detail["items"], first["items"]);
    assert!(detail["updated_at"].as_str().unwrap().ends_with('Z'));
    // A returned order cannot be deducted again.
    app.err(
        "stock.deduct",
        deduct_body(1, &[(1, 3), (2, 1)]),
        "order_cancelled",
    )
    .await;

    // Null compensation, then the late deduct hangs no stock.
    let null = app.ok("stock.return", json!({"order_sn": sn(4)})).await;
    assert_eq!(null["returned"], false);
    let detail = app
        .ok("stock.sell_detail", json!({"order_sn": sn(4)}))
        .await;
    assert_eq!(detail["status"], "returned");
    assert_eq!(detail["items"], json!([]));
    app.err("stock.deduct", deduct_body(4, &[(1, 1)]), "order_cancelled")
        .await;
    assert_eq!(level(&app, 1).await, (10, 0));

    // A restock is an adjustment; counts stay conserved.
    set(&app, 1, 20).await;
    assert_eq!(level(&app, 1).await, (20, 0));
    assert_conserved(&app).await;
}

/// kill -9 of one of two workers in the middle of deducts and JetStream rollbacks.
async fn kill9(strategy: &str) {
    let mut app = start(strategy, 2).await;
    set(&app, 1, 100_000).await;
    set(&app, 2, 100_000).await;
    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let rolled_back = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let client = app.client().clone();
            let js = app.jetstream();
            let (done, next, rolled_back, kept) = (
                done.clone(),
                next.clone(),
                rolled_back.clone(),
                kept.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..40 {
                    let order = next.fetch_add(1, Ordering::SeqCst);
                    let body = deduct_body(order, &[(1, 1), (2, 1 + (order % 3) as i64)]);
                    let request = async_nats::Request::new()
                        .payload(serde_json::to_vec(&body).unwrap().into())
                        .timeout(Some(Duration::from_secs(3)));
                    // The worker may die under this request: any outcome is acceptable, but
                    // a deduct that was confirmed must stay.
                    let reply = client.send_request("stock.deduct", request).await;
                    let confirmed = reply.is_ok_and(|r| error_code(&r).is_none());
                    if order % 2 == 1 && confirmed {
                        kept.lock().unwrap().push(order);
                    }
                    if order % 2 == 0 {
                        let id = format!("rollback-{}", sn(order));
                        publish_rollback(&js, order, &id).await;
                        rolled_back.lock().unwrap().push(order);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    eventually("a third of the operations", Duration::from_secs(60), || {
        let done = done.clone();
        async move { (done.load(Ordering::SeqCst) >= 80).then_some(()) }
    })
    .await;
    app.worker(1).kill9();
    let replacement = app.spawn_process(Worker::Stock, &[]);
    app.adopt(replacement);
    for task in tasks {
        task.await.unwrap();
    }
    app.wait_for_workers(Worker::Stock, 2).await;
    rollback_settled(&app).await;
    // No rollback was lost: every one of them left its order returned.
    let orders = rolled_back.lock().unwrap().clone();
    assert_eq!(orders.len(), 120);
    for order in orders {
        let detail = app
            .ok("stock.sell_detail", json!({"order_sn": sn(order)}))
            .await;
        assert_eq!(detail["status"], "returned", "{strategy}: order {order}");
    }
    // No confirmed deduct was lost either.
    let kept = kept.lock().unwrap().clone();
    assert!(
        kept.len() >= 40,
        "{strategy}: only {} deducts confirmed",
        kept.len()
    );
    for order in kept {
        let detail = app
            .ok("stock.sell_detail", json!({"order_sn": sn(order)}))
            .await;
        assert_eq!(detail["status"], "deducted", "{strategy}: order {order}");
    }
    assert_conserved(&app).await;
}

macro_rules! per_strategy {
    ($($name:ident => $check:ident($strategy:literal);)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $check($strategy).await;
        }
    )*};
}

per_strategy! {
    oversell_atomic => oversell("atomic");
    oversell_pessimistic => oversell("pessimistic");
    oversell_optimistic => oversell("optimistic");
    oversell_kv_lock => oversell("kv_lock");
    deadlock_atomic => deadlock("atomic");
    deadlock_pessimistic => deadlock("pessimistic");
    deadlock_optimistic => deadlock("optimistic");
    deadlock_kv_lock => deadlock("kv_lock");
    rules_atomic => rules("atomic");
    rules_pessimistic => rules("pessimistic");
    rules_optimistic => rules("optimistic");
    rules_kv_lock => rules("kv_lock");
    kill9_atomic => kill9("atomic");
    kill9_pessimistic => kill9("pessimistic");
    kill9_optimistic => kill9("optimistic");
    kill9_kv_lock => kill9("kv_lock");
    oversell_batch => oversell("batch");
    deadlock_batch => deadlock("batch");
    rules_batch => rules("batch");
    kill9_batch => kill9("batch");
}

/// The same rollback twice (same Nats-Msg-Id), once more under another id, a malformed
/// event, and a fresh consumer replaying the whole stream: stock comes back exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_via_jetstream_returns_once_and_replay_changes_nothing() {
    let mut app = start("atomic", 1).await;
    set(&app, 1, 10).await;
    app.ok("stock.deduct", deduct_body(1, &[(1, 4)])).await;
    app.ok("stock.deduct", deduct_body(2, &[(1, 1)])).await;
    assert_eq!(level(&app, 1).await, (5, 5));

    let js = app.jetstream();
    let id = format!("rollback-{}", sn(1));
    assert!(!publish_rollback(&js, 1, &id).await);
    assert!(
        publish_rollback(&js, 1, &id).await,
        "deduplicated by the stream"
    );
    assert!(!publish_rollback(&js, 1, "rollback-again").await);
    // A rollback for an order stock never saw: null compensation.
    publish_rollback(&js, 3, &format!("rollback-{}", sn(3))).await;
    // Malformed: terminated, never blocks the consumer.
    js.publish("stock.rollback.1", "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    rollback_settled(&app).await;
    assert_eq!(level(&app, 1).await, (9, 1));
    assert_eq!(ledger_rows(&app, 1, "return").await, 1);
    app.err("stock.deduct", deduct_body(3, &[(1, 1)]), "order_cancelled")
        .await;

    // A fresh consumer replays from sequence 1: delete the durable, restart the worker,
    // which creates it again from nats-config/ (deliver_policy all).
    app.worker(0).kill9();
    js.get_stream("STOCK_ROLLBACK")
        .await
        .unwrap()
        .delete_consumer("stock-rollback")
        .await
        .unwrap();
    let process = app.spawn_process(Worker::Stock, &[]);
    app.adopt(process);
    app.wait_for_workers(Worker::Stock, 1).await;
    rollback_settled(&app).await;
    let info = js
        .get_stream("STOCK_ROLLBACK")
        .await
        .unwrap()
        .consumer_info("stock-rollback")
        .await
        .unwrap()
        .clone();
    assert!(info.delivered.stream_sequence >= 4, "{info:?}");
    assert_eq!(level(&app, 1).await, (9, 1));
    assert_eq!(ledger_rows(&app, 1, "return").await, 1);
    assert_conserved(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_bad_request_and_the_worker_keeps_serving() {
    let app = start("atomic", 1).await;
    set(&app, 1, 10).await;
    let max = "x".repeat(70 * 1024);
    let raw: [(&str, Vec<u8>); 4] = [
        ("stock.deduct", b"not json".to_vec()),
        ("stock.deduct", b"[1]".to_vec()),
        ("stock.return", b"{".to_vec()),
        ("stock.set", format!("{{\"pad\":\"{max}\"}}").into_bytes()),
    ];
    for (subject, body) in raw {
        let e = app.request_raw(subject, body).await.unwrap_err();
        assert_eq!(e.code(), "bad_request", "{subject}");
        assert_eq!(e.status, "400");
    }
    let many: Vec<Value> = (1..=101)
        .map(|g| json!({"goods_id": g, "quantity": 1}))
        .collect();
    let cases = [
        ("stock.deduct", json!({})),
        ("stock.deduct", json!({"order_sn": sn(1)})),
        ("stock.deduct", json!({"order_sn": sn(1), "items": []})),
        ("stock.deduct", json!({"order_sn": sn(1), "items": many})),
        (
            "stock.deduct",
            json!({"order_sn": 1, "items": [{"goods_id": 1, "quantity": 1}]}),
        ),
        (
            "stock.deduct",
            json!({"order_sn": "abc", "items": [{"goods_id": 1, "quantity": 1}]}),
        ),
        (
            "stock.deduct",
            json!({"order_sn": "0", "items": [{"goods_id": 1, "quantity": 1}]}),
        ),
        (
            "stock.deduct",
            json!({"order_sn": sn(1), "items": [{"goods_id": 1, "quantity": 0}]}),
        ),
        (
            "stock.deduct",
            json!({"order_sn": sn(1), "items": [{"goods_id": 1, "quantity": 10001}]}),
        ),
        (
            "stock.deduct",
            json!({"order_sn": sn(1), "items": [{"goods_id": 0, "quantity": 1}]}),
        ),
        // Duplicates summing past the per-line limit.
        (
            "stock.deduct",
            json!({"order_sn": sn(1), "items": [
            {"goods_id": 1, "quantity": 6000}, {"goods_id": 1, "quantity": 6000}]}),
        ),
        ("stock.set", json!({"goods_id": 1, "available": -1})),
        ("stock.set", json!({"goods_id": 1, "available": "5"})),
        ("stock.set", json!({"available": 5})),
        ("stock.get", json!({"goods_ids": []})),
        ("stock.get", json!({"goods_ids": [-1]})),
        ("stock.return", json!({"order_sn": ""})),
        ("stock.sell_detail", json!({"order_sn": 12})),
    ];
    for (subject, body) in cases {
        let e = app.err(subject, &body, "bad_request").await;
        assert!(!e.message.is_empty(), "{subject} {body}");
    }
    // Nothing was taken, and the worker still answers.
    assert_eq!(level(&app, 1).await, (10, 0));
    let detail = app
        .ok("stock.sell_detail", json!({"order_sn": sn(1)}))
        .await;
    assert_eq!(detail["status"], "none");
}

/// One deduct, sent once (no retry, so an error that a batch gave every order shows):
/// `Ok(reply)` or `Err(code)`.
async fn deduct_once(client: &async_nats::Client, body: &Value) -> Result<Value, String> {
    let reply = send_deduct(client, body).await;
    match error_code(&reply) {
        Some(code) => Err(code),
        None => Ok(serde_json::from_slice(&reply.payload).unwrap()),
    }
}

async fn version(app: &TestApp, goods_id: i64) -> i64 {
    let db = app.db(Worker::Stock).await;
    sqlx::query_scalar("SELECT version FROM stock WHERE goods_id = $1")
        .bind(goods_id)
        .fetch_one(&db)
        .await
        .unwrap()
}

/// `batch`, one worker, 100 orders at once on a hot goods with stock for 60 of them: a
/// quarter are multi-item orders short on another goods whatever happens (3 of goods 3
/// wanted, 2 there). Those fail alone with `insufficient_stock` and take nothing, so exactly
/// 60 of the others succeed, each with its own reply; no batch fails as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_refuses_a_short_order_alone_and_takes_the_rest() {
    let app = start("batch", 1).await;
    set(&app, 1, 60).await;
    set(&app, 2, 1000).await;
    set(&app, 3, 2).await;
    let version_before = version(&app, 1).await;
    let lines = |i: u64| -> Vec<(i64, i64)> {
        match i % 4 {
            0 => vec![(1, 1), (3, 3)],
            1 => vec![(1, 1)],
            2 => vec![(1, 1), (2, 1)],
            _ => vec![(2, 2), (1, 1)],
        }
    };
    let tasks: Vec<_> = (0..100u64)
        .map(|i| {
            let client = app.client().clone();
            let body = deduct_body(i, &lines(i));
            tokio::spawn(async move { (i, deduct_once(&client, &body).await) })
        })
        .collect();
    let (mut taken, mut goods2) = (0, 0);
    for task in tasks {
        let (i, result) = task.await.unwrap();
        match result {
            Ok(reply) => {
                assert_ne!(i % 4, 0, "order {i} is short on goods 3 but was deducted");
                assert_eq!(reply["order_sn"], sn(i));
                assert_eq!(reply["status"], "deducted");
                let item = |g: i64| {
                    reply["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|l| l["goods_id"] == g)
                        .map_or(0, |l| l["quantity"].as_i64().unwrap())
                };
                let expected: Vec<(i64, i64)> = {
                    let mut l = lines(i);
                    l.sort();
                    l
                };
                assert_eq!(
                    expected
                        .iter()
                        .map(|(g, _)| (*g, item(*g)))
                        .collect::<Vec<_>>(),
                    expected,
                    "order {i}: its own items in its reply"
                );
                taken += 1;
                goods2 += item(2);
            }
            Err(code) => assert_eq!(code, "insufficient_stock", "order {i}"),
        }
    }
    assert_eq!(taken, 60, "exactly the stock of the hot goods is sold");
    assert_eq!(level(&app, 1).await, (0, 60));
    assert_eq!(level(&app, 2).await, (1000 - goods2, goods2));
    assert_eq!(level(&app, 3).await, (2, 0), "short orders took nothing");
    let writes = version(&app, 1).await - version_before;
    assert!(
        writes < 60,
        "60 orders took goods 1 in {writes} writes: the deducts were never grouped"
    );
    assert_conserved(&app).await;
}

/// The `batch` writer's figures from `$SRV.STATS.stock` (one worker).
async fn batch_stats(app: &TestApp) -> Option<Value> {
    let stats = app
        .client()
        .request("$SRV.STATS.stock", "".into())
        .await
        .ok()?;
    let stats: Value = serde_json::from_slice(&stats.payload).ok()?;
    let endpoint = stats["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["subject"] == "stock.deduct")?;
    Some(endpoint["data"].clone())
}

/// `batch`: the same order_sn sent 40 times at once (and another one 40 times, half of the
/// copies with other items) while the writer is held up, so they queue into one batch.
/// Every copy of the first gets the same reply and it is deducted once, one ledger row per
/// line; for the second, whichever items came first win for all their copies and every copy
/// with the other items is a `conflict`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_deducts_an_order_sent_many_times_at_once_once() {
    let app = start("batch", 1).await;
    set(&app, 1, 100).await;
    set(&app, 2, 100).await;
    set(&app, 9, 1).await;

    // Hold goods 9's row: the writer's batch with a deduct of it waits for the lock, and
    // everything sent meanwhile queues for the next batch.
    let db = app.db(Worker::Stock).await;
    let mut holder = db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM stock WHERE goods_id = 9 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let blocked = {
        let client = app.client().clone();
        tokio::spawn(async move { deduct_once(&client, &deduct_body(900, &[(9, 1)])).await })
    };
    eventually(
        "the writer to wait for goods 9",
        Duration::from_secs(30),
        || {
            let db = db.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&db)
                .await
                .ok()?;
                (waiting > 0).then_some(())
            }
        },
    )
    .await;

    let same = deduct_body(1, &[(2, 1), (1, 2)]);
    let (mine, other) = (deduct_body(2, &[(1, 1)]), deduct_body(2, &[(1, 1), (2, 1)]));
    let mut bodies = vec![same.clone(); 40];
    bodies.extend((0..40).map(|i| {
        if i % 2 == 0 {
            mine.clone()
        } else {
            other.clone()
        }
    }));
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let client = app.client().clone();
            tokio::spawn(async move {
                let result = deduct_once(&client, &body).await;
                (body, result)
            })
        })
        .collect();
    eventually(
        "80 deducts queued behind the held-up batch",
        Duration::from_secs(30),
        || async {
            let queued = batch_stats(&app).await?["batch_queued"].as_u64()?;
            (queued >= 80).then_some(())
        },
    )
    .await;
    holder.rollback().await.unwrap();
    assert!(
        blocked.await.unwrap().is_ok(),
        "the held-up deduct goes through"
    );

    let mut replies: Vec<(Value, Result<Value, String>)> = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    // Order 1: forty identical replies.
    let first = replies[0].1.clone().expect("order 1 is deducted");
    assert_eq!(
        first["items"],
        json!([{"goods_id": 1, "quantity": 2}, {"goods_id": 2, "quantity": 1}])
    );
    for (_, result) in &replies[..40] {
        assert_eq!(
            result.as_ref(),
            Ok(&first),
            "every copy gets the first reply"
        );
    }
    assert_eq!(ledger_rows(&app, 1, "deduct").await, 2, "one row per line");
    // Order 2: one item list won; all its copies agree, every other copy is a conflict.
    let winner = replies[40..]
        .iter()
        .find_map(|(body, result)| result.as_ref().ok().map(|r| (body.clone(), r.clone())))
        .expect("one of order 2's item lists is deducted");
    for (body, result) in &replies[40..] {
        if body == &winner.0 {
            assert_eq!(result.as_ref(), Ok(&winner.1));
        } else {
            assert_eq!(result.as_ref(), Err(&"conflict".to_owned()));
        }
    }
    let winner_lines = winner.0["items"].as_array().unwrap().len() as i64;
    assert_eq!(ledger_rows(&app, 2, "deduct").await, winner_lines);
    let sold2 = winner_lines - 1;
    assert_eq!(level(&app, 1).await, (97, 3), "each order deducted once");
    assert_eq!(level(&app, 2).await, (99 - sold2, 1 + sold2));
    assert_conserved(&app).await;

    // The copies really met in one batch (otherwise this test would only have tried the
    // sell-record path): the writer folded repeated requests into fewer orders.
    let stats = batch_stats(&app).await.expect("$SRV.STATS.stock answers");
    let (orders, requests) = (
        stats["batch_orders"].as_u64().unwrap(),
        stats["batch_requests"].as_u64().unwrap(),
    );
    assert_eq!(requests, 81, "{stats}");
    assert!(orders < 10, "repeats were not folded: {stats}");
    assert_eq!(stats["batches_failed"], 0, "{stats}");
}

/// `batch` on three worker processes at once: 300 orders over a hot goods (stock for about
/// half of them) and a multi-item mix, each sent twice at the same time (the copies land
/// on different processes and must serialise on the sell record), and a return racing the
/// deduct of every tenth order (those take only plentiful goods, so no return frees a unit
/// of the hot goods and a refusal stays a refusal for both copies). No oversell,
/// conservation, both copies of an order agree, a raced return gave back exactly what was
/// deducted, and every other confirmed deduct is `deducted` afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_on_three_workers_never_oversells_and_keeps_every_answer() {
    let app = start("batch", 3).await;
    set(&app, 1, 150).await;
    for goods in 2..=4 {
        set(&app, goods, 1000).await;
    }
    let lines = |i: u64| -> Vec<(i64, i64)> {
        match (i % 10, i % 3) {
            (0, _) => vec![(3, 1), (2, 2)],
            (_, 0) => vec![(1, 1)],
            (_, 1) => vec![(4, 1), (1, 1), (2, 1)],
            _ => vec![(3, 2), (1, 1), (4, 1)],
        }
    };
    let tasks: Vec<_> = (0..300u64)
        .map(|i| {
            let client = app.client().clone();
            let body = deduct_body(i, &lines(i));
            tokio::spawn(async move {
                let copies =
                    futures::future::join(deduct_once(&client, &body), deduct_once(&client, &body));
                let returned = async {
                    if i % 10 != 0 {
                        return None;
                    }
                    let request = async_nats::Request::new()
                        .payload(json!({"order_sn": sn(i)}).to_string().into())
                        .timeout(Some(Duration::from_secs(20)));
                    let reply = client.send_request("stock.return", request).await.unwrap();
                    assert_eq!(error_code(&reply), None, "return of order {i}");
                    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
                    Some(reply["returned"].as_bool().unwrap())
                };
                let ((a, b), returned) = futures::future::join(copies, returned).await;
                (i, a, b, returned)
            })
        })
        .collect();
    let mut kept = Vec::new();
    for task in tasks {
        let (i, a, b, returned) = task.await.unwrap();
        let cancelled = Err("order_cancelled".to_owned());
        match returned {
            // Across stock partitions a copy that comes after the other was refused finds
            // the shares that had taken given back (`order_cancelled`) where one partition
            // would have found no record: both copies are refused either way.
            None if a != b && app.stock_split(&goods_of(&lines(i))) => {
                for copy in [&a, &b] {
                    assert!(
                        copy == &cancelled || copy == &Err("insufficient_stock".to_owned()),
                        "order {i}: {a:?} and {b:?}"
                    );
                }
            }
            None => {
                assert_eq!(a, b, "order {i}: both copies get the same answer");
                match a {
                    Ok(_) => kept.push(i),
                    Err(code) => assert_eq!(code, "insufficient_stock", "order {i}"),
                }
            }
            // The return came after a deduct and gave it back: a copy that came later
            // still is refused (anti-hanging), one that came earlier got the deduct. Across
            // stock partitions the return may pass the deduct in one and come first in
            // another: then the deduct is refused there and gives back what it took, and
            // the return gave back a share, so no copy need have succeeded.
            Some(true) => {
                assert!(
                    a.is_ok() || b.is_ok() || app.stock_split(&goods_of(&lines(i))),
                    "order {i}: returned but never deducted"
                );
                for copy in [&a, &b] {
                    assert!(copy.is_ok() || copy == &cancelled, "order {i}: {copy:?}");
                }
            }
            // The return came first (null compensation): both copies are refused.
            Some(false) => {
                assert_eq!(a, cancelled, "order {i}");
                assert_eq!(b, cancelled, "order {i}");
            }
        }
    }
    assert!(kept.len() >= 100, "only {} orders were kept", kept.len());
    for i in kept {
        let detail = app
            .ok("stock.sell_detail", json!({"order_sn": sn(i)}))
            .await;
        assert_eq!(detail["status"], "deducted", "order {i}");
    }
    for i in (0..300u64).step_by(10) {
        let detail = app
            .ok("stock.sell_detail", json!({"order_sn": sn(i)}))
            .await;
        assert_eq!(detail["status"], "returned", "order {i}");
    }
    let (available, sold) = level(&app, 1).await;
    assert!(
        available >= 0 && available + sold == 150,
        "{available}/{sold}"
    );
    assert_eq!(available, 0, "the hot goods sold out: 270 orders wanted it");
    assert_conserved(&app).await;
}

/// `batch` with its database gone: a burst of deducts lands in batches whose transaction
/// cannot begin, and every one of them is answered `unavailable` (no host, no SQL), each
/// with its own reply; the worker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_without_a_database_answers_every_deduct_unavailable() {
    let dead = format!(
        "postgres://shop:s3cret@127.0.0.1:{}/nowhere",
        shop_devstack::free_port().unwrap()
    );
    let app = TestApp::start_with_env(
        &[Worker::Stock],
        &[
            ("SHOP_STOCK__STRATEGY", "batch"),
            ("SHOP_STOCK__DATABASE_URL", dead.as_str()),
            ("SHOP_STOCK__MIGRATE_ON_START", "false"),
            ("SHOP_STOCK__ACQUIRE_TIMEOUT", "300ms"),
        ],
    )
    .await;
    let tasks: Vec<_> = (0..20u64)
        .map(|i| {
            let client = app.client().clone();
            let body = deduct_body(i, &[(1, 1)]);
            tokio::spawn(async move { deduct_once(&client, &body).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Err("unavailable".to_owned()));
    }
    let e = app
        .err("stock.deduct", deduct_body(99, &[(1, 1)]), "unavailable")
        .await;
    assert_eq!(e.status, "503");
    let text = format!("{} {}", e.message, serde_json::to_string(&e.body).unwrap()).to_lowercase();
    for secret in ["s3cret", "127.0.0.1", "nowhere", "insert", "postgres://"] {
        assert!(!text.contains(secret), "error leaks {secret:?}: {text}");
    }
    let stats = batch_stats(&app).await.expect("$SRV.STATS.stock answers");
    assert_eq!(stats["batch_requests"], 21, "{stats}");
    assert_eq!(stats["batches_failed"], stats["batches"], "{stats}");
}

/// `stock_deduct_batch`, the SQL function one `batch` transaction is, called directly with
/// a batch whose outcome depends on arrival order: each order is decided against what the
/// orders before it left, a short or unknown goods refuses its order alone (with the count it
/// saw), nothing of a refused order is taken or kept, and an order deducted before gets its
/// earlier record back.
#[tokio::test]
async fn stock_deduct_batch_decides_each_order_in_arrival_order() {
    let app = start("batch", 1).await;
    set(&app, 1, 4).await;
    set(&app, 2, 4).await;
    let db = app.db(Worker::Stock).await;
    let orders: [(i64, &[(i64, i64)]); 6] = [
        (101, &[(1, 3)]),
        (102, &[(1, 1), (2, 5)]), // goods 2 is short: nothing of it is taken
        (103, &[(1, 1), (2, 3)]),
        (104, &[(1, 1)]), // goods 1 is used up by now
        (105, &[(2, 1)]),
        (106, &[(9, 1)]), // goods 9 does not exist
    ];
    type Row = (
        i64,
        String,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<String>,
    );
    let call = |orders: &[(i64, &[(i64, i64)])]| {
        let sns: Vec<i64> = orders.iter().map(|o| o.0).collect();
        let items: Vec<String> = orders
            .iter()
            .map(|o| {
                json!(o
                    .1
                    .iter()
                    .map(|(g, q)| json!({"goods_id": g, "quantity": q}))
                    .collect::<Vec<_>>())
                .to_string()
            })
            .collect();
        let counts: Vec<i32> = orders.iter().map(|o| o.1.len() as i32).collect();
        let goods: Vec<i64> = orders
            .iter()
            .flat_map(|o| o.1.iter().map(|l| l.0))
            .collect();
        let qty: Vec<i64> = orders
            .iter()
            .flat_map(|o| o.1.iter().map(|l| l.1))
            .collect();
        sqlx::query_as::<_, Row>("SELECT * FROM stock_deduct_batch($1, $2, $3, $4, $5)")
            .bind(sns)
            .bind(items)
            .bind(counts)
            .bind(goods)
            .bind(qty)
            .fetch_all(&db)
    };
    let mut rows = call(&orders).await.unwrap();
    rows.sort_by_key(|r| r.0);
    // (order_sn, verdict, goods_id, requested, available) per order.
    type Verdict<'a> = (i64, &'a str, Option<i64>, Option<i64>, Option<i64>);
    let verdicts: Vec<Verdict> = rows
        .iter()
        .map(|r| (r.0, r.1.as_str(), r.2, r.3, r.4))
        .collect();
    assert_eq!(
        verdicts,
        [
            (101, "deducted", None, None, None),
            (102, "insufficient", Some(2), Some(5), Some(4)),
            (103, "deducted", None, None, None),
            (104, "insufficient", Some(1), Some(1), Some(0)),
            (105, "deducted", None, None, None),
            (106, "not_found", Some(9), Some(1), None),
        ]
    );
    assert_eq!(level(&app, 1).await, (0, 4));
    assert_eq!(level(&app, 2).await, (0, 4));
    let kept: Vec<(i64, String)> =
        sqlx::query_as("SELECT order_sn, status FROM sell_records ORDER BY order_sn")
            .fetch_all(&db)
            .await
            .unwrap();
    let kept: Vec<(i64, &str)> = kept.iter().map(|(sn, s)| (*sn, s.as_str())).collect();
    assert_eq!(
        kept,
        [(101, "deducted"), (103, "deducted"), (105, "deducted")]
    );
    let ledger: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT order_sn, goods_id, delta_sold FROM stock_ledger WHERE kind = 'deduct' ORDER BY order_sn, goods_id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(ledger, [(101, 1, 3), (103, 1, 1), (103, 2, 3), (105, 2, 1)]);
    // Again, with one order deducted before: its record comes back, locked, and nothing moves.
    let again = call(&orders[..1]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].0, again[0].1.as_str()), (101, "repeated"));
    assert_eq!(again[0].5.as_deref(), Some("deducted"));
    let stored: Value = serde_json::from_str(again[0].6.as_deref().unwrap()).unwrap();
    assert_eq!(stored, json!([{"goods_id": 1, "quantity": 3}]));
    assert_eq!(level(&app, 1).await, (0, 4));
}
