//! The checker: durable pull consumer `order-txn-checker` on `ORDER_TXN`, shared by every
//! order worker. Each half message is looked at, then either acked (resolved) or nakked with
//! a delay (look again later): redelivery is the timer, so there is no polling loop.
//!
//! The same machinery is the closer: durable pull consumer `order-timer-closer` on the
//! deadlines that `ORDER_TIMERS` fired ([`crate::timers`]). A fired deadline is looked at as
//! a half message old enough to decide; the cases below are the same.
//!
//! An unpaid order before its deadline waits by the timer mode (`order.timer`): with
//! `nak_delay` its half message is nakked until the deadline; with `schedule` its deadline is
//! stored as a message schedule and then the half message is acked.
//!
//! Messages that arrive together are looked at together: one read of the database decides
//! all that are resolved or not yet due, and one transaction closes all that are due (a
//! conditional update, as pay's is: whichever commits first wins the row). A missing order
//! is decided under `pg_advisory_xact_lock(order_sn)`, so a fence and a create's commit for
//! the same order_sn exclude each other. The five cases of CONTRACT section 5:
//! - a half message's first delivery: held in memory a moment ([`first_look_hold`]) and
//!   looked at; an order already committed is decided at once as below, a missing one is
//!   nakked for the check delay (never fenced: a first delivery says nothing of its age);
//! - no order (at a later delivery, so at least the check delay old): fence + rollback
//!   `aborted` (via the outbox), ack;
//! - unpaid before the deadline: wait for it (nak until then, or schedule it and ack);
//! - unpaid at or after the deadline: close + rollback `closed` + `closed` event, ack;
//! - paid, cancelled, closed (or already fenced): ack.
//!
//! Every order worker of every partition reads the same two consumers, so a message may reach
//! a worker of another partition than its order's (the slot in its `order_sn` says which).
//! The looks of a batch are grouped by owner: this partition's are decided here, the others
//! are asked of their owners on `order.part.<p>.check` ([`OrderCheck`]), which decide them in
//! their own databases and answer the verdicts; the worker that holds the messages acks or
//! naks them (and stores the schedules). Deciding writes only idempotent facts (a fence, a
//! close), so a verdict lost on the way back is decided again at the redelivery.
//!
//! No worker's clock decides a fence. A half message is old enough for "no order" to mean
//! "never committed" when the server has held it for the check delay, and the server's own
//! timers say so: a first delivery whose order is missing is always nakked for the check
//! delay, so any later delivery comes at least that long after the first (a nak that never
//! arrived comes back after `ack_wait`, which the worker sets to no less than the check
//! delay). A worker whose clock runs ahead would otherwise judge a live create old and fence
//! it. The first look is only held for its order's commit to land: a create commits within
//! milliseconds of its half message, so most orders are found at the first look and their
//! half message is done with there, without the nak, the second delivery and the second
//! read that looking only after the check delay costs each of them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use shop_contracts::partition::Slot;
use shop_contracts::txn::{HalfMessage, OrderEventKind, PayDeadline, RollbackReason};
use shop_contracts::{Endpoint, OrderSn};
use shop_kit::crash;
use shop_kit::partitions::{group_by_slot_owner, Peers};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::{event_entry, outbox_event, outbox_rollback, rollback_entry, Ctx};
use crate::repo::Timing;
use crate::{repo, timers, OrderError, TimerMode};

/// What a consumer reads, and so what its messages say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `order-txn-checker` on `ORDER_TXN`: half messages, the newest a moment old.
    HalfMessages,
    /// `order-timer-closer` on `ORDER_TIMERS`: deadlines the server fired.
    DueDeadlines,
}

/// What to do with a message after one look (also the answer of [`OrderCheck`]).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ack,
    Later(Duration),
    /// The order is unpaid and its deadline (database clock) is ahead: wait for it.
    Waiting {
        left: Duration,
        deadline: DateTime<Utc>,
    },
}

impl Verdict {
    fn waiting(timing: &Timing) -> Verdict {
        Verdict::Waiting {
            left: Duration::from_secs_f64(timing.left_secs.max(0.0)),
            deadline: timing.pay_deadline,
        }
    }
}

/// One message to decide: its order and whether the server has held it the check delay.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Question {
    pub order_sn: OrderSn,
    pub old_enough: bool,
}

