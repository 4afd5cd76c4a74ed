//! `shop bench`: closed-loop load over NATS against the running workers, with a progress
//! display; prints its figures and writes them as JSON.
//!
//! - [`load`]: the load loop, latency percentiles and the JSON file, shared by both.
//! - [`stock`]: `shop bench stock`, deducts straight to the stock workers.
//! - [`order`]: `shop bench order`, whole order creates through all three workers.

mod load;
mod order;
mod stock;

use anyhow::bail;

use crate::cli::BenchTarget;
use crate::config::Config;

pub async fn run(config: &Config, target: BenchTarget) -> anyhow::Result<()> {
    let load = match &target {
        BenchTarget::Stock { load, .. } | BenchTarget::Order { load, .. } => load,
    };
    if load.concurrency < 1 || load.seconds < 1 {
        bail!("--concurrency and --seconds must be at least 1");
    }
    match &target {
        BenchTarget::Stock {
            strategy,
            goods,
            first_goods_id,
            load,
        } => stock::run(config, strategy, *goods, *first_goods_id, load).await,
        BenchTarget::Order {
            goods,
            first_goods_id,
            load,
        } => order::run(config, *goods, *first_goods_id, load).await,
    }
}
