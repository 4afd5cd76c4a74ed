//! The HTTP gateway as a test sees it: a `shop gateway` process of the test's account,
//! running as the least-privilege `a<n>-gateway` NATS user, on a free port, with known
//! test keys; and the helpers to sign tokens and payment callbacks with them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use shop_devstack::free_port;

use crate::app::{shop_binary, TestApp};
use crate::stack::{stack, PASSWORD};

/// The HS256 key every test gateway checks tokens with.
pub const TOKEN_SECRET: &str = "test-token-secret";
/// The payment provider's shared secret of every test gateway.
pub const PAYMENT_SECRET: &str = "test-payment-secret";

/// A running gateway; killed when dropped.
pub struct Gateway {
    pub url: String,
    pub log: std::path::PathBuf,
    child: Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `within` for a clean exit; its status, or `None`.
    pub async fn stop(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        crate::wait::terminate(&mut self.child, within).await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl TestApp {
    /// Starts `shop gateway` for this test's account with `SHOP_*` settings on top of the
    /// test keys, and waits until `/healthz` answers.
    pub async fn spawn_gateway(&self, env: &[(&str, &str)]) -> Gateway {
        let port = free_port().expect("a free port");
        let log = stack()
            .dir
            .join(format!("t{}-gateway-{port}.log", self.account));
        let file = std::fs::File::create(&log).expect("creating the gateway log");
        let mut command = Command::new(shop_binary());
        command
            .arg("gateway")
            .env("SHOP_NATS__URL", self.nats_url())
            .env("SHOP_NATS__USER", format!("a{}-gateway", self.account))
            .env("SHOP_NATS__PASSWORD", PASSWORD)
            .env("SHOP_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
            .env("SHOP_GATEWAY__AUTH__HS256_SECRET", TOKEN_SECRET)
            .env("SHOP_GATEWAY__PAYMENT__SECRET", PAYMENT_SECRET)
            .env("SHOP_GATEWAY__DEV_MODE", "true")
            .env("SHOP_LOG__FILTER", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("starting shop gateway");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let up = http
                .get(format!("{url}/healthz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "the gateway did not come up; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Gateway { url, log, child }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token signed with `secret` for `claims` (HS256).
pub fn token_with(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing a token")
}

/// A valid token of `user`, for an hour.
pub fn token(user: i64) -> String {
    token_with(
        TOKEN_SECRET,
        json!({"sub": user.to_string(), "exp": now() + 3600}),
    )
}

/// A valid admin token of `user`.
pub fn admin_token(user: i64) -> String {
    token_with(
        TOKEN_SECRET,
        json!({"sub": user.to_string(), "exp": now() + 3600, "role": "admin"}),
    )
}

/// A token of `user` that expired an hour ago.
pub fn expired_token(user: i64) -> String {
    token_with(
        TOKEN_SECRET,
        json!({"sub": user.to_string(), "exp": now() - 3600}),
    )
}

/// `X-Signature` of `body` with the test payment secret.
pub fn signature(body: &[u8]) -> String {
    shop_gateway::payment::sign(&shop_gateway::Secret::new(PAYMENT_SECRET), body)
}
