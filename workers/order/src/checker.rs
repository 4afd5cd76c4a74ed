//! The checker: durable pull consumer `order-txn-checker` on `ORDER_TXN`, shared by every
//! order worker. Each half message is looked at, then either acked (resolved) or nakked with
//! a delay (look again later): redelivery is the timer, so there is no polling loop.
//!
//! Half messages that arrive together are looked at together: one read of the database
//! decides all that are resolved or not yet due. The five cases of CONTRACT section 5; those
//! that write are decided under `pg_advisory_xact_lock(order_sn)`, so a fence and a create's
//! commit for the same order_sn exclude each other:
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

use std::collections::HashMap;

use async_nats::jetstream::consumer::pull::MessagesError;
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

/// Batches of half messages looked at concurrently by one worker: well under the pool size
/// (20 by default), so a burst of deadlines cannot take every connection from order requests.
const CONCURRENCY: usize = 8;
/// The most half messages one look at the database decides.
const LOOK_BATCH: usize = 128;
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
        let messages = match consumer.messages().await {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, "checker: could not pull; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        // Whatever has arrived is looked at together: one read of the database for all.
        let mut batches = messages.ready_chunks(LOOK_BATCH);
        while let Some(batch) = batches.next().await {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                look_at(&ctx, batch).await;
                drop(permit);
            });
        }
    }
}

/// A half message being looked at.
struct Look {
    message: jetstream::Message,
    sn: OrderSn,
    /// Time since the half message was stored.
    age: Duration,
}

/// Looks at a batch of half messages and acks or naks each.
async fn look_at(ctx: &Ctx, batch: Vec<Result<jetstream::Message, MessagesError>>) {
    let mut looks = Vec::with_capacity(batch.len());
    for next in batch {
        match next {
            Ok(message) => looks.extend(parse(message).await),
            Err(error) => tracing::debug!(%error, "checker: pull error"),
        }
    }
    let verdicts = match decide(ctx, &looks).await {
        Ok(verdicts) => verdicts,
        Err(error) => {
            tracing::warn!(%error, "checker: a batch of looks failed; retrying");
            looks.iter().map(|_| Verdict::Later(RETRY)).collect()
        }
    };
    for (look, verdict) in looks.iter().zip(verdicts) {
        let sent = match verdict {
            Verdict::Ack => look.message.ack().await,
            Verdict::Later(delay) => look.message.ack_with(AckKind::Nak(Some(delay))).await,
        };
        if let Err(error) = sent {
            // It comes back after ack_wait and is looked at again: every case is idempotent.
            tracing::warn!(order_sn = %look.sn, %error, "checker: could not ack");
        }
    }
}

/// The half message in `message`, or `None` when it can never parse (then it is
/// terminated, not redelivered forever).
async fn parse(message: jetstream::Message) -> Option<Look> {
    let half: HalfMessage = match serde_json::from_slice(&message.payload) {
        Ok(h) => h,
        Err(error) => {
            tracing::error!(subject = %message.subject, %error, "checker: malformed half message");
            let _ = message.ack_with(AckKind::Term).await;
            return None;
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
    Some(Look {
        message,
        sn: half.order_sn,
        age,
    })
}

/// The verdict on each look, in order.
///
/// Before both the check delay and the pay window have passed, no look at the database can
/// lead to a fence or a close (an order's deadline is at least `pay_timeout` after its half
/// message), so those wait without one. The others are read together, without a transaction
/// or a lock: that decides every order that is resolved or not yet due. Only "no order" and
/// "due" take the lock, one order at a time ([`check`]), because they write.
async fn decide(ctx: &Ctx, looks: &[Look]) -> Result<Vec<Verdict>, OrderError> {
    let quiet = ctx.settings.check_delay.min(ctx.settings.pay_timeout);
    let old: Vec<OrderSn> = looks
        .iter()
        .filter(|l| l.age >= quiet)
        .map(|l| l.sn)
        .collect();
    let statuses = if old.is_empty() {
        HashMap::new()
    } else {
        let mut conn = ctx.pool.acquire().await?;
        repo::statuses_and_time_left(&mut conn, &old).await?
    };
    let mut verdicts = Vec::with_capacity(looks.len());
    for look in looks {
        let verdict = if look.age < quiet {
            Verdict::Later(quiet - look.age + MARGIN)
        } else {
            match statuses.get(&look.sn) {
                Some((status, _)) if parse_status(status)?.is_terminal() => Verdict::Ack,
                Some((_, left)) if *left > 0.0 => {
                    Verdict::Later(Duration::from_secs_f64(*left) + MARGIN)
                }
                _ => check(ctx, look.sn, look.age).await.unwrap_or_else(|error| {
                    tracing::warn!(order_sn = %look.sn, %error, "checker: check failed; retrying");
                    Verdict::Later(RETRY)
                }),
            }
        };
        verdicts.push(verdict);
    }
    Ok(verdicts)
}

/// One look under the order_sn's lock at a half message of age `age` whose order is missing
/// or due: the cases that write.
#[tracing::instrument(skip_all, fields(order_sn = %sn))]
pub async fn check(ctx: &Ctx, sn: OrderSn, age: Duration) -> Result<Verdict, OrderError> {
    let delay = ctx.settings.check_delay;
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
