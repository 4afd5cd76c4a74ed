//! Checks that every unpaid order still has its timer, the one thing that will close it if
//! it is never paid: its half message in `ORDER_TXN` (waiting for the checker's look, or for
//! its deadline with `order.timer = "nak_delay"`), or its deadline in `ORDER_TIMERS` (the
//! schedule `order.timer.at.<sn>`, or the `order.timer.due.<sn>` it fired, waiting for the
//! closer); with several order partitions, in any partition's own streams
//! (`OrderStreams`). Direct gets by subject, in the order the checker moves an order through them
//! (a schedule is stored before its half message is acked, and fires before it is removed),
//! so an order in motion is never missed; nothing is consumed or acked.

use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use shop_contracts::txn::{OrderStreams, ORDER_TXN_STREAM};
use shop_contracts::OrderSn;

use crate::AuditError;

/// One order partition's two streams, as far as they exist.
struct Streams {
    of: OrderStreams,
    txn: Option<jetstream::stream::Stream>,
    timers: Option<jetstream::stream::Stream>,
}

/// The order_sns among `unpaid` with no timer left, looked up in the streams of every one of
/// `partitions` order partitions: an order's timer is where the partition that created it
/// (or last scheduled it) wrote it, which after a slot move is not its owner now.
pub async fn missing(
    js: &jetstream::Context,
    partitions: u16,
    unpaid: &[i64],
    progress: &indicatif::ProgressBar,
) -> Result<Vec<i64>, AuditError> {
    progress.set_length(unpaid.len() as u64);
    let mut all = Vec::new();
    for of in OrderStreams::all(partitions.max(1)) {
        all.push(Streams {
            of,
            txn: js.get_stream(of.txn_stream()).await.ok(),
            // Absent on a server without message schedules, where the workers run
            // nak_delay only; a partition's streams are absent until its worker first ran.
            timers: js.get_stream(of.timers_stream()).await.ok(),
        });
    }
    if all[0].txn.is_none() {
        // Partition 0's is the contract's ORDER_TXN: every shop has it.
        let error = js.get_stream(ORDER_TXN_STREAM).await.err();
        if let Some(error) = error {
            return Err(AuditError::NoStream(ORDER_TXN_STREAM, error));
        }
    }
    let mut gone = Vec::new();
    for &sn in unpaid {
        let sn_typed = OrderSn::new(sn).map_err(|_| AuditError::BadOrderSn(sn))?;
        let mut found = false;
        for streams in &all {
            found = found || has_timer(streams, sn_typed).await?;
        }
        if !found {
            gone.push(sn);
        }
        progress.inc(1);
    }
    Ok(gone)
}

/// Its half message, else its schedule, else the deadline it fired: in the order the checker
/// moves an order through them.
async fn has_timer(streams: &Streams, sn: OrderSn) -> Result<bool, AuditError> {
    if let Some(txn) = &streams.txn {
        if has(txn, &streams.of.half_message_subject(sn)).await? {
            return Ok(true);
        }
    }
    if let Some(timers) = &streams.timers {
        return Ok(
            has(timers, &streams.of.deadline_schedule_subject(sn)).await?
                || has(timers, &streams.of.deadline_due_subject(sn)).await?,
        );
    }
    Ok(false)
}

async fn has(stream: &jetstream::stream::Stream, subject: &str) -> Result<bool, AuditError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
        Err(e) => Err(AuditError::nats(format!("reading {subject}"), e)),
    }
}
