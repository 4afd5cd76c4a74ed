//! `shop goods|stock|order`: connect, migrate, serve (and `GET /metrics` when `metrics.listen`
//! is set) until a stop signal or a fatal error; a stop loses no admitted request
//! (`shop_kit::worker`).

use anyhow::Context;
use sqlx::PgPool;

use crate::config::{Config, WorkerConfig};

pub async fn goods(config: &Config) -> anyhow::Result<()> {
    let (client, pool) = connect(config, "goods", &config.goods, &shop_goods::MIGRATOR).await?;
    let worker = shop_goods::start(client, pool)
        .await
        .map_err(|e| anyhow::anyhow!("starting the goods worker: {e}"))?;
    run(worker, &config.goods).await
}

pub async fn stock(config: &Config) -> anyhow::Result<()> {
    let (client, pool) = connect(config, "stock", &config.stock, &shop_stock::MIGRATOR).await?;
    let worker = shop_stock::start(
        client,
        pool,
        config.stock.settings.clone(),
        config.nats.replicas,
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the stock worker: {e}"))?;
    run(worker, &config.stock).await
}

pub async fn order(config: &Config) -> anyhow::Result<()> {
    let (client, pool) = connect(config, "order", &config.order, &shop_order::MIGRATOR).await?;
    let worker = shop_order::start(
        client,
        pool,
        config.order.settings.clone(),
        config.nats.replicas,
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the order worker: {e}"))?;
    run(worker, &config.order).await
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

/// Runs `worker` until SIGTERM or ctrl-c (or a task of it fails), then stops it within the
/// worker's `shutdown_timeout`.
async fn run<S>(worker: shop_kit::Worker, config: &WorkerConfig<S>) -> anyhow::Result<()> {
    worker
        .run(super::shutdown_signal(), config.shutdown_timeout)
        .await
        .map_err(anyhow::Error::from)
}
