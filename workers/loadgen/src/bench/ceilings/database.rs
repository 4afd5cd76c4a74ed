//! Ceilings (b) and (c): the database work of one create issued directly, with the very
//! functions the workers run: `shop_stock::strategies::deduct_in` (the stock transaction's
//! statements, inside a transaction this module opens and commits) and
//! `shop_order::repo::commit_created` (the order's commit, one statement). No NATS, no
//! goods look-up, no half message: only what the two databases must do per create.
//!
//! Each client has a connection of its own up to [`MAX_POOL`] per database (pgbench's way),
//! so the figure is the database's, not a pool's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shop_contracts::order::OrderItem;
use shop_contracts::stock::{NormalizedLines, OrderLine, Units};
use shop_contracts::{Cents, ErrorDetail, GoodsId, OrderSn, Quantity, UserId};
use shop_kit::ServiceError;
use shop_order::repo::{commit_created, Commit, NewOrder};
use shop_order::OrderError;
use shop_stock::strategies::deduct_in;
use shop_stock::StockError;
use sqlx::PgPool;

use super::scratch::{tolerant, Scratch};
use crate::bench::create::Creates;
use crate::bench::drive::{self, Mode, Operation};
use crate::bench::fixture::PLENTY;
use crate::bench::outcome::Outcome;
use crate::bench::record::Figures;
use crate::bench::request::TIMEOUT;
use crate::BenchConfig;

/// Connections per scratch database at most: well inside the cluster's `max_connections`
/// next to the workers' own pools.
const MAX_POOL: usize = 64;

/// (b): the stock transaction in a scratch stock database, then the order's commit in a
/// scratch order database.
pub async fn split(
    config: &BenchConfig,
    creates: Creates,
    concurrency: usize,
    window: Duration,
) -> anyhow::Result<Figures> {
    let stock_db = Scratch::create(&config.stock.url, "_bench", &[&shop_stock::MIGRATOR]).await?;
    let order_db = Scratch::create(&config.order.url, "_bench", &[&shop_order::MIGRATOR]).await?;
    let measured = async {
        let stock = pool(&stock_db, concurrency)?;
        let orders = pool(&order_db, concurrency)?;
        fill_stock(&stock, creates).await?;
        let work = Arc::new(Split {
            stock: stock.clone(),
            orders: orders.clone(),
            creates: Work::new(config, creates),
        });
        let figures = drive::run(
            work,
            Mode::closed(concurrency),
            window,
            "ceiling (b) database, split",
            "creates",
        )
        .await;
        stock.close().await;
        orders.close().await;
        figures
    }
    .await;
    stock_db.drop_now().await?;
    order_db.drop_now().await?;
    measured
}

/// (c): both in one transaction of one scratch database holding both schemas.
pub async fn monolith(
    config: &BenchConfig,
    creates: Creates,
    concurrency: usize,
    window: Duration,
) -> anyhow::Result<Figures> {
    let (stock_schema, order_schema) = (
        tolerant(&shop_stock::MIGRATOR),
        tolerant(&shop_order::MIGRATOR),
    );
    let db = Scratch::create(
        &config.order.url,
        "_bench_monolith",
        &[&stock_schema, &order_schema],
    )
    .await?;
    let measured = async {
        let pool = pool(&db, concurrency)?;
        fill_stock(&pool, creates).await?;
        let work = Arc::new(Monolith {
            db: pool.clone(),
            creates: Work::new(config, creates),
        });
        let figures = drive::run(
            work,
            Mode::closed(concurrency),
            window,
            "ceiling (c) database, monolith",
            "creates",
        )
        .await;
        pool.close().await;
        figures
    }
    .await;
    db.drop_now().await?;
    measured
}

fn pool(db: &Scratch, concurrency: usize) -> anyhow::Result<PgPool> {
    let size = u32::try_from(concurrency.min(MAX_POOL)).unwrap_or(1);
    shop_kit::db::connect(&db.url, size, TIMEOUT)
        .with_context(|| format!("connecting to {}", db.name()))
}

/// The bench goods with plenty of stock, through the stock worker's own `stock.set`.
async fn fill_stock(stock: &PgPool, creates: Creates) -> anyhow::Result<()> {
    let plenty = Units::new(PLENTY).context("the bench's stock level")?;
    for goods_id in creates.goods_ids() {
        let goods = GoodsId::new(goods_id).context("a bench goods id")?;
        shop_stock::repo::set(stock, goods, plenty)
            .await
            .with_context(|| format!("setting the stock of goods {goods_id}"))?;
    }
    Ok(())
}

