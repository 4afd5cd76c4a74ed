//! Group commit of created orders: every create that has its deduct and waits for its
//! commit hands its order to one writer task, which commits whatever has queued up in one
//! transaction ([`repo::commit_created_batch`]: one round trip, one WAL flush) and answers
//! each create with its own outcome.
//!
//! While one batch commits, the next fills; there is no timer, so a lone create commits at
//! once and a busy worker commits in batches the size of what arrived during the last
//! commit. Each order keeps its own outcome: a fenced order_sn is left out of the batch by
//! the database (its create answers `unavailable`), and the others commit.

use std::sync::Arc;

use shop_contracts::txn::OrderStreams;
use shop_kit::queue::{Batches, Queue};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::repo::{self, Commit, NewOrder};
use crate::OrderError;

/// The most orders one transaction commits: bounds the statement's size and the time the
/// first create of a batch waits for the last.
const MAX_BATCH: usize = 128;
/// Creates that may wait for the writer (more than the creates a worker admits at once, so
/// an admitted create never waits to enqueue).
const QUEUE: usize = 4 * MAX_BATCH;

type Outcome = Result<Commit, OrderError>;

/// The handle creates commit through; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    queue: Queue<NewOrder, Outcome>,
}

/// The writer's side, run as a background task of the worker.
pub struct Writer {
    pool: PgPool,
    /// This partition's streams: the `created` events' subject.
    streams: OrderStreams,
    batches: Batches<NewOrder, Outcome>,
    outbox: Arc<Notify>,
}

impl Committer {
    /// The queue, and its writer (which wakes `outbox` after each batch that committed).
    pub fn new(pool: PgPool, streams: OrderStreams, outbox: Arc<Notify>) -> (Committer, Writer) {
        let (queue, batches) = Queue::new("order_commits", QUEUE, MAX_BATCH);
        (
            Committer { queue },
            Writer {
                pool,
                streams,
                batches,
                outbox,
            },
        )
    }

    /// Commits `order` in the next batch and returns its outcome.
    pub async fn commit(&self, order: NewOrder) -> Result<Commit, OrderError> {
        self.queue
            .call(order)
            .await
            .map_err(|stopped| OrderError::Bug(stopped.to_string()))?
    }
}

impl Writer {
    /// Commits batches until `draining` fires and what was queued before it has committed.
    pub async fn run(mut self, draining: CancellationToken) -> Result<(), OrderError> {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        while self.batches.next(&mut jobs, &draining).await {
            let (orders, waiters): (Vec<NewOrder>, Vec<_>) =
                jobs.drain(..).map(|job| job.split()).unzip();
            let outcomes = match self.pool.acquire().await {
                Ok(mut conn) => repo::commit_created_batch(&mut conn, self.streams, &orders).await,
                Err(error) => Err(error.into()),
            };
            match outcomes {
                Ok(outcomes) => {
                    if outcomes.iter().any(|o| matches!(o, Commit::Committed(_))) {
                        self.outbox.notify_one();
                    }
                    for (waiter, outcome) in waiters.into_iter().zip(outcomes) {
                        // A create that gave up waiting is gone; its order stands (the
                        // checker finds it committed).
                        waiter.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, orders = orders.len(), "a batch of order commits failed");
                    for waiter in waiters {
                        waiter.send(Err(shared_failure(&error)));
                    }
                }
            }
        }
        Ok(())
    }
}

/// What each create of a failed batch is told: the batch's error, without its cause (which
/// is logged once above and may name SQL).
fn shared_failure(error: &OrderError) -> OrderError {
    match error {
        OrderError::DatabaseUnavailable(_) => {
            OrderError::Unavailable("the order database is unavailable".into())
        }
        _ => OrderError::Bug("a batch of order commits failed".into()),
    }
}
