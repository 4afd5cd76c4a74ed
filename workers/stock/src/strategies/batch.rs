//! `batch`: group commit for hot goods. This module owns the per-process deduct queue, its
//! single writer task, and the SQL of one batch.
//!
//! Every `stock.deduct` handler of the process puts its order on one queue and awaits its
//! own reply. One writer task takes everything queued (up to [`MAX_ORDERS`]) the moment the
//! previous batch's transaction has finished, runs the whole batch in one transaction,
//! answers each waiter, and loops: while one transaction is in flight the next batch fills,
//! with no timer, so an idle worker runs a single deduct at once and a busy one pays one
//! commit (and one row-lock hold per goods) for many orders.
//!
//! One batch, in [`deduct_batch`], inside the caller's transaction:
//!
//! 1. claim every order's sell record (`INSERT ... ON CONFLICT DO NOTHING`, ascending
//!    `order_sn`): a duplicate in flight in another process waits on the key, as in the
//!    other strategies;
//! 2. orders whose record existed already get the earlier answer (read `FOR UPDATE`, so a
//!    concurrent return cannot interleave): the same items, `conflict`, `order_cancelled`;
//! 3. lock the counts of every goods the new orders name (`FOR UPDATE`, ascending
//!    `goods_id`, so batches of several processes cannot deadlock);
//! 4. decide each new order in memory, in arrival order, against those counts: taken whole,
//!    or refused alone (`insufficient_stock`, `not_found`), never the whole batch;
//! 5. one statement writes it: delete the refused orders' claims, subtract the summed
//!    quantity per goods (`version + 1`), one `deduct` ledger row per goods per order.
//!
//! Each order keeps its own sell record, reply and error; only a failure of the transaction
//! itself (database down) answers every order of the batch with that error, and then nothing
//! of the batch was written.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use shop_contracts::stock::{OrderLine, SellStatus};
use shop_contracts::OrderSn;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::earlier_answer;
use crate::repo::{self, Entry};
use crate::StockError;

/// Deducts one batch takes at most: bounds a transaction's size and how long it holds its
/// row locks. A burst larger than this is simply the next batch.
pub const MAX_ORDERS: usize = 256;

/// Deducts that may wait for the writer; beyond this the handlers wait to enqueue
/// (back-pressure instead of an unbounded queue).
const QUEUE: usize = 4 * MAX_ORDERS;

/// What one deduct is answered with.
pub type Outcome = Result<Vec<OrderLine>, StockError>;

/// One order of a batch: its `order_sn` and its items, summed per goods and in ascending
/// `goods_id` order (as [`repo::lines_to_items`] makes them and sell records store them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub sn: OrderSn,
    pub items: Vec<OrderLine>,
}

/// The sending side of the process's deduct queue; cheap to clone, one per handler.
#[derive(Clone)]
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

/// What the writer has done so far, for `$SRV.STATS.stock`.
#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    failed: AtomicU64,
    orders: AtomicU64,
    requests: AtomicU64,
}

impl Counters {
    fn count(&self, batch: &Batch, failed: bool) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(u64::from(failed), Ordering::Relaxed);
        self.orders
            .fetch_add(batch.orders.len() as u64, Ordering::Relaxed);
        self.requests
            .fetch_add(batch.requests as u64, Ordering::Relaxed);
    }
}

/// One deduct waiting for its batch.
struct Job {
    order: Order,
    reply: oneshot::Sender<Outcome>,
}

impl Batcher {
    /// Spawns the process's one writer task on `pool`. The task ends when every `Batcher`
    /// is dropped; its handle lets the service stop when it ends for any other reason.
    pub fn start(pool: PgPool) -> (Batcher, JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let writer = tokio::spawn(write_batches(pool, queue, counters.clone()));
        (Batcher { jobs, counters }, writer)
    }

