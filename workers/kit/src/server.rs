//! Connecting to NATS (as whom, over TLS with which CA; the `nats` configuration section,
//! [`NatsConfig`]) and checking the server is new
//! enough for the contract. Credentials never reach a log line or an error message from here:
//! [`NatsTarget`]'s `Debug` hides the password and errors name the URL without its userinfo.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// CONTRACT section 5: nats-server 2.11 or newer (per-message delays on nak, KV TTLs).
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 11);

#[derive(Debug, Error)]
pub enum ServerError {
    /// `url` is [`redact_url`]ed: a `nats://user:password@host` URL must not leak.
    #[error("could not connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("TLS file {what} ({}) is not readable: {source}", path.display())]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("nats-server {found} is too old: shop needs {}.{} or newer", MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1)]
    TooOld { found: String },
    #[error("the NATS server has JetStream disabled")]
    NoJetStream,
}

/// The `nats` section of the configuration: where and as whom a process connects.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct NatsConfig {
    /// One server, or the nodes of a cluster separated by commas.
    pub url: String,
    /// Each worker connects as its own least-privilege user (nats-config/permissions.conf).
    pub user: Option<String>,
    pub password: Option<String>,
    /// Replicas of the streams and KV buckets a worker creates (3 on a 3-node cluster).
    /// A stream or bucket that exists keeps its own: start-up never changes replicas.
    pub replicas: usize,
    /// PEM file of the CA that signed nats-server's certificate. Set: the connection must be
    /// TLS (whatever the URL's scheme) and the server is verified against this CA only.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for a server that verifies clients (`verify: true`).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

// By hand: a derived Debug would print the password (and a URL's userinfo).
impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("replicas", &self.replicas)
            .finish()
    }
}

impl NatsConfig {
    /// Where a client connects. `worker` names the worker kind whose permissions apply
    /// (its inbox is `_INBOX.<worker>`); tools such as `shop seed` pass `None`.
    pub fn target(&self, name: &str, worker: Option<&str>) -> NatsTarget {
        NatsTarget {
            url: self.url.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            name: name.to_owned(),
            inbox_prefix: worker.map(|w| format!("_INBOX.{w}")),
            tls: self.tls_ca.clone().map(|ca| Tls {
                ca,
                client: self
                    .tls_cert
                    .clone()
                    .zip(self.tls_key.clone())
                    .map(|(cert, key)| ClientCert { cert, key }),
            }),
        }
    }
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct NatsTarget {
    /// One server URL, or several separated by commas (the nodes of a cluster): the client
    /// connects to one of them and fails over to the others.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub name: String,
    /// Replies to this connection's requests arrive under `<prefix>.`; a worker uses
    /// `_INBOX.<worker>` because its user may subscribe only there.
    pub inbox_prefix: Option<String>,
    /// `Some`: the connection must be TLS, and the server's certificate must chain to this CA.
    pub tls: Option<Tls>,
}

/// TLS to nats-server: the CA that signed the server's certificate (instead of the
/// system's roots: a private deployment has its own CA), and a client certificate for
/// servers that verify clients (`verify: true`).
#[derive(Debug, Clone)]
pub struct Tls {
    pub ca: PathBuf,
    pub client: Option<ClientCert>,
}

#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

// By hand: a derived Debug would print the password.
impl std::fmt::Debug for NatsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTarget")
            .field("url", &redact_url(&self.url))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .field("name", &self.name)
            .field("inbox_prefix", &self.inbox_prefix)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The URL(s) without credentials: `nats://u:p@h:4222,nats://h2` → `nats://h:4222,nats://h2`.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}{}", &one[..scheme + 3], &one[at + 1..])
            }
            (None, Some(at)) => one[at + 1..].to_owned(),
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How long a worker starting beside a nats-server that is (re)starting waits for it.
const INITIAL_CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Connects (retrying while the server is not up yet) and checks the server version.
pub async fn connect(target: &NatsTarget) -> Result<async_nats::Client, ServerError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(&target.name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
    if let (Some(user), Some(password)) = (&target.user, &target.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(prefix) = &target.inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    if let Some(tls) = &target.tls {
        // async-nats reads the files only during the handshake and then reports a bare
        // "TLS error"; checking them first names the file that is missing.
        readable("tls_ca", &tls.ca)?;
        options = options
            .require_tls(true)
            .add_root_certificates(tls.ca.clone());
        if let Some(client) = &tls.client {
            readable("tls_cert", &client.cert)?;
            readable("tls_key", &client.key)?;
            options = options.add_client_certificate(client.cert.clone(), client.key.clone());
        }
    }
    // A server that is restarting (refused, reset, timed out) is waited for; one that
    // refuses the credentials or the TLS set-up is not: waiting would not change its answer.
    let give_up = std::time::Instant::now() + INITIAL_CONNECT_PATIENCE;
    let client = loop {
        match options.clone().connect(server_urls(&target.url)).await {
            Ok(client) => break client,
            Err(source)
                if matches!(
                    source.kind(),
                    async_nats::ConnectErrorKind::Io | async_nats::ConnectErrorKind::TimedOut
                ) && std::time::Instant::now() < give_up =>
            {
                tracing::warn!(error = %source, "nats-server not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(source) => {
                return Err(ServerError::Connect {
                    url: redact_url(&target.url),
                    source,
                })
            }
        }
    };
    // `connect` returns after the handshake, so the server's INFO is here already.
    let info = client.server_info();
    check_version(&info.version)?;
    if !info.jetstream {
        return Err(ServerError::NoJetStream);
    }
    Ok(client)
}

/// The URLs of a comma-separated server list (async-nats parses one URL per string).
pub fn server_urls(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

fn readable(what: &'static str, path: &std::path::Path) -> Result<(), ServerError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| ServerError::TlsFile {
            what,
            path: path.to_owned(),
            source,
        })
}

/// Accepts `major.minor[.patch][-pre]` at or above [`MIN_SERVER_VERSION`].
pub fn check_version(found: &str) -> Result<(), ServerError> {
    let mut parts = found.split(['.', '-']).map(|p| p.parse::<u64>().ok());
    let major = parts.next().flatten();
    let minor = parts.next().flatten();
    match (major, minor) {
        (Some(major), Some(minor)) if (major, minor) >= MIN_SERVER_VERSION => Ok(()),
        _ => Err(ServerError::TooOld {
            found: found.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(check_version("2.15.1").is_ok());
        assert!(check_version("2.11.0-beta").is_ok());
        assert!(check_version("3.0.0").is_ok());
        assert!(check_version("2.9.25").is_err());
        assert!(check_version("").is_err());
    }

    #[test]
    fn a_server_list_is_split_on_commas() {
        assert_eq!(server_urls("nats://a:1"), vec!["nats://a:1"]);
        assert_eq!(
            server_urls("nats://a:1, nats://b:2,,nats://c:3"),
            vec!["nats://a:1", "nats://b:2", "nats://c:3"]
        );
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(redact_url("nats://u:s3cret@h:4222"), "nats://h:4222");
        assert_eq!(redact_url("tls://tok@h"), "tls://h");
        assert_eq!(redact_url("u:p@h:4222"), "h:4222");
        assert_eq!(
            redact_url("nats://a:b@h1,nats://h2:4222"),
            "nats://h1,nats://h2:4222"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn debug_hides_the_password() {
        let target = NatsTarget {
            url: "nats://order:s3cret@h".into(),
            user: Some("order".into()),
            password: Some("s3cret".into()),
            name: "shop-order".into(),
            inbox_prefix: None,
            tls: None,
        };
        assert!(!format!("{target:?}").contains("s3cret"));
    }
}
