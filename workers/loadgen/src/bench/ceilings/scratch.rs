//! Scratch databases for the database ceilings: created in the cluster of the workers'
//! databases, named after them (`shop_stock` -> `shop_stock_bench`, so parallel stacks in
//! one cluster, as in the test suite, never share one), migrated with the workers' own
//! migrators, and dropped afterwards. The real databases, and so the audit, are untouched.

use std::str::FromStr;

use anyhow::{bail, Context};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// A scratch database that exists until [`Scratch::drop_now`].
pub struct Scratch {
    pub url: String,
}

impl Scratch {
    /// Creates a fresh database named `<database of beside_url><suffix>` (dropping a
    /// leftover of an interrupted run first) and applies each migrator in turn.
    pub async fn create(
        beside_url: &str,
        suffix: &str,
        migrators: &[&Migrator],
    ) -> anyhow::Result<Scratch> {
        let url = renamed(beside_url, suffix)?;
        drop_database(&url).await?;
        for migrator in migrators {
            shop_kit::db::create_and_migrate(&url, migrator)
                .await
                .with_context(|| format!("creating and migrating {}", database_name(&url)))?;
        }
        Ok(Scratch { url })
    }

    pub fn name(&self) -> &str {
        database_name(&self.url)
    }

    /// Drops the database, closing any connection still open to it.
    pub async fn drop_now(self) -> anyhow::Result<()> {
        drop_database(&self.url).await
    }
}

/// Both workers' schemas in one database (the monolith): each migrator must tolerate the
/// versions the other applied, which it would otherwise take for migrations it lost.
pub fn tolerant(migrator: &'static Migrator) -> Migrator {
    Migrator {
        migrations: migrator.migrations.clone(),
        ignore_missing: true,
        ..Migrator::DEFAULT
    }
}

/// `url` with its database name extended by `suffix`.
fn renamed(url: &str, suffix: &str) -> anyhow::Result<String> {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let Some((authority, database)) = base.rsplit_once('/') else {
        bail!("the database URL names no database");
    };
    if database.is_empty() || authority.ends_with('/') {
        bail!("the database URL names no database");
    }
    let mut renamed = format!("{authority}/{database}{suffix}");
    if let Some(query) = query {
        renamed = format!("{renamed}?{query}");
    }
    Ok(renamed)
}

fn database_name(url: &str) -> &str {
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    base.rsplit_once('/').map_or(base, |(_, name)| name)
}

async fn drop_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url).context("parsing a database URL")?;
    let name = database_name(url).to_owned();
    let mut admin = options
        .database("postgres")
        .connect()
        .await
        .context("connecting to the cluster's postgres database")?;
    // Identifiers cannot be bound; the name is ours, quoted anyway.
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    sqlx::query(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .with_context(|| format!("dropping {name}"))?;
    admin.close().await.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_url_differs_only_in_the_database_name() {
        assert_eq!(
            renamed("postgres://shop@127.0.0.1:5544/shop_stock", "_bench").unwrap(),
            "postgres://shop@127.0.0.1:5544/shop_stock_bench"
        );
        assert_eq!(
            renamed("postgres://u:p@h/t3_order?sslmode=disable", "_bench").unwrap(),
            "postgres://u:p@h/t3_order_bench?sslmode=disable"
        );
        assert!(renamed("postgres://h/", "_bench").is_err());
        assert_eq!(database_name("postgres://h/db_x?a=b"), "db_x");
    }

    #[test]
    fn the_tolerant_migrators_keep_every_migration() {
        let stock = tolerant(&shop_stock::MIGRATOR);
        assert!(stock.ignore_missing);
        assert_eq!(
            stock.migrations.len(),
            shop_stock::MIGRATOR.migrations.len()
        );
    }
}
