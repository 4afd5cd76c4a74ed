//! Running a micro-service endpoint: every request in its own task, decoded, handled, answered,
//! counted and timed ([`crate::metrics`]), in a span that continues the caller's trace
//! ([`crate::trace`]); at a stop, fenced so that no request routed here is lost
//! ([`crate::micro`]). Endpoints are added through [`crate::Worker::serve`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_contracts::{ErrorCode, ErrorDetail};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::{decode, metrics, micro, reply, trace};

/// What a worker's error enum gives the plumbing: the contract error to send.
/// Implemented by each worker's `thiserror` enum; `Internal`/`Unavailable` are logged here
/// with their cause, which never reaches the caller.
pub trait ServiceError: std::error::Error + Send + 'static {
    fn to_contract(&self) -> ErrorDetail;
}

/// A bound on the requests of one endpoint in flight in this process. When it is full, a
/// request is refused at once with `unavailable` and `details.retry_after_ms`, before it is
/// even decoded, so a refused request has done nothing (CONTRACT section 1). Work the
/// process cannot finish in time is never started: under overload, goodput stays at the
/// peak instead of collapsing into timeouts of half-done work.
///
/// The retry hint adapts to the overload ([`Pacing`]): a fixed hint would have thousands of
/// clients come back in lockstep and spend the worker on refusals.
#[derive(Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    pacing: Arc<Pacing>,
}

impl Admission {
    /// At most `in_flight` requests at once; a refusal's retry hint starts at `retry_after`.
    pub fn new(in_flight: usize, retry_after: Duration) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(in_flight.max(1))),
            pacing: Arc::new(Pacing::new(retry_after)),
        }
    }

    fn refusal(&self) -> ErrorDetail {
        ErrorDetail::unavailable("the worker is at capacity; nothing was done, try again")
            .with("retry_after_ms", self.pacing.refused())
    }
}

/// The retry hint of refusals, steered so that clients come back about as fast as the worker
/// finishes requests. Every [`Pacing::WINDOW`] it compares the refusals with the requests
/// admitted and scales the hint by how far their ratio is from [`Pacing::TARGET`] (one
/// refusal for every two admissions): at most 4 times up (a storm is met within a second),
/// at most halved down, never below the configured base nor above [`Pacing::MAX`]. Each
/// refusal gets the hint times a random factor in 0.5..1.5, so clients refused together do
/// not return together. Lock-free: a refusal costs a few atomic operations.
pub struct Pacing {
    base_ms: u64,
    hint_ms: AtomicU64,
    refused: AtomicU64,
    admitted: AtomicU64,
    /// Start of the current window, in ms since `epoch`.
    window_ms: AtomicU64,
    epoch: Instant,
}

impl Pacing {
    const WINDOW: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(30);
    /// Refusals per admission the hint aims at: enough that the worker never idles while
    /// clients wait, few enough that refusals cost little.
    const TARGET: f64 = 0.5;

