//! The stock worker: stock counts, sell records and the ledger (CONTRACT section 3), and the
//! `stock-rollback` consumer of `STOCK_ROLLBACK` (section 5).
//!
//! Owns one partition's `shop_stock` database (`stock.partition`, 0 unless the shop is
//! partitioned; docs/scaling.md) and the `stock` micro service. It calls no other kind of
//! worker, only the stock workers of other partitions; the order worker asks it to deduct,
//! and returns stock through `STOCK_ROLLBACK`.
//!
//! - [`service`]: the endpoints of one partition's worker: its own, and the public ones.
//! - [`local`]: what this partition answers from its own database.
//! - [`route`]: the public subjects over every partition (shares asked of their owners,
//!   all-or-nothing deducts across partitions).
//! - [`strategies`]: how a deduct takes stock: `atomic`, `pessimistic`, `optimistic`,
//!   `kv_lock`, one transaction per deduct, and `batch`, many deducts per transaction
//!   (group commit). All share the sell-record claim and the ledger; only the counting
//!   differs.
//! - [`repo`]: every SQL statement shared by the strategies (sell records, ledger, set, get,
//!   return, and the slots given away).
//! - [`slot_move`]: moving slots of stock to another partition's database (the guards that
//!   keep a partition from writing a goods whose slot it gave away are in [`repo`]).
//! - [`rollback`]: the durable pull consumer that applies rollback events as returns.
//! - [`changes`]: `stock.changed.<goods_id>` notifications, coalesced, off the deduct path.
//! - [`audit`]: a consistent read of counts, adjustments and sell records for `shop audit`.
//! - [`error`]: [`StockError`], mapped 1:1 onto contract codes.

use std::time::Duration;

pub mod audit;
pub mod changes;
pub mod error;
pub mod local;
pub mod repo;
pub mod rollback;
pub mod route;
pub mod service;
pub mod slot_move;
pub mod strategies;

pub use error::StockError;
pub use service::start;
pub use strategies::Strategy;

/// The worker's schema, embedded from `migrations/stock/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/stock");

/// Semver of the `stock` micro service, reported in `$SRV.INFO.stock`.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Name of the KV bucket holding the `kv_lock` strategy's per-goods mutexes.
pub const LOCK_BUCKET: &str = "stock_locks";

/// Stock worker settings (`[stock]` in shop.toml, `SHOP_STOCK__*`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Settings {
    /// How a deduct takes stock (`stock.strategy`).
    pub strategy: Strategy,
    /// `optimistic`: attempts of one deduct before it answers `conflict`.
    pub optimistic_attempts: u32,
    /// `kv_lock`: a lock left by a crashed holder expires after this long.
    #[serde(with = "humantime_serde")]
    pub lock_ttl: Duration,
    /// `kv_lock`: how long a deduct waits for a busy goods before answering `conflict`.
    #[serde(with = "humantime_serde")]
    pub lock_wait: Duration,
    /// Delay before a rollback event that failed for a transient reason is delivered again.
    #[serde(with = "humantime_serde")]
    pub rollback_retry_delay: Duration,
    /// Its partition, and where the others are (`stock.partition`, ...).
    #[serde(flatten)]
    pub placement: shop_kit::partitions::Placement,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            strategy: Strategy::default(),
            optimistic_attempts: 100,
            lock_ttl: Duration::from_secs(10),
            lock_wait: Duration::from_secs(10),
            rollback_retry_delay: Duration::from_secs(2),
            placement: Default::default(),
        }
    }
}