/// Internal endpoint `order.part.<p>.check`: partition `p` decides questions about its own
/// orders, one verdict per question, in order. (`order.check` itself is never served: it
/// names the operation, as `order.create` does for `order.part.<p>.create`.)
#[derive(Debug)]
pub enum OrderCheck {}

impl Endpoint for OrderCheck {
    const SUBJECT: &'static str = "order.check";
    type Request = Questions;
    type Reply = Verdicts;
}

/// The body of `order.part.<p>.check`: an object, as every request body is (a bare array is
/// refused as `bad_request` by the decoder of every endpoint).
#[derive(Debug, Serialize, Deserialize)]
pub struct Questions {
    pub questions: Vec<Question>,
}

/// The reply of `order.part.<p>.check`: one verdict per question, in order.
#[derive(Debug, Serialize, Deserialize)]
pub struct Verdicts {
    pub verdicts: Vec<Verdict>,
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
/// How long a half message's first delivery is held before its look, at most: long enough
/// for nearly every create to have committed (their p99 is tens of milliseconds, and a
/// create waits at most `order.create_wait` for a slot), short against the check delay.
const FIRST_LOOK_HOLD: Duration = Duration::from_millis(500);
/// When the oldest held delivery is due, those due within this much longer are looked at
/// with it: first deliveries arrive one by one, and without it each would cost a read.
const FIRST_LOOK_GATHER: Duration = Duration::from_millis(50);

/// How long the first delivery of a message of `source` is held before its look: none for
/// fired deadlines (they come long after their create), [`FIRST_LOOK_HOLD`] for half
/// messages, or a quarter of the check delay when that is shorter (a missing order's
/// rollback waits the hold plus the check delay).
pub fn first_look_hold(source: Source, check_delay: Duration) -> Duration {
    match source {
        Source::HalfMessages => FIRST_LOOK_HOLD.min(check_delay / 4),
        Source::DueDeadlines => Duration::ZERO,
    }
}

/// Reads `consumer` (of `source`) until the worker stops, deciding every message; at the
/// stop the looks in hand finish (and ack or nak) and the rest is nakked back.
pub async fn run(
    ctx: Ctx,
    peers: Peers,
    consumer: PullConsumer,
    source: Source,
    stopping: CancellationToken,
) -> Result<(), async_nats::Error> {
    // A half message handed back at a stop must come back no sooner than the check delay:
    // a redelivery is read as "held for the check delay" (`Look::old_enough`), and its
    // create may still be finishing in this process.
    let unseen_back_after = match source {
        Source::HalfMessages => ctx.settings.check_delay,
        Source::DueDeadlines => Duration::ZERO,
    };
    let hold = first_look_hold(source, ctx.settings.check_delay);
    // First deliveries wait in `held` for their hold; the rest is looked at on arrival.
    let (to_hold, held) = mpsc::unbounded_channel();
    // Whatever has arrived is looked at together: one read of the database for all.
    let (ctx, peers) = (&ctx, &peers);
    let pulled = shop_kit::jetstream::consume(
        consumer,
        stopping.clone(),
        LOOK_BATCH,
        CONCURRENCY,
        RETRY,
        unseen_back_after,
        move |batch| {
            let to_hold = to_hold.clone();
            async move {
                let mut now = Vec::with_capacity(batch.len());
                for message in batch {
                    let Some(look) = parse(source, message).await else {
                        continue;
                    };
                    if look.old_enough || hold.is_zero() {
                        now.push(look);
                    } else if let Err(mpsc::error::SendError((_, look))) =
                        to_hold.send((Instant::now(), look))
                    {
                        now.push(look);
                    }
                }
                if !now.is_empty() {
                    look_at(ctx, peers, source, now).await;
                }
            }
        },
    );
    // `held` ends when the consumer's loop has returned (and dropped every sender), so
    // every first delivery taken from the server is looked at before this returns.
    let looked_when_held = look_when_held(ctx, peers, source, held, hold, &stopping);
    let (pulled, ()) = tokio::join!(pulled, looked_when_held);
    pulled
}

/// Looks at the first deliveries sent to `held` once each has been held `hold` (at once
/// when the worker stops), together as they come due, [`LOOK_BATCH`] at most at a time.
async fn look_when_held(
    ctx: &Ctx,
    peers: &Peers,
    source: Source,
    held: mpsc::UnboundedReceiver<(Instant, Look)>,
    hold: Duration,
    stopping: &CancellationToken,
) {
    let due_batches = futures::stream::unfold(
        (held, None::<(Instant, Look)>),
        move |(mut held, mut next)| async move {
            let (arrived, oldest) = match next.take() {
                Some(first) => first,
                None => held.recv().await?,
            };
            tokio::select! {
                _ = tokio::time::sleep_until((arrived + hold).into()) => {}
                _ = stopping.cancelled() => {}
            }
            // Held in arrival order, so the ones behind the oldest are due no sooner; those
            // due within the gather are taken with it (held a little less than `hold`).
            let mut batch = vec![oldest];
            let gathered = arrived + hold.min(FIRST_LOOK_GATHER);
            while batch.len() < LOOK_BATCH {
                match held.try_recv() {
                    Ok((at, look)) if at <= gathered || stopping.is_cancelled() => batch.push(look),
                    Ok(not_due) => {
                        next = Some(not_due);
                        break;
                    }
                    Err(_) => break,
                }
            }
            Some((batch, (held, next)))
        },
    );
    due_batches
        .for_each_concurrent(CONCURRENCY, |batch| look_at(ctx, peers, source, batch))
        .await;
}

/// A message being looked at.
struct Look {
    message: jetstream::Message,
    sn: OrderSn,
    /// Held by the server for at least the check delay, by the server's timers: a half
    /// message delivered before, or a fired deadline (which comes long after its create).
    old_enough: bool,
}

/// Looks at a batch of messages and acks or naks each.
async fn look_at(ctx: &Ctx, peers: &Peers, source: Source, looks: Vec<Look>) {
    let mut verdicts = decide_by_owner(ctx, peers, source, &looks).await;
    if source == Source::HalfMessages && ctx.settings.timer == TimerMode::Schedule {
        schedule_waiting(ctx, &looks, &mut verdicts).await;
    }
    crash::point("order.checker.before_ack");
    for (look, verdict) in looks.iter().zip(verdicts) {
        let sent = match verdict {
            Verdict::Ack => look.message.ack().await,
            Verdict::Later(delay) => look.message.ack_with(AckKind::Nak(Some(delay))).await,
            Verdict::Waiting { left, .. } => {
                look.message
                    .ack_with(AckKind::Nak(Some(left + MARGIN)))
                    .await
            }
        };
        if let Err(error) = sent {
            // It comes back after ack_wait and is looked at again: every case is idempotent.
            tracing::warn!(order_sn = %look.sn, %error, "could not ack");
        }
    }
}

/// Stores the deadline of every waiting order as a schedule; each one JetStream acknowledged
/// becomes an ack of its half message, each one it did not a retry.
async fn schedule_waiting(ctx: &Ctx, looks: &[Look], verdicts: &mut [Verdict]) {
    let (at, deadlines): (Vec<usize>, Vec<_>) = verdicts
        .iter()
        .enumerate()
        .filter_map(|(i, verdict)| match verdict {
            Verdict::Waiting { deadline, .. } => Some((i, (looks[i].sn, *deadline))),
            _ => None,
        })
        .unzip();
    if at.is_empty() {
        return;
    }
    let stored = timers::schedule(&ctx.js, ctx.streams(), &deadlines).await;
    for (i, result) in at.into_iter().zip(stored) {
        verdicts[i] = match result {
            Ok(()) => Verdict::Ack,
            Err(error) => {
                tracing::warn!(order_sn = %looks[i].sn, %error, "could not schedule the deadline; retrying");
                Verdict::Later(RETRY)
            }
        };
    }
}

/// The look at `message`, or `None` when it can never parse (then it is terminated, not
/// redelivered forever).
async fn parse(source: Source, message: jetstream::Message) -> Option<Look> {
    let parsed = match source {
        Source::HalfMessages => serde_json::from_slice::<HalfMessage>(&message.payload)
            .map(|half| (half.order_sn, delivered_before(&message))),
        Source::DueDeadlines => {
            serde_json::from_slice::<PayDeadline>(&message.payload).map(|due| (due.order_sn, true))
        }
    };
    match parsed {
        Ok((sn, old_enough)) => Some(Look {
            message,
            sn,
            old_enough,
        }),
        Err(error) => {
            tracing::error!(subject = %message.subject, %error, "malformed message; terminated");
            let _ = message.ack_with(AckKind::Term).await;
            None
        }
    }
}

/// Whether JetStream delivered `message` before: then its first delivery was nakked for the
/// check delay (or not answered for `ack_wait`), so the server has held it at least that long.
fn delivered_before(message: &jetstream::Message) -> bool {
    message.info().is_ok_and(|info| info.delivered > 1)
}

/// The verdict on each look, in order, asked of the partition owning its order (this one's
/// decided here). A look whose partition fails or does not answer is retried; a first
/// delivery's retry waits the check delay: that wait is what makes any later delivery "old
/// enough", so it must never be cut short by a failure.
async fn decide_by_owner(ctx: &Ctx, peers: &Peers, source: Source, looks: &[Look]) -> Vec<Verdict> {
    let first_wait = ctx.settings.check_delay + MARGIN;
    let mut verdicts: Vec<Verdict> = looks
        .iter()
        .map(|look| {
            if look.old_enough {
                Verdict::Later(RETRY)
            } else {
                Verdict::Later(first_wait)
            }
        })
        .collect();
    let map = peers.partitions.now();
    let groups = group_by_slot_owner(&map.map, 0..looks.len(), |&i| Slot::of_order(looks[i].sn));
    let answers = join_all(groups.iter().map(|(owner, at)| {
        let questions: Vec<Question> = at
            .iter()
            .map(|&i| Question {
                order_sn: looks[i].sn,
                old_enough: looks[i].old_enough,
            })
            .collect();
        peers.on::<OrderCheck, _, _>(*owner, Questions { questions }, |asked| async move {
            decide(ctx, &asked.questions)
                .await
                .map(|verdicts| Verdicts { verdicts })
        })
    }))
    .await;
    for ((owner, at), answer) in groups.into_iter().zip(answers) {
        match answer {
            Ok(Verdicts { verdicts: decided }) if decided.len() == at.len() => {
                for (i, verdict) in at.into_iter().zip(decided) {
                    verdicts[i] = verdict;
                }
            }
            Ok(Verdicts { verdicts: decided }) => {
                tracing::error!(?source, %owner, asked = at.len(),
                answered = decided.len(), "a partition answered the wrong number of verdicts")
            }
            Err(error) => {
                tracing::warn!(?source, %owner, %error, "a batch of looks failed; retrying")
            }
        }
    }
    verdicts
}

/// The verdict on each question about this partition's orders, in order.
///
/// All are read together, without a transaction or a lock: that decides every order that is
/// resolved or not yet due. The due ones are closed together ([`close_all_due`]). A missing
/// order at its half message's first delivery waits the check delay: nothing could be fenced
/// sooner. A missing order older than that takes its lock, one at a time ([`check`]),
/// because it may be fenced.
pub async fn decide(ctx: &Ctx, looks: &[Question]) -> Result<Vec<Verdict>, OrderError> {
    let first_wait = ctx.settings.check_delay + MARGIN;
    let sns: Vec<OrderSn> = looks.iter().map(|l| l.order_sn).collect();
    let timings = if sns.is_empty() {
        HashMap::new()
    } else {
        let mut conn = ctx.pool.acquire().await?;
        repo::timings(&mut conn, &sns).await?
    };
    let mut verdicts = Vec::with_capacity(looks.len());
    // Orders due now: closed together below, in one transaction.
    let mut due = Vec::new();
    for (i, look) in looks.iter().enumerate() {
        let verdict = match timings.get(&look.order_sn) {
            Some(timing) if timing.status.is_terminal() => Verdict::Ack,
            Some(timing) if timing.left_secs > 0.0 => Verdict::waiting(timing),
            Some(_) => {
                due.push(i);
                Verdict::Ack
            }
            None if !look.old_enough => Verdict::Later(first_wait),
            None => check(ctx, look.order_sn).await.unwrap_or_else(|error| {
                tracing::warn!(order_sn = %look.order_sn, %error, "checker: check failed; retrying");
                Verdict::Later(RETRY)
            }),
        };
        verdicts.push(verdict);
    }
    if !due.is_empty() {
        let sns: Vec<OrderSn> = due.iter().map(|&i| looks[i].order_sn).collect();
        match close_all_due(ctx, &sns).await {
            Ok(gone) => {
                // Moved to another partition between the read and the close (a slot move):
                // this message is the new owner's to decide.
                for i in due {
                    if gone.contains(&looks[i].order_sn) {
                        verdicts[i] = Verdict::Later(RETRY);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, orders = sns.len(), "could not close due orders; retrying");
                for i in due {
                    verdicts[i] = Verdict::Later(RETRY);
                }
            }
        }
    }
    Ok(verdicts)
}

/// Closes every order of `sns` still unpaid at its deadline, with its rollback and `closed`
/// event, in one transaction. An order paid or cancelled since it was read is left alone:
/// either way its message is done with. Returns the orders that are no longer here (their
/// slot moved to another partition while this waited for their rows).
async fn close_all_due(ctx: &Ctx, sns: &[OrderSn]) -> Result<Vec<OrderSn>, OrderError> {
    let mut tx = ctx.pool.begin().await?;
    let closed = repo::close_all_due(&mut tx, sns).await?;
    let gone = if closed.len() < sns.len() {
        let left: Vec<OrderSn> = sns
            .iter()
            .copied()
            .filter(|sn| !closed.iter().any(|o| o.order_sn == *sn))
            .collect();
        let here = repo::timings(&mut tx, &left).await?;
        left.into_iter()
            .filter(|sn| !here.contains_key(sn))
            .collect()
    } else {
        Vec::new()
    };
    if closed.is_empty() {
        return Ok(gone);
    }
    let mut outbox = Vec::with_capacity(2 * closed.len());
    for order in &closed {
        outbox.push(rollback_entry(
            order.order_sn,
            RollbackReason::Closed,
            Some(order),
        )?);
        outbox.push(event_entry(ctx.streams(), order, OrderEventKind::Closed)?);
    }
    repo::outbox_add_many(&mut tx, &outbox).await?;
    tx.commit().await?;
    ctx.outbox.notify_one();
    crash::point("order.checker.after_close");
    tracing::info!(orders = closed.len(), "pay deadline passed: closed");
    Ok(gone)
}

/// One look under the order_sn's lock at a message, held by the server at least the check
/// delay, whose order was missing: the cases that write.
#[tracing::instrument(skip_all, fields(order_sn = %sn))]
pub async fn check(ctx: &Ctx, sn: OrderSn) -> Result<Verdict, OrderError> {
    let mut tx = ctx.pool.begin().await?;
    repo::lock_sn(&mut tx, sn).await?;
    let Some(timing) = repo::timing(&mut tx, sn).await? else {
        if repo::is_fenced(&mut tx, sn).await? {
            return Ok(Verdict::Ack);
        }
        repo::fence(&mut tx, sn).await?;
        // The half message's goods are not at hand here: every stock partition gives back
        // (an aborted order is rare; a partition that never deducted writes its tombstone).
        outbox_rollback(&mut tx, sn, RollbackReason::Aborted, None).await?;
        tx.commit().await?;
        ctx.outbox.notify_one();
        crash::point("order.checker.after_fence");
        tracing::info!("order never committed: fenced and rolled back");
        return Ok(Verdict::Ack);
    };
    if timing.status.is_terminal() {
        return Ok(Verdict::Ack);
    }
    if timing.left_secs > 0.0 {
        return Ok(Verdict::waiting(&timing));
    }
    if repo::close_if_due(&mut tx, sn).await? {
        let order = repo::get(&mut tx, sn)
            .await?
            .ok_or_else(|| OrderError::Bug("closed order vanished".into()))?;
        outbox_rollback(&mut tx, sn, RollbackReason::Closed, Some(&order)).await?;
        outbox_event(&mut tx, ctx.streams(), &order, OrderEventKind::Closed).await?;
        tx.commit().await?;
        ctx.outbox.notify_one();
        crash::point("order.checker.after_close");
        tracing::info!("pay deadline passed: closed");
    }
    Ok(Verdict::Ack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_request_is_an_object_the_owner_can_decode() {
        // Every endpoint's decoder refuses a body that is not a JSON object; a bare array of
        // questions was refused by every owner, so no look forwarded between partitions was
        // ever decided.
        let asked = Questions {
            questions: vec![Question {
                order_sn: OrderSn::parse("7000000000000002").unwrap(),
                old_enough: true,
            }],
        };
        let body = serde_json::to_vec(&asked).unwrap();
        let decoded: Questions = shop_kit::decode(&body).expect("the owner decodes it");
        assert_eq!(decoded.questions.len(), 1);
        assert!(decoded.questions[0].old_enough);
    }
}
