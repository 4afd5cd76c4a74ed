//! `shop audit`: connects to the databases and NATS the configuration names and runs the
//! audit of `shop_audit`, which prints its report.

use std::time::Duration;

use anyhow::Context;

use crate::config::Config;

pub async fn run(config: &Config, grace: Duration, json: bool) -> anyhow::Result<()> {
    let stock_dbs = config
        .stock
        .settings
        .all_databases(&config.stock.database_url)
        .into_iter()
        .enumerate()
        .map(|(p, url)| {
            shop_kit::db::connect(url, 2, config.stock.acquire_timeout)
                .with_context(|| format!("connecting to stock partition {p}'s database"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let order_db =
        shop_kit::db::connect(&config.order.database_url, 2, config.order.acquire_timeout)
            .context("connecting to the order database")?;
    let nats = shop_kit::server::connect(&config.nats_target("shop-audit", None))
        .await
        .context("connecting to NATS")?;
    let sources = shop_audit::Sources {
        stock_dbs,
        order_db,
        nats,
    };
    shop_audit::run(&sources, grace, json).await?;
    Ok(())
}
