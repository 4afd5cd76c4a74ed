//! Stock over several partitions (issue 19): each partition a database of its own and
//! workers of its own, the slot -> partition map in KV, clients unaware. A multi-item order
//! deducts its share in each owner; a refusal in one partition gives the others back through
//! the rollback path; a worker of one partition killed mid-load leaves the books exact once
//! the system settles; and the map is followed live.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use shop_contracts::partition::{PartitionId, PartitionMap};
use shop_tests::{ask, Answer, TestApp, Worker};

use crate::order::{check_invariants, create_body, goods, settled_and_audited, sn_of};

const PARTITIONS: u16 = 3;
pub(crate) const ENV: &[(&str, &str)] = &[
    ("SHOP_ORDER__PAY_TIMEOUT", "4s"),
    ("SHOP_ORDER__CHECK_DELAY", "2s"),
];
pub(crate) const ALL: &[Worker] = &[Worker::Goods, Worker::Stock, Worker::Order];
pub(crate) const SETTLE: Duration = Duration::from_secs(60);

async fn start() -> TestApp {
    TestApp::start_with_stock_partitions(ALL, ENV, PARTITIONS).await
}

/// Goods with `available` units, at least one owned by each partition, as `(id, owner)`.
async fn spread_goods(app: &TestApp, available: i64) -> Vec<(i64, PartitionId)> {
    let map = PartitionMap::even(PARTITIONS).unwrap();
    let mut found: Vec<(i64, PartitionId)> = Vec::new();
    while found.iter().map(|(_, p)| *p).collect::<BTreeSet<_>>().len() < usize::from(PARTITIONS) {
        let id = goods(app, 100, available).await;
        let owner = map.owner_of(id);
        if !found.iter().any(|(_, p)| *p == owner) {
            found.push((id, owner));
        }
        assert!(found.len() <= 64, "no spread found");
    }
    found
}

/// The share of `sn`'s sell record each partition's database holds: `(partition, status,
/// goods ids)`.
async fn shares(app: &TestApp, sn: &str) -> Vec<(u16, String, Vec<i64>)> {
    let mut out = Vec::new();
    for (p, db) in app.stock_dbs().await.iter().enumerate() {
        let row: Option<(String, Value)> =
            sqlx::query_as("SELECT status, items FROM sell_records WHERE order_sn = $1")
                .bind(sn.parse::<i64>().unwrap())
                .fetch_optional(db)
                .await
                .unwrap();
        if let Some((status, items)) = row {
            let ids = items
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["goods_id"].as_i64().unwrap())
                .collect();
            out.push((p as u16, status, ids));
        }
    }
    out
}

/// `available` of a goods, through the public `stock.get`.
async fn available(app: &TestApp, id: i64) -> i64 {
    app.ok("stock.get", json!({"goods_ids": [id]})).await["items"][0]["available"]
        .as_i64()
        .unwrap()
}

