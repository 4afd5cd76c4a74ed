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
//! One batch is one call of the SQL function `stock_deduct_batch` (in
//! migrations/stock, where its steps are spelled out), one statement and so one round trip
//! to PostgreSQL, atomic on its own:
//!
//! 1. claim every order's sell record (`INSERT ... ON CONFLICT DO NOTHING`, ascending
//!    `order_sn`): a duplicate in flight in another process waits on the key, as in the
//!    other strategies;
//! 2. orders whose record existed already get the earlier answer (read `FOR UPDATE`, so a
//!    concurrent return cannot interleave; [`deduct_batch`] compares the items: the same
//!    items, `conflict`, `order_cancelled`);
//! 3. lock the counts of every goods the new orders name (`FOR UPDATE`, ascending
//!    `goods_id`, so batches of several processes cannot deadlock);
//! 4. decide each new order, in arrival order, against those counts: taken whole, or
//!    refused alone (`insufficient_stock`, `not_found`), never the whole batch;
//! 5. delete the refused orders' claims, subtract the summed quantity per goods
//!    (`version + 1`), one `deduct` ledger row per goods per order.
//!
//! It was BEGIN, three statements and COMMIT, deciding in this process: five round trips,
//! each a wake-up of the backend and of the writer, which at low load were most of a
//! deduct's time.
//!
//! Each order keeps its own sell record, reply and error; only a failure of the transaction
//! itself (database down) answers every order of the batch with that error, and then nothing
//! of the batch was written.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use shop_contracts::stock::OrderLine;
use shop_contracts::OrderSn;
use shop_kit::queue::{Answer, Batches, Job, Queue};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::earlier_answer;
use crate::repo;
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
    queue: Queue<Order, Outcome>,
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

/// The writer's side, to run as a background task of the worker.
pub struct Writer {
    pool: PgPool,
    batches: Batches<Order, Outcome>,
    counters: Arc<Counters>,
}

impl Batcher {
    /// The process's deduct queue, and its one writer for the caller to run.
    pub fn new(pool: PgPool) -> (Batcher, Writer) {
        let (queue, batches) = Queue::new("stock_deducts", QUEUE, MAX_ORDERS);
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            pool,
            batches,
            counters: counters.clone(),
        };
        (Batcher { queue, counters }, writer)
    }

    /// The writer's figures: deducts queued now (not yet in a batch), and batches (of which
    /// failed), orders and requests so far. `requests / batches` is the mean batch size;
    /// `requests > orders` when repeats of an order were folded into one entry.
    pub fn stats(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
            "batch_queued": self.queue.depth(),
            "batches": c.batches.load(Ordering::Relaxed),
            "batches_failed": c.failed.load(Ordering::Relaxed),
            "batch_orders": c.orders.load(Ordering::Relaxed),
            "batch_requests": c.requests.load(Ordering::Relaxed),
        })
    }

    /// Queues a deduct of `items` (as [`Order::items`]) for `sn` and waits for its batch.
    pub async fn deduct(&self, sn: OrderSn, items: Vec<OrderLine>) -> Outcome {
        self.queue
            .call(Order { sn, items })
            .await
            .map_err(|stopped| StockError::Bug(stopped.to_string()))?
    }
}

impl Writer {
    /// One batch at a time, each taken the moment the previous one is answered, until
    /// `draining` fires and what was queued before it is done.
    pub async fn run(mut self, draining: CancellationToken) -> Result<(), StockError> {
        let mut deferred = VecDeque::new();
        let mut ready = Vec::with_capacity(MAX_ORDERS);
        while let Some(batch) =
            next_batch(&mut self.batches, &mut deferred, &mut ready, &draining).await
        {
            let started = Instant::now();
            let (outcomes, failed) = run(&self.pool, &batch.orders).await;
            self.counters.count(&batch, failed);
            tracing::debug!(
                orders = batch.orders.len(),
                requests = batch.requests,
                elapsed = ?started.elapsed(),
                "batch done"
            );
            batch.answer(outcomes);
        }
        Ok(())
    }
}

