//! PostgreSQL shared by the workers: their database settings, the pool, create-and-migrate,
//! and error classification.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;

/// A worker's section of the configuration: its database, plus its own settings `S`
/// (defined by the worker crate, flattened, so `order.pay_timeout` sits beside
/// `order.database_url`).
#[derive(Clone, Serialize, Deserialize)]
pub struct WorkerConfig<S> {
    pub database_url: String,
    pub max_connections: u32,
    /// How long a request waits for a database connection before answering `unavailable`.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Create the database and apply migrations when the worker starts.
    pub migrate_on_start: bool,
    /// How long a stop (SIGTERM, ctrl-c) may take: fence the endpoints, finish what was
    /// admitted, flush the batches. Past it the worker exits non-zero naming what it
    /// abandoned.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    #[serde(flatten)]
    pub settings: S,
}

impl<S> WorkerConfig<S> {
    /// The development defaults: `database` on the local cluster of `shop up`.
    pub fn new(database: &str, settings: S) -> Self {
        WorkerConfig {
            database_url: format!("postgres://shop@127.0.0.1:5544/{database}"),
            max_connections: 20,
            acquire_timeout: Duration::from_secs(3),
            migrate_on_start: true,
            shutdown_timeout: Duration::from_secs(10),
            settings,
        }
    }
}

// By hand: the database URL may carry a password.
impl<S: std::fmt::Debug> std::fmt::Debug for WorkerConfig<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field(
                "database_url",
                &crate::server::redact_url(&self.database_url),
            )
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("migrate_on_start", &self.migrate_on_start)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("settings", &self.settings)
            .finish()
    }
}

/// Whether a database error means "did not answer in time" (the contract's `unavailable`),
/// as opposed to a bug (`internal`).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
    ) || matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|c| server_away(&c)))
}

/// SQLSTATEs of a server that is there but will not serve now: 08 connection exceptions,
/// 53 insufficient resources (too many connections, disk full), 57P operator intervention
/// (shutting down, starting up, sessions terminated by an administrator), and 55000, which a
/// database that does not accept connections (`ALLOW_CONNECTIONS false`) answers at connect.
fn server_away(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code == "55000"
}

/// A pool whose `acquire` gives up after `acquire_timeout`, so a dead database turns into
/// `unavailable` replies instead of requests that hang.
///
/// Connections are opened lazily: a worker starts and answers (with `unavailable`) while its
/// database is down, and recovers by itself when the database is back.
pub fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.disable_statement_logging();
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        // No ping before every acquire: it is a round trip per request, and a connection the
        // server dropped fails its first query with an I/O error, which is `unavailable`
        // (the caller's retry gets a fresh connection; sqlx closes the broken one).
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// Creates the database named in `url` if it does not exist (connecting to the cluster's
/// `postgres` database to do so), then applies `migrator`.
pub async fn create_and_migrate(url: &str, migrator: &Migrator) -> Result<(), sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        // Identifiers cannot be bound; quote it. Two racing creators: the loser sees 42P04.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e),
        }
    }
    admin.close().await?;
    let mut conn = options.connect().await?;
    migrator.run(&mut conn).await?;
    conn.close().await
}
