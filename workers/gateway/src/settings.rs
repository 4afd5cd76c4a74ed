//! The gateway's configuration (`[gateway]` in shop.toml, `SHOP_GATEWAY__*`): where it
//! listens, its time limits, the keys it checks tokens and payment callbacks with, and the
//! order-creation rate per user. Keys have no defaults: they come from config, never code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A secret from config. Its `Debug` never shows the value, so a logged config leaks nothing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// 32 random bytes from `/dev/urandom`, in hex: a development secret no code holds.
    pub fn random() -> std::io::Result<Secret> {
        use std::io::Read;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(Secret(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Longest a request may take before it is answered 503 `unavailable` with `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest the gateway waits for one worker's reply (then 503 `unavailable`).
    #[serde(with = "humantime_serde")]
    pub nats_timeout: Duration,
    /// How often an idle event stream sends a keep-alive comment. It is also how soon a viewer
    /// that left is noticed: the gateway does not read a connection while it streams to it
    /// (that read would cost each viewer 8 KiB more), so a departed viewer's stream ends when
    /// a write to it fails, at the latest on the second keep-alive after it left.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Event streams (`GET /v1/rooms/{room_id}/events`) this process holds at once; past it a
    /// new stream is answered 503 `unavailable` with `Retry-After`, at once and without any
    /// request to the workers. Each open stream costs about 16 KiB of memory and one file
    /// descriptor (the gateway raises its soft `RLIMIT_NOFILE` to the hard limit at start and
    /// warns when this does not fit under it). More viewers than this: more gateways.
    pub max_event_streams: usize,
    /// On SIGTERM or SIGINT: how long requests in flight may take to finish (event streams
    /// end at once). Past it the gateway exits non-zero and logs what it abandoned.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub auth: AuthSettings,
    pub payment: PaymentSettings,
    /// Order creations per second per user (token `sub`), sustained; fractions allowed
    /// (0.5 is one every two seconds).
    pub orders_per_second: f64,
    /// Order creations a user may send at once before the rate applies.
    pub order_burst: u32,
    /// Origins allowed by CORS; `["*"]` is any (tokens travel in a header, never cookies).
    pub cors_origins: Vec<String>,
    /// Development conveniences: the live-room page gets a "pay" button that signs the
    /// payment callback with `payment.secret`. Never set in production.
    pub dev_mode: bool,
}

/// How bearer tokens are checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    pub algorithm: TokenAlgorithm,
    /// HS256: the shared secret (development).
    pub hs256_secret: Option<Secret>,
    /// RS256 / EdDSA: the issuer's public key, PEM (production).
    pub public_key_pem: Option<String>,
    /// RS256 / EdDSA: a file holding that PEM, when not given inline.
    pub public_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenAlgorithm {
    #[default]
    Hs256,
    Rs256,
    Eddsa,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PaymentSettings {
    /// The secret shared with the payment provider: `X-Signature` is its HMAC-SHA256.
    pub secret: Option<Secret>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            request_timeout: Duration::from_secs(10),
            nats_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(15),
            max_event_streams: 10_000,
            shutdown_timeout: Duration::from_secs(10),
            auth: AuthSettings::default(),
            payment: PaymentSettings::default(),
            orders_per_second: 5.0,
            order_burst: 10,
            cors_origins: vec!["*".into()],
            dev_mode: false,
        }
    }
}