/// Waits for a first deduct (deferred ones first), then takes whatever else is queued right
/// now, up to [`MAX_ORDERS`] requests. `None` once the queue is closed and drained.
async fn next_batch(
    batches: &mut Batches<Order, Outcome>,
    deferred: &mut VecDeque<Job<Order, Outcome>>,
    ready: &mut Vec<Job<Order, Outcome>>,
    draining: &CancellationToken,
) -> Option<Batch> {
    if deferred.is_empty() {
        if !batches.next(ready, draining).await {
            return None;
        }
    } else {
        ready.clear();
        batches.take_ready(ready);
    }
    let mut jobs = deferred.drain(..).chain(ready.drain(..));
    let mut batch = Batch::default();
    let mut later = Vec::new();
    for job in jobs.by_ref().take(MAX_ORDERS) {
        if let Some(job) = batch.add(job) {
            later.push(job);
        }
    }
    later.extend(jobs);
    deferred.extend(later);
    Some(batch)
}

/// The deducts of one batch, one entry per `order_sn`.
#[derive(Default)]
struct Batch {
    orders: Vec<Order>,
    /// The replies waiting for `orders[i]`: several when one order was sent several times.
    waiters: Vec<Vec<Answer<Outcome>>>,
    index: HashMap<OrderSn, usize>,
    requests: usize,
}

impl Batch {
    /// Adds `job`. A repeat of an order already in the batch with the same items shares its
    /// answer (so it is deducted once and both replies agree); with other items it is given
    /// back, to run in a later batch against the committed first one (`conflict`, or a fresh
    /// decision if the first was refused), exactly as if it had arrived later.
    fn add(&mut self, job: Job<Order, Outcome>) -> Option<Job<Order, Outcome>> {
        match self.index.get(&job.input.sn).copied() {
            Some(i) if self.orders.get(i) == Some(&job.input) => {
                self.waiters[i].push(job.split().1);
            }
            Some(_) => return Some(job),
            None => {
                let (order, answer) = job.split();
                self.index.insert(order.sn, self.orders.len());
                self.orders.push(order);
                self.waiters.push(vec![answer]);
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
                waiter.send(outcome.clone());
            }
        }
    }
}

/// One batch, one statement, so one transaction of its own (autocommit); a failure of it is
/// every order's answer (and the `bool` says so).
async fn run(pool: &PgPool, orders: &[Order]) -> (Vec<Outcome>, bool) {
    let outcomes = match pool.acquire().await {
        Ok(mut conn) => deduct_batch(&mut conn, orders).await,
        Err(error) => Err(error.into()),
    };
    match outcomes {
        Ok(outcomes) => (outcomes, false),
        Err(error) => {
            // Rolled back (or never begun): nothing of the batch was written, so the error
            // tells every waiter the truth; each may retry with its order_sn.
            tracing::warn!(%error, orders = orders.len(), "batch failed");
            (vec![Err(error); orders.len()], true)
        }
    }
}

