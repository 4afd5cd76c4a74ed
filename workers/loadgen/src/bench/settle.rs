//! After a run: wait until the system has finished the run's work, then run the audit
//! (`shop_audit`) in-process. A run that breaks an invariant fails, however fast it was.
//!
//! What is still in flight when the load stops: creates that deducted stock but never
//! committed (a timeout, a refusal after the deduct). The checker gives their stock back
//! once their half message is `check_delay` old, through `STOCK_ROLLBACK`. So the bench
//! waits until
//!
//! 1. `check_delay` (plus a margin) has passed since the run ended;
//! 2. the checker has looked at every half message once (`order-txn-checker` has nothing
//!    pending); if it was behind, `check_delay` plus the margin again from when it caught
//!    up, since its second look is the one that rolls back;
//! 3. the stock worker has applied every rollback (`stock-rollback` has nothing pending
//!    and nothing unacknowledged).
//!
//! Then the audit runs with a grace of the margin: everything the run did is older than
//! that, so all of it is judged, while anything newer (work that is not the bench's) is
//! left alone, as the audit does for work in flight.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream;
use shop_contracts::txn::{
    OrderStreams, ORDER_TXN_CHECKER, ORDER_TXN_STREAM, STOCK_ROLLBACK_CONSUMER,
    STOCK_ROLLBACK_STREAM,
};

use crate::BenchConfig;

/// Slack for the outbox relay's sweep (every 2 s) and a redelivery's scheduling.
const MARGIN: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(500);

pub struct Settle {
    /// The order workers' `order.check_delay`.
    pub check_delay: Duration,
    /// Give up (and fail) when the system has not settled within this long.
    pub timeout: Duration,
}

/// Waits for the work of a run that ended at `ended` to settle, then audits the system.
pub async fn settle_then_audit(
    config: &BenchConfig,
    client: &async_nats::Client,
    ended: Instant,
    settle: &Settle,
) -> anyhow::Result<()> {
    println!(
        "settling: waiting for the checker ({}s check delay) and the rollbacks before the audit",
        settle.check_delay.as_secs()
    );
    wait_until_settled(client, ended, settle).await?;
    let sources = config.audit_sources("shop-audit").await?;
    shop_audit::run(&sources, MARGIN, false)
        .await
        .context("the audit after the run")
}

/// Waits until the checker and the stock worker have finished the work of a run that ended
/// at `ended` (steps 1 to 3 above).
pub async fn wait_until_settled(
    client: &async_nats::Client,
    ended: Instant,
    settle: &Settle,
) -> anyhow::Result<()> {
    let give_up = Instant::now() + settle.timeout;
    let js = jetstream::new(client.clone());
    sleep_until(ended + settle.check_delay + MARGIN, give_up).await?;

    let mut was_behind = false;
    let txn_streams = txn_streams(&js).await?;
    while checker_behind(&js, &txn_streams).await? {
        was_behind = true;
        sleep_until(Instant::now() + POLL, give_up).await?;
    }
    if was_behind {
        sleep_until(Instant::now() + settle.check_delay + MARGIN, give_up).await?;
    }
    loop {
        let (waiting, unacked) =
            pending(&js, STOCK_ROLLBACK_STREAM, STOCK_ROLLBACK_CONSUMER).await?;
        if waiting == 0 && unacked == 0 {
            break;
        }
        sleep_until(Instant::now() + POLL, give_up).await?;
    }
    Ok(())
}

/// Every order partition's half-message stream (`ORDER_TXN`, `ORDER_TXN_P<p>`).
async fn txn_streams(js: &jetstream::Context) -> anyhow::Result<Vec<String>> {
    use futures::TryStreamExt;
    let names: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .context("listing the streams")?;
    let mut txn: Vec<String> = names
        .into_iter()
        .filter(|name| OrderStreams::is_txn_stream(name))
        .collect();
    if txn.is_empty() {
        txn.push(ORDER_TXN_STREAM.to_owned());
    }
    Ok(txn)
}

/// Whether the checker of any partition has half messages it has not looked at yet.
async fn checker_behind(js: &jetstream::Context, streams: &[String]) -> anyhow::Result<bool> {
    for stream in streams {
        if pending(js, stream, ORDER_TXN_CHECKER).await?.0 > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `(messages not yet delivered, deliveries not yet acknowledged)` of a durable consumer.
async fn pending(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
) -> anyhow::Result<(u64, usize)> {
    let info = js
        .get_stream(stream)
        .await
        .with_context(|| format!("stream {stream}"))?
        .consumer_info(consumer)
        .await
        .with_context(|| format!("consumer {consumer} of {stream}"))?;
    Ok((info.num_pending, info.num_ack_pending))
}

async fn sleep_until(at: Instant, give_up: Instant) -> anyhow::Result<()> {
    if at > give_up {
        bail!("the system did not settle within the --settle-timeout after the run");
    }
    tokio::time::sleep_until(at.into()).await;
    Ok(())
}
