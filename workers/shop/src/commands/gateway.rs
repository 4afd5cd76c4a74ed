//! `shop gateway`: connect as the gateway's NATS user and serve HTTP until a stop signal.

use anyhow::Context;

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    config.production_problems(None)?;
    let client = shop_kit::server::connect(&config.nats_target("shop-gateway", Some("gateway")))
        .await
        .context("connecting to NATS")?;
    shop_gateway::run(client, config.gateway.clone(), super::shutdown_signal())
        .await
        .context("the gateway failed")
}
