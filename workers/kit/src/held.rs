//! Refusals whose replies are held for their retry hint ([`crate::Admission::with_held_refusals`]):
//! the endpoint loop hands each one over ([`Holding::hold`]) and one task per endpoint
//! ([`Holding::run`], a background task of its worker) sends them when due. A held reply is
//! its reply subject, its hint and two instants in a heap: no task, no timer of its own.
//!
//! Why hold at all: over NATS nothing makes a client wait its `retry_after_ms`. A client
//! that retries at once (a buggy app, a scalper's script) sends its next request as soon as
//! it has the refusal, and 4,000 of them kept a worker answering 100,000 refusals a second
//! (issue 21), each costing CPU in the client, in nats-server twice and in the worker, which
//! the admitted creates then lacked. A client has one request outstanding at a time, so
//! holding its refusal paces it at the hint whatever it does.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use async_nats::{Client, Subject};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::micro::EndpointStats;
use crate::reply;
use shop_contracts::ErrorDetail;

/// Held replies at most per endpoint (in the channel and in the heap each): a client has one
/// request outstanding, so this is thousands of misbehaving clients; past it a refusal is
/// answered at once. About 100 bytes each.
const MAX_HELD: usize = 8192;

/// One held refusal.
pub(crate) struct Held {
    pub reply: Subject,
    pub retry_after_ms: u64,
    pub arrived: Instant,
    pub due: Instant,
}

/// The endpoint loop's side: where held refusals go.
#[derive(Clone)]
pub(crate) struct Holding {
    to_holder: mpsc::Sender<Held>,
}

/// The holder's side, run as a background task of the worker.
pub(crate) struct Holder {
    from_loop: mpsc::Receiver<Held>,
    client: Client,
    stats: Arc<EndpointStats>,
}

impl Holding {
    pub fn new(client: Client, stats: Arc<EndpointStats>) -> (Holding, Holder) {
        let (to_holder, from_loop) = mpsc::channel(MAX_HELD);
        (
            Holding { to_holder },
            Holder {
                from_loop,
                client,
                stats,
            },
        )
    }

    /// Hands `held` to the holder; gives it back when the holder is full (or gone), to be
    /// answered at once.
    pub fn hold(&self, held: Held) -> Result<(), Held> {
        self.to_holder.try_send(held).map_err(|e| match e {
            mpsc::error::TrySendError::Full(held) | mpsc::error::TrySendError::Closed(held) => held,
        })
    }
}

/// Orders held replies by when they are due (the heap is a max-heap, hence `Reverse`).
struct ByDue(Held);

impl PartialEq for ByDue {
    fn eq(&self, other: &Self) -> bool {
        self.0.due == other.0.due
    }
}
impl Eq for ByDue {}
impl PartialOrd for ByDue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByDue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.due.cmp(&other.0.due)
    }
}

impl Holder {
    /// Sends every held reply when it is due, until `draining` fires; then sends what it
    /// still holds at once (a stopping worker keeps nobody waiting) and ends.
    pub async fn run(
        mut self,
        draining: CancellationToken,
    ) -> Result<(), std::convert::Infallible> {
        let mut heap: BinaryHeap<Reverse<ByDue>> = BinaryHeap::new();
        let mut open = true;
        loop {
            let next_due = heap.peek().map(|Reverse(ByDue(held))| held.due);
            tokio::select! {
                biased;
                _ = draining.cancelled() => break,
                received = self.from_loop.recv(), if open => match received {
                    Some(held) if heap.len() < MAX_HELD => heap.push(Reverse(ByDue(held))),
                    Some(held) => self.send(held).await,
                    // The endpoint's loop ended (the worker is stopping): wait for the drain.
                    None => open = false,
                },
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now).into()),
                    if next_due.is_some() =>
                {
                    let now = Instant::now();
                    while heap.peek().is_some_and(|Reverse(ByDue(held))| held.due <= now) {
                        let Some(Reverse(ByDue(held))) = heap.pop() else { break };
                        self.send(held).await;
                    }
                }
            }
        }
        self.from_loop.close();
        while let Ok(held) = self.from_loop.try_recv() {
            heap.push(Reverse(ByDue(held)));
        }
        for Reverse(ByDue(held)) in heap.into_sorted_vec().into_iter().rev() {
            self.send(held).await;
        }
        Ok(())
    }

    async fn send(&self, held: Held) {
        publish(&self.client, held.reply, held.retry_after_ms).await;
        self.stats.latency.held.record(held.arrived.elapsed());
    }
}

/// Sends a refusal with its retry hint to `reply`.
pub(crate) async fn publish(client: &Client, reply: Subject, retry_after_ms: u64) {
    let (headers, body) = reply::error_reply(refusal_detail(retry_after_ms));
    if let Err(error) = client
        .publish_with_headers(reply, headers, body.into())
        .await
    {
        tracing::warn!(%error, "could not send a refusal");
    }
}

/// The contract error of a refusal at admission.
fn refusal_detail(retry_after_ms: u64) -> ErrorDetail {
    ErrorDetail::unavailable("the worker is at capacity; nothing was done, try again")
        .with("retry_after_ms", retry_after_ms)
}
