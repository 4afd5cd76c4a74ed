//! Configuration: defaults in code, then `shop.toml` if present, then `SHOP_*` environment
//! variables (`SHOP_ORDER__PAY_TIMEOUT=5s` sets `order.pay_timeout`).
//!
//! It also owns the production switch (`mode = "production"`, `SHOP_MODE=production`):
//! [`Config::production_problems`] lists what a process must not start with there (no TLS
//! to NATS, a development password), naming keys and never their values.

use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Each worker's section: its database (`shop_kit::db`) and its own `Settings`.
pub use shop_kit::db::WorkerConfig;
/// The `nats` section: where and as whom every process connects (`shop_kit::server`).
pub use shop_kit::server::NatsConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// `development` (the default) or `production`; see [`Config::production_problems`].
    pub mode: Mode,
    pub nats: NatsConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub trace: TraceConfig,
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

/// Inside `dev.data_dir`: the stock and order partitions' databases of `shop up --partitions N`,
/// written by it and read as a layer beside [`DEV_SECRETS_FILE`], so `shop audit` reads every
/// partition of the local stack.
pub const DEV_PARTITIONS_FILE: &str = "partitions.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Development,
    /// Workers and the gateway refuse to start without TLS to NATS or with a dev password.
    Production,
}

/// Every password of the dev server's users (the `password: X` entries of
/// `nats-config/dev-accounts.conf`, which `dev.conf` includes), read at build time so the
/// list cannot drift from the file: production refuses each of them.
fn dev_passwords() -> Vec<&'static str> {
    [
        include_str!("../../../nats-config/dev.conf"),
        include_str!("../../../nats-config/dev-accounts.conf"),
    ]
    .into_iter()
    .flat_map(str::lines)
    .filter(|line| !line.trim_start().starts_with('#'))
    .flat_map(|line| line.split(['{', '}', ',']))
    .filter_map(|field| field.trim().strip_prefix("password:"))
    .map(str::trim)
    .collect()
}

/// The password in a `postgres://user:password@host/db` URL, if any.
fn database_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then_some(password)
}

/// Why production start-up was refused: the problems, naming config keys, never values.
#[derive(Debug)]
pub struct NotProductionReady(pub Vec<String>);

impl std::fmt::Display for NotProductionReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refusing to start in production mode (mode = \"production\"): {}",
            self.0.join("; ")
        )
    }
}

