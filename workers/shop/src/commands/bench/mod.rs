//! `shop bench`: closed-loop load over NATS against the running workers, with a progress
//! display; prints its figures and writes them as JSON.
//!
//! - [`load`]: the load loop, latency percentiles and the JSON file, shared by both.
//! - [`stock`]: `shop bench stock`, deducts straight to the stock workers.
//! - [`order`]: `shop bench order`, whole order creates through all three workers.

mod load;
mod order;
mod stock;

use anyhow::{bail, Context};

use crate::cli::BenchTarget;
use crate::config::Config;

pub async fn run(config: &Config, target: BenchTarget) -> anyhow::Result<()> {
    let (goods, load) = match &target {
        BenchTarget::Stock { goods, load, .. } | BenchTarget::Order { goods, load, .. } => {
            (*goods, load)
        }
    };
    if goods < 1 || load.concurrency < 1 || load.seconds < 1 {
        bail!("--goods, --concurrency and --seconds must be at least 1");
    }
    let client = shop_kit::server::connect(&config.nats_target("shop-bench", None))
        .await
        .context("connecting to NATS")?;
    match &target {
        BenchTarget::Stock {
            strategy,
            goods,
            first_goods_id,
            load,
        } => stock::run(&client, strategy, *goods, *first_goods_id, load).await,
        BenchTarget::Order {
            goods,
            first_goods_id,
            load,
        } => order::run(&client, *goods, *first_goods_id, load).await,
    }
}
