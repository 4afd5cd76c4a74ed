//! Many workers of each kind under a mixed load, one of each kind SIGKILLed mid-run and
//! replaced (issue 10, point 4): callers see only answers the contract allows, no order_sn
//! repeats, and the system settles to a clean audit.

use std::time::Duration;

use shop_tests::{TestApp, Worker};

use crate::mixed::{audit_passes, check_acknowledged, wait_unpaid_closed, MixedLoad};
use crate::order::{check_invariants, goods};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_workers_one_of_each_kind_killed_and_replaced_mid_load() {
    let started = std::time::Instant::now();
    let kinds = [
        Worker::Goods,
        Worker::Goods,
        Worker::Stock,
        Worker::Stock,
        Worker::Order,
        Worker::Order,
        Worker::Order,
    ];
    let mut app = TestApp::start_with_env(
        &kinds,
        &[
            ("SHOP_ORDER__PAY_TIMEOUT", "3s"),
            ("SHOP_ORDER__CHECK_DELAY", "3s"),
            ("SHOP_ORDER__REQUEST_TIMEOUT", "2s"),
        ],
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(goods(&app, 100 + i, 1_000_000).await);
    }
    // Requests that went to a killed worker are never answered: the load gives up on them
    // after 5 s, longer than any answer of a live worker takes (order.request_timeout 2 s).
    let load = MixedLoad::start(app.client().clone(), ids, 6, Duration::from_secs(5));
    load.wait_for_more(30, "before the kills").await;

    // One of each kind at once, while their requests are in flight: the first goods, the
    // first stock and the first order worker (indices in `kinds`).
    for index in [0, 2, 4] {
        app.worker(index).kill9();
    }
    for kind in [Worker::Goods, Worker::Stock, Worker::Order] {
        // Waits until the replacement answers beside the survivors.
        app.spawn(kind).await;
    }
    load.wait_for_more(60, "after the replacements started")
        .await;
    let tally = load.stop().await;
    eprintln!("workers: answers {:?}", tally.answers);

    // Stock is plentiful and no create carries an idempotency key, so a caller has no
    // reason to see anything but success, `unavailable` (a worker it needed died under it)
    // or no answer at all (the worker it reached died).
    let outside = tally.answers_outside(&["ok", "unavailable", "timed out"]);
    assert!(outside.is_empty(), "callers saw {outside:?}");
    assert!(tally.orders.len() >= 90);

    wait_unpaid_closed(&app).await;
    check_invariants(&app).await;
    // No order_sn repeats among the acknowledged creates, and each one survived.
    check_acknowledged(&app, &tally).await;
    audit_passes(&app);
    eprintln!(
        "workers: {} acknowledged orders, settled and audited in {:?}",
        tally.orders.len(),
        started.elapsed()
    );
}
