//! How a deduct takes stock. The first four strategies share the frame in
//! [`Deducter::deduct`]: claim the order's sell record first (idempotency, anti-hanging,
//! duplicates serialise on its primary key), take each goods in ascending `goods_id` order,
//! write the ledger, commit; one transaction per deduct. Only the middle step differs:
//!
//! - [`atomic`]: one conditional `UPDATE ... WHERE available >= n` per goods.
//! - [`pessimistic`]: `SELECT ... FOR UPDATE`, check, update.
//! - [`optimistic`]: read without locks, then update `WHERE version = v`; a lost race rolls
//!   the whole transaction back and retries with jitter, a bounded number of times.
//! - [`kv_lock`]: a per-goods mutex in the NATS KV bucket `stock_locks` (TTL'd so a crashed
//!   holder cannot block a goods forever), then read-modify-write fenced on `version`, so a
//!   lock that expired under a slow holder still cannot oversell.
//!
//! [`batch`] keeps the same steps and rules but runs them for many orders in one
//! transaction (group commit): one writer task per process takes every deduct queued while
//! the previous batch committed, and decides each order alone, in memory, under the rows'
//! locks.

pub mod atomic;
pub mod batch;
pub mod kv_lock;
pub mod optimistic;
pub mod pessimistic;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shop_contracts::stock::{NormalizedLines, OrderLine, SellStatus};
use shop_contracts::{GoodsId, OrderSn};
use sqlx::{PgConnection, PgPool};

use crate::repo::{self, Claim, Entry};
use crate::{Settings, StockError};

/// `stock.strategy`. The default is `batch`: measured fastest on a hot goods and on spread
/// goods alike (docs/stock-strategies.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Atomic,
    Pessimistic,
    Optimistic,
    KvLock,
    #[default]
    Batch,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::Atomic,
        Strategy::Pessimistic,
        Strategy::Optimistic,
        Strategy::KvLock,
        Strategy::Batch,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Strategy::Atomic => "atomic",
            Strategy::Pessimistic => "pessimistic",
            Strategy::Optimistic => "optimistic",
            Strategy::KvLock => "kv_lock",
            Strategy::Batch => "batch",
        }
    }

    pub fn parse(text: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one attempt to take the stock inside a transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Done,
    /// Another writer changed a row between our read and our write: roll back, try again.
    Retry,
}

/// Runs deducts with the configured strategy.
#[derive(Clone)]
pub struct Deducter {
    pool: PgPool,
    strategy: Strategy,
    attempts: u32,
    locks: Option<kv_lock::Locks>,
    batcher: Option<batch::Batcher>,
}

impl Deducter {
    /// Opens what the strategy needs: the lock bucket for `kv_lock`; for `batch`, the writer,
    /// which the caller runs as a background task of its worker (a worker whose writer is
    /// gone stops, rather than answer every deduct with an error).
    pub async fn start(
        js: &async_nats::jetstream::Context,
        pool: PgPool,
        settings: &Settings,
        replicas: usize,
    ) -> Result<(Self, Option<batch::Writer>), async_nats::Error> {
        let locks = match settings.strategy {
            Strategy::KvLock => Some(
                kv_lock::Locks::open(js, settings.lock_ttl, settings.lock_wait, replicas).await?,
            ),
            _ => None,
        };
        let (batcher, writer) = match settings.strategy {
            Strategy::Batch => {
                let (batcher, writer) = batch::Batcher::new(pool.clone());
                (Some(batcher), Some(writer))
            }
            _ => (None, None),
        };
        let deducter = Deducter {
            pool,
            strategy: settings.strategy,
            // The kv_lock write is fenced on the version too; give it the same bound.
            attempts: settings.optimistic_attempts.max(1),
            locks,
            batcher,
        };
        Ok((deducter, writer))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The strategy's own figures for `$SRV.STATS.stock` (the `batch` writer's), or null.
    pub fn stats(&self) -> serde_json::Value {
        self.batcher
            .as_ref()
            .map_or(serde_json::Value::Null, batch::Batcher::stats)
    }

    /// Deducts `lines` for `sn`, all or nothing, once; returns what was deducted.
    #[tracing::instrument(skip_all, fields(order_sn = %sn, strategy = %self.strategy))]
    pub async fn deduct(
        &self,
        sn: OrderSn,
        lines: &NormalizedLines,
    ) -> Result<Vec<OrderLine>, StockError> {
        let items = repo::lines_to_items(lines)?;
        if let Some(batcher) = &self.batcher {
            return batcher.deduct(sn, items).await;
        }
        let held = match &self.locks {
            Some(locks) => Some(locks.acquire(lines).await?),
            None => None,
        };
        let result = self.deduct_in_transactions(sn, lines, items).await;
        if let Some(held) = held {
            held.release().await;
        }
        result
    }

