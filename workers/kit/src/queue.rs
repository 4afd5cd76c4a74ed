//! The coalescing queue behind every batcher of the shop (goods' batch reads, stock's group
//! commit, the order committer): requests put a job on a bounded queue and wait for its
//! answer; one writer takes everything that has queued up as one batch, does it in one
//! round trip and answers each job. While one batch is at the database the next fills, with
//! no timer: an idle worker runs a lone job at once, a busy one pays one round trip for many.
//!
//! Bounded: when the writer falls behind, requests wait to enqueue (back-pressure) instead of
//! growing a queue without limit. Its depth is the gauge `shop_queue_depth{queue}`. At a stop
//! ([`Batches::next`] with `draining` fired) the queue closes, what it holds is still handed
//! out, and then the writer's loop ends.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Why a job got no answer: the writer has stopped (the worker is stopping, or it failed).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the {0} writer has stopped")]
pub struct Stopped(pub &'static str);

/// One job and the way back to its requester.
pub struct Job<In, Out> {
    pub input: In,
    answer: oneshot::Sender<Out>,
}

impl<In, Out> Job<In, Out> {
    /// A job outside any queue, and where its answer arrives (for a writer's unit tests).
    pub fn new(input: In) -> (Self, oneshot::Receiver<Out>) {
        let (answer, answered) = oneshot::channel();
        (Job { input, answer }, answered)
    }

    /// Answers the job's requester. One that gave up waiting is gone: its job's effect stands
    /// (each writer says why that is safe).
    pub fn answer(self, out: Out) {
        let _ = self.answer.send(out);
    }

    /// The input and the way back, for a writer that keeps them apart.
    pub fn split(self) -> (In, Answer<Out>) {
        (self.input, Answer(self.answer))
    }
}

/// The way back to one job's requester.
pub struct Answer<Out>(oneshot::Sender<Out>);

impl<Out> Answer<Out> {
    /// As [`Job::answer`].
    pub fn send(self, out: Out) {
        let _ = self.0.send(out);
    }
}

/// A batch of jobs, in arrival order.
pub type Batch<In, Out> = Vec<Job<In, Out>>;

/// The requesters' side; cheap to clone.
pub struct Queue<In, Out> {
    name: &'static str,
    jobs: mpsc::Sender<Job<In, Out>>,
}

impl<In, Out> Clone for Queue<In, Out> {
    fn clone(&self) -> Self {
        Queue {
            name: self.name,
            jobs: self.jobs.clone(),
        }
    }
}

/// The writer's side.
pub struct Batches<In, Out> {
    jobs: mpsc::Receiver<Job<In, Out>>,
    max_batch: usize,
}

impl<In: Send + 'static, Out: Send + 'static> Queue<In, Out> {
    /// A queue named `name` (its metrics label) holding at most `capacity` jobs, handed out
    /// in batches of at most `max_batch`.
    pub fn new(name: &'static str, capacity: usize, max_batch: usize) -> (Self, Batches<In, Out>) {
        let (jobs, receiver) = mpsc::channel(capacity.max(1));
        let depth = jobs.downgrade();
        crate::metrics::global().watch_queue(name, move || {
            depth
                .upgrade()
                .map_or(0, |jobs| jobs.max_capacity() - jobs.capacity())
        });
        let batches = Batches {
            jobs: receiver,
            max_batch: max_batch.max(1),
        };
        (Queue { name, jobs }, batches)
    }

    /// Queues `input` (waiting for room if the queue is full) and waits for its answer.
    pub async fn call(&self, input: In) -> Result<Out, Stopped> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Job { input, answer })
            .await
            .map_err(|_| Stopped(self.name))?;
        answered.await.map_err(|_| Stopped(self.name))
    }

    /// Jobs waiting now.
    pub fn depth(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }
}

impl<In, Out> Batches<In, Out> {
    /// Fills `batch` with what has queued up (waiting for at least one job); returns `false`
    /// once the queue is closed and empty: every requester is gone, or `draining` fired and
    /// what was queued before it has been handed out.
    pub async fn next(&mut self, batch: &mut Batch<In, Out>, draining: &CancellationToken) -> bool {
        batch.clear();
        let taken = tokio::select! {
            biased;
            taken = self.jobs.recv_many(batch, self.max_batch) => taken,
            _ = draining.cancelled() => {
                self.jobs.close();
                self.jobs.recv_many(batch, self.max_batch).await
            }
        };
        taken > 0
    }

    /// Adds to `batch` what is queued right now, without waiting, up to the batch size.
    pub fn take_ready(&mut self, batch: &mut Batch<In, Out>) {
        while batch.len() < self.max_batch {
            match self.jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_queued_while_the_writer_is_busy_come_out_as_one_batch() {
        let (queue, mut batches) = Queue::<u32, u32>::new("test_batches", 16, 8);
        let draining = CancellationToken::new();
        let callers: Vec<_> = (0..5)
            .map(|i| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.call(i).await })
            })
            .collect();
        // Wait (by condition) until all five have queued, as if a batch were in flight.
        while queue.depth() < 5 {
            tokio::task::yield_now().await;
        }
        let mut batch = Vec::new();
        assert!(batches.next(&mut batch, &draining).await);
        assert_eq!(batch.len(), 5);
        for job in batch.drain(..) {
            let doubled = job.input * 2;
            job.answer(doubled);
        }
        let mut answers = Vec::new();
        for caller in callers {
            answers.push(caller.await.unwrap().unwrap());
        }
        answers.sort_unstable();
        assert_eq!(answers, [0, 2, 4, 6, 8]);
    }

    #[tokio::test]
    async fn draining_hands_out_what_was_queued_then_ends() {
        let (queue, mut batches) = Queue::<u32, u32>::new("test_drain", 16, 2);
        let draining = CancellationToken::new();
        let pending: Vec<_> = (0..3)
            .map(|i| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.call(i).await })
            })
            .collect();
        while queue.depth() < 3 {
            tokio::task::yield_now().await;
        }
        draining.cancel();
        let mut batch = Vec::new();
        let mut seen = 0;
        while batches.next(&mut batch, &draining).await {
            assert!(batch.len() <= 2, "a batch larger than max_batch");
            seen += batch.len();
            for job in batch.drain(..) {
                job.answer(0);
            }
        }
        assert_eq!(seen, 3, "a job queued before the drain was dropped");
        for caller in pending {
            assert!(caller.await.unwrap().is_ok());
        }
        assert!(matches!(queue.call(9).await, Err(Stopped("test_drain"))));
    }
}
