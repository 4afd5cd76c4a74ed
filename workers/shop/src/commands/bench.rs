//! `shop bench`: the load generator of `shop_loadgen`, given what it needs from the
//! configuration.

use crate::config::Config;

pub async fn run(config: &Config, target: shop_loadgen::BenchTarget) -> anyhow::Result<()> {
    shop_loadgen::bench::run(&bench_config(config), target).await
}

fn bench_config(config: &Config) -> shop_loadgen::BenchConfig {
    let database = |url: &str, acquire_timeout| shop_loadgen::Database {
        url: url.to_owned(),
        acquire_timeout,
    };
    let unset = Config::default();
    shop_loadgen::BenchConfig {
        nats: config.nats_target("shop-bench", None),
        goods: database(&config.goods.database_url, config.goods.acquire_timeout),
        stock: database(&config.stock.database_url, config.stock.acquire_timeout),
        stock_partitions: config
            .stock
            .settings
            .placement
            .all_databases(&config.stock.database_url)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        order: database(&config.order.database_url, config.order.acquire_timeout),
        order_partitions: config
            .order
            .settings
            .placement
            .all_databases(&config.order.database_url)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        gateway_listen: config.gateway.listen,
        gateway_hs256_secret: config.gateway.auth.hs256_secret.clone(),
        check_delay: config.order.settings.check_delay,
        pay_timeout: config.order.settings.pay_timeout,
        unset_nats_url: unset.nats.url,
        unset_gateway_listen: unset.gateway.listen,
    }
}
