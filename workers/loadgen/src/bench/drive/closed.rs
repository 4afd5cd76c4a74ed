//! The closed loop: a fixed number of clients, each sending its next request as soon as the
//! previous one is answered, until the window ends; then every request in flight is waited
//! for (each operation bounds its own wait). A client told to come back later
//! (`retry_after_ms`) waits that long first, if it `waits_retry_after`: otherwise an
//! overloaded system would be measured under a retry storm that the bench, on the same
//! machine, makes itself. The clients start all in one instant, or spread evenly over a
//! ramp (viewers who press "buy" within a few seconds rather than in the same microsecond).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bench::outcome::Outcome;

use anyhow::Context;

use super::{lock, Operation};
use crate::bench::record::Recorder;

/// The clients of a closed loop.
pub struct Clients {
    pub concurrency: usize,
    /// Client `i` starts `ramp * i / concurrency` after the run began.
    pub ramp: Duration,
    pub waits_retry_after: bool,
}

pub async fn run<O: Operation>(
    operation: Arc<O>,
    clients: Clients,
    started: Instant,
    until: Instant,
    recorder: &Arc<Mutex<Recorder>>,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let Clients {
        concurrency,
        ramp,
        waits_retry_after,
    } = clients;
    let clients: Vec<_> = (0..concurrency)
        .map(|i| {
            let (operation, next, recorder) = (operation.clone(), next.clone(), recorder.clone());
            let first = started + ramp.mul_f64(i as f64 / concurrency as f64);
            tokio::spawn(async move {
                tokio::time::sleep_until(first.min(until).into()).await;
                while Instant::now() < until {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    lock(&recorder).sent();
                    let sent = Instant::now();
                    let outcome = operation.call(n).await;
                    lock(&recorder).record(sent, &outcome);
                    if let Outcome::Refused {
                        retry_after: Some(wait),
                    } = outcome
                    {
                        if waits_retry_after {
                            tokio::time::sleep_until((Instant::now() + wait).min(until).into())
                                .await;
                        }
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.context("a load client panicked")?;
    }
    Ok(())
}