    /// The writer's figures: deducts queued now (not yet in a batch), and batches (of which
    /// failed), orders and requests so far. `requests / batches` is the mean batch size;
    /// `requests > orders` when repeats of an order were folded into one entry.
    pub fn stats(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
            "batch_queued": self.jobs.max_capacity() - self.jobs.capacity(),
            "batches": c.batches.load(Ordering::Relaxed),
            "batches_failed": c.failed.load(Ordering::Relaxed),
            "batch_orders": c.orders.load(Ordering::Relaxed),
            "batch_requests": c.requests.load(Ordering::Relaxed),
        })
    }

    /// Queues a deduct of `items` (as [`Order::items`]) for `sn` and waits for its batch.
    pub async fn deduct(&self, sn: OrderSn, items: Vec<OrderLine>) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            order: Order { sn, items },
            reply,
        };
        self.jobs.send(job).await.map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

fn writer_gone() -> StockError {
    StockError::Unexpected("the batch writer has stopped".to_owned())
}

/// The writer: one batch at a time, each taken the moment the previous one is answered.
async fn write_batches(pool: PgPool, mut queue: mpsc::Receiver<Job>, counters: Arc<Counters>) {
    let mut deferred = VecDeque::new();
    while let Some(batch) = next_batch(&mut queue, &mut deferred).await {
        let started = Instant::now();
        let (outcomes, failed) = run(&pool, &batch.orders).await;
        counters.count(&batch, failed);
        tracing::debug!(
            orders = batch.orders.len(),
            requests = batch.requests,
            elapsed = ?started.elapsed(),
            "batch done"
        );
        batch.answer(outcomes);
    }
}

/// Waits for a first deduct (deferred ones first), then takes whatever else is queued right
/// now, up to [`MAX_ORDERS`] requests. `None` once the queue is closed and drained.
async fn next_batch(
    queue: &mut mpsc::Receiver<Job>,
    deferred: &mut VecDeque<Job>,
) -> Option<Batch> {
    let mut next = match deferred.pop_front() {
        Some(job) => Some(job),
        None => Some(queue.recv().await?),
    };
    let mut batch = Batch::default();
    let mut later = Vec::new();
    let mut taken = 0;
    while let Some(job) = next {
        taken += 1;
        if let Some(job) = batch.add(job) {
            later.push(job);
        }
        if taken == MAX_ORDERS {
            break;
        }
        next = deferred.pop_front().or_else(|| queue.try_recv().ok());
    }
    deferred.extend(later);
    Some(batch)
}

/// The deducts of one batch, one entry per `order_sn`.
#[derive(Default)]
struct Batch {
    orders: Vec<Order>,
    /// The replies waiting for `orders[i]`: several when one order was sent several times.
    waiters: Vec<Vec<oneshot::Sender<Outcome>>>,
    index: HashMap<OrderSn, usize>,
    requests: usize,
}

impl Batch {
    /// Adds `job`. A repeat of an order already in the batch with the same items shares its
    /// answer (so it is deducted once and both replies agree); with other items it is given
    /// back, to run in a later batch against the committed first one (`conflict`, or a fresh
    /// decision if the first was refused), exactly as if it had arrived later.
    fn add(&mut self, job: Job) -> Option<Job> {
        match self.index.get(&job.order.sn).copied() {
            Some(i) if self.orders.get(i) == Some(&job.order) => {
                self.waiters[i].push(job.reply);
            }
            Some(_) => return Some(job),
            None => {
                self.index.insert(job.order.sn, self.orders.len());
                self.orders.push(job.order);
                self.waiters.push(vec![job.reply]);
            }
        }
        self.requests += 1;
        None
    }

    /// Sends every waiter its order's outcome.
    fn answer(self, outcomes: Vec<Outcome>) {
        for (waiters, outcome) in self.waiters.into_iter().zip(outcomes) {
            for waiter in waiters {
                // A handler that is gone has nobody to tell; its order's effect stands, and a
                // retry with the same order_sn gets the same answer from the sell record.
                let _ = waiter.send(outcome.clone());
            }
        }
    }
}

/// One batch in its own transaction; a failure of the transaction is every order's answer
/// (and the `bool` says so).
async fn run(pool: &PgPool, orders: &[Order]) -> (Vec<Outcome>, bool) {
    match in_transaction(pool, orders).await {
        Ok(outcomes) => (outcomes, false),
        Err(error) => {
            // Rolled back (or never begun): nothing of the batch was written, so the error
            // tells every waiter the truth; each may retry with its order_sn.
            tracing::warn!(%error, orders = orders.len(), "batch failed");
            (vec![Err(error); orders.len()], true)
        }
    }
}

