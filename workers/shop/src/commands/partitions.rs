//! `shop partitions`: the stock partition map as the workers route by it (KV bucket
//! `shop_partitions`): its revision and which partition owns each range of slots.

use anyhow::Context;
use shop_contracts::partition::STOCK_MAP_KEY;

use crate::config::Config;

/// The partition map bucket, connected as `name`.
pub(super) async fn bucket(
    config: &Config,
    name: &str,
) -> anyhow::Result<async_nats::jetstream::kv::Store> {
    let client = shop_kit::server::connect(&config.nats_target(name, None))
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    shop_kit::partitions::open(&js, config.nats.replicas)
        .await
        .context("opening the partition map bucket")
}

pub async fn show(config: &Config) -> anyhow::Result<()> {
    let store = bucket(config, "shop-partitions").await?;
    let now = shop_kit::partitions::read(&store, STOCK_MAP_KEY).await?;
    match now.revision {
        0 => println!("stock: one partition (the map was never written)"),
        revision => println!("stock: map revision {revision}"),
    }
    for (first, last, owner) in now.map.ranges() {
        println!("  slots {first:>3}-{last:<3}  partition {owner}");
    }
    println!("orders: one partition (orders are not partitioned yet; docs/scaling.md)");
    Ok(())
}