    fn new(base: Duration) -> Pacing {
        let base_ms = (base.as_millis() as u64).max(1);
        Pacing {
            base_ms,
            hint_ms: AtomicU64::new(base_ms),
            refused: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            window_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn admitted(&self) {
        self.admitted_at(self.epoch.elapsed());
    }

    /// [`Pacing::admitted`] at `elapsed` since the pacing began.
    fn admitted_at(&self, elapsed: Duration) {
        self.admitted.fetch_add(1, Ordering::Relaxed);
        self.steer(elapsed);
    }

    /// Counts a refusal and returns its retry hint in milliseconds.
    fn refused(&self) -> u64 {
        self.refused_at(self.epoch.elapsed())
    }

    /// [`Pacing::refused`] at `elapsed` since the pacing began.
    fn refused_at(&self, elapsed: Duration) -> u64 {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.steer(elapsed);
        let hint = self.hint_ms.load(Ordering::Relaxed);
        // 0.5..1.5 times the hint: jitter from std's per-process random hash keys.
        let jitter = crate::random::random_u64() % 1000;
        (hint * (500 + jitter) / 1000).max(1)
    }

    /// Closes the window once it has run its length (the first admission or refusal after
    /// that does it, so the hint also falls back once refusals stop) and rescales the hint
    /// from the window's counts, which are approximate at the edges: all a hint needs.
    fn steer(&self, elapsed: Duration) {
        let now = elapsed.as_millis() as u64;
        let start = self.window_ms.load(Ordering::Relaxed);
        if now < start + Self::WINDOW.as_millis() as u64
            || self
                .window_ms
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let refused = self.refused.swap(0, Ordering::Relaxed);
        let admitted = self.admitted.swap(0, Ordering::Relaxed);
        let hint = self.hint_ms.load(Ordering::Relaxed);
        let ratio = refused as f64 / admitted.max(1) as f64;
        let scale = (ratio / Self::TARGET).clamp(0.5, 4.0);
        let next = ((hint as f64 * scale) as u64).clamp(self.base_ms, Self::MAX.as_millis() as u64);
        self.hint_ms.store(next, Ordering::Relaxed);
    }
}

/// How long a fenced endpoint waits for the rest of its share before it closes: when no
/// request has come for this long, none is on the wire ([`micro::Endpoint::close`]). Long
/// against a busy machine's scheduling stalls, short against `shutdown_timeout`.
const QUIET: Duration = Duration::from_secs(1);

/// The least room a fenced endpoint that is still being sent requests narrows its fence to
/// (see [`Serving::run`]).
const NARROW_ROOM: u64 = 16;

/// One endpoint's serving loop: every request in a task of its own on `requests` (so the
/// worker can wait for them at a stop), until `stopping` fires; then the endpoint is
/// fenced, what the server had routed here is still served, and the loop ends.
pub(crate) struct Serving<S, H> {
    pub endpoint: micro::Endpoint,
    pub subject: &'static str,
    pub admission: Option<Admission>,
    pub client: Client,
    pub state: S,
    pub handler: Arc<H>,
    pub stopping: CancellationToken,
    pub requests: TaskTracker,
}

impl<S, H> Serving<S, H> {
    pub(crate) async fn run<Req, Rep, Err, Fut>(mut self) -> Result<(), async_nats::Error>
    where
        S: Clone + Send + Sync + 'static,
        Req: DeserializeOwned + Send + 'static,
        Rep: Serialize + Send + 'static,
        Err: ServiceError,
        H: Fn(S, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, Err>> + Send + 'static,
    {
        let metrics = metrics::global().endpoint(self.subject);
        let stats = self.endpoint.stats();
        let mut fenced = false;
        let mut closed = false;
        // Requests taken since the fence last moved, and when it did.
        let (mut since_narrowed, mut recent) = (Instant::now(), 0u64);
        loop {
            let next = if !fenced {
                tokio::select! {
                    biased;
                    _ = self.stopping.cancelled() => {
                        self.endpoint.fence().await?;
                        fenced = true;
                        since_narrowed = Instant::now();
                        continue;
                    }
                    next = self.endpoint.next() => next,
                }
            } else if !closed {
                match tokio::time::timeout(QUIET, self.endpoint.next()).await {
                    Ok(next) => {
                        // Requests keep coming, yet too few to use up the fence's room soon
                        // (a few a second would take longer than `shutdown_timeout`): every
                        // QUIET, narrow the fence to twice what the last QUIET brought. That
                        // is the bound QUIET itself rests on: nothing stays on the wire
                        // longer than QUIET, so no more than one QUIET's share is on it now.
                        if next.is_some() && since_narrowed.elapsed() >= QUIET {
                            self.endpoint.fence_to(NARROW_ROOM.max(2 * recent)).await?;
                            (since_narrowed, recent) = (Instant::now(), 0);
                        }
                        recent += 1;
                        next
                    }
                    Err(_) => {
                        tracing::info!(subject = self.subject, "fenced endpoint quiet; closing it");
                        self.endpoint.close().await?;
                        closed = true;
                        continue;
                    }
                }
            } else {
                self.endpoint.next().await
            };
            let Some(request) = next else { break };
            let arrived = Instant::now();
            let slot = match &self.admission {
                None => None,
                Some(admission) => match admission.slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        admission.pacing.admitted();
                        Some(slot)
                    }
                    Err(_) => {
                        // Answered here, not in a task of its own: a spawned refusal
                        // waits in the runtime's queue behind the admitted requests'
                        // tasks, milliseconds on a busy worker; the answer is one publish
                        // into the connection's buffer.
                        let refusal = admission.refusal();
                        stats.record(arrived.elapsed(), Some("503:unavailable"));
                        reply::respond::<()>(&self.client, &request, Err(refusal)).await;
                        metrics.answered(Some(ErrorCode::Unavailable), arrived.elapsed());
                        continue;
                    }
                },
            };
            let handler = self.handler.clone();
            let state = self.state.clone();
            let metrics = metrics.clone();
            let stats = stats.clone();
            let client = self.client.clone();
            let subject = self.subject;
            // The request's span: a child of the caller's span when the request carries a
            // `traceparent`, so its logs and the calls it makes belong to the caller's trace.
            let span = tracing::info_span!(
                "request",
                endpoint = subject,
                trace_id = tracing::field::Empty
            );
            let ids = trace::continue_from(&span, request.headers.as_ref());
            metrics.started();
            self.requests.spawn(
                trace::scope(ids, async move {
                    let result = match decode::<Req>(&request.payload) {
                        Ok(body) => handler(state, body).await.map_err(|e| {
                            let contract = e.to_contract();
                            if matches!(contract.code, ErrorCode::Internal | ErrorCode::Unavailable)
                            {
                                tracing::error!(subject, error = %e, "request failed");
                            }
                            contract
                        }),
                        Err(bad) => Err(bad),
                    };
                    // Free the slot before the reply goes out: a client that sends its next
                    // request as soon as it has the answer must find the slot free.
                    drop(slot);
                    let code = result.as_ref().err().map(|e| e.code);
                    reply::respond(&client, &request, result).await;
                    let took = arrived.elapsed();
                    metrics.finished(code, took);
                    stats.record(
                        took,
                        code.map(|c| format!("{}:{}", c.status(), c.as_str()))
                            .as_deref(),
                    );
                    tracing::debug!(
                        code = code.map_or("ok", ErrorCode::as_str),
                        ms = took.as_secs_f64() * 1e3,
                        "answered"
                    );
                })
                .instrument(span),
            );
        }
        if fenced {
            Ok(())
        } else {
            Err(format!("the subscription of {} ended", self.subject).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One window of `refused` refusals and `admitted` admissions ending at `end_ms`;
    /// returns the hint the window's last refusal gave.
    fn window(pacing: &Pacing, end_ms: u64, refused: u64, admitted: u64) -> u64 {
        for _ in 0..admitted {
            pacing.admitted_at(Duration::from_millis(end_ms - 249));
        }
        // Inside the window (which began at end_ms - 250, when the last one closed)...
        for _ in 1..refused {
            pacing.refused_at(Duration::from_millis(end_ms - 249));
        }
        // ...and the refusal that closes it.
        pacing.refused_at(Duration::from_millis(end_ms))
    }

    #[test]
    fn the_hint_grows_while_refusals_dominate_and_falls_back_to_the_base() {
        let pacing = Pacing::new(Duration::from_millis(50));
        // A storm: 100 refusals for every 10 admitted, window after window: 4 times up each.
        let mut hints = Vec::new();
        for w in 1..=4 {
            window(&pacing, w * 250, 100, 10);
            hints.push(pacing.hint_ms.load(Ordering::Relaxed));
        }
        assert_eq!(hints, [200, 800, 3200, 12800]);
        // One refusal for every two admissions: the hint holds.
        window(&pacing, 5 * 250, 10, 20);
        assert_eq!(pacing.hint_ms.load(Ordering::Relaxed), 12800);
        // Twice the target: it doubles.
        window(&pacing, 6 * 250, 20, 20);
        assert_eq!(pacing.hint_ms.load(Ordering::Relaxed), 25600);
        // The storm is over: the hint halves back down to the base, never below.
        for w in 7..=20 {
            window(&pacing, w * 250, 1, 50);
        }
        assert_eq!(pacing.hint_ms.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn the_hint_never_passes_the_cap_and_each_refusal_is_jittered_around_it() {
        let pacing = Pacing::new(Duration::from_millis(50));
        for w in 1..=40 {
            window(&pacing, w * 250, 100, 0);
        }
        let cap = Pacing::MAX.as_millis() as u64;
        assert_eq!(pacing.hint_ms.load(Ordering::Relaxed), cap);
        let given: Vec<u64> = (0..200)
            .map(|_| pacing.refused_at(Duration::from_millis(40 * 250)))
            .collect();
        assert!(
            given.iter().all(|&g| g >= cap / 2 && g < cap * 3 / 2),
            "{given:?}"
        );
        let distinct: std::collections::HashSet<_> = given.iter().collect();
        assert!(
            distinct.len() > 50,
            "refusals are not jittered: {distinct:?}"
        );
    }
}