/// Waits until `available` of a goods is `want` (a partition restarting may answer
/// `unavailable` meanwhile).
async fn wait_available(app: &TestApp, id: i64, want: i64) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = app
            .request("stock.get", json!({"goods_ids": [id]}))
            .await
            .map(|reply| reply["items"][0]["available"].as_i64().unwrap());
        if matches!(now, Ok(n) if n == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "goods {id}: available {now:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `stock.get` of goods `id` says `not_found`: the workers route it by a map
/// that sends it to a partition without its row. `what` names the failure.
async fn wait_rerouted_away(app: &TestApp, id: i64, what: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        match app.request("stock.get", json!({"goods_ids": [id]})).await {
            Err(e) if e.body.error.code == shop_contracts::ErrorCode::NotFound => return,
            other => {
                assert!(Instant::now() < deadline, "{what}: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_across_partitions_deducts_each_share_in_its_owner_and_cancels_in_all() {
    let app = start().await;
    let spread = spread_goods(&app, 10).await;
    let items: Vec<(i64, i64)> = spread.iter().map(|(id, _)| (*id, 2)).collect();
    let order = app.ok("order.create", create_body(7, &items)).await;
    let sn = sn_of(&order);

    // Each partition holds exactly its own goods' share, under the same order_sn.
    let mut held = shares(&app, &sn).await;
    held.sort();
    let want: Vec<(u16, String, Vec<i64>)> = {
        let mut want: Vec<_> = spread
            .iter()
            .map(|(id, p)| (p.get(), "deducted".to_owned(), vec![*id]))
            .collect();
        want.sort();
        want
    };
    assert_eq!(held, want, "each partition holds its share");

    // Clients see one stock service: one read across partitions, in request order, and
    // one sell record for the order.
    let ids: Vec<i64> = spread.iter().rev().map(|(id, _)| *id).collect();
    let got = app.ok("stock.get", json!({"goods_ids": ids})).await;
    let got: Vec<(i64, i64)> = got["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["goods_id"].as_i64().unwrap(),
                i["available"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, ids.iter().map(|id| (*id, 8)).collect::<Vec<_>>());
    let detail = app.ok("stock.sell_detail", json!({"order_sn": sn})).await;
    assert_eq!(detail["status"], "deducted");
    assert_eq!(detail["items"].as_array().unwrap().len(), spread.len());

    // A repeat of the deduct changes nothing in any partition.
    let lines: Vec<Value> = items
        .iter()
        .map(|(g, q)| json!({"goods_id": g, "quantity": q}))
        .collect();
    app.ok("stock.deduct", json!({"order_sn": sn, "items": lines}))
        .await;
    for (id, _) in &spread {
        assert_eq!(available(&app, *id).await, 8);
    }

    // A cancel returns every share through STOCK_ROLLBACK.
    app.ok("order.cancel", json!({"order_sn": sn})).await;
    for (id, _) in &spread {
        wait_available(&app, *id, 10).await;
    }
    let detail = app.ok("stock.sell_detail", json!({"order_sn": sn})).await;
    assert_eq!(detail["status"], "returned");
    check_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_in_one_partition_gives_back_the_others_and_nothing_hangs() {
    let app = start().await;
    let spread = spread_goods(&app, 5).await;
    // The last goods cannot cover the order; the others can.
    let (short, _) = *spread.last().unwrap();
    app.ok("stock.set", json!({"goods_id": short, "available": 1}))
        .await;
    let items: Vec<(i64, i64)> = spread.iter().map(|(id, _)| (*id, 2)).collect();
    let refused = app
        .err("order.create", create_body(8, &items), "insufficient_stock")
        .await;
    assert_eq!(refused.body.error.details["goods_id"], short);
    // Every share that was taken comes back, and nothing more.
    for (id, _) in &spread {
        let want = if *id == short { 1 } else { 5 };
        wait_available(&app, *id, want).await;
    }

    // The same through the public stock.deduct with an order_sn of the caller's: refused,
    // given back, and a late repeat of that order_sn is refused in every partition that
    // took its share (anti-hanging), never deducting again.
    let sn = "7000000000000000001";
    let lines: Vec<Value> = items
        .iter()
        .map(|(g, q)| json!({"goods_id": g, "quantity": q}))
        .collect();
    app.err(
        "stock.deduct",
        json!({"order_sn": sn, "items": lines}),
        "insufficient_stock",
    )
    .await;
    let deadline = Instant::now() + SETTLE;
    while shares(&app, sn)
        .await
        .iter()
        .any(|(_, status, _)| status == "deducted")
    {
        assert!(Instant::now() < deadline, "a share of {sn} stays deducted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.ok("stock.set", json!({"goods_id": short, "available": 100}))
        .await;
    app.err(
        "stock.deduct",
        json!({"order_sn": sn, "items": lines}),
        "order_cancelled",
    )
    .await;
    for (id, _) in &spread {
        let want = if *id == short { 100 } else { 5 };
        assert_eq!(available(&app, *id).await, want, "goods {id}");
    }
    check_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_worker_killed_under_load_leaves_the_books_exact() {
    let mut app = start().await;
    let spread = spread_goods(&app, 1_000).await;
    let items: Vec<(i64, i64)> = spread.iter().map(|(id, _)| (*id, 1)).collect();
    let client = app.client().clone();
    let load = tokio::spawn(async move {
        let mut answers = (0, 0);
        for i in 0..150 {
            let body = create_body(100 + i % 7, &items);
            match ask(&client, "order.create", &body, Duration::from_secs(5)).await {
                Answer::Reply(Ok(order)) => {
                    answers.0 += 1;
                    if i % 3 == 0 {
                        let sn = sn_of(&order);
                        let _ = ask(
                            &client,
                            "order.cancel",
                            &json!({"order_sn": sn}),
                            Duration::from_secs(5),
                        )
                        .await;
                    }
                }
                _ => answers.1 += 1,
            }
        }
        answers
    });
    // SIGKILL partition 1's only worker a moment into the load, then start another.
    let deadline = Instant::now() + SETTLE;
    while available(&app, spread[0].0).await > 990 {
        assert!(Instant::now() < deadline, "the load made no orders");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victim = app.stock_worker_of(1).expect("partition 1's worker");
    app.worker(victim).kill9();
    let replacement = app.spawn_stock_partition(1, &[]);
    app.adopt(replacement);
    let (ok, failed) = load.await.unwrap();
    eprintln!("partitions kill: {ok} created, {failed} failed or timed out");
    assert!(ok > 0);
    settled_and_audited(&app, "a partition's worker killed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_follow_a_new_map_revision_without_a_restart() {
    // Two partitions, partition 0 owning every slot: goods land in its database.
    let app = TestApp::start_with_stock_map(ALL, ENV, 2, &PartitionMap::default()).await;
    let id = goods(&app, 100, 10).await;
    assert_eq!(available(&app, id).await, 10);
    let in_p0: Option<(i64,)> = sqlx::query_as("SELECT available FROM stock WHERE goods_id = $1")
        .bind(id)
        .fetch_optional(&app.stock_dbs().await[0])
        .await
        .unwrap();
    assert_eq!(in_p0, Some((10,)));
    // Giving every slot to partition 1 sends the goods' requests there: partition 1 has no
    // row for it, so the public read says not_found once the workers follow the map.
    let everything_to_1 = PartitionMap::default()
        .with_moved(0..=255, PartitionId::new(1).unwrap())
        .unwrap();
    app.write_stock_map(&everything_to_1).await;
    let shown = app.run_shop(&["partitions"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("map revision 2") && shown.contains("slots   0-255  partition 1"),
        "shop partitions:\n{shown}"
    );
    wait_rerouted_away(&app, id, "the map was not followed").await;
}

/// The steps only a deduct across partitions has (`shop_kit::crash::PARTITION_POINTS`): every
/// stock worker armed, a create refused in one partition after another took its share; the
/// worker routing it dies there, the caller gets no answer, replacements start, and once the
/// checker has settled the order_sn every unit is back and the audit is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_partitions_settles_through_the_checker() {
    for (point, _, _) in shop_kit::crash::PARTITION_POINTS {
        let mut app = TestApp::start_with_stock_partitions(
            &[Worker::Goods, Worker::Order],
            &[
                ("SHOP_ORDER__CHECK_DELAY", "2s"),
                ("SHOP_ORDER__REQUEST_TIMEOUT", "2s"),
            ],
            PARTITIONS,
        )
        .await;
        for p in 0..PARTITIONS {
            let armed = app.spawn_stock_partition(p, &[("SHOP_CRASH_AT", point)]);
            app.adopt(armed);
        }
        app.wait_for_workers(Worker::Stock, usize::from(PARTITIONS))
            .await;
        let spread = spread_goods(&app, 5).await;
        let (short, _) = *spread.last().unwrap();
        app.ok("stock.set", json!({"goods_id": short, "available": 1}))
            .await;
        let items: Vec<(i64, i64)> = spread.iter().map(|(id, _)| (*id, 2)).collect();
        let answer = ask(
            app.client(),
            "order.create",
            &create_body(9, &items),
            Duration::from_secs(5),
        )
        .await;
        assert!(
            !matches!(answer, Answer::Reply(Ok(_))),
            "{point}: the create cannot succeed: {answer:?}"
        );
        // The routing worker died at the point; the others may still be running.
        let deadline = Instant::now() + SETTLE;
        let dead = loop {
            if let Some(dead) = (0..PARTITIONS).find(|p| app.stock_worker_of(*p).is_none()) {
                break dead;
            }
            assert!(Instant::now() < deadline, "{point}: no worker reached it");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let replacement = app.spawn_stock_partition(dead, &[]);
        app.adopt(replacement);
        app.wait_for_workers(Worker::Stock, usize::from(PARTITIONS))
            .await;
        for (id, _) in &spread {
            let want = if *id == short { 1 } else { 5 };
            wait_available(&app, *id, want).await;
        }
        settled_and_audited(&app, point).await;
        eprintln!("{point}: the router died there; settled and audited");
    }
}

/// The map is followed when its watch breaks: the server forgets the watch's consumer (as a
/// restart does to an ephemeral one), the watch misses its heartbeats and is opened again,
/// where a worker whose watch ended used to stop (found by the soak after nats-server
/// restarts); a revision written afterwards still reroutes the goods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_is_followed_after_its_watch_breaks() {
    let mut app = TestApp::start_with_stock_map(ALL, ENV, 2, &PartitionMap::default()).await;
    let id = goods(&app, 100, 10).await;
    assert_eq!(available(&app, id).await, 10);
    let js = app.jetstream();
    let stream = js
        .get_stream("KV_shop_partitions")
        .await
        .expect("the partition bucket's stream");
    let names: Vec<String> = stream
        .consumer_names()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|name| name.expect("a consumer name"))
        .collect();
    // An order worker follows both maps: its own, and the stock map (its deducts go to the
    // stock partition that owns their goods).
    let watchers = usize::from(app.stock_partitions() + 2 * app.partitions().order);
    assert_eq!(
        names.len(),
        watchers,
        "one watch per stock worker, two per order worker: {names:?}"
    );
    for name in &names {
        stream
            .delete_consumer(name)
            .await
            .expect("deleting a watch");
    }
    let deadline = Instant::now() + SETTLE;
    while app
        .worker_log_lines("missed idle heartbeat")
        .lines()
        .count()
        < watchers
    {
        assert!(
            Instant::now() < deadline,
            "no watch noticed its consumer was gone"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let everything_to_1 = PartitionMap::default()
        .with_moved(0..=255, PartitionId::new(1).unwrap())
        .unwrap();
    app.write_stock_map(&everything_to_1).await;
    wait_rerouted_away(&app, id, "the map was not followed after the watch broke").await;
    for p in 0..2 {
        assert!(
            app.stock_worker_of(p).is_some(),
            "partition {p}'s worker stopped"
        );
    }
}
