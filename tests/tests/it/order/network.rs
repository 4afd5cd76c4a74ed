//! Network faults (issue 12, point 3): the order worker reaches nats-server only through a
//! [`Proxy`] that the test cuts, stalls and slows under a load of creates (and of closes,
//! checks and outbox publishes, which all go through the same link). The worker reconnects
//! by itself, a request in flight ends as a success, `unavailable` or no answer, durable work
//! is redelivered, and nothing is lost or applied twice: the invariants, the audit and every
//! order's events hold after settling.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use shop_tests::{ask, Answer, Proxy};

use super::*;

/// How long each fault lasts: longer than a request's timeout on the order side (2 s), so
/// requests in flight through it do end without their answer.
const FAULT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_worker_rides_out_a_cut_a_stalled_and_a_slow_link() {
    let mut app = TestApp::start_with_env(&[Worker::Goods, Worker::Stock], FAST).await;
    let upstream = app.nats_url().trim_start_matches("nats://").to_owned();
    let proxy = Proxy::start(upstream).await;
    let order = app.spawn_process(Worker::Order, &[("SHOP_NATS__URL", &proxy.url())]);
    let order = app.adopt(order);
    app.wait_for_workers(Worker::Order, 1).await;
    let a = goods(&app, 100, 100_000).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let load = {
        let (client, stop, ok) = (app.client().clone(), stop.clone(), ok.clone());
        tokio::spawn(async move {
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut user = 0;
            while !stop.load(Ordering::Relaxed) {
                user += 1;
                let body = create_body(user, &[(a, 1)]);
                match ask(&client, "order.create", &body, Duration::from_secs(5)).await {
                    Answer::Reply(Ok(_)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Answer::Reply(Err(e)) => *errors.entry(e.code().to_owned()).or_default() += 1,
                    _ => *errors.entry("no answer".to_owned()).or_default() += 1,
                }
            }
            errors
        })
    };
    let progress = |what: String| {
        let ok = ok.clone();
        async move {
            let from = ok.load(Ordering::Relaxed);
            eventually(&what, SETTLE, || async {
                (ok.load(Ordering::Relaxed) >= from + 5).then_some(())
            })
            .await;
        }
    };
    progress("creates before the faults".into()).await;
    for fault in ["cut", "stall", "slow"] {
        match fault {
            "cut" => proxy.cut(),
            "stall" => proxy.stall(),
            _ => proxy.slow(Duration::from_millis(200)),
        }
        // The fault itself lasts a while: that is the scenario, not a wait for something.
        tokio::time::sleep(FAULT).await;
        proxy.heal();
        progress(format!("creates after the {fault}")).await;
    }
    stop.store(true, Ordering::Relaxed);
    let errors = load.await.unwrap();
    let unexpected: Vec<_> = errors
        .keys()
        .filter(|code| !["unavailable", "no answer"].contains(&code.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "answers other than unavailable: {errors:?}"
    );
    assert!(!app.worker(order).has_exited(), "the order worker died");

    check_invariants(&app).await;
    wait_outbox_drained(&app).await;
    eventually("shop audit to pass", SETTLE, || {
        let app = &app;
        async move {
            app.run_shop(&["audit", "--grace", "0s"])
                .status
                .success()
                .then_some(())
        }
    })
    .await;
    let all = every_order_has_its_events(&app, "network faults").await;
    eprintln!(
        "network faults: {} creates answered, {} orders, other answers {errors:?}",
        ok.load(Ordering::Relaxed),
        all.len()
    );
}