/// The database work of one batch: one call of `stock_deduct_batch` (migrations/stock),
/// which claims, reads earlier answers, locks, decides each order in arrival order and
/// writes, in one statement; atomic on its own, or part of the caller's transaction if one
/// is open. Returns each order's outcome, in the order of `orders`. Every `order_sn` must
/// occur once (the writer folds repeats together; a repeat here is refused before any SQL).
/// `Err` is a failure of the whole batch, and then nothing of it was written.
pub async fn deduct_batch(
    conn: &mut PgConnection,
    orders: &[Order],
) -> Result<Vec<Outcome>, StockError> {
    let mut seen = HashSet::with_capacity(orders.len());
    if let Some(order) = orders.iter().find(|o| !seen.insert(o.sn)) {
        return Err(StockError::Bug(format!(
            "order {} occurs twice in one batch",
            order.sn
        )));
    }
    let lines = orders.iter().map(|o| o.items.len()).sum();
    let mut sns = Vec::with_capacity(orders.len());
    let mut items = Vec::with_capacity(orders.len());
    let mut line_count = Vec::with_capacity(orders.len());
    let (mut line_goods, mut line_qty) = (Vec::with_capacity(lines), Vec::with_capacity(lines));
    for order in orders {
        sns.push(order.sn.get());
        items.push(repo::encode_items(&order.items)?);
        line_count.push(order.items.len() as i32);
        for line in &order.items {
            line_goods.push(line.goods_id.get());
            line_qty.push(i64::from(line.quantity));
        }
    }
    let rows: Vec<Verdict> = sqlx::query_as("SELECT * FROM stock_deduct_batch($1, $2, $3, $4, $5)")
        .bind(sns)
        .bind(items)
        .bind(line_count)
        .bind(line_goods)
        .bind(line_qty)
        .fetch_all(&mut *conn)
        .await?;
    let mut verdicts: HashMap<i64, Verdict> = rows.into_iter().map(|v| (v.r_sn, v)).collect();
    orders
        .iter()
        .map(|order| match verdicts.remove(&order.sn.get()) {
            Some(verdict) => Ok(verdict.outcome(order)),
            None => Err(StockError::Bug(format!(
                "order {} got no answer in its batch",
                order.sn
            ))),
        })
        .collect()
}

/// One row of `stock_deduct_batch`: what became of one order.
#[derive(sqlx::FromRow)]
struct Verdict {
    r_sn: i64,
    /// `deducted`, `insufficient`, `not_found`, or `repeated` (the record existed already:
    /// `r_status` and `r_items` are the earlier answer).
    r_verdict: String,
    r_goods: Option<i64>,
    r_requested: Option<i64>,
    r_available: Option<i64>,
    r_status: Option<String>,
    r_items: Option<String>,
}

impl Verdict {
    fn outcome(self, order: &Order) -> Outcome {
        // The goods the database names, as the order's own line (so no id is made up here).
        let line = || {
            order
                .items
                .iter()
                .find(|line| Some(line.goods_id.get()) == self.r_goods)
                .ok_or_else(|| {
                    StockError::Bug(format!(
                        "order {}: its batch named goods {:?}, not one of its own",
                        order.sn, self.r_goods
                    ))
                })
        };
        match self.r_verdict.as_str() {
            "deducted" => Ok(order.items.clone()),
            "not_found" => Err(repo::not_found(line()?.goods_id)),
            "insufficient" => Err(StockError::InsufficientStock {
                goods_id: line()?.goods_id,
                requested: self.r_requested.unwrap_or_default(),
                available: self.r_available.unwrap_or_default(),
            }),
            "repeated" => {
                let status = repo::decode_status(self.r_status.as_deref().unwrap_or_default())?;
                let first = repo::decode_items(self.r_items.as_deref().unwrap_or_default())?;
                earlier_answer(order.sn, status, first, &order.items)
            }
            other => Err(StockError::Bug(format!(
                "order {}: its batch answered {other:?}",
                order.sn
            ))),
        }
    }
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

    #[test]
    fn repeats_in_one_batch_share_an_entry_and_other_items_wait() {
        let mut batch = Batch::default();
        let job = |o: Order| Job::new(o).0;
        assert!(batch.add(job(order(1, &[(1, 1)]))).is_none());
        assert!(batch.add(job(order(1, &[(1, 1)]))).is_none());
        assert!(batch.add(job(order(2, &[(1, 1)]))).is_none());
        let back = batch.add(job(order(1, &[(1, 2)])));
        assert_eq!(back.map(|j| j.input), Some(order(1, &[(1, 2)])));
        assert_eq!(batch.orders.len(), 2);
        assert_eq!(batch.waiters[0].len(), 2);
        assert_eq!(batch.requests, 3);
    }
}
