//! The open loop: request `n` is due at `start + n / rate` and is started then, in a task of
//! its own, whether or not earlier requests have finished; its latency counts from the
//! instant it was due. A generator that falls behind (a busy machine) starts the late
//! requests at once, and their lateness counts against the system, as a user would see it.
//! This is what avoids coordinated omission: a stalled system cannot slow down the
//! requests that measure it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;

use super::{lock, Operation};
use crate::bench::record::Recorder;

pub async fn run<O: Operation>(
    operation: Arc<O>,
    rate: f64,
    start: Instant,
    window: Duration,
    recorder: &Arc<Mutex<Recorder>>,
) -> anyhow::Result<()> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let runtime = tokio::runtime::Handle::current();
    let (started, mut requests) = mpsc::unbounded_channel();
    let recorder = recorder.clone();
    // The schedule is kept by a thread of its own, sleeping with the OS's precision (tens of
    // microseconds): tokio's timers fire on a 1 ms wheel, so a request due at some instant
    // would start up to a millisecond late, and that lateness, which is the load generator's
    // and not the system's, would be counted in every request's latency (0.7-1.5 ms of the
    // p50 at 100 creates/s, measured: docs/performance.md).
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            for n in 0u64.. {
                let due = start + interval.mul_f64(n as f64);
                if due >= start + window {
                    break;
                }
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                {
                    let mut recorder = lock(&recorder);
                    recorder.sent();
                    recorder.started_late(due);
                }
                let (operation, recorder) = (operation.clone(), recorder.clone());
                let request = runtime.spawn(async move {
                    let outcome = operation.call(n).await;
                    lock(&recorder).record(due, &outcome);
                });
                if started.send(request).is_err() {
                    break;
                }
            }
        })
        .context("starting the open loop's pacer thread")?;
    // Requests finish roughly in the order they started: awaiting them in that order keeps
    // only the ones in flight (and a few finished behind a slow one) in memory.
    while let Some(request) = requests.recv().await {
        request.await.context("a request task panicked")?;
    }
    pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the open loop's pacer thread panicked"))?;
    Ok(())
}
