//! Named crash points for fault tests: `crash_at = "<point>"` (`SHOP_CRASH_AT`) makes a
//! worker abort, as a SIGKILL would stop it, the first time it reaches that point. Each point
//! sits where state is half written: one side of a boundary committed, the other not yet.
//! Unset (the default, and always in production) every point is a no-op.
//!
//! The catalogue is [`POINTS`]; `tests/tests/it/crash.rs` sweeps every one of them and
//! docs/reliability.md lists what each leaves behind and how the system settles it.

use std::sync::OnceLock;

/// Every crash point, with the worker it is in and what is half written when it fires.
pub const POINTS: &[(&str, &str, &str)] = &[
    (
        "order.create.after_half_message",
        "order",
        "the half message is stored, nothing deducted",
    ),
    (
        "order.create.after_deduct",
        "order",
        "stock deducted, no order",
    ),
    (
        "order.create.after_commit",
        "order",
        "the order committed, the caller has no reply",
    ),
    (
        "order.checker.after_fence",
        "order",
        "an order_sn fenced with its rollback in the outbox, the half message not acked",
    ),
    (
        "order.checker.after_close",
        "order",
        "orders closed with their rollbacks in the outbox, their messages not acked",
    ),
    (
        "order.checker.before_ack",
        "order",
        "a batch decided, nothing acked or nakked",
    ),
    (
        "order.outbox.after_publish",
        "order",
        "outbox rows published, not yet deleted",
    ),
    (
        "order.pay.after_commit",
        "order",
        "the order paid, the caller has no reply",
    ),
    (
        "order.cancel.after_commit",
        "order",
        "the order cancelled with its rollback in the outbox, the caller has no reply",
    ),
    (
        "stock.deduct.after_commit",
        "stock",
        "stock deducted, the order worker has no reply",
    ),
    (
        "stock.return.after_commit",
        "stock",
        "a rollback's return committed, the event not acked",
    ),
];

/// Crash points reached only when stock is spread over several partitions (a deduct whose
/// shares live in different partitions); `partitions::a_crash_between_partitions_settles`
/// sweeps them.
pub const PARTITION_POINTS: &[(&str, &str, &str)] = &[
    (
        "stock.route.before_give_back",
        "stock",
        "a share refused, other shares deducted, their rollback not yet written",
    ),
    (
        "stock.route.after_give_back",
        "stock",
        "the rollback of the deducted shares written, the refusal not answered",
    ),
];

static ARMED: OnceLock<Option<&'static str>> = OnceLock::new();

/// Arms `point` for this process (once, at start-up). An unknown name is refused, so a typo
/// in a fault test cannot pass as a crash that never happened.
pub fn arm(point: Option<&str>) -> Result<(), UnknownPoint> {
    let armed = match point {
        None => None,
        Some(name) => Some(
            POINTS
                .iter()
                .chain(PARTITION_POINTS)
                .map(|(known, _, _)| *known)
                .find(|known| *known == name)
                .ok_or_else(|| UnknownPoint(name.to_owned()))?,
        ),
    };
    let _ = ARMED.set(armed);
    Ok(())
}

/// Aborts the process when `point` is the armed one.
pub fn point(point: &'static str) {
    if let Some(Some(armed)) = ARMED.get() {
        if *armed == point {
            tracing::error!(crash_point = point, "crash point reached: aborting");
            std::process::abort();
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown crash point {0:?}; the points are listed in shop_kit::crash::POINTS")]
pub struct UnknownPoint(String);
