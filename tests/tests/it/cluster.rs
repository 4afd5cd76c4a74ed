//! A 3-node JetStream cluster under a mixed load, with the leader of `ORDER_TXN` SIGKILLed
//! and later restarted on its store (issue 10, point 3): nothing acknowledged is lost.

use std::time::Duration;

use shop_tests::{eventually, TestApp, Worker};

use crate::mixed::{audit_passes, check_acknowledged, wait_unpaid_closed, MixedLoad};
use crate::order::{check_invariants, goods, SETTLE};

const ALL: &[Worker] = &[Worker::Goods, Worker::Stock, Worker::Order];
/// Short pay windows so a share of the orders closes during the run; the check delay and
/// request timeout as order.rs has them for a loaded 2-core machine.
const ENV: &[(&str, &str)] = &[
    ("SHOP_ORDER__PAY_TIMEOUT", "3s"),
    ("SHOP_ORDER__CHECK_DELAY", "3s"),
    ("SHOP_ORDER__REQUEST_TIMEOUT", "2s"),
];
/// Every stream and KV bucket the workers create.
const STREAMS: &[&str] = &[
    "ORDER_TXN",
    "STOCK_ROLLBACK",
    "ORDER_EVENTS",
    "ORDER_TIMERS",
    "KV_order_nodes",
    "KV_order_node_marks",
];

/// `cluster.leader` of a stream, as `$JS.API.STREAM.INFO.<stream>` reports it.
async fn leader(app: &TestApp, stream: &str) -> Option<String> {
    let mut stream = app.jetstream().get_stream(stream).await.ok()?;
    let info = stream.info().await.ok()?;
    info.cluster.as_ref()?.leader.clone()
}

async fn replicas(app: &TestApp, stream: &str) -> usize {
    let mut stream = app.jetstream().get_stream(stream).await.unwrap();
    stream.info().await.unwrap().config.num_replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keeps_every_acknowledged_write_when_the_order_txn_leader_is_killed() {
    let started = std::time::Instant::now();
    let mut app = TestApp::start_with_nats_cluster(ALL, ENV, 3).await;
    // A second order worker started with another setting: start-up never changes the
    // replicas of a stream or bucket that exists.
    let second = app.spawn_process(Worker::Order, &[("SHOP_NATS__REPLICAS", "1")]);
    app.adopt(second);
    app.wait_for_workers(Worker::Order, 2).await;
    for stream in STREAMS {
        assert_eq!(replicas(&app, stream).await, 3, "replicas of {stream}");
    }

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(goods(&app, 100 + i, 1_000_000).await);
    }
    let load = MixedLoad::start(app.client().clone(), ids, 4, Duration::from_secs(5));
    load.wait_for_more(30, "before the kill").await;

    let old = leader(&app, "ORDER_TXN")
        .await
        .expect("ORDER_TXN has a leader");
    let node = app
        .nats_cluster()
        .index_of(&old)
        .unwrap_or_else(|| panic!("the leader {old} is not one of the test's nodes"));
    app.nats_cluster().node_mut(node).kill();
    let new = eventually("a new leader of ORDER_TXN", SETTLE, || async {
        leader(&app, "ORDER_TXN").await.filter(|l| *l != old)
    })
    .await;
    // The two nodes left carry the load: creates go on while the third is down.
    load.wait_for_more(30, "with the old leader down").await;

    let restarted = app.nats_cluster().node_mut(node);
    restarted.restart().expect("restarting the killed node");
    // Healthy = every stream and consumer it holds a replica of has caught up.
    restarted
        .wait_healthy(SETTLE)
        .expect("the restarted node catches up");
    load.wait_for_more(30, "after the restart").await;
    let tally = load.stop().await;
    eprintln!(
        "cluster: ORDER_TXN leader {old} killed, {new} took over; answers {:?}",
        tally.answers
    );

    wait_unpaid_closed(&app).await;
    check_invariants(&app).await;
    check_acknowledged(&app, &tally).await;
    for stream in STREAMS {
        assert_eq!(replicas(&app, stream).await, 3, "replicas of {stream}");
    }
    audit_passes(&app);
    eprintln!(
        "cluster: {} acknowledged orders checked in {:?}",
        tally.orders.len(),
        started.elapsed()
    );
}