impl std::error::Error for NotProductionReady {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info,shop_order=debug`. `RUST_LOG` wins when set.
    pub filter: String,
}

/// A worker's Prometheus endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetricsConfig {
    /// Where a worker answers `GET /metrics` (e.g. `127.0.0.1:9464`); unset: no endpoint.
    pub listen: Option<std::net::SocketAddr>,
}

/// Traces: ids are always made and passed on (W3C `traceparent` in NATS headers, `trace_id`
/// in the logs); spans leave the process only when an OTLP endpoint is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceConfig {
    /// OTLP over HTTP/protobuf, e.g. `http://127.0.0.1:4318/v1/traces`; unset: no export.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces exported (0.0 to 1.0); a request whose caller sampled its trace
    /// follows the caller.
    pub sample_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
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

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Development,
            nats: NatsConfig {
                url: "nats://127.0.0.1:4222".into(),
                user: None,
                password: None,
                replicas: 1,
                tls_ca: None,
                tls_cert: None,
                tls_key: None,
            },
            log: LogConfig {
                format: LogFormat::Human,
                filter: "info".into(),
            },
            metrics: MetricsConfig::default(),
            trace: TraceConfig {
                otlp_endpoint: None,
                sample_ratio: 1.0,
            },
            goods: WorkerConfig::new("shop_goods", shop_goods::Settings::default()),
            stock: WorkerConfig::new("shop_stock", shop_stock::Settings::default()),
            order: WorkerConfig::new("shop_order", shop_order::Settings::default()),
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
        let layers = |data_dir: Option<PathBuf>| {
            let mut figment = Figment::from(Serialized::defaults(Config::default()));
            if let Some(dir) = data_dir {
                figment = figment
                    .merge(Toml::file(dir.join(DEV_SECRETS_FILE)))
                    .merge(Toml::file(dir.join(DEV_PARTITIONS_FILE)));
            }
            figment
                .merge(Toml::file("shop.toml"))
                .merge(Env::prefixed("SHOP_").split("__"))
        };
        // The dev secrets live in the data directory, which is itself configurable: find
        // it first, then load again with the secrets under shop.toml and the environment.
        let first: Config = layers(None).extract().map_err(Box::new)?;
        let mut config: Config = layers(Some(first.dev.data_dir.clone()))
            .extract()
            .map_err(Box::new)?;
        // An empty value unsets a path (`SHOP_NATS__TLS_CA=` overrides a shop.toml entry).
        for path in [
            &mut config.nats.tls_ca,
            &mut config.nats.tls_cert,
            &mut config.nats.tls_key,
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                *path = None;
            }
        }
        if config.nats.tls_cert.is_some() != config.nats.tls_key.is_some() {
            return Err(Box::new(figment::Error::from(
                "nats.tls_cert and nats.tls_key go together: set both or neither".to_owned(),
            )));
        }
        Ok(config)
    }

    /// In production mode, what forbids a NATS client (a worker, the gateway) from
    /// starting: NATS without TLS (no `nats.tls_ca`), no NATS credentials, a password from
    /// `nats-config/dev.conf`, and `database_url` (the one the process uses, if any) left at
    /// the development default or carrying a development password. `Ok` in development.
    pub fn production_problems(
        &self,
        database_url: Option<&str>,
    ) -> Result<(), NotProductionReady> {
        if self.mode != Mode::Production {
            return Ok(());
        }
        let dev = dev_passwords();
        let mut problems = Vec::new();
        if self.nats.tls_ca.is_none() {
            problems.push(
                "nats.tls_ca is not set: NATS must be TLS, verified against the deployment's CA"
                    .to_owned(),
            );
        }
        match &self.nats.password {
            None => problems.push("nats.user and nats.password are not set".to_owned()),
            Some(password) if dev.contains(&password.as_str()) => problems.push(
                "nats.password is a development password from nats-config/dev.conf".to_owned(),
            ),
            Some(_) => {}
        }
        if let Some(url) = database_url {
            let default = Config::default();
            let dev_urls = [
                default.goods.database_url,
                default.stock.database_url,
                default.order.database_url,
            ];
            if dev_urls.iter().any(|d| d == url) {
                problems.push("the database_url is the development default".to_owned());
            }
            // The dev cluster's role is `shop` and trusts loopback; a password that is a dev
            // NATS password or the role's name is a copied dev setting.
            if let Some(password) = database_password(url) {
                if dev.contains(&password) || password == shop_devstack::SUPERUSER {
                    problems.push("the database_url carries a development password".to_owned());
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(NotProductionReady(problems))
        }
    }

    /// Where a client connects. `worker` names the worker kind whose permissions apply
    /// (its inbox is `_INBOX.<worker>`); tools such as `shop seed` pass `None`.
    pub fn nats_target(&self, name: &str, worker: Option<&str>) -> shop_kit::server::NatsTarget {
        self.nats.target(name, worker)
    }
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large by design.
#[allow(clippy::result_large_err)]
mod tests {
    use std::time::Duration;

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
    fn dev_passwords_come_from_dev_conf() {
        let dev = dev_passwords();
        for password in [
            "goods-dev",
            "stock-dev",
            "order-dev",
            "gateway-dev",
            "admin-dev",
        ] {
            assert!(dev.contains(&password), "{password} missing from {dev:?}");
        }
    }

    /// One check per problem production refuses, each naming a key and never a value.
    #[test]
    fn production_refuses_missing_tls_and_dev_passwords() {
        let ready = || {
            let mut config = Config {
                mode: Mode::Production,
                ..Config::default()
            };
            config.nats.user = Some("order".into());
            config.nats.password = Some("pw-from-a-vault".into());
            config.nats.tls_ca = Some("/etc/shop/tls/ca.pem".into());
            config
        };
        let db = "postgres://shop_order:db-from-a-vault@db.internal/shop_order";
        assert!(ready().production_problems(Some(db)).is_ok());
        let check = |config: Config, url: &str, expect: &str| {
            let error = config
                .production_problems(Some(url))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expect), "{error}");
            assert!(
                !error.contains("vault") && !error.contains("order-dev"),
                "{error}"
            );
        };
        let mut no_tls = ready();
        no_tls.nats.tls_ca = None;
        check(no_tls, db, "nats.tls_ca is not set");
        let mut dev_password = ready();
        dev_password.nats.password = Some("order-dev".into());
        check(
            dev_password,
            db,
            "development password from nats-config/dev.conf",
        );
        let mut anonymous = ready();
        anonymous.nats.password = None;
        check(anonymous, db, "nats.password are not set");
        check(
            ready(),
            &Config::default().order.database_url,
            "development default",
        );
        check(
            ready(),
            "postgres://shop:admin-dev@db.internal/shop_order",
            "development password",
        );
        check(
            ready(),
            "postgres://shop:shop@db.internal/shop_order",
            "development password",
        );
        // Development mode checks nothing.
        let mut dev = ready();
        dev.mode = Mode::Development;
        dev.nats.tls_ca = None;
        assert!(dev.production_problems(Some(db)).is_ok());
    }

    #[test]
    fn debug_shows_no_password() {
        let mut config = Config::default();
        config.nats.password = Some("nats-pw-123".into());
        config.nats.url = "nats://u:url-pw-123@h:4222".into();
        config.stock.database_url = "postgres://shop:db-pw-123@h/shop_stock".into();
        let printed = format!("{config:?}");
        assert!(!printed.contains("pw-123"), "{printed}");
    }

    #[test]
    fn metrics_and_traces_are_off_unless_set() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load().map_err(|e| *e)?;
            assert!(config.metrics.listen.is_none());
            assert!(config.trace.otlp_endpoint.is_none());
            jail.set_env("SHOP_METRICS__LISTEN", "127.0.0.1:9464");
            jail.set_env(
                "SHOP_TRACE__OTLP_ENDPOINT",
                "http://127.0.0.1:4318/v1/traces",
            );
            jail.set_env("SHOP_TRACE__SAMPLE_RATIO", "0.25");
            let config = Config::load().map_err(|e| *e)?;
            assert_eq!(
                config.metrics.listen,
                Some("127.0.0.1:9464".parse().unwrap())
            );
            assert_eq!(
                config.trace.otlp_endpoint.as_deref(),
                Some("http://127.0.0.1:4318/v1/traces")
            );
            assert_eq!(config.trace.sample_ratio, 0.25);
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
