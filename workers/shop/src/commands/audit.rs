//! `shop audit`: connects to the databases and NATS the configuration names and runs the
//! audit of `shop_audit`, which prints its report.

use std::time::Duration;

use anyhow::Context;

use crate::config::Config;

pub async fn run(config: &Config, grace: Duration, json: bool) -> anyhow::Result<()> {
    let connect = |kind: &str, urls: Vec<&str>, acquire_timeout| {
        urls.into_iter()
            .enumerate()
            .map(|(p, url)| {
                shop_kit::db::connect(url, 2, acquire_timeout)
                    .with_context(|| format!("connecting to {kind} partition {p}'s database"))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let stock_dbs = connect(
        "stock",
        config
            .stock
            .settings
            .placement
            .all_databases(&config.stock.database_url),
        config.stock.acquire_timeout,
    )?;
    let order_dbs = connect(
        "order",
        config
            .order
            .settings
            .placement
            .all_databases(&config.order.database_url),
        config.order.acquire_timeout,
    )?;
    let nats = shop_kit::server::connect(&config.nats_target("shop-audit", None))
        .await
        .context("connecting to NATS")?;
    let sources = shop_audit::Sources {
        stock_dbs,
        order_dbs,
        nats,
    };
    shop_audit::run(&sources, grace, json).await?;
    Ok(())
}