    async fn deduct_in_transactions(
        &self,
        sn: OrderSn,
        lines: &NormalizedLines,
        items: Vec<OrderLine>,
    ) -> Result<Vec<OrderLine>, StockError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.pool.begin().await?;
            if let Claim::Existing {
                status,
                items: first,
            } = repo::claim_sell_record(&mut tx, sn, SellStatus::Deducted, &items).await?
            {
                return earlier_answer(sn, status, first, &items);
            }
            let outcome = match self.strategy {
                Strategy::Atomic => atomic::take(&mut tx, lines).await?,
                Strategy::Pessimistic => pessimistic::take(&mut tx, lines).await?,
                Strategy::Optimistic => optimistic::take(&mut tx, lines).await?,
                Strategy::KvLock => kv_lock::take(&mut tx, lines).await?,
                // Answered by the writer in `deduct`; never one transaction per order.
                Strategy::Batch => {
                    return Err(StockError::Bug(
                        "batch deducts go through the writer".to_owned(),
                    ))
                }
            };
            if outcome == Attempt::Done {
                let rows: Vec<(GoodsId, i64, i64)> =
                    lines.as_slice().iter().map(|(g, q)| (*g, -q, *q)).collect();
                repo::ledger(&mut tx, Entry::Deduct, Some(sn), &rows).await?;
                tx.commit().await?;
                return Ok(items);
            }
            drop(tx);
            if attempt >= self.attempts {
                return Err(StockError::Conflict(format!(
                    "order {sn}: stock changed under {attempt} attempts in a row; try again"
                )));
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
}

/// The answer to a deduct of `items` for `sn` whose sell record existed already (`status`,
/// `first` items): the first result again for the same items, `conflict` for other items,
/// `order_cancelled` once the order was returned (anti-hanging).
pub(crate) fn earlier_answer(
    sn: OrderSn,
    status: SellStatus,
    first: Vec<OrderLine>,
    items: &[OrderLine],
) -> Result<Vec<OrderLine>, StockError> {
    match status {
        SellStatus::Deducted if first == items => Ok(first),
        SellStatus::Deducted => Err(StockError::OtherItems(sn)),
        _ => Err(StockError::OrderCancelled(sn.to_string())),
    }
}

/// The rows of `lines` read without locks: `(goods_id, available, version)` per line, in
/// line order, or the error for the first unknown or short goods.
pub(crate) async fn read_and_check(
    conn: &mut PgConnection,
    lines: &NormalizedLines,
) -> Result<Vec<(GoodsId, i64, i64, i64)>, StockError> {
    let ids: Vec<i64> = lines.as_slice().iter().map(|(g, _)| g.get()).collect();
    let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT goods_id, available, sold, version FROM stock WHERE goods_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(lines.as_slice().len());
    for (goods_id, requested) in lines.as_slice() {
        let Some(&(_, available, sold, version)) = rows.iter().find(|r| r.0 == goods_id.get())
        else {
            return Err(repo::not_found(*goods_id));
        };
        if available < *requested {
            return Err(StockError::InsufficientStock {
                goods_id: *goods_id,
                requested: *requested,
                available,
            });
        }
        out.push((*goods_id, available, sold, version));
    }
    Ok(out)
}

/// A random pause that grows with the attempt (at most ~50 ms), so retrying writers spread
/// out instead of colliding again.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let cap_ms = (1u64 << attempt.min(6)).min(50);
    Duration::from_micros(500 + random_u64() % (cap_ms * 1000))
}

/// Enough randomness for jitter without a dependency: std's per-process random hash keys.
pub(crate) fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now())
}

/// The database work of one deduct with the default strategy (`batch`), inside the caller's
/// transaction (the caller commits or rolls back): the statements a worker runs for a batch
/// of one order, which is what an idle worker does, for `shop bench order` to measure the
/// database's own ceiling without NATS. Under load a worker folds many deducts into one such
/// transaction; one call here is always one order.
pub async fn deduct_in(
    conn: &mut PgConnection,
    sn: OrderSn,
    lines: &NormalizedLines,
) -> Result<Vec<OrderLine>, StockError> {
    let order = batch::Order {
        sn,
        items: repo::lines_to_items(lines)?,
    };
    let mut outcomes = batch::deduct_batch(conn, std::slice::from_ref(&order)).await?;
    outcomes.pop().unwrap_or_else(|| {
        Err(StockError::Bug(format!(
            "order {sn} got no answer from its batch"
        )))
    })
}
