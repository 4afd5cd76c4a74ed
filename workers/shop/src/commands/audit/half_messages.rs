//! Checks that every unpaid order still has its half message in `ORDER_TXN`: the message is
//! the order's only timer, so an unpaid order without one would never be closed. One direct
//! get by subject per order; nothing is consumed or acked.

use anyhow::Context;
use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use shop_contracts::txn::half_message_subject;
use shop_contracts::OrderSn;

pub const STREAM: &str = "ORDER_TXN";

/// The order_sns among `unpaid` whose half message is gone.
pub async fn missing(
    js: &jetstream::Context,
    unpaid: &[i64],
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<i64>> {
    progress.set_length(unpaid.len() as u64);
    let stream = js
        .get_stream(STREAM)
        .await
        .with_context(|| format!("stream {STREAM} not found: have the workers started once?"))?;
    let mut gone = Vec::new();
    for &sn in unpaid {
        let subject = half_message_subject(OrderSn::new(sn).context("a stored order_sn")?);
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(_) => {}
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => gone.push(sn),
            Err(e) => return Err(e).with_context(|| format!("reading {subject}")),
        }
        progress.inc(1);
    }
    Ok(gone)
}
