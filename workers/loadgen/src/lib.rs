//! The load generator of `shop`: [`bench`] (`shop bench`: deducts or whole creates per
//! second and their latency, against the system's own ceilings, written as JSON and SVG)
//! and [`soak`] (`shop soak`: a mixed load while workers are killed and nats-server
//! restarted, audited as it goes). Their command-line arguments are in [`cli`]; the binary
//! embeds them and passes what the bench needs from its configuration as a
//! [`BenchConfig`] of plain values, so this crate never depends on the binary.
//!
//! Errors: this is a reporting tool at the edge, like the binary, and it keeps `anyhow`
//! with `.context(..)` rather than one `thiserror` enum: its errors are only ever printed
//! to the person who ran it, never matched on.

pub mod bench;
pub mod cli;
pub mod soak;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use shop_kit::server::NatsTarget;

pub use cli::{BenchTarget, SoakArgs};

/// What the load generator needs from the configuration of the `shop` that runs it: where
/// the stack listens, and the worker settings its runs are measured against.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// How the bench's own clients connect (each client names itself).
    pub nats: NatsTarget,
    pub goods: Database,
    pub stock: Database,
    /// Every stock partition's database URL, partition 0 (`stock`) first (empty: `stock`
    /// alone): their servers, backends and workers are the stack's too.
    pub stock_partitions: Vec<String>,
    pub order: Database,
    /// Every order partition's database URL, partition 0 (`order`) first (empty: `order`
    /// alone).
    pub order_partitions: Vec<String>,
    /// Where the HTTP gateway listens (`gateway.listen`).
    pub gateway_listen: SocketAddr,
    /// The gateway's HS256 secret, to mint the tokens of `--via http`.
    pub gateway_hs256_secret: Option<shop_gateway::Secret>,
    /// The order workers' `order.check_delay` and `order.pay_timeout`, unless a flag says
    /// otherwise.
    pub check_delay: Duration,
    pub pay_timeout: Duration,
    /// What a worker started without `SHOP_NATS__URL` or `SHOP_GATEWAY__LISTEN` uses (the
    /// defaults): how the bench tells the stack's processes from others in /proc.
    pub unset_nats_url: String,
    pub unset_gateway_listen: SocketAddr,
}

/// One worker's database, as the bench reaches it.
#[derive(Debug, Clone)]
pub struct Database {
    pub url: String,
    pub acquire_timeout: Duration,
}

impl BenchConfig {
    /// The NATS target of one of the bench's clients, named `name`.
    pub fn nats_target(&self, name: &str) -> NatsTarget {
        NatsTarget {
            name: name.to_owned(),
            ..self.nats.clone()
        }
    }

    /// Every stock partition's database URL, partition 0 first.
    pub fn stock_databases(&self) -> Vec<&str> {
        if self.stock_partitions.is_empty() {
            vec![self.stock.url.as_str()]
        } else {
            self.stock_partitions.iter().map(String::as_str).collect()
        }
    }

    /// Every order partition's database URL, partition 0 first.
    pub fn order_databases(&self) -> Vec<&str> {
        if self.order_partitions.is_empty() {
            vec![self.order.url.as_str()]
        } else {
            self.order_partitions.iter().map(String::as_str).collect()
        }
    }

    /// Connects to what the audit reads (two connections per database).
    pub async fn audit_sources(&self, name: &str) -> anyhow::Result<shop_audit::Sources> {
        let mut stock_dbs = Vec::new();
        for url in self.stock_databases() {
            stock_dbs.push(
                shop_kit::db::connect(url, 2, self.stock.acquire_timeout)
                    .context("connecting to a stock partition's database")?,
            );
        }
        let mut order_dbs = Vec::new();
        for url in self.order_databases() {
            order_dbs.push(
                shop_kit::db::connect(url, 2, self.order.acquire_timeout)
                    .context("connecting to an order partition's database")?,
            );
        }
        let nats = shop_kit::server::connect(&self.nats_target(name))
            .await
            .context("connecting to NATS")?;
        Ok(shop_audit::Sources {
            stock_dbs,
            order_dbs,
            nats,
        })
    }

    /// The development stack's settings (`shop up` with no configuration), for unit tests.
    #[cfg(test)]
    pub(crate) fn dev() -> BenchConfig {
        let database = |name: &str| Database {
            url: format!("postgres://shop@127.0.0.1:5544/{name}"),
            acquire_timeout: Duration::from_secs(3),
        };
        let gateway = shop_gateway::Settings::default();
        BenchConfig {
            nats: NatsTarget {
                url: "nats://127.0.0.1:4222".into(),
                user: None,
                password: None,
                name: "shop-bench".into(),
                inbox_prefix: None,
                tls: None,
            },
            goods: database("shop_goods"),
            stock: database("shop_stock"),
            stock_partitions: Vec::new(),
            order: database("shop_order"),
            order_partitions: Vec::new(),
            gateway_listen: gateway.listen,
            gateway_hs256_secret: None,
            check_delay: Duration::from_secs(5),
            pay_timeout: Duration::from_secs(900),
            unset_nats_url: "nats://127.0.0.1:4222".into(),
            unset_gateway_listen: gateway.listen,
        }
    }
}
