//! `shop partitions`: the stock and order partition maps as the workers route by them (KV
//! bucket `shop_partitions`): each one's revision and which partition owns each range of
//! slots. Also the servers of `shop up --partitions N` ([`PartitionServers`]).

use std::path::Path;

use anyhow::Context;
use shop_contracts::partition::{ORDER_MAP_KEY, STOCK_MAP_KEY};
use shop_devstack::{PostgresCluster, PostgresSpec};

use crate::config::{Config, DEV_PARTITIONS_FILE};

/// A kind of worker whose data is partitioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Partitioned {
    Stock,
    Order,
}

impl Partitioned {
    const ALL: [Partitioned; 2] = [Partitioned::Stock, Partitioned::Order];

    pub(super) fn name(self) -> &'static str {
        match self {
            Partitioned::Stock => "stock",
            Partitioned::Order => "order",
        }
    }

    fn map_key(self) -> &'static str {
        match self {
            Partitioned::Stock => STOCK_MAP_KEY,
            Partitioned::Order => ORDER_MAP_KEY,
        }
    }

    fn database(self) -> &'static str {
        match self {
            Partitioned::Stock => "shop_stock",
            Partitioned::Order => "shop_order",
        }
    }

    fn migrator(self) -> &'static sqlx::migrate::Migrator {
        match self {
            Partitioned::Stock => &shop_stock::MIGRATOR,
            Partitioned::Order => &shop_order::MIGRATOR,
        }
    }

    pub(super) fn partition_setting(self) -> &'static str {
        match self {
            Partitioned::Stock => "SHOP_STOCK__PARTITION",
            Partitioned::Order => "SHOP_ORDER__PARTITION",
        }
    }

    pub(super) fn database_setting(self) -> &'static str {
        match self {
            Partitioned::Stock => "SHOP_STOCK__DATABASE_URL",
            Partitioned::Order => "SHOP_ORDER__DATABASE_URL",
        }
    }

    /// Its partition 0's database (the stack's server) in `config`.
    fn first_url(self, config: &Config) -> &str {
        match self {
            Partitioned::Stock => &config.stock.database_url,
            Partitioned::Order => &config.order.database_url,
        }
    }

    fn placement(self, config: &mut Config) -> &mut shop_kit::partitions::Placement {
        match self {
            Partitioned::Stock => &mut config.stock.settings.placement,
            Partitioned::Order => &mut config.order.settings.placement,
        }
    }
}

/// The PostgreSQL servers of partitions 1.. of stock and of orders (partition 0 of each is
/// on the stack's own server): stock's partition `p` on the stack's port + `p`, orders'
/// after all of stock's.
pub(super) struct PartitionServers {
    count: u16,
    servers: Vec<(Partitioned, u16, PostgresCluster)>,
}

impl PartitionServers {
    /// Starts them (none for one partition), each on its own data directory under `data`.
    pub(super) fn start(config: &Config, data: &Path, count: u16) -> anyhow::Result<Self> {
        let mut servers = Vec::new();
        let mut port = config.dev.postgres_port;
        for kind in Partitioned::ALL {
            for p in 1..count {
                port += 1;
                let name = format!("{}-{p}", kind.name());
                let server = PostgresCluster::start(PostgresSpec {
                    bin_dir: None,
                    data_dir: data.join(format!("pg-{name}")),
                    port,
                    log_file: data.join("logs").join(format!("postgres-{name}.log")),
                    throwaway: false,
                })
                .with_context(|| {
                    format!("starting PostgreSQL for {} partition {p}", kind.name())
                })?;
                servers.push((kind, p, server));
            }
        }
        Ok(PartitionServers { count, servers })
    }

    /// `(kind, partition, database URL)` of partitions 1.. .
    pub(super) fn urls(&self) -> Vec<(Partitioned, u16, String)> {
        self.servers
            .iter()
            .map(|(kind, p, server)| (*kind, *p, server.url(kind.database())))
            .collect()
    }

    /// Migrates partitions 1.., makes each kind's map one of `count` partitions (the even
    /// map on the first partitioned run; a stored map of other partitions is refused, its
    /// data lives where that map put it), and keeps every partition's URL in `config` and in
    /// the data directory, for `shop audit`.
    pub(super) async fn migrate_and_map(
        &self,
        config: &mut Config,
        data: &Path,
    ) -> anyhow::Result<()> {
        let store = bucket(config, "shop-up").await?;
        let mut file = format!(
            "# The partitions' databases of `shop up --partitions {}`, for `shop audit`.\n",
            self.count
        );
        for kind in Partitioned::ALL {
            let mut urls = vec![kind.first_url(config).to_owned()];
            for (_, _, url) in self.urls().into_iter().filter(|(k, _, _)| *k == kind) {
                shop_kit::db::create_and_migrate(&url, kind.migrator())
                    .await
                    .with_context(|| format!("migrating a {} partition's database", kind.name()))?;
                urls.push(url);
            }
            shop_kit::partitions::ensure_count(&store, kind.map_key(), self.count)
                .await
                .with_context(|| {
                    format!(
                        "{} in {} partition(s) (start with the --partitions the data directory \
                         was made with, or wipe {})",
                        kind.name(),
                        self.count,
                        data.display()
                    )
                })?;
            kind.placement(config).partition_databases = urls.join(",");
            file.push_str(&format!(
                "[{}]\npartition_databases = \"{}\"\n",
                kind.name(),
                urls.join(",")
            ));
        }
        let path = data.join(DEV_PARTITIONS_FILE);
        std::fs::write(&path, file).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

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
    for (kind, key) in [("stock", STOCK_MAP_KEY), ("orders", ORDER_MAP_KEY)] {
        let now = shop_kit::partitions::read(&store, key).await?;
        match now.revision {
            0 => println!("{kind}: one partition (the map was never written)"),
            revision => println!("{kind}: map revision {revision}"),
        }
        for (first, last, owner) in now.map.ranges() {
            println!("  slots {first:>3}-{last:<3}  partition {owner}");
        }
    }
    Ok(())
}
