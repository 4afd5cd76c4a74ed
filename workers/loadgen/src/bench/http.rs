//! A create through the HTTP gateway as a bench [`Operation`]: `POST /v1/orders` with the
//! bearer token of the create's user (one token per simulated user, minted as `shop token`
//! does), over keep-alive connections ([`keepalive`]), so the gateway's cost is measured
//! and not the cost of opening connections. The answer is classified as a NATS reply would
//! be.

use std::time::Duration;

use anyhow::Context;
use http::StatusCode;
use serde_json::Value;
use shop_contracts::{ErrorCode, UserId};

use super::create::{Creates, USERS};
use super::drive::Operation;
use super::keepalive::{self, Pool};
use super::outcome::Outcome;
use super::request::TIMEOUT;
use crate::BenchConfig;

const PATH: &str = "/v1/orders";

pub struct HttpCreate {
    pool: Pool,
    /// `host:port` of the gateway, for the `Host` header.
    host: String,
    /// `Bearer <token>` of user `i + 1`.
    bearers: Vec<String>,
    creates: Creates,
}

impl HttpCreate {
    /// Mints a token for each of the bench's users with the gateway's HS256 secret from
    /// `config` (the one `shop up` keeps in the data directory) and opens nothing yet: a
    /// connection is opened for each request in flight at once and kept alive.
    pub fn new(config: &BenchConfig, creates: Creates) -> anyhow::Result<Self> {
        let secret = config.gateway_hs256_secret.as_ref().context(
            "--via http needs the gateway's HS256 secret (gateway.auth.hs256_secret, or the \
             dev secrets file `shop up` writes into the data directory)",
        )?;
        // The run is minutes at most; an hour keeps every token valid through the audit.
        let ttl = Duration::from_secs(3600);
        let bearers = (1..=USERS as i64)
            .map(|user| {
                let user = UserId::new(user).context("user id")?;
                let token = shop_gateway::auth::mint_hs256(secret, user, false, ttl)
                    .context("signing a bench token")?;
                Ok(format!("Bearer {token}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(HttpCreate {
            pool: Pool::new(config.gateway_listen),
            host: config.gateway_listen.to_string(),
            bearers,
            creates,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.host)
    }
}

impl Operation for HttpCreate {
    async fn call(&self, n: u64) -> Outcome {
        let mut body = serde_json::to_value((self.creates.body())(n)).unwrap_or_default();
        // The gateway takes the user from the token; the body's would be ignored anyway.
        if let Some(fields) = body.as_object_mut() {
            fields.remove("user_id");
        }
        let user = Creates::user_of(n) as usize;
        let request = keepalive::request(
            &self.host,
            PATH,
            &[("Authorization", self.bearers[user - 1].as_bytes())],
            &serde_json::to_vec(&body).unwrap_or_default(),
        );
        let response = match tokio::time::timeout(TIMEOUT, self.pool.send(&request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                tracing::debug!(%error, "POST {PATH} failed");
                return Outcome::Failed("http_transport");
            }
            Err(_) => return Outcome::Timeout,
        };
        let Ok(status) = StatusCode::from_u16(response.status) else {
            return Outcome::Failed("http_transport");
        };
        if status == StatusCode::CREATED {
            return Outcome::Ok;
        }
        let retry_after = response.retry_after_seconds.map(Duration::from_secs);
        of_problem(status, retry_after, &response.body)
    }
}

/// A problem+json answer as an outcome: `unavailable` and `rate_limited` are refusals (with
/// the problem's `retry_after_ms`, else `Retry-After`), a contract code is that code, the
/// gateway's own codes are named by their status.
fn of_problem(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
    let problem: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let hint = problem["details"]["retry_after_ms"]
        .as_u64()
        .map(Duration::from_millis)
        .or(retry_after);
    match problem["code"].as_str() {
        Some("unavailable") | Some("rate_limited") => Outcome::Refused { retry_after: hint },
        Some(code) => match serde_json::from_value::<ErrorCode>(Value::from(code)) {
            Ok(code) => Outcome::Failed(code.as_str()),
            Err(_) => Outcome::Failed(match status {
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::FORBIDDEN => "forbidden",
                StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                s if s.is_server_error() => "http_5xx",
                _ => "http_4xx",
            }),
        },
        None => Outcome::Failed("not_a_problem"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_classified_like_contract_errors() {
        let shed = br#"{"code":"unavailable","details":{"retry_after_ms":50}}"#;
        assert_eq!(
            of_problem(StatusCode::SERVICE_UNAVAILABLE, None, shed),
            Outcome::Refused {
                retry_after: Some(Duration::from_millis(50))
            }
        );
        let limited = br#"{"code":"rate_limited","details":{}}"#;
        assert_eq!(
            of_problem(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(1)),
                limited
            ),
            Outcome::Refused {
                retry_after: Some(Duration::from_secs(1))
            }
        );
        let short = br#"{"code":"insufficient_stock","details":{}}"#;
        assert_eq!(
            of_problem(StatusCode::CONFLICT, None, short),
            Outcome::Failed("insufficient_stock")
        );
        let denied = br#"{"code":"unauthorized","details":{}}"#;
        assert_eq!(
            of_problem(StatusCode::UNAUTHORIZED, None, denied),
            Outcome::Failed("unauthorized")
        );
        assert_eq!(
            of_problem(StatusCode::BAD_GATEWAY, None, b"<html>"),
            Outcome::Failed("not_a_problem")
        );
    }
}
