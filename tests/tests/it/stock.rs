//! Stock service through NATS (CONTRACT section 3, the STOCK_ROLLBACK half of section 5, and
//! invariants 1, 2, 4, 5 and 6 of section 6), run for each of the four lock strategies.

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

fn deduct_body(order: u64, items: &[(i64, i64)]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(g, q)| json!({"goods_id": g, "quantity": q}))
        .collect();
    json!({"order_sn": sn(order), "items": items})
}

/// A deduct that retries the "try again" answers (`conflict` from contention, `unavailable`)
/// with the same order_sn, as a client must; returns the final error code or `None`.
async fn deduct_until_answered(client: &async_nats::Client, body: &Value) -> Option<String> {
    for _ in 0..50 {
        let request = async_nats::Request::new()
            .payload(serde_json::to_vec(body).unwrap().into())
            .timeout(Some(Duration::from_secs(20)));
        let reply = client
            .send_request("stock.deduct", request)
            .await
            .expect("stock.deduct answers");
        let code = error_code(&reply);
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
async fn assert_conserved(app: &TestApp) {
    let db = app.db(Worker::Stock).await;
    let goods: i64 = sqlx::query_scalar("SELECT count(*) FROM stock")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(goods > 0, "no stock to check");
    if let Err(wrong) = conservation(&db).await {
        panic!("conservation does not hold: {wrong}");
    }
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
    // The same order_sn with other items.
    app.err("stock.deduct", deduct_body(1, &[(1, 1)]), "conflict")
        .await;

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
    let none = app
        .ok("stock.sell_detail", json!({"order_sn": sn(2)}))
        .await;
    assert_eq!(none["status"], "none");
    assert_eq!(none["updated_at"], Value::Null);
    // The failed order can still be deducted later with what is there.
    app.ok("stock.deduct", deduct_body(2, &[(2, 4)])).await;
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
