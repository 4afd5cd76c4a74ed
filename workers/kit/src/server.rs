//! Connecting to NATS and checking the server is new enough for the contract.

use std::time::Duration;

use thiserror::Error;

/// CONTRACT section 5: nats-server 2.11 or newer (per-message delays on nak, KV TTLs).
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 11);

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("could not connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("nats-server {found} is too old: shop needs {}.{} or newer", MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1)]
    TooOld { found: String },
    #[error("the NATS server has JetStream disabled")]
    NoJetStream,
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
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
}

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
    let client = options
        .connect(server_urls(&target.url))
        .await
        .map_err(|source| ServerError::Connect {
            url: target.url.clone(),
            source,
        })?;
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
}
