//! `shop req SUBJECT [BODY]`: one request, the reply on stdout, a refusal on stderr. Without
//! a body (or with an empty one) the request is sent empty, as `nats req` does: that is what
//! `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` take. A body that is given must be JSON.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use shop_kit::client::{call_raw, CallError};

use crate::config::Config;

pub async fn run(
    config: &Config,
    subject: &str,
    body: Option<&str>,
    timeout: u64,
) -> anyhow::Result<()> {
    let payload = match body.map(str::trim).filter(|b| !b.is_empty()) {
        None => Vec::new(),
        Some(body) => {
            let body: Value = serde_json::from_str(body).context("the body is not JSON")?;
            serde_json::to_vec(&body)?
        }
    };
    let client = shop_kit::server::connect(&config.nats_target("shop-req", None))
        .await
        .context("connecting to NATS")?;
    match call_raw::<Value>(&client, subject, payload, Duration::from_secs(timeout)).await {
        Ok(reply) => {
            println!("{}", serde_json::to_string_pretty(&reply)?);
            Ok(())
        }
        Err(CallError::Refused(error)) => {
            eprintln!("{} ({})", error, error.code.status());
            eprintln!(
                "{}",
                serde_json::to_string_pretty(&shop_contracts::ErrorBody { error })?
            );
            std::process::exit(1);
        }
        Err(other) => bail!(other),
    }
}
