//! `shop goods|stock|order`: connect, migrate, serve (and `GET /metrics` when `metrics.listen`
//! is set) until a stop signal or a fatal error; a stop loses no admitted request
//! (`shop_kit::worker`).

use anyhow::Context;
use shop_kit::metrics::MetricsHttp;
use shop_kit::Worker;
use sqlx::PgPool;

use crate::config::{Config, WorkerConfig};

pub async fn goods(config: &Config) -> anyhow::Result<()> {
    let (client, pool, metrics) =
        connect(config, "goods", &config.goods, &shop_goods::MIGRATOR).await?;
    let worker = shop_goods::start(client, pool).await;
    run("goods", worker, &config.goods, metrics).await
}

pub async fn stock(config: &Config) -> anyhow::Result<()> {
    let (client, pool, metrics) =
        connect(config, "stock", &config.stock, &shop_stock::MIGRATOR).await?;
    let settings = config.stock.settings.clone();
    let worker = shop_stock::start(client, pool, settings, config.nats.replicas).await;
    run("stock", worker, &config.stock, metrics).await
}

pub async fn order(config: &Config) -> anyhow::Result<()> {
    let (client, pool, metrics) =
        connect(config, "order", &config.order, &shop_order::MIGRATOR).await?;
    let settings = config.order.settings.clone();
    let worker = shop_order::start(client, pool, settings, config.nats.replicas).await;
    run("order", worker, &config.order, metrics).await
}

async fn connect<S>(
    config: &Config,
    name: &'static str,
    worker: &WorkerConfig<S>,
    migrator: &sqlx::migrate::Migrator,
) -> anyhow::Result<(async_nats::Client, PgPool, Option<MetricsHttp>)> {
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
    let metrics = match config.metrics.listen {
        Some(listen) => {
            let http = shop_kit::metrics::bind_http(listen)
                .await
                .with_context(|| format!("serving metrics on {listen} (metrics.listen)"))?;
            tracing::info!("metrics on http://{}/metrics", http.local_addr()?);
            Some(http)
        }
        None => None,
    };
    Ok((client, pool, metrics))
}

/// Runs the `name` worker (with `GET /metrics` as one of its tasks) until SIGTERM or ctrl-c,
/// or until a task of it fails, then stops it within the worker's `shutdown_timeout`.
async fn run<S>(
    name: &str,
    started: Result<Worker, async_nats::Error>,
    config: &WorkerConfig<S>,
    metrics: Option<MetricsHttp>,
) -> anyhow::Result<()> {
    let mut worker = started.map_err(|e| anyhow::anyhow!("starting the {name} worker: {e}"))?;
    if let Some(http) = metrics {
        let done = worker.draining();
        worker.background("GET /metrics", http.serve(done));
    }
    worker
        .run(super::shutdown_signal(), config.shutdown_timeout)
        .await
        .map_err(anyhow::Error::from)
}
