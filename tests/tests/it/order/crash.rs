//! A crash at every step (issue 12, point 1): for each crash point of
//! `shop_kit::crash::POINTS`, a small mixed load runs while the only worker of the point's
//! kind is armed with it. The worker must die there (a point never reached fails the test),
//! a replacement starts, the load finishes, and once the system has settled: no oversold or
//! leaked unit and every order agreeing with its stock (the invariants), `shop audit` clean,
//! and every order with exactly the events of its life in ORDER_EVENTS.

use shop_tests::{ask, Answer};

use super::*;

/// A short pay window, so unpaid orders close within the test; a short check delay, so
/// orphans are fenced within it.
const ENV: &[(&str, &str)] = &[
    ("SHOP_ORDER__PAY_TIMEOUT", "4s"),
    ("SHOP_ORDER__CHECK_DELAY", "3s"),
    ("SHOP_ORDER__REQUEST_TIMEOUT", "2s"),
];
/// How long a load request waits: a dead worker's callers time out.
const ASK: Duration = Duration::from_secs(5);
/// Crash points swept at once (each with its own stack of processes).
const AT_ONCE: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_leaves_the_books_exact() {
    let points = shop_kit::crash::POINTS;
    let mut seen = Vec::new();
    for group in points.chunks(AT_ONCE) {
        let outcomes = join_all(group.iter().map(|(point, kind, _)| crash_at(point, kind))).await;
        seen.extend(outcomes);
    }
    for line in &seen {
        eprintln!("{line}");
    }
}

/// One sweep step; returns what it saw, for the log.
async fn crash_at(point: &'static str, kind: &str) -> String {
    let started = Instant::now();
    let armed_kind = match kind {
        "order" => Worker::Order,
        "stock" => Worker::Stock,
        other => panic!("no crash points in {other}"),
    };
    let others: Vec<Worker> = ALL.iter().copied().filter(|k| *k != armed_kind).collect();
    let mut app = TestApp::start_with_env(&others, ENV).await;
    let armed = app.spawn_process(armed_kind, &[("SHOP_CRASH_AT", point)]);
    let armed = app.adopt(armed);
    // Over several partitions the armed worker is partition 0's (some of the load's goods
    // and users live there); the others run unarmed.
    let count = app.partitions().of(armed_kind);
    for p in 1..count {
        let plain = app.spawn_partition(armed_kind, p, &[]);
        app.adopt(plain);
    }
    let partitions = usize::from(count);
    app.wait_for_workers(armed_kind, partitions).await;
    let a = goods(&app, 100, 1000).await;
    let b = goods(&app, 250, 1000).await;

    // Two orphans, as a create that died leaves them: one half message with its deduct,
    // one without. The checker must fence both. Their order_sns carry slot 0, which
    // partition 0 (the armed worker's, over several partitions) owns.
    let slot_bits = 0xff_i64 << shop_contracts::OrderSn::SLOT_SHIFT;
    for (i, deduct) in [(1_i64, true), (2, false)] {
        let sn = format!("{}", (6_000_000_000_000_000 + i) & !slot_bits);
        let lines = json!([{"goods_id": a, "quantity": 1}]);
        let half = json!({"order_sn": sn, "items": lines});
        store(&app, format!("order.txn.{sn}"), &half).await;
        if deduct {
            let _ = ask(
                app.client(),
                "stock.deduct",
                &json!({"order_sn": sn, "items": lines}),
                ASK,
            )
            .await;
        }
    }

    let mut created = load(&app, a, b, 0..24).await;
    // The armed worker must have died at its point.
    assert!(
        app.worker(armed).wait_exit(Duration::from_secs(60)).await,
        "{point}: the worker never reached its crash point"
    );
    let replacement = app.spawn_process(armed_kind, &[]);
    app.adopt(replacement);
    app.wait_for_workers(armed_kind, partitions).await;
    created.extend(load(&app, a, b, 24..36).await);

    settled_and_audited(&app, point).await;
    let all = every_order_has_its_events(&app, point).await;
    format!(
        "{point}: died as armed; {} orders answered created, {} in the database; settled and audited in {:.1?}",
        created.len(),
        all.len(),
        started.elapsed()
    )
}

/// Creates orders for users `users` (one in three also paid, one in three cancelled, the
/// rest left to close at the deadline), tolerating no answer; returns the order_sns created.
async fn load(app: &TestApp, a: i64, b: i64, users: std::ops::Range<i64>) -> Vec<String> {
    let client = app.client().clone();
    let tasks = users.map(|user| {
        let client = client.clone();
        async move {
            let body = create_body(user + 1, &[(a, 1 + user % 2), (b, 1)]);
            let Answer::Reply(Ok(order)) = ask(&client, "order.create", &body, ASK).await else {
                return None;
            };
            let sn = sn_of(&order);
            let total = order["total_cents"].as_i64().unwrap();
            match user % 3 {
                0 => {
                    let pay = json!({"order_sn": sn, "amount_cents": total});
                    let _ = ask(&client, "order.pay", &pay, ASK).await;
                }
                1 => {
                    let _ = ask(&client, "order.cancel", &json!({"order_sn": sn}), ASK).await;
                }
                _ => {}
            }
            Some(sn)
        }
    });
    join_all(tasks).await.into_iter().flatten().collect()
}
