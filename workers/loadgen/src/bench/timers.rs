//! `shop bench timers`: pay deadlines at scale, in the timer mode the running order workers
//! use (`order.timer`, read from `$SRV.INFO.order`).
//!
//! 1. Seeds `waiting` unpaid orders in bulk, as a create leaves them: a `deducted` sell
//!    record, the ledger row and the count in the stock database, the order and its line in
//!    the order database (each written by one `INSERT ... SELECT FROM generate_series` per
//!    chunk, so nothing crosses the wire per row), and a half message on `ORDER_TXN`
//!    (published asynchronously). The checker then does what it does for a real create, and
//!    the bench waits until every order waits for its deadline.
//! 2. While they wait: nats-server's RSS and CPU, and the bytes of the two streams.
//! 3. Creates whose worker died after the deduct (a half message and a deduct, no order):
//!    how long until their stock is back (the target is the check delay plus 2 s).
//! 4. `burst` more orders whose deadlines all fall in the same second: how late each is
//!    closed (`closed_at - pay_deadline`, both by the database clock).
//!
//! Seeded order_sns are snowflakes of a millisecond a day ago, below any id a worker issues
//! now. The stack must be fresh: the bench reads stream sizes as its own.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::{self, consumer::PullConsumer};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shop_contracts::endpoint::{StockDeduct, StockSellDetail};
use shop_contracts::stock::SellStatus;
use shop_contracts::txn::{half_message_id, half_message_subject, HalfMessage};
use shop_contracts::OrderSn;
use shop_kit::client::{call, request_json};
use sqlx::PgPool;

use super::procs::{self, Component, Stack};
use super::request::TIMEOUT;
use super::{cpu, fixture, progress, publish_all, report, rss};
use crate::cli::TimersArgs;
use crate::BenchConfig;

/// The bench goods, away from the seed data and the other benches'.
const GOODS_ID: i64 = 4_000_001;
/// Rows per seeding transaction.
const CHUNK: u64 = 100_000;

