//! Drives load: an [`Operation`] repeated for a time window, in a closed or an open loop,
//! with a progress display; returns the [`Figures`] of the run.
//!
//! - [`closed`]: `concurrency` clients, each sending its next request when the previous
//!   one is answered. Measures the most the system does at that concurrency.
//! - [`open`]: requests start on a fixed schedule, whether or not earlier ones finished,
//!   and latency counts from the scheduled start: what a user arriving at that moment
//!   waits, without coordinated omission.
//! - [`progress`]: the live display both share.

mod closed;
mod open;
mod progress;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::outcome::Outcome;
use super::record::{Figures, Recorder};

/// One kind of request the bench repeats: a create over NATS, a trivial request/reply, the
/// database work of a create issued directly.
pub trait Operation: Send + Sync + 'static {
    /// Performs request number `n` (counted from 0 across the run, so each is distinct).
    fn call(&self, n: u64) -> impl Future<Output = Outcome> + Send;
}

/// How requests are started.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// `concurrency` request loops, each waiting for its reply. A loop refused with a
    /// `retry_after_ms` waits that long before its next request, as the contract asks of
    /// a client, unless `waits_retry_after` is off (then it retries at once: a retry storm).
    /// The loops start spread evenly over the first `ramp_seconds` (0: all in one instant).
    Closed {
        concurrency: usize,
        waits_retry_after: bool,
        ramp_seconds: f64,
    },
    /// `rate` requests per second on a fixed schedule.
    Open { rate: f64 },
}

impl Mode {
    /// The closed loop of well-behaved clients.
    pub fn closed(concurrency: usize) -> Mode {
        Mode::Closed {
            concurrency,
            waits_retry_after: true,
            ramp_seconds: 0.0,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Closed {
                concurrency,
                waits_retry_after,
                ramp_seconds,
            } => {
                write!(f, "concurrency={concurrency}")?;
                if *ramp_seconds > 0.0 {
                    write!(f, " ramp={ramp_seconds}s")?;
                }
                if !waits_retry_after {
                    write!(f, " retrying at once")?;
                }
                Ok(())
            }
            Mode::Open { rate } => write!(f, "rate={rate}/s"),
        }
    }
}

/// Runs `operation` for `window` in `mode`; `title` names the run on the progress line and
/// `unit` names one success ("creates").
pub async fn run<O: Operation>(
    operation: Arc<O>,
    mode: Mode,
    window: Duration,
    title: &str,
    unit: &'static str,
) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let recorder = Arc::new(Mutex::new(Recorder::new(started, window)));
    let display = progress::show(title, unit, recorder.clone(), started, window);
    let outcome = match mode {
        Mode::Closed {
            concurrency,
            waits_retry_after,
            ramp_seconds,
        } => {
            let clients = closed::Clients {
                concurrency,
                ramp: Duration::from_secs_f64(ramp_seconds),
                waits_retry_after,
            };
            closed::run(operation, clients, started, started + window, &recorder).await
        }
        Mode::Open { rate } => open::run(operation, rate, started, window, &recorder).await,
    };
    display.finish();
    outcome?;
    let figures = lock(&recorder).figures();
    Ok(figures)
}

/// The recorder, even if a request task panicked while holding it (its figures are still
/// the best there are; the panic itself is reported by the task's join).
fn lock(recorder: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(PoisonError::into_inner)
}
