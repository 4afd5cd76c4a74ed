//! `shop req SUBJECT BODY`: one request, the reply on stdout, a refusal on stderr.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use shop_kit::client::{call, CallError};

use crate::config::Config;

pub async fn run(config: &Config, subject: &str, body: &str, timeout: u64) -> anyhow::Result<()> {
    let body: Value = serde_json::from_str(body).context("the body is not JSON")?;
    let client = shop_kit::server::connect(&config.nats_target("shop-req", None))
        .await
        .context("connecting to NATS")?;
    match call::<_, Value>(&client, subject, &body, Duration::from_secs(timeout)).await {
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