pub async fn run(
    config: &BenchConfig,
    client: &async_nats::Client,
    args: &TimersArgs,
) -> anyhow::Result<()> {
    let mode = timer_mode(client).await?;
    let stack = Stack::of(config);
    let js = jetstream::new(client.clone());
    let stock = shop_kit::db::connect(&config.stock.url, 4, TIMEOUT)?;
    let orders = shop_kit::db::connect(&config.order.url, 4, TIMEOUT)?;
    let check_delay = args.check_delay.unwrap_or(config.check_delay);
    println!(
        "timers: mode {mode}, {} waiting, a burst of {} in one second, {} failed creates",
        args.waiting, args.burst, args.orphans
    );
    fixture::upsert_goods(client, GOODS_ID..GOODS_ID + 1).await?;
    fixture::fill_stock(client, GOODS_ID..GOODS_ID + 1).await?;
    let rss_before = rss::nats_server_kib(&stack);

    // 1. The waiting orders.
    let base = seed_base();
    let started = Instant::now();
    let pay_window = chrono::Duration::from_std(args.pay_window)?;
    let deadline = db_now(&orders).await? + pay_window;
    seed(
        &stock,
        &orders,
        &js,
        base,
        args.waiting,
        deadline,
        "seeding waiting orders",
    )
    .await?;
    let seeded = started.elapsed();
    wait_until_waiting(&js, &mode, args.waiting, args.give_up).await?;
    let settled = started.elapsed();
    println!(
        "  {} orders seeded in {:.1} s, all waiting after {:.1} s",
        args.waiting,
        seeded.as_secs_f64(),
        settled.as_secs_f64()
    );

    // 2. What waiting costs nats-server.
    let idle = idle_cost(&stack, args.idle).await;
    let streams = stream_bytes(&js).await;
    println!(
        "  nats-server while they wait: RSS {:.0} MiB (before seeding {:.0} MiB), CPU {:.1}% of a core; stream bytes {}",
        idle.rss_kib as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        idle.cpu_percent,
        streams
    );

    // 3. Creates whose worker died after the deduct.
    let orphan_base = base + args.waiting as i64 + 1_000_000;
    let rollbacks = orphans(
        client,
        &js,
        orphan_base,
        args.orphans,
        check_delay + args.give_up,
    )
    .await?;
    let worst = rollbacks.iter().flatten().copied().fold(0.0, f64::max);
    let missing = rollbacks.iter().filter(|r| r.is_none()).count();
    println!(
        "  failed creates rolled back after: {} (target: check delay {} s + 2 s){}",
        rollbacks
            .iter()
            .map(|r| r.map_or("never".to_owned(), |s| format!("{s:.1} s")))
            .collect::<Vec<_>>()
            .join(", "),
        check_delay.as_secs(),
        if missing > 0 {
            format!("; {missing} not within the give-up time")
        } else {
            String::new()
        }
    );

    // 4. Many deadlines in one second.
    let burst_base = orphan_base + 1_000_000;
    let burst_deadline = db_now(&orders).await? + chrono::Duration::from_std(args.burst_lead)?;
    seed(
        &stock,
        &orders,
        &js,
        burst_base,
        args.burst,
        burst_deadline,
        "seeding the burst",
    )
    .await?;
    let lateness = burst_lateness(
        &orders,
        burst_base,
        args.burst,
        burst_deadline,
        args.give_up,
    )
    .await?;
    println!(
        "  {} deadlines in one second: {} closed, lateness p50 {:.2} s, p99 {:.2} s, max {:.2} s (target p99 < 2 s)",
        args.burst, lateness.closed, lateness.p50, lateness.p99, lateness.max
    );

    let label = args.label.as_deref();
    let document = report::document(
        report::header("timers", label),
        json!({
            "timer": mode,
            "waiting": args.waiting,
            "seeded_s": seeded.as_secs_f64(),
            "all_waiting_after_s": settled.as_secs_f64(),
            "nats_rss_kib_before": rss_before,
            "nats_rss_kib_waiting": idle.rss_kib,
            "nats_cpu_percent_waiting": idle.cpu_percent,
            "stream_bytes": streams,
            "check_delay_s": check_delay.as_secs_f64(),
            "failed_create_rollback_s": rollbacks,
            "failed_create_rollback_worst_s": worst,
            "burst": args.burst,
            "burst_closed": lateness.closed,
            "burst_lateness_p50_s": lateness.p50,
            "burst_lateness_p99_s": lateness.p99,
            "burst_lateness_max_s": lateness.max,
        }),
    );
    let name = format!(
        "timers-{mode}-{}{}",
        args.waiting,
        label.map(|l| format!("-{l}")).unwrap_or_default()
    );
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&document)?)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `order.timer` of the running order workers, from `$SRV.INFO.order`.
async fn timer_mode(client: &async_nats::Client) -> anyhow::Result<String> {
    let info: Value = call(client, "$SRV.INFO.order", &json!({}), TIMEOUT)
        .await
        .context("no order worker answered $SRV.INFO.order: is the stack up?")?;
    info["metadata"]["timer"]
        .as_str()
        .map(str::to_owned)
        .context("the order workers do not say their timer mode: are they older than the bench?")
}

/// The first seeded order_sn: a snowflake of a millisecond a day ago, node 0, sequence 0.
fn seed_base() -> i64 {
    let day_ago = Utc::now().timestamp_millis() - 86_400_000 - shop_order::ids::EPOCH_MS;
    day_ago << 22
}

async fn db_now(pool: &PgPool) -> anyhow::Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT now()").fetch_one(pool).await?)
}

