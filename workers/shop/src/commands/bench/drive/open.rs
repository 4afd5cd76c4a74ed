//! The open loop: request `n` is due at `start + n / rate` and is started then, in a task of
//! its own, whether or not earlier requests have finished; its latency counts from the
//! instant it was due. A generator that falls behind (a busy machine) starts the late
//! requests at once, and their lateness counts against the system, as a user would see it.
//! This is what avoids coordinated omission: a stalled system cannot slow down the
//! requests that measure it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;

use super::{lock, Operation};
use crate::commands::bench::record::Recorder;

pub async fn run<O: Operation>(
    operation: Arc<O>,
    rate: f64,
    start: Instant,
    window: Duration,
    recorder: &Arc<Mutex<Recorder>>,
) -> anyhow::Result<()> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut requests = JoinSet::new();
    for n in 0u64.. {
        let due = start + interval.mul_f64(n as f64);
        if due >= start + window {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        lock(recorder).sent();
        let (operation, recorder) = (operation.clone(), recorder.clone());
        requests.spawn(async move {
            let outcome = operation.call(n).await;
            lock(&recorder).record(due, &outcome);
        });
        // Reap what has finished, so a long run holds only the requests in flight.
        while let Some(done) = requests.try_join_next() {
            done.context("a request task panicked")?;
        }
    }
    while let Some(done) = requests.join_next().await {
        done.context("a request task panicked")?;
    }
    Ok(())
}
