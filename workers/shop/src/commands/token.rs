//! `shop token --user 7 [--admin] [--ttl 1h]`: a dev bearer token on stdout, signed with the
//! configured HS256 secret, for the README's `curl` calls.

use std::time::Duration;

use anyhow::Context;
use shop_contracts::UserId;

use crate::config::{Config, DEV_SECRETS_FILE};

pub fn run(config: &Config, user: i64, admin: bool, ttl: Duration) -> anyhow::Result<()> {
    let secret = config.gateway.auth.hs256_secret.as_ref().with_context(|| {
        format!(
            "no HS256 secret: set gateway.auth.hs256_secret (SHOP_GATEWAY__AUTH__HS256_SECRET), \
             or run `shop up` once, which writes {}",
            config.dev.data_dir.join(DEV_SECRETS_FILE).display()
        )
    })?;
    let user = UserId::new(user).context("--user")?;
    let token =
        shop_gateway::auth::mint_hs256(secret, user, admin, ttl).context("signing the token")?;
    println!("{token}");
    Ok(())
}
