//! The goods worker: goods records and live rooms (CONTRACT section 2).
//!
//! Owns the `shop_goods` database and the `goods` micro service. It never calls another
//! worker; the order worker asks it for prices through `goods.batch`.
//!
//! - [`service`]: the endpoints (decode, call [`repo`], encode).
//! - [`repo`]: every SQL statement of this worker.
//! - [`batch_reads`]: `goods.batch` reads that arrive together answered by one query.
//! - [`room_changes`]: `goods.room.changed.<room_id>` after each `goods.room.set`.
//! - [`error`]: [`GoodsError`], mapped 1:1 onto contract codes.

pub mod batch_reads;
pub mod error;
pub mod repo;
pub mod room_changes;
pub mod service;

pub use error::GoodsError;
pub use service::start;

/// The worker's schema, embedded from `migrations/goods/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/goods");

/// Semver of the `goods` micro service, reported in `$SRV.INFO.goods`.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Goods worker settings beyond its database (none yet; the section exists so `shop.toml`
/// has the same shape for every worker).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Settings {}