async fn in_transaction(pool: &PgPool, orders: &[Order]) -> Result<Vec<Outcome>, StockError> {
    let mut tx = pool.begin().await?;
    let outcomes = deduct_batch(&mut tx, orders).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// The database work of one batch inside the caller's transaction (the caller begins and
/// commits it): each order's outcome, in the order of `orders`. Every `order_sn` must occur
/// once (the writer folds repeats together; a repeat here is refused before any SQL). `Err`
/// is a failure of the whole batch: the caller must roll back.
pub async fn deduct_batch(
    conn: &mut PgConnection,
    orders: &[Order],
) -> Result<Vec<Outcome>, StockError> {
    let mut seen = HashSet::with_capacity(orders.len());
    if let Some(order) = orders.iter().find(|o| !seen.insert(o.sn)) {
        return Err(StockError::Unexpected(format!(
            "order {} occurs twice in one batch",
            order.sn
        )));
    }
    let claimed = claim(conn, orders).await?;
    let (fresh, repeated): (Vec<&Order>, Vec<&Order>) =
        orders.iter().partition(|o| claimed.contains(&o.sn));
    let mut answers: HashMap<OrderSn, Outcome> = HashMap::with_capacity(orders.len());
    if !repeated.is_empty() {
        answers.extend(answer_repeated(conn, &repeated).await?);
    }
    if !fresh.is_empty() {
        let available = lock_counts(conn, &fresh).await?;
        let verdicts = decide(&fresh, available);
        write(conn, &fresh, &verdicts).await?;
        answers.extend(
            fresh
                .iter()
                .zip(verdicts)
                .map(|(order, verdict)| (order.sn, verdict.map(|()| order.items.clone()))),
        );
    }
    orders
        .iter()
        .map(|order| {
            answers.remove(&order.sn).ok_or_else(|| {
                StockError::Unexpected(format!("order {} got no answer in its batch", order.sn))
            })
        })
        .collect()
}

/// Inserts a `deducted` sell record for every order whose `order_sn` has none; returns the
/// order_sns inserted. Ascending `order_sn`, so two batches that share order_sns (one order
/// sent to two processes) wait for each other's keys in one order, never in a cycle; a
/// waiting insert sees the other's outcome: its committed record, or no record if that
/// batch refused the order and deleted its claim.
async fn claim(conn: &mut PgConnection, orders: &[Order]) -> Result<HashSet<OrderSn>, StockError> {
    let mut rows = orders
        .iter()
        .map(|o| Ok((o.sn.get(), repo::encode_items(&o.items)?)))
        .collect::<Result<Vec<(i64, String)>, StockError>>()?;
    rows.sort_unstable_by_key(|(sn, _)| *sn);
    let (sns, items): (Vec<i64>, Vec<String>) = rows.into_iter().unzip();
    let inserted: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO sell_records (order_sn, status, items)
         SELECT sn, $3, items::jsonb FROM unnest($1::BIGINT[], $2::TEXT[]) AS t(sn, items)
         ORDER BY sn
         ON CONFLICT (order_sn) DO NOTHING
         RETURNING order_sn",
    )
    .bind(sns)
    .bind(items)
    .bind(SellStatus::Deducted.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let inserted: HashSet<i64> = inserted.into_iter().collect();
    Ok(orders
        .iter()
        .map(|o| o.sn)
        .filter(|sn| inserted.contains(&sn.get()))
        .collect())
}

/// The answers of orders whose sell record existed: read `FOR UPDATE` (ascending
/// `order_sn`), so a return of one of them waits until this batch commits.
async fn answer_repeated(
    conn: &mut PgConnection,
    orders: &[&Order],
) -> Result<Vec<(OrderSn, Outcome)>, StockError> {
    let sns: Vec<i64> = orders.iter().map(|o| o.sn.get()).collect();
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT order_sn, status, items::text FROM sell_records
         WHERE order_sn = ANY($1) ORDER BY order_sn FOR UPDATE",
    )
    .bind(sns)
    .fetch_all(&mut *conn)
    .await?;
    let mut stored: HashMap<i64, (String, String)> = rows
        .into_iter()
        .map(|(sn, status, items)| (sn, (status, items)))
        .collect();
    Ok(orders
        .iter()
        .map(|order| {
            let outcome = match stored.remove(&order.sn.get()) {
                Some((status, first)) => repo::decode_status(&status).and_then(|status| {
                    earlier_answer(order.sn, status, repo::decode_items(&first)?, &order.items)
                }),
                // The insert conflicted with a committed record, and records are never
                // deleted once committed: this cannot be.
                None => Err(StockError::Unexpected(format!(
                    "order {}: sell record vanished",
                    order.sn
                ))),
            };
            (order.sn, outcome)
        })
        .collect())
}

