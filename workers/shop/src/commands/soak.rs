//! `shop soak`: the soak of `shop_loadgen` on a stack of its own, whose worker processes
//! this binary starts, stops and seeds the way `shop up` does.

use anyhow::Context;
use shop_loadgen::soak::{Urls, WORKER_ENV};
use tokio::process::Child;

use super::up::{serving_and_seeded, worker_command, WORKERS};
use crate::config::Config;

pub async fn run(config: Config, args: shop_loadgen::SoakArgs) -> anyhow::Result<()> {
    let dev = shop_loadgen::soak::Dev {
        data_dir: config.dev.data_dir.clone(),
        nats_server_bin: config.dev.nats_server_bin.clone(),
        nats_config: config.dev.nats_config.clone(),
        nats_port: config.dev.nats_port,
        postgres_port: config.dev.postgres_port,
    };
    shop_loadgen::soak::run(dev, args, &Stack(config)).await
}

/// This binary's configuration, pointed at the soak's servers by [`Stack::on`].
struct Stack(Config);

impl Stack {
    fn on(&self, urls: &Urls) -> Config {
        let mut config = self.0.clone();
        config.nats.url = urls.nats.clone();
        config.goods.database_url = urls.goods_database.clone();
        config.stock.database_url = urls.stock_database.clone();
        config.order.database_url = urls.order_database.clone();
        config
    }

    fn as_admin(&self, urls: &Urls) -> Config {
        let mut config = self.on(urls);
        config.nats.user = Some("admin".into());
        config.nats.password = Some("admin-dev".into());
        config
    }
}

impl shop_loadgen::soak::Stack for Stack {
    async fn migrate(&self, urls: &Urls) -> anyhow::Result<()> {
        super::migrate::run(&self.on(urls)).await
    }

    fn spawn(&self, urls: &Urls, kind: &str) -> anyhow::Result<Child> {
        let password = WORKERS
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| *p)
            .context("a worker kind")?;
        let exe = std::env::current_exe().context("locating the shop binary")?;
        let command = worker_command(&exe, &self.on(urls), kind, password, WORKER_ENV);
        Ok(shop_devstack::spawn_child(command, kind)?)
    }

    async fn stop(&self, child: &mut Child) {
        shop_devstack::stop(child).await;
    }

    fn admin(&self, urls: &Urls, name: &str) -> shop_kit::server::NatsTarget {
        self.as_admin(urls).nats_target(name, None)
    }

    async fn serving_and_seeded(
        &self,
        urls: &Urls,
        stock: i64,
    ) -> anyhow::Result<async_nats::Client> {
        serving_and_seeded(&self.as_admin(urls), "shop-soak", stock).await
    }
}
