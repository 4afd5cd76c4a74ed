//! Moving slots while the shop serves (issue 19, point 4): a live shop grows from one stock
//! and one order partition to two and to four, then shrinks to two, by `shop partitions
//! move stock|order`, under a load of creates (of goods that end up in different stock
//! partitions), pays and cancels whose clients retry every `unavailable` as its
//! `retry_after_ms` says. Every acknowledged create exists exactly once, in the partition
//! the final map names for its slot; every acknowledged pay and cancel is in effect; every
//! goods is in exactly one stock partition, its slot's owner's; nothing is left half moved;
//! the invariants and `shop audit` (which check every count against its sell records and
//! ledger) hold.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shop_contracts::partition::{PartitionMap, Slot};
use shop_contracts::OrderSn;
use shop_tests::{ask, Answer, Partitions, TestApp, Worker};

use crate::order::{create_body, goods, settled_and_audited, sn_of};
use crate::partitions::{ENV, SETTLE};

/// Partitions of each kind the shop may grow to (each a database with a worker from the
/// start; the maps decide which own slots).
const PARTITIONS: u16 = 4;
/// Goods on sale: each order takes two of them.
const GOODS: usize = 8;
/// Clients of the load, each a loop of create then pay, cancel or leave.
const CLIENTS: usize = 12;
/// How long one request waits; and how long one operation keeps retrying `unavailable`.
const ASK: Duration = Duration::from_secs(5);
const KEEP_TRYING: Duration = Duration::from_secs(20);

/// What the load was told was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Created,
    Paid,
    Cancelled,
}

#[derive(Default)]
struct Tally {
    /// Every create answered with an order, with what was done to it after.
    done: std::sync::Mutex<Vec<(String, Fate)>>,
    created: AtomicUsize,
    /// `unavailable` answers that were retried.
    retried: AtomicUsize,
    /// Operations that never got an answer, or kept being refused past [`KEEP_TRYING`].
    lost: AtomicUsize,
}

/// Asks until an answer other than `unavailable` comes (waiting what each refusal says),
/// or gives up after [`KEEP_TRYING`]: `None` when it never got one.
async fn until_answered(
    client: &async_nats::Client,
    subject: &str,
    body: &serde_json::Value,
    tally: &Tally,
) -> Option<Result<serde_json::Value, shop_tests::ErrorReply>> {
    let give_up = Instant::now() + KEEP_TRYING;
    while Instant::now() < give_up {
        match ask(client, subject, body, ASK).await {
            Answer::Reply(Err(refusal)) if refusal.code() == "unavailable" => {
                tally.retried.fetch_add(1, Ordering::Relaxed);
                let hint = refusal
                    .body
                    .error
                    .details
                    .get("retry_after_ms")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(100);
                // The server's own retry hint: pacing a client, not waiting for a condition.
                tokio::time::sleep(Duration::from_millis(hint)).await;
            }
            Answer::Reply(answer) => return Some(answer),
            Answer::TimedOut | Answer::NoResponders | Answer::Failed(_) => return None,
        }
    }
    None
}