/// `available` of every goods the orders name, locked `FOR UPDATE` in ascending `goods_id`
/// (the lock order of every deduct and return). Unknown goods are absent.
async fn lock_counts(
    conn: &mut PgConnection,
    orders: &[&Order],
) -> Result<HashMap<i64, i64>, StockError> {
    let goods: Vec<i64> = orders
        .iter()
        .flat_map(|o| o.items.iter().map(|line| line.goods_id.get()))
        .collect::<std::collections::BTreeSet<i64>>()
        .into_iter()
        .collect();
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT goods_id, available FROM stock
         WHERE goods_id = ANY($1) ORDER BY goods_id FOR UPDATE",
    )
    .bind(goods)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Decides each order in arrival order against `available` (the counts read under the row
/// locks): taken whole if every goods still has enough, then subtracted; otherwise refused
/// with the error of its first goods (ascending `goods_id`) that is unknown or short, as the
/// other strategies report it, and nothing of it is subtracted.
fn decide(orders: &[&Order], mut available: HashMap<i64, i64>) -> Vec<Result<(), StockError>> {
    orders
        .iter()
        .map(|order| {
            for line in &order.items {
                let requested = i64::from(line.quantity);
                match available.get(&line.goods_id.get()) {
                    None => return Err(repo::not_found(line.goods_id)),
                    Some(&left) if left < requested => {
                        return Err(StockError::InsufficientStock {
                            goods_id: line.goods_id,
                            requested,
                            available: left,
                        })
                    }
                    Some(_) => {}
                }
            }
            for line in &order.items {
                if let Some(left) = available.get_mut(&line.goods_id.get()) {
                    *left -= i64::from(line.quantity);
                }
            }
            Ok(())
        })
        .collect()
}

/// Writes the batch's decisions in one statement (one round trip while the row locks are
/// held): deletes the claims of refused orders, subtracts the summed quantity per goods
/// (`version + 1` per batch), and appends one `deduct` ledger row per goods per taken order.
async fn write(
    conn: &mut PgConnection,
    orders: &[&Order],
    verdicts: &[Result<(), StockError>],
) -> Result<(), StockError> {
    let mut refused = Vec::new();
    let mut taken: BTreeMap<i64, i64> = BTreeMap::new();
    let (mut ledger_sn, mut ledger_goods, mut ledger_quantity) =
        (Vec::new(), Vec::new(), Vec::new());
    for (order, verdict) in orders.iter().zip(verdicts) {
        if verdict.is_err() {
            refused.push(order.sn.get());
            continue;
        }
        for line in &order.items {
            let quantity = i64::from(line.quantity);
            *taken.entry(line.goods_id.get()).or_default() += quantity;
            ledger_sn.push(order.sn.get());
            ledger_goods.push(line.goods_id.get());
            ledger_quantity.push(quantity);
        }
    }
    let (goods, quantities): (Vec<i64>, Vec<i64>) = taken.into_iter().unzip();
    let expected = goods.len() as i64;
    // Data-modifying CTEs all run, whatever the final SELECT reads.
    let updated: i64 = sqlx::query_scalar(
        "WITH refused AS (
             DELETE FROM sell_records WHERE order_sn = ANY($1::BIGINT[])
         ), taken AS (
             UPDATE stock s
             SET available = s.available - t.q, sold = s.sold + t.q,
                 version = s.version + 1, updated_at = now()
             FROM unnest($2::BIGINT[], $3::BIGINT[]) AS t(g, q)
             WHERE s.goods_id = t.g
             RETURNING s.goods_id
         ), ledger AS (
             INSERT INTO stock_ledger (kind, goods_id, delta_available, delta_sold, order_sn)
             SELECT $7, g, -q, q, sn
             FROM unnest($4::BIGINT[], $5::BIGINT[], $6::BIGINT[]) AS t(sn, g, q)
         )
         SELECT count(*) FROM taken",
    )
    .bind(refused)
    .bind(goods)
    .bind(quantities)
    .bind(ledger_sn)
    .bind(ledger_goods)
    .bind(ledger_quantity)
    .bind(Entry::Deduct.as_str())
    .fetch_one(&mut *conn)
    .await?;
    // The rows were locked above and stock rows are never deleted; a mismatch is a bug, and
    // failing the batch rolls it back rather than answer `deducted` for an untaken goods.
    if updated != expected {
        return Err(StockError::Unexpected(format!(
            "batch updated {updated} of {expected} locked stock rows"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use shop_contracts::{GoodsId, Quantity};

    use super::*;

    fn order(sn: i64, lines: &[(i64, i32)]) -> Order {
        Order {
            sn: OrderSn::new(sn).unwrap(),
            items: lines
                .iter()
                .map(|&(g, q)| OrderLine {
                    goods_id: GoodsId::new(g).unwrap(),
                    quantity: Quantity::new(q.into()).unwrap(),
                })
                .collect(),
        }
    }

    fn codes(verdicts: &[Result<(), StockError>]) -> Vec<&'static str> {
        verdicts
            .iter()
            .map(|v| match v {
                Ok(()) => "ok",
                Err(StockError::InsufficientStock { .. }) => "insufficient_stock",
                Err(StockError::NotFound(_)) => "not_found",
                Err(_) => "other",
            })
            .collect()
    }

    #[test]
    fn a_short_order_is_refused_alone_and_later_orders_still_fit() {
        let orders = [
            order(1, &[(1, 3)]),
            order(2, &[(1, 1), (2, 5)]), // goods 2 is short: nothing of it is taken
            order(3, &[(1, 1), (2, 3)]),
            order(4, &[(1, 1)]), // goods 1 is used up by now
            order(5, &[(2, 1)]),
        ];
        let refs: Vec<&Order> = orders.iter().collect();
        let verdicts = decide(&refs, HashMap::from([(1, 4), (2, 4)]));
        assert_eq!(
            codes(&verdicts),
            ["ok", "insufficient_stock", "ok", "insufficient_stock", "ok"]
        );
        match &verdicts[1] {
            Err(StockError::InsufficientStock {
                goods_id,
                requested,
                available,
            }) => assert_eq!((goods_id.get(), *requested, *available), (2, 5, 4)),
            other => panic!("{other:?}"),
        }
        match &verdicts[3] {
            Err(StockError::InsufficientStock { available, .. }) => assert_eq!(*available, 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_goods_is_not_found_and_takes_nothing() {
        let orders = [order(1, &[(1, 1), (9, 1)]), order(2, &[(1, 1)])];
        let refs: Vec<&Order> = orders.iter().collect();
        let verdicts = decide(&refs, HashMap::from([(1, 1)]));
        assert_eq!(codes(&verdicts), ["not_found", "ok"]);
    }

    #[test]
    fn repeats_in_one_batch_share_an_entry_and_other_items_wait() {
        let mut batch = Batch::default();
        let job = |o: Order| {
            let (reply, _answer) = oneshot::channel();
            Job { order: o, reply }
        };
        assert!(batch.add(job(order(1, &[(1, 1)]))).is_none());
        assert!(batch.add(job(order(1, &[(1, 1)]))).is_none());
        assert!(batch.add(job(order(2, &[(1, 1)]))).is_none());
        let back = batch.add(job(order(1, &[(1, 2)])));
        assert_eq!(back.map(|j| j.order), Some(order(1, &[(1, 2)])));
        assert_eq!(batch.orders.len(), 2);
        assert_eq!(batch.waiters[0].len(), 2);
        assert_eq!(batch.requests, 3);
    }
}
