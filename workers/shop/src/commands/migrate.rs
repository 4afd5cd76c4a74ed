//! `shop migrate`: create each worker's database if needed and apply its migrations.

use anyhow::Context;

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    for (name, url, migrator) in [
        ("goods", &config.goods.database_url, &shop_goods::MIGRATOR),
        ("stock", &config.stock.database_url, &shop_stock::MIGRATOR),
        ("order", &config.order.database_url, &shop_order::MIGRATOR),
    ] {
        shop_kit::db::create_and_migrate(url, migrator)
            .await
            .with_context(|| format!("migrating the {name} database"))?;
        tracing::info!(worker = name, "migrated");
    }
    Ok(())
}
