//! Configuration: defaults in code, then `shop.toml` if present, then `SHOP_*` environment
//! variables (`SHOP_ORDER__PAY_TIMEOUT=5s` sets `order.pay_timeout`).

use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub nats: NatsConfig,
    pub log: LogConfig,
    pub goods: WorkerConfig<shop_goods::Settings>,
    pub stock: WorkerConfig<shop_stock::Settings>,
    pub order: WorkerConfig<shop_order::Settings>,
    /// `shop gateway`: the HTTP API (its keys have no defaults; see [`DEV_SECRETS_FILE`]).
    pub gateway: shop_gateway::Settings,
    pub dev: DevConfig,
    /// Fault tests only: the crash point a worker aborts at (`shop_kit::crash::POINTS`).
    #[serde(default)]
    pub crash_at: Option<String>,
}

/// Inside `dev.data_dir`: the random dev secrets of the gateway (token key, payment
/// secret), written by `shop up` on its first run and read as a configuration layer below
/// `shop.toml`, so `shop token` and a hand-started `shop gateway` agree with the stack.
pub const DEV_SECRETS_FILE: &str = "gateway-dev-secrets.toml";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NatsConfig {
    /// One server, or the nodes of a cluster separated by commas.
    pub url: String,
    /// Each worker connects as its own least-privilege user (nats-config/permissions.conf).
    pub user: Option<String>,
    pub password: Option<String>,
    /// Replicas of the streams and KV buckets a worker creates (3 on a 3-node cluster).
    /// A stream or bucket that exists keeps its own: start-up never changes replicas.
    pub replicas: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info,shop_order=debug`. `RUST_LOG` wins when set.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
}

/// A worker's database plus its own settings (defined by the worker crate).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerConfig<S> {
    pub database_url: String,
    pub max_connections: u32,
    /// How long a request waits for a database connection before answering `unavailable`.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Create the database and apply migrations when the worker starts.
    pub migrate_on_start: bool,
    #[serde(flatten)]
    pub settings: S,
}

/// `shop up`: where the local stack keeps its data and finds its servers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevConfig {
    pub data_dir: PathBuf,
    pub nats_server_bin: PathBuf,
    pub nats_config: PathBuf,
    /// `shop up --nats-nodes 3`: the directory of the nodes' configs, `node-<n>.conf`.
    pub nats_cluster_dir: PathBuf,
    pub postgres_port: u16,
    pub nats_port: u16,
}

fn worker<S>(database: &str, settings: S) -> WorkerConfig<S> {
    WorkerConfig {
        database_url: format!("postgres://shop@127.0.0.1:5544/{database}"),
        max_connections: 20,
        acquire_timeout: Duration::from_secs(3),
        migrate_on_start: true,
        settings,
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nats: NatsConfig {
                url: "nats://127.0.0.1:4222".into(),
                user: None,
                password: None,
                replicas: 1,
            },
            log: LogConfig {
                format: LogFormat::Human,
                filter: "info".into(),
            },
            goods: worker("shop_goods", shop_goods::Settings::default()),
            stock: worker("shop_stock", shop_stock::Settings::default()),
            order: worker("shop_order", shop_order::Settings::default()),
            gateway: shop_gateway::Settings::default(),
            crash_at: None,
            dev: DevConfig {
                data_dir: ".data".into(),
                nats_server_bin: ".tools/venv/bin/nats-server".into(),
                nats_config: "nats-config/dev.conf".into(),
                nats_cluster_dir: "nats-config/cluster".into(),
                postgres_port: 5544,
                nats_port: 4222,
            },
        }
    }
}

impl Config {
    /// Loads the layered configuration. The error is boxed: figment's is large, and it is
    /// only ever reported once, at start-up.
    pub fn load() -> Result<Config, Box<figment::Error>> {
        let layers = |dev_secrets: Option<PathBuf>| {
            let mut figment = Figment::from(Serialized::defaults(Config::default()));
            if let Some(path) = dev_secrets {
                figment = figment.merge(Toml::file(path));
            }
            figment
                .merge(Toml::file("shop.toml"))
                .merge(Env::prefixed("SHOP_").split("__"))
        };
        // The dev secrets live in the data directory, which is itself configurable: find
        // it first, then load again with the secrets under shop.toml and the environment.
        let first: Config = layers(None).extract().map_err(Box::new)?;
        layers(Some(first.dev.data_dir.join(DEV_SECRETS_FILE)))
            .extract()
            .map_err(Box::new)
    }

    /// Where a client connects. `worker` names the worker kind whose permissions apply
    /// (its inbox is `_INBOX.<worker>`); tools such as `shop seed` pass `None`.
    pub fn nats_target(&self, name: &str, worker: Option<&str>) -> shop_kit::server::NatsTarget {
        shop_kit::server::NatsTarget {
            url: self.nats.url.clone(),
            user: self.nats.user.clone(),
            password: self.nats.password.clone(),
            name: name.to_owned(),
            inbox_prefix: worker.map(|w| format!("_INBOX.{w}")),
        }
    }
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_nested_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SHOP_NATS__URL", "nats://10.0.0.1:4222");
            jail.set_env("SHOP_GOODS__MAX_CONNECTIONS", "7");
            jail.set_env("SHOP_GOODS__ACQUIRE_TIMEOUT", "250ms");
            jail.set_env("SHOP_NATS__REPLICAS", "3");
            let config = Config::load().map_err(|e| *e)?;
            assert_eq!(config.nats.url, "nats://10.0.0.1:4222");
            assert_eq!(config.goods.max_connections, 7);
            assert_eq!(config.nats.replicas, 3);
            assert_eq!(config.goods.acquire_timeout, Duration::from_millis(250));
            Ok(())
        });
    }

    #[test]
    fn shop_toml_sits_between_defaults_and_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "shop.toml",
                "[log]\nformat = \"json\"\n[goods]\nmax_connections = 3\n",
            )?;
            jail.set_env("SHOP_GOODS__MAX_CONNECTIONS", "9");
            let config = Config::load().map_err(|e| *e)?;
            assert_eq!(config.log.format, LogFormat::Json);
            assert_eq!(config.goods.max_connections, 9);
            Ok(())
        });
    }
}
