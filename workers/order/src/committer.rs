//! Group commit of created orders: every create that has its deduct and waits for its
//! commit hands its order to one writer task, which commits whatever has queued up in one
//! transaction ([`repo::commit_created_batch`]: one round trip, one WAL flush) and answers
//! each create with its own outcome.
//!
//! While one batch commits, the next fills; there is no timer, so a lone create commits at
//! once and a busy worker commits in batches the size of what arrived during the last
//! commit. Each order keeps its own outcome: a fenced order_sn is left out of the batch by
//! the database (its create answers `unavailable`), and the others commit.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Notify};

use std::sync::Arc;

use crate::repo::{self, Commit, NewOrder};
use crate::OrderError;

/// The most orders one transaction commits: bounds the statement's size and the time the
/// first create of a batch waits for the last.
const MAX_BATCH: usize = 128;

struct Job {
    order: NewOrder,
    outcome: oneshot::Sender<Result<Commit, OrderError>>,
}

/// The handle creates commit through; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::UnboundedSender<Job>,
}

impl Committer {
    /// Starts the writer task on `pool`; it wakes `outbox` after each batch that committed.
    pub fn start(pool: PgPool, outbox: Arc<Notify>) -> Committer {
        // Unbounded: what waits here is bounded by the creates admitted to the worker.
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(write_forever(pool, jobs, outbox));
        Committer { queue }
    }

    /// Commits `order` in the next batch and returns its outcome.
    pub async fn commit(&self, order: NewOrder) -> Result<Commit, OrderError> {
        let (outcome, answer) = oneshot::channel();
        self.queue
            .send(Job { order, outcome })
            .map_err(|_| OrderError::Bug("the order committer stopped".into()))?;
        answer
            .await
            .map_err(|_| OrderError::Bug("the order committer dropped a create".into()))?
    }
}

async fn write_forever(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Job>, outbox: Arc<Notify>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (orders, waiters): (Vec<NewOrder>, Vec<_>) =
            jobs.drain(..).map(|job| (job.order, job.outcome)).unzip();
        let outcomes = match pool.acquire().await {
            Ok(mut conn) => repo::commit_created_batch(&mut conn, &orders).await,
            Err(error) => Err(error.into()),
        };
        match outcomes {
            Ok(outcomes) => {
                if outcomes.iter().any(|o| matches!(o, Commit::Committed(_))) {
                    outbox.notify_one();
                }
                for (waiter, outcome) in waiters.into_iter().zip(outcomes) {
                    // A create that gave up waiting is gone; its order stands (the checker
                    // finds it committed).
                    let _ = waiter.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::error!(%error, orders = orders.len(), "a batch of order commits failed");
                for waiter in waiters {
                    let _ = waiter.send(Err(shared_failure(&error)));
                }
            }
        }
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
