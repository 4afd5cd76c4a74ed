//! Checks that every unpaid order still has its timer, the one thing that will close it if
//! it is never paid: its half message in `ORDER_TXN` (waiting for the checker's look, or for
//! its deadline with `order.timer = "nak_delay"`), or its deadline in `ORDER_TIMERS` (the
//! schedule `order.timer.at.<sn>`, or the `order.timer.due.<sn>` it fired, waiting for the
//! closer). Direct gets by subject, in the order the checker moves an order through them
//! (a schedule is stored before its half message is acked, and fires before it is removed),
//! so an order in motion is never missed; nothing is consumed or acked.

use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use shop_contracts::txn::{
    deadline_due_subject, deadline_schedule_subject, half_message_subject, ORDER_TIMERS_STREAM,
    ORDER_TXN_STREAM,
};
use shop_contracts::OrderSn;

use crate::AuditError;

/// The order_sns among `unpaid` with no timer left.
pub async fn missing(
    js: &jetstream::Context,
    unpaid: &[i64],
    progress: &indicatif::ProgressBar,
) -> Result<Vec<i64>, AuditError> {
    progress.set_length(unpaid.len() as u64);
    let txn = js
        .get_stream(ORDER_TXN_STREAM)
        .await
        .map_err(|e| AuditError::NoStream(ORDER_TXN_STREAM, e))?;
    // Absent on a server without message schedules, where the workers run nak_delay only.
    let timers = js.get_stream(ORDER_TIMERS_STREAM).await.ok();
    let mut gone = Vec::new();
    for &sn in unpaid {
        let sn_typed = OrderSn::new(sn).map_err(|_| AuditError::BadOrderSn(sn))?;
        let mut found = has(&txn, &half_message_subject(sn_typed)).await?;
        if let Some(timers) = timers.as_ref().filter(|_| !found) {
            found = has(timers, &deadline_schedule_subject(sn_typed)).await?
                || has(timers, &deadline_due_subject(sn_typed)).await?;
        }
        if !found {
            gone.push(sn);
        }
        progress.inc(1);
    }
    Ok(gone)
}

async fn has(stream: &jetstream::stream::Stream, subject: &str) -> Result<bool, AuditError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
        Err(e) => Err(AuditError::nats(format!("reading {subject}"), e)),
    }
}
