//! `shop goods|stock|order`: connect, migrate, serve (and `GET /metrics` when `metrics.listen`
//! is set) until a stop signal or a fatal error.

use std::future::Future;

use anyhow::Context;
use sqlx::PgPool;

use crate::config::{Config, WorkerConfig};

pub async fn goods(config: &Config) -> anyhow::Result<()> {
    let (client, pool) = connect(config, "goods", &config.goods, &shop_goods::MIGRATOR).await?;
    serve_until_stopped("goods", shop_goods::run(client, pool)).await
}

pub async fn stock(config: &Config) -> anyhow::Result<()> {
    let (client, pool) = connect(config, "stock", &config.stock, &shop_stock::MIGRATOR).await?;
    serve_until_stopped(
        "stock",
        shop_stock::run(
            client,
            pool,
            config.stock.settings.clone(),
            config.nats.replicas,
        ),
    )
    .await
}

pub async fn order(config: &Config) -> anyhow::Result<()> {
    let (client, pool) = connect(config, "order", &config.order, &shop_order::MIGRATOR).await?;
    serve_until_stopped(
        "order",
        shop_order::run(
            client,
            pool,
            config.order.settings.clone(),
            config.nats.replicas,
        ),
    )
    .await
}

async fn connect<S>(
    config: &Config,
    name: &'static str,
    worker: &WorkerConfig<S>,
    migrator: &sqlx::migrate::Migrator,
) -> anyhow::Result<(async_nats::Client, PgPool)> {
    shop_kit::crash::arm(config.crash_at.as_deref())?;
    config.production_problems(Some(&worker.database_url))?;
    let client =
        shop_kit::server::connect(&config.nats_target(&format!("shop-{name}"), Some(name)))
            .await
            .context("connecting to NATS")?;
    if worker.migrate_on_start {
        shop_kit::db::create_and_migrate(&worker.database_url, migrator)
            .await
            .with_context(|| format!("migrating the {name} database"))?;
    }
    let pool = shop_kit::db::connect(
        &worker.database_url,
        worker.max_connections,
        worker.acquire_timeout,
    )
    .with_context(|| format!("connecting to the {name} database"))?;
    shop_kit::metrics::global().watch_pool(name, pool.clone());
    if let Some(listen) = config.metrics.listen {
        let bound = shop_kit::metrics::serve_http(listen)
            .await
            .with_context(|| format!("serving metrics on {listen} (metrics.listen)"))?;
        tracing::info!("metrics on http://{bound}/metrics");
    }
    Ok((client, pool))
}

async fn serve_until_stopped<E>(
    name: &str,
    serving: impl Future<Output = Result<(), E>>,
) -> anyhow::Result<()>
where
    E: std::fmt::Display,
{
    tokio::select! {
        result = serving => {
            result.map_err(|e| anyhow::anyhow!("the {name} worker failed: {e}"))?;
            anyhow::bail!("the {name} worker stopped: its NATS subscriptions ended")
        }
        _ = super::shutdown_signal() => Ok(()),
    }
}
