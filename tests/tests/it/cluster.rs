//! A 3-node JetStream cluster under a mixed load, with the leader of `ORDER_TXN` SIGKILLed
//! and later restarted on its store (issue 10, point 3): nothing acknowledged is lost. And
//! the order partitions' own streams placed on nodes of their own by tags (issue 19).

use std::time::Duration;

use shop_contracts::partition::{PartitionId, PartitionMap};
use shop_contracts::txn::OrderStreams;
use shop_tests::{eventually, TestApp, Worker};

use crate::mixed::{audit_passes, check_acknowledged, wait_unpaid_closed, MixedLoad};
use crate::order::{check_invariants, create_body, goods, SETTLE};

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

/// Issue 19, point 2: each order partition's half messages and deadlines live in streams of
/// its own, and `order.stream_tags` puts them on the node whose `server_tags` carry the tag,
/// so the partitions' stream leaders sit on three different nodes; creates of users of every
/// partition are checked and scheduled in their own partition's streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_partitions_streams_lead_on_the_node_its_tags_name() {
    let tags: Vec<Vec<String>> = (0..3).map(|i| vec![format!("p{i}")]).collect();
    let mut app = TestApp::start_with_tagged_nats_cluster(&tags, 3).await;
    app.spawn(Worker::Goods).await;
    app.spawn(Worker::Stock).await;
    for p in 0..3u16 {
        let tag = format!("p{p}");
        // One replica: an R3 stream placed by a tag needs three nodes carrying it (a cluster
        // of three groups of three, one group per partition).
        let worker = app.spawn_partition(
            Worker::Order,
            p,
            &[
                ("SHOP_ORDER__STREAM_TAGS", &tag),
                ("SHOP_ORDER__PAY_TIMEOUT", "10m"),
                ("SHOP_ORDER__TIMER", "schedule"),
            ],
        );
        app.adopt(worker);
    }
    app.wait_for_workers(Worker::Order, 3).await;
    let map = PartitionMap::even(3).unwrap();
    for p in 0..3u16 {
        let streams = OrderStreams::of(PartitionId::new(p).unwrap());
        let mut own = vec![streams.txn_stream(), streams.timers_stream()];
        if p > 0 {
            own.push(streams.events_stream());
        }
        for name in own {
            let on = eventually(&format!("{name} to have a leader"), SETTLE, || {
                leader(&app, &name)
            })
            .await;
            assert_eq!(on, format!("shop-{}", p + 1), "the leader of {name}");
        }
    }

    let a = goods(&app, 100, 100).await;
    let users: Vec<i64> = (1..=12).collect();
    let mut sns = Vec::new();
    for &user in &users {
        let order = app.ok("order.create", create_body(user, &[(a, 1)])).await;
        sns.push(order["order_sn"].as_str().unwrap().to_owned());
    }
    let expected: Vec<u64> = (0..3u16)
        .map(|p| {
            let owned = users.iter().filter(|&&u| map.owner_of(u).get() == p);
            owned.count() as u64
        })
        .collect();
    assert!(
        expected.iter().all(|&n| n > 0),
        "users of every partition: {expected:?}"
    );
    let scheduled = eventually(
        "each partition's deadlines in its own ORDER_TIMERS, every half message acked",
        SETTLE,
        || async {
            let mut per = Vec::new();
            let mut half_messages = 0;
            for p in 0..3u16 {
                let streams = OrderStreams::of(PartitionId::new(p).unwrap());
                half_messages += messages(&app, &streams.txn_stream()).await?;
                per.push(messages(&app, &streams.timers_stream()).await?);
            }
            (half_messages == 0 && per.iter().sum::<u64>() == users.len() as u64).then_some(per)
        },
    )
    .await;
    assert_eq!(scheduled, expected, "deadlines by partition");
    // Every `created` event in the contract's ORDER_EVENTS, under its contract subject,
    // whichever partition's stream it was published to.
    eventually(
        "ORDER_EVENTS to hold every created event",
        SETTLE,
        || async {
            let events = app.jetstream().get_stream("ORDER_EVENTS").await.ok()?;
            for sn in &sns {
                events
                    .get_last_raw_message_by_subject(&format!("order.events.{sn}.created"))
                    .await
                    .ok()?;
            }
            Some(())
        },
    )
    .await;
    check_invariants(&app).await;
}

async fn messages(app: &TestApp, stream: &str) -> Option<u64> {
    let mut stream = app.jetstream().get_stream(stream).await.ok()?;
    Some(stream.info().await.ok()?.state.messages)
}
