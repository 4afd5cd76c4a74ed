//! The order worker: not yet implemented.

/// The worker's schema, embedded from `migrations/order/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/order");

/// order worker settings.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Settings {}

/// Serves the `order` service until the connection closes.
pub async fn run(
    _client: async_nats::Client,
    _pool: sqlx::PgPool,
    _settings: Settings,
) -> Result<(), async_nats::Error> {
    std::future::pending().await
}
