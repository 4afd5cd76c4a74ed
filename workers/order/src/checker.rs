//! The checker: durable pull consumer `order-txn-checker` on `ORDER_TXN`, shared by every
//! order worker. Each half message is looked at, then either acked (resolved) or nakked with
//! a delay (look again later): redelivery is the timer, so there is no polling loop.
//!
//! The five cases of CONTRACT section 5, decided under `pg_advisory_xact_lock(order_sn)` so a
//! fence and a create's commit for the same order_sn exclude each other:
//! - half message younger than both the check delay and the pay window: nak until then,
//!   without a look at the database (nothing there could be fenced or closed sooner);
//! - no order, half message younger than the check delay: nak until it is old enough;
//! - no order, older: fence + rollback `aborted` (via the outbox), ack;
//! - unpaid before the deadline: nak until the deadline;
//! - unpaid at or after the deadline: close + rollback `closed` + `closed` event, ack;
//! - paid, cancelled, closed (or already fenced): ack.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use futures::StreamExt;
use shop_contracts::order::OrderStatus;
use shop_contracts::txn::{HalfMessage, OrderEventKind, RollbackReason};
use shop_contracts::OrderSn;
use tokio::sync::Semaphore;

use crate::domain::{outbox_event, outbox_rollback, Ctx};
use crate::{repo, OrderError};

/// What to do with a half message after one look.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Ack,
    Later(Duration),
}

/// Half messages looked at concurrently by one worker: well under the pool size (20 by
/// default), so a burst of deadlines cannot take every connection from order requests.
const CONCURRENCY: usize = 8;
/// Redelivery delay after a failure (database down, say).
const RETRY: Duration = Duration::from_secs(1);
/// Naks land a little after the deadline, so the close's `now() >= pay_deadline` holds.
const MARGIN: Duration = Duration::from_millis(50);

pub async fn run(ctx: Ctx, consumer: PullConsumer, pending: Arc<AtomicU64>) {
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    // The metric: how many half messages wait for a delayed redelivery (ack pending).
    let mut probe = consumer.clone();
    tokio::spawn(async move {
        loop {
            if let Ok(info) = probe.info().await {
                pending.store(info.num_ack_pending as u64, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    loop {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "checker: could not pull; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        while let Some(next) = messages.next().await {
            let message = match next {
                Ok(m) => m,
                Err(error) => {
                    tracing::debug!(%error, "checker: pull error");
                    continue;
                }
            };
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                handle(&ctx, message).await;
                drop(permit);
            });
        }
    }
}

async fn handle(ctx: &Ctx, message: jetstream::Message) {
    let half: HalfMessage = match serde_json::from_slice(&message.payload) {
        Ok(h) => h,
        Err(error) => {
            // Can never succeed; terminate instead of redelivering forever.
            tracing::error!(subject = %message.subject, %error, "checker: malformed half message");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let age = match message.info() {
        Ok(info) => {
            let published = info.published.unix_timestamp_nanos();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(0);
            Duration::from_nanos((now - published).max(0) as u64)
        }
        Err(_) => Duration::ZERO,
    };
    let verdict = match check(ctx, half.order_sn, age).await {
        Ok(v) => v,
        Err(error) => {
            tracing::warn!(order_sn = %half.order_sn, %error, "checker: check failed; retrying");
            Verdict::Later(RETRY)
        }
    };
    let sent = match verdict {
        Verdict::Ack => message.ack().await,
        Verdict::Later(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
    };
    if let Err(error) = sent {
        // The message comes back after ack_wait and is checked again: every case is idempotent.
        tracing::warn!(order_sn = %half.order_sn, %error, "checker: could not ack");
    }
}

/// One look at a half message of age `age`.
#[tracing::instrument(skip_all, fields(order_sn = %sn))]
pub async fn check(ctx: &Ctx, sn: OrderSn, age: Duration) -> Result<Verdict, OrderError> {
    // Before both the check delay and the pay window have passed, no look at the database
    // can lead to a fence or a close (an order's deadline is at least `pay_timeout` after its
    // half message), and acking a finished order can wait: skip the database, which every
    // new order would otherwise pay for once.
    let delay = ctx.settings.check_delay;
    let quiet = delay.min(ctx.settings.pay_timeout);
    if age < quiet {
        return Ok(Verdict::Later(quiet - age + MARGIN));
    }
    // Most looks find an order that is resolved or not yet due: one read, no transaction,
    // no lock decides those. Only "no order" and "due" need the lock (they write).
    {
        let mut conn = ctx.pool.acquire().await?;
        if let Some((status, left)) = repo::status_and_time_left(&mut conn, sn).await? {
            match parse_status(&status)? {
                status if status.is_terminal() => return Ok(Verdict::Ack),
                _ if left > 0.0 => {
                    return Ok(Verdict::Later(Duration::from_secs_f64(left) + MARGIN))
                }
                _ => {}
            }
        }
    }
    let mut tx = ctx.pool.begin().await?;
    repo::lock_sn(&mut tx, sn).await?;
    let Some((status, left)) = repo::status_and_time_left(&mut tx, sn).await? else {
        if repo::is_fenced(&mut tx, sn).await? {
            return Ok(Verdict::Ack);
        }
        if age < delay {
            return Ok(Verdict::Later(delay - age + MARGIN));
        }
        repo::fence(&mut tx, sn).await?;
        outbox_rollback(&mut tx, sn, RollbackReason::Aborted).await?;
        tx.commit().await?;
        ctx.outbox.notify_one();
        tracing::info!("order never committed: fenced and rolled back");
        return Ok(Verdict::Ack);
    };
    let status = parse_status(&status)?;
    if status.is_terminal() {
        return Ok(Verdict::Ack);
    }
    if left > 0.0 {
        return Ok(Verdict::Later(Duration::from_secs_f64(left) + MARGIN));
    }
    if repo::close_if_due(&mut tx, sn).await? {
        let order = repo::get(&mut tx, sn)
            .await?
            .ok_or_else(|| OrderError::Bug("closed order vanished".into()))?;
        outbox_rollback(&mut tx, sn, RollbackReason::Closed).await?;
        outbox_event(&mut tx, &order, OrderEventKind::Closed).await?;
        tx.commit().await?;
        ctx.outbox.notify_one();
        tracing::info!("pay deadline passed: closed");
    }
    Ok(Verdict::Ack)
}

fn parse_status(status: &str) -> Result<OrderStatus, OrderError> {
    OrderStatus::parse(status).ok_or_else(|| OrderError::Bug(format!("unknown status {status}")))
}