/// The inputs of create `n`, as the stock and order workers would have them.
struct Work {
    creates: Creates,
    pay_timeout_ms: i64,
}

struct Create {
    sn: OrderSn,
    lines: NormalizedLines,
    items: Vec<OrderItem>,
    user: UserId,
}

impl Work {
    fn new(config: &BenchConfig, creates: Creates) -> Work {
        Work {
            creates,
            pay_timeout_ms: i64::try_from(config.pay_timeout.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Create `n`. Its order_sn is `n + 1`: the scratch databases hold nothing else, and
    /// numbers this small are never snowflake ids (those carry a millisecond timestamp in
    /// their high bits), so a scratch row can never pass for a real order.
    fn create(&self, n: u64) -> Result<Create, ErrorDetail> {
        let bug = |what: &str| ErrorDetail::internal().with("what", what);
        let sn = i64::try_from(n + 1)
            .ok()
            .and_then(|sn| OrderSn::new(sn).ok())
            .ok_or_else(|| bug("order_sn"))?;
        let goods_id = GoodsId::new(self.creates.goods_of(n)).map_err(|_| bug("goods_id"))?;
        let quantity = Quantity::new(1).map_err(|_| bug("quantity"))?;
        let user = UserId::new(Creates::user_of(n)).map_err(|_| bug("user_id"))?;
        Ok(Create {
            sn,
            lines: NormalizedLines::new(&[OrderLine { goods_id, quantity }]),
            items: vec![OrderItem {
                goods_id,
                title: format!("bench goods {goods_id}"),
                price_cents: Cents::new(100).map_err(|_| bug("price"))?,
                quantity,
            }],
            user,
        })
    }

    fn order(&self, create: &Create) -> NewOrder {
        NewOrder {
            sn: create.sn,
            user: create.user,
            items: create.items.clone(),
            total: create.items[0].price_cents,
            address: "1 Bench St".into(),
            receiver_name: "Bench".into(),
            receiver_phone: "555-0100".into(),
            note: String::new(),
            pay_timeout_ms: self.pay_timeout_ms,
        }
    }
}

fn stock_error(error: impl Into<StockError>) -> ErrorDetail {
    error.into().to_contract()
}

fn order_error(error: impl Into<OrderError>) -> ErrorDetail {
    error.into().to_contract()
}

/// A commit the checker fenced, or of a slot moved away, cannot happen here (no checker or
/// move runs on scratch databases); if one does, it is counted apart.
fn committed(commit: Commit) -> Outcome {
    match commit {
        Commit::Committed(_) => Outcome::Ok,
        Commit::Fenced => Outcome::Failed("fenced"),
        Commit::Moved(_) => Outcome::Failed("slot moved"),
    }
}

fn finish(result: Result<Outcome, ErrorDetail>) -> Outcome {
    result.unwrap_or_else(|error| {
        tracing::debug!(%error, "a database ceiling create failed");
        Outcome::of_error(&error)
    })
}

struct Split {
    stock: PgPool,
    orders: PgPool,
    creates: Work,
}

impl Split {
    async fn create(&self, n: u64) -> Result<Outcome, ErrorDetail> {
        let create = self.creates.create(n)?;
        let mut tx = self.stock.begin().await.map_err(stock_error)?;
        deduct_in(&mut tx, create.sn, &create.lines)
            .await
            .map_err(stock_error)?;
        tx.commit().await.map_err(stock_error)?;
        let mut conn = self.orders.acquire().await.map_err(order_error)?;
        let commit = commit_created(&mut conn, &self.creates.order(&create))
            .await
            .map_err(order_error)?;
        Ok(committed(commit))
    }
}

impl Operation for Split {
    async fn call(&self, n: u64) -> Outcome {
        finish(self.create(n).await)
    }
}

struct Monolith {
    db: PgPool,
    creates: Work,
}

impl Monolith {
    async fn create(&self, n: u64) -> Result<Outcome, ErrorDetail> {
        let create = self.creates.create(n)?;
        let mut tx = self.db.begin().await.map_err(stock_error)?;
        deduct_in(&mut tx, create.sn, &create.lines)
            .await
            .map_err(stock_error)?;
        let commit = commit_created(&mut tx, &self.creates.order(&create))
            .await
            .map_err(order_error)?;
        tx.commit().await.map_err(order_error)?;
        Ok(committed(commit))
    }
}

impl Operation for Monolith {
    async fn call(&self, n: u64) -> Outcome {
        finish(self.create(n).await)
    }
}
