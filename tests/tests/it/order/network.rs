//! Network faults (issue 12, point 3): the order worker reaches nats-server only through a
//! [`Proxy`] that the test cuts, stalls and slows under a load of creates (and of closes,
//! checks and outbox publishes, which all go through the same link). The worker reconnects
//! by itself, a request in flight ends as a success, `unavailable` or no answer, durable work
//! is redelivered, and nothing is lost or applied twice: the invariants, the audit and every
//! order's events hold after settling.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use shop_tests::Proxy;

use super::fault_load::{creates_until, only_unavailable, progress};

use super::*;

/// How long each fault lasts: longer than a request's timeout on the order side (2 s), so
/// requests in flight through it do end without their answer.
const FAULT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_worker_rides_out_a_cut_a_stalled_and_a_slow_link() {
    let mut app =
        crate::order::start_one_order_partition(&[Worker::Goods, Worker::Stock], FAST).await;
    let upstream = app.nats_url().trim_start_matches("nats://").to_owned();
    let proxy = Proxy::start(upstream).await;
    let order = app.spawn_process(Worker::Order, &[("SHOP_NATS__URL", &proxy.url())]);
    let order = app.adopt(order);
    app.wait_for_workers(Worker::Order, 1).await;
    let a = goods(&app, 100, 100_000).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let load = creates_until(&app, a, stop.clone(), ok.clone());
    progress(&ok, 5, "creates before the faults").await;
    for fault in ["cut", "stall", "slow"] {
        match fault {
            "cut" => proxy.cut(),
            "stall" => proxy.stall(),
            _ => proxy.slow(Duration::from_millis(200)),
        }
        // The fault itself lasts a while: that is the scenario, not a wait for something.
        tokio::time::sleep(FAULT).await;
        proxy.heal();
        progress(&ok, 5, &format!("creates after the {fault}")).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (created, errors) = load.await.unwrap();
    only_unavailable(&errors);
    assert!(!app.worker(order).has_exited(), "the order worker died");

    settled_and_audited(&app, "network faults").await;
    let all = every_order_has_its_events(&app, "network faults").await;
    eprintln!(
        "network faults: {} creates answered, {} orders, other answers {errors:?}",
        created,
        all.len()
    );
}
