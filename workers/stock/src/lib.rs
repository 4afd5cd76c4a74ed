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
//!   return).
//! - [`rollback`]: the durable pull consumer that applies rollback events as returns.
//! - [`changes`]: `stock.changed.<goods_id>` notifications, coalesced, off the deduct path.
//! - [`audit`]: a consistent read of counts, adjustments and sell records for `shop audit`.
//! - [`error`]: [`StockError`], mapped 1:1 onto contract codes.

use std::time::Duration;

use shop_contracts::partition::PartitionId;

pub mod audit;
pub mod changes;
pub mod error;
pub mod local;
pub mod repo;
pub mod rollback;
pub mod route;
pub mod service;
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
#[derive(Clone, serde::Serialize, serde::Deserialize)]
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
    /// The partition this worker serves (its database is `database_url`); the map of
    /// `shop partitions` says which slots it owns.
    pub partition: PartitionId,
    /// How long the share of a request asked of another partition may take.
    #[serde(with = "humantime_serde")]
    pub forward_timeout: Duration,
    /// Every partition's database URL, partition 0 first, comma-separated: for the tools
    /// that read all partitions (`shop audit`). Empty: `database_url` is the only one. A
    /// worker never reads it; it connects only to its own `database_url`.
    pub partition_databases: String,
}

impl Settings {
    /// The databases of every partition, partition 0 first (`database_url` when
    /// `partition_databases` is empty).
    pub fn all_databases<'a>(&'a self, database_url: &'a str) -> Vec<&'a str> {
        let listed: Vec<&str> = self
            .partition_databases
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect();
        if listed.is_empty() {
            vec![database_url]
        } else {
            listed
        }
    }
}

// By hand: the partitions' database URLs may carry passwords.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("strategy", &self.strategy)
            .field("optimistic_attempts", &self.optimistic_attempts)
            .field("lock_ttl", &self.lock_ttl)
            .field("lock_wait", &self.lock_wait)
            .field("rollback_retry_delay", &self.rollback_retry_delay)
            .field("partition", &self.partition)
            .field("forward_timeout", &self.forward_timeout)
            .field(
                "partition_databases",
                &shop_kit::server::redact_url(&self.partition_databases),
            )
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            strategy: Strategy::default(),
            optimistic_attempts: 100,
            lock_ttl: Duration::from_secs(10),
            lock_wait: Duration::from_secs(10),
            rollback_retry_delay: Duration::from_secs(2),
            partition: PartitionId::default(),
            forward_timeout: Duration::from_secs(4),
            partition_databases: String::new(),
        }
    }
}