/// Writes `count` unpaid orders of one unit each, due at `deadline`, with order_sns from
/// `first`, as a create leaves them; then publishes their half messages.
async fn seed(
    stock: &PgPool,
    orders: &PgPool,
    js: &jetstream::Context,
    first: i64,
    count: u64,
    deadline: DateTime<Utc>,
    what: &str,
) -> anyhow::Result<()> {
    let bar = progress(what, 2 * count);
    let mut from = 0;
    while from < count {
        let n = CHUNK.min(count - from);
        let (lo, hi) = (first + from as i64, first + (from + n) as i64 - 1);
        let mut tx = stock.begin().await?;
        sqlx::query(
            "INSERT INTO sell_records (order_sn, status, items) \
             SELECT sn, 'deducted', jsonb_build_array(jsonb_build_object('goods_id', $3::bigint, 'quantity', 1)) \
             FROM generate_series($1::bigint, $2::bigint) sn",
        )
        .bind(lo)
        .bind(hi)
        .bind(GOODS_ID)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO stock_ledger (kind, goods_id, delta_available, delta_sold, order_sn) \
             SELECT 'deduct', $3, -1, 1, sn FROM generate_series($1::bigint, $2::bigint) sn",
        )
        .bind(lo)
        .bind(hi)
        .bind(GOODS_ID)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE stock SET available = available - $2, sold = sold + $2, version = version + 1, \
             updated_at = now() WHERE goods_id = $1",
        )
        .bind(GOODS_ID)
        .bind(n as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut tx = orders.begin().await?;
        sqlx::query(
            "INSERT INTO orders (order_sn, user_id, status, total_cents, address, receiver_name, \
                                 receiver_phone, pay_deadline) \
             SELECT sn, 1 + sn % 100000, 'unpaid', 100, 'bench', 'bench', '555-0100', $3 \
             FROM generate_series($1::bigint, $2::bigint) sn",
        )
        .bind(lo)
        .bind(hi)
        .bind(deadline)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO order_items (order_sn, goods_id, title, price_cents, quantity) \
             SELECT sn, $3, 'bench goods', 100, 1 FROM generate_series($1::bigint, $2::bigint) sn",
        )
        .bind(lo)
        .bind(hi)
        .bind(GOODS_ID)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        bar.inc(n);
        from += n;
    }
    publish_all(count, &bar, |i| publish_half_message(js, first + i as i64)).await?;
    bar.finish_and_clear();
    Ok(())
}

async fn publish_half_message(js: &jetstream::Context, sn: i64) -> anyhow::Result<()> {
    let sn = OrderSn::new(sn).map_err(|_| anyhow::anyhow!("order_sn {sn} out of range"))?;
    let half = HalfMessage {
        order_sn: sn,
        items: vec![shop_contracts::stock::OrderLine {
            goods_id: shop_contracts::GoodsId::new(GOODS_ID)
                .map_err(|_| anyhow::anyhow!("bad goods id"))?,
            quantity: shop_contracts::Quantity::new(1)
                .map_err(|_| anyhow::anyhow!("bad quantity"))?,
        }],
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        half_message_id(sn).as_str(),
    );
    js.publish_with_headers(
        half_message_subject(sn),
        headers,
        serde_json::to_vec(&half)?.into(),
    )
    .await?
    .await?;
    Ok(())
}