/// One client's loop until `stop`: create for users `user, user + CLIENTS, ...`, then pay
/// one in three and cancel one in three.
async fn client_loop(
    client: async_nats::Client,
    goods: Vec<i64>,
    first_user: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut user = first_user;
    while !stop.load(Ordering::Relaxed) {
        user += CLIENTS;
        // Two goods, which end up in different stock partitions for most pairs.
        let (a, b) = (
            goods[user % GOODS],
            goods[(user / GOODS + user + 1) % GOODS],
        );
        let lines = if a == b {
            vec![(a, 2)]
        } else {
            vec![(a, 1), (b, 1 + (user % 2) as i64)]
        };
        let body = create_body(user as i64, &lines);
        let Some(answer) = until_answered(&client, "order.create", &body, &tally).await else {
            tally.lost.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let order = answer.unwrap_or_else(|e| panic!("create for user {user} refused: {e:?}"));
        tally.created.fetch_add(1, Ordering::Relaxed);
        let sn = sn_of(&order);
        let then = match user % 3 {
            0 => Some((
                "order.pay",
                json!({"order_sn": sn, "amount_cents": order["total_cents"]}),
                Fate::Paid,
            )),
            1 => Some(("order.cancel", json!({"order_sn": sn}), Fate::Cancelled)),
            _ => None,
        };
        let fate = match then {
            None => Fate::Created,
            Some((subject, body, fate)) => {
                match until_answered(&client, subject, &body, &tally).await {
                    Some(Ok(_)) => fate,
                    // Retried past its pay deadline (closed, or about to be): not done.
                    Some(Err(e)) if ["not_payable", "conflict"].contains(&e.code()) => {
                        Fate::Created
                    }
                    Some(Err(e)) => panic!("{subject} of {sn} refused: {e:?}"),
                    None => {
                        tally.lost.fetch_add(1, Ordering::Relaxed);
                        Fate::Created
                    }
                }
            }
        };
        tally.done.lock().unwrap().push((sn, fate));
    }
}

/// Waits until the load has created `more` orders since `from`.
async fn load_progresses(tally: &Tally, from: usize, more: usize) {
    let deadline = Instant::now() + SETTLE;
    while tally.created.load(Ordering::Relaxed) < from + more {
        assert!(
            Instant::now() < deadline,
            "the load stopped creating orders"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_move_under_load_from_one_partition_to_four_and_back_to_two() {
    let partitions = Partitions {
        stock: PARTITIONS,
        order: PARTITIONS,
    };
    let mut app = TestApp::start_with_partitions(&[Worker::Goods], ENV, partitions).await;
    // One partition owns every slot; the others are empty databases with a worker each.
    // The maps are written before any stock or order worker starts, so none ever routes by
    // another.
    for kind in [Worker::Stock, Worker::Order] {
        app.write_map(kind, &PartitionMap::default()).await;
        for p in 0..PARTITIONS {
            let worker = app.spawn_partition(kind, p, &[]);
            app.adopt(worker);
        }
        app.wait_for_workers(kind, usize::from(PARTITIONS)).await;
    }
    let mut on_sale = Vec::new();
    for i in 0..GOODS {
        on_sale.push(goods(&app, 100 + 50 * i as i64, 1_000_000).await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(client_loop(
                app.client().clone(),
                on_sale.clone(),
                i,
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();

    // 1 -> 2 -> 4 partitions of each kind, then back to 2: each move while the load runs.
    let moves = [
        ("128-255", "1"),
        ("64-127", "2"),
        ("192-255", "3"),
        ("64-127", "0"),
        ("192-255", "1"),
    ];
    for (slots, to) in moves {
        for kind in ["stock", "order"] {
            load_progresses(&tally, tally.created.load(Ordering::Relaxed), 15).await;
            let args = ["partitions", "move", kind, "--slots", slots, "--to", to];
            let out = tokio::task::block_in_place(|| app.run_shop(&args));
            assert!(
                out.status.success(),
                "shop partitions move {kind} --slots {slots} --to {to}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprint!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
    load_progresses(&tally, tally.created.load(Ordering::Relaxed), 15).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a load client panicked");
    }
    let done = tally.done.lock().unwrap().clone();
    eprintln!(
        "slot moves: {} created, {} unavailable answers retried, {} never answered",
        done.len(),
        tally.retried.load(Ordering::Relaxed),
        tally.lost.load(Ordering::Relaxed)
    );

    settled_and_audited(&app, "slot moves").await;

    // Where everything is: both final maps are two even partitions.
    let map = PartitionMap::even(2).unwrap();
    let order_dbs = app.order_dbs().await;
    let mut home = std::collections::HashMap::new();
    for (p, db) in order_dbs.iter().enumerate() {
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT order_sn, status FROM orders")
            .fetch_all(db)
            .await
            .unwrap();
        for (sn, status) in rows {
            let slot = Slot::of_order(OrderSn::new(sn).unwrap());
            assert_eq!(
                usize::from(map.owner(slot).get()),
                p,
                "order {sn} (slot {}) is in order partition {p}",
                slot.index()
            );
            assert!(
                home.insert(sn.to_string(), status).is_none(),
                "order {sn} is in two partitions"
            );
        }
    }
    for (sn, fate) in &done {
        let status = home
            .get(sn)
            .unwrap_or_else(|| panic!("acknowledged order {sn} is in no partition"));
        match fate {
            Fate::Paid => assert_eq!(status, "paid", "order {sn}"),
            Fate::Cancelled => assert_eq!(status, "cancelled", "order {sn}"),
            Fate::Created => assert!(
                ["unpaid", "closed", "paid", "cancelled"].contains(&status.as_str()),
                "order {sn}: {status}"
            ),
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (p, db) in app.dbs(Worker::Stock).await.iter().enumerate() {
        let here: Vec<i64> = sqlx::query_scalar("SELECT goods_id FROM stock")
            .fetch_all(db)
            .await
            .unwrap();
        for goods_id in here {
            assert_eq!(
                usize::from(map.owner_of(goods_id).get()),
                p,
                "goods {goods_id} is in stock partition {p}"
            );
            assert!(
                seen.insert(goods_id),
                "goods {goods_id} is in two partitions"
            );
        }
        let leaving: i64 = sqlx::query_scalar("SELECT count(*) FROM stock_leaving")
            .fetch_one(db)
            .await
            .unwrap();
        assert_eq!(leaving, 0, "stock partition {p} has goods half moved");
    }
    assert_eq!(seen.len(), GOODS, "every goods is in a stock partition");
    // The database's idea of an order_sn's slot is the contract's.
    let sql_slot: i32 = sqlx::query_scalar("SELECT order_slot($1)")
        .bind(done[0].0.parse::<i64>().unwrap())
        .fetch_one(&order_dbs[0])
        .await
        .unwrap();
    let sn = OrderSn::new(done[0].0.parse().unwrap()).unwrap();
    assert_eq!(sql_slot as usize, Slot::of_order(sn).index());
}
