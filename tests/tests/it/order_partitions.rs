//! Orders over several partitions (issue 19): each order lives in the partition that owns
//! its user's slot, its order_sn carries that slot, and every public subject reaches it
//! from any worker; the checker and the closer, shared by every partition, have the owner
//! decide; a worker of one partition killed mid-load loses nothing once the system settles.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shop_contracts::partition::{PartitionId, PartitionMap, Slot};
use shop_contracts::OrderSn;
use shop_tests::{ask, Answer, Partitions, TestApp, Worker};

use crate::order::{create_body, goods, settled_and_audited, sn_of};
use crate::partitions::{ALL, ENV, SETTLE};

const PARTITIONS: Partitions = Partitions { stock: 3, order: 3 };

async fn start() -> TestApp {
    TestApp::start_with_partitions(ALL, ENV, PARTITIONS).await
}

/// Users `1..`, until every order partition owns at least two: `(user, owner)`.
fn spread_users() -> Vec<(i64, PartitionId)> {
    let map = PartitionMap::even(PARTITIONS.order).unwrap();
    let mut users = Vec::new();
    let mut per: BTreeMap<PartitionId, usize> = BTreeMap::new();
    for user in 1.. {
        let owner = map.owner_of(user);
        if per.get(&owner).copied().unwrap_or(0) < 2 {
            *per.entry(owner).or_default() += 1;
            users.push((user, owner));
        }
        if per.len() == usize::from(PARTITIONS.order) && per.values().all(|&n| n == 2) {
            return users;
        }
    }
    unreachable!()
}

/// The order partitions whose database holds order `sn`.
async fn holders(app: &TestApp, sn: &str) -> Vec<u16> {
    let mut found = Vec::new();
    for (p, db) in app.order_dbs().await.iter().enumerate() {
        let here: Option<i64> =
            sqlx::query_scalar("SELECT order_sn FROM orders WHERE order_sn = $1")
                .bind(sn.parse::<i64>().unwrap())
                .fetch_optional(db)
                .await
                .unwrap();
        if here.is_some() {
            found.push(p as u16);
        }
    }
    found
}

/// Waits until order `sn` is `status`, read through the public `order.get`.
async fn wait_status(app: &TestApp, sn: &str, status: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = app.request("order.get", json!({"order_sn": sn})).await;
        if matches!(&now, Ok(order) if order["status"] == status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "order {sn}: {now:?}, want {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_live_in_their_users_partition_and_every_subject_finds_them() {
    let app = start().await;
    let a = goods(&app, 100, 1_000).await;
    let b = goods(&app, 250, 1_000).await;
    let users = spread_users();
    let mut orders: Vec<(i64, PartitionId, Value)> = Vec::new();
    for &(user, owner) in &users {
        for _ in 0..2 {
            let order = app
                .ok("order.create", create_body(user, &[(a, 1), (b, 2)]))
                .await;
            orders.push((user, owner, order));
        }
    }

    // Each order is in its owner's database alone, and its order_sn carries the user's slot.
    for (user, owner, order) in &orders {
        let sn = sn_of(order);
        assert_eq!(order["user_id"], *user);
        let carried = Slot::of_order(OrderSn::parse(&sn).unwrap());
        assert_eq!(carried, Slot::of_key(*user), "order {sn} of user {user}");
        assert_eq!(holders(&app, &sn).await, vec![owner.get()], "order {sn}");
    }
    let reached: BTreeSet<PartitionId> = orders.iter().map(|(_, p, _)| *p).collect();
    assert_eq!(reached.len(), usize::from(PARTITIONS.order));

    // Get, list, pay and cancel reach every order through the public subjects, whichever
    // worker takes the request (the queue group spreads them over every partition's).
    for (user, _, _) in orders.iter().step_by(2) {
        let listed = app.ok("order.list", json!({"user_id": user})).await;
        let sns: BTreeSet<String> = listed["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(sn_of)
            .collect();
        let want: BTreeSet<String> = orders
            .iter()
            .filter(|(u, _, _)| u == user)
            .map(|(_, _, o)| sn_of(o))
            .collect();
        assert_eq!(sns, want, "order.list of user {user}");
    }
    for (i, (_, _, order)) in orders.iter().enumerate() {
        let sn = sn_of(order);
        assert_eq!(app.ok("order.get", json!({"order_sn": sn})).await, *order);
        let done = if i % 2 == 0 {
            app.ok(
                "order.pay",
                json!({"order_sn": sn, "amount_cents": order["total_cents"]}),
            )
            .await
        } else {
            app.ok("order.cancel", json!({"order_sn": sn})).await
        };
        assert_eq!(
            done["status"],
            if i % 2 == 0 { "paid" } else { "cancelled" }
        );
    }
    // An order_sn no partition holds is not_found, from whichever partition its slot names.
    let unknown = app.request("order.get", json!({"order_sn": "12345"})).await;
    assert_eq!(unknown.unwrap_err().code(), "not_found");

    // An unpaid order in each partition closes at its deadline: the closer that receives
    // the fired deadline has its owner close it, and the stock comes back.
    let mut unpaid = Vec::new();
    for &(user, _) in users.iter().step_by(2) {
        unpaid.push(sn_of(
            &app.ok("order.create", create_body(user, &[(a, 3)])).await,
        ));
    }
    for sn in &unpaid {
        wait_status(&app, sn, "closed").await;
    }
    settled_and_audited(&app, "orders over partitions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_partition_worker_killed_under_load_loses_nothing() {
    let mut app = start().await;
    let a = goods(&app, 100, 2_000).await;
    let b = goods(&app, 300, 2_000).await;
    let users = spread_users();
    let client = app.client().clone();
    let load = tokio::spawn(async move {
        let mut answers = (0, 0);
        for i in 0..150 {
            let (user, _) = users[i % users.len()];
            let body = create_body(user, &[(a, 1), (b, 1)]);
            match ask(&client, "order.create", &body, Duration::from_secs(5)).await {
                Answer::Reply(Ok(order)) => {
                    answers.0 += 1;
                    if i % 3 == 0 {
                        let _ = ask(
                            &client,
                            "order.cancel",
                            &json!({"order_sn": sn_of(&order)}),
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
    // SIGKILL order partition 1's only worker a moment into the load (creates, half
    // messages and checks of its orders in flight), then start another.
    let deadline = Instant::now() + SETTLE;
    while app.order_count("SELECT count(*) FROM orders").await < 20 {
        assert!(Instant::now() < deadline, "the load made no orders");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victim = app
        .worker_of(Worker::Order, 1)
        .expect("order partition 1's worker");
    app.worker(victim).kill9();
    let replacement = app.spawn_partition(Worker::Order, 1, &[]);
    app.adopt(replacement);
    let (ok, failed) = load.await.unwrap();
    eprintln!("order partitions kill: {ok} created, {failed} failed or timed out");
    assert!(ok > 0);
    settled_and_audited(&app, "an order partition's worker killed").await;
}