/// Waits until every seeded order waits for its deadline: in `schedule` mode its half
/// message is acked and its schedule stored; in `nak_delay` mode as many half messages as
/// the checker has slots were looked at (delivered twice) and the rest wait in the stream.
async fn wait_until_waiting(
    js: &jetstream::Context,
    mode: &str,
    waiting: u64,
    give_up: Duration,
) -> anyhow::Result<()> {
    let bar = progress("orders waiting for their deadline", waiting);
    let until = Instant::now() + give_up;
    let mut checker: PullConsumer = js
        .get_consumer_from_stream("order-txn-checker", "ORDER_TXN")
        .await?;
    loop {
        let info = checker.info().await?.clone();
        let done = if mode == "schedule" {
            let timers = messages(js, "ORDER_TIMERS").await?;
            let txn = messages(js, "ORDER_TXN").await?;
            bar.set_position(timers.min(waiting));
            txn == 0 && timers >= waiting
        } else {
            let slots = (info.config.max_ack_pending.max(0) as u64).min(waiting);
            bar.set_position(info.num_ack_pending as u64);
            info.num_ack_pending as u64 >= slots && info.delivered.consumer_sequence >= 2 * slots
        };
        if done {
            bar.finish_and_clear();
            return Ok(());
        }
        if Instant::now() >= until {
            bar.finish_and_clear();
            bail!("the seeded orders were not all waiting after {give_up:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn messages(js: &jetstream::Context, stream: &str) -> anyhow::Result<u64> {
    Ok(js.get_stream(stream).await?.info().await?.state.messages)
}

async fn stream_bytes(js: &jetstream::Context) -> Value {
    let mut bytes = serde_json::Map::new();
    for name in ["ORDER_TXN", "ORDER_TIMERS"] {
        if let Ok(mut stream) = js.get_stream(name).await {
            if let Ok(info) = stream.info().await {
                bytes.insert(name.to_owned(), json!(info.state.bytes));
            }
        }
    }
    Value::Object(bytes)
}

struct Idle {
    rss_kib: u64,
    cpu_percent: f64,
}

/// nats-server's RSS at the end of `window`, and the CPU it used during it.
async fn idle_cost(stack: &Stack, window: Duration) -> Idle {
    let ticks = || {
        procs::scan(stack)
            .into_iter()
            .filter(|p| p.component == Component::Nats)
            .map(|p| p.stat.own_ticks)
            .sum::<u64>()
    };
    let before = ticks();
    tokio::time::sleep(window).await;
    let used = ticks().saturating_sub(before) as f64 / cpu::clock_ticks_per_second();
    Idle {
        rss_kib: rss::nats_server_kib(stack),
        cpu_percent: 100.0 * used / window.as_secs_f64(),
    }
}

/// Publishes a half message and deducts one unit for each of `count` order_sns from
/// `first`, with no order (a create whose worker died after the deduct), and times how long
/// until each one's stock is back; `None` for one not back within `give_up`.
async fn orphans(
    client: &async_nats::Client,
    js: &jetstream::Context,
    first: i64,
    count: u64,
    give_up: Duration,
) -> anyhow::Result<Vec<Option<f64>>> {
    let one = |sn: i64| async move {
        publish_half_message(js, sn).await?;
        request_json::<StockDeduct>(
            client,
            json!({"order_sn": sn.to_string(), "items": [{"goods_id": GOODS_ID, "quantity": 1}]}),
            TIMEOUT,
        )
        .await
        .context("stock.deduct of a failed create")?;
        let started = Instant::now();
        while started.elapsed() < give_up {
            let detail = request_json::<StockSellDetail>(
                client,
                json!({"order_sn": sn.to_string()}),
                TIMEOUT,
            )
            .await
            .context("stock.sell_detail")?;
            if detail.status == SellStatus::Returned {
                return Ok(Some(started.elapsed().as_secs_f64()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(None)
    };
    futures::future::try_join_all((0..count).map(|i| one(first + i as i64))).await
}

struct Lateness {
    closed: i64,
    p50: f64,
    p99: f64,
    max: f64,
}

/// Waits until every order of the burst is closed (or `give_up` after its deadline), then
/// reads how late each close came, by the database clock.
async fn burst_lateness(
    orders: &PgPool,
    first: i64,
    count: u64,
    deadline: DateTime<Utc>,
    give_up: Duration,
) -> anyhow::Result<Lateness> {
    let last = first + count as i64 - 1;
    let bar = progress("burst orders closed", count);
    loop {
        let closed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE order_sn BETWEEN $1 AND $2 AND status = 'closed'",
        )
        .bind(first)
        .bind(last)
        .fetch_one(orders)
        .await?;
        bar.set_position(closed as u64);
        let now = db_now(orders).await?;
        if closed as u64 >= count || now > deadline + chrono::Duration::from_std(give_up)? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bar.finish_and_clear();
    let (closed, p50, p99, max): (i64, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT count(*), \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY late), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY late), \
                max(late) \
         FROM (SELECT EXTRACT(EPOCH FROM closed_at - pay_deadline)::double precision AS late \
               FROM orders WHERE order_sn BETWEEN $1 AND $2 AND status = 'closed') closes",
    )
    .bind(first)
    .bind(last)
    .fetch_one(orders)
    .await?;
    Ok(Lateness {
        closed,
        p50: p50.unwrap_or(f64::NAN),
        p99: p99.unwrap_or(f64::NAN),
        max: max.unwrap_or(f64::NAN),
    })
}
