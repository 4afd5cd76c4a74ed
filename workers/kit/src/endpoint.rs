//! Running a micro-service endpoint: every request in its own task, decoded, handled, answered,
//! counted and timed ([`crate::metrics`]), in a span that continues the caller's trace
//! ([`crate::trace`]); at a stop, fenced so that no request routed here is lost
//! ([`crate::micro`]). Endpoints are added through [`crate::Worker::serve`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_contracts::{ErrorCode, ErrorDetail};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::held::{self, Held, Holding};
use crate::{decode, metrics, micro, reply, trace};

/// What a worker's error enum gives the plumbing: the contract error to send.
/// Implemented by each worker's `thiserror` enum; `Internal`/`Unavailable` are logged here
/// with their cause, which never reaches the caller.
pub trait ServiceError: std::error::Error + Send + 'static {
    fn to_contract(&self) -> ErrorDetail;
}

/// A bound on the requests of one endpoint in flight in this process, with a short wait for
/// a slot when one can be had soon. A request that finds no slot free waits for one (first
/// come, first served) if the wait it can expect is within [`Admission::with_wait`]'s bound;
/// otherwise, or when its wait runs out, it is refused with `unavailable` and
/// `details.retry_after_ms`, before it is even decoded, so a refused request has done
/// nothing (CONTRACT section 1). Work the process cannot finish in time is never started:
/// under overload, goodput stays at the peak instead of collapsing into timeouts of half-done
/// work, and a burst the slots can absorb within the wait is served rather than turned away.
///
/// The expected wait is the measured service time (an average of how long admitted requests
/// hold a slot, [`ServiceTime`]) times the requests ahead, over the slots: the queue moves at
/// `slots / service time`. Before anything was measured, a request waits (bounded by the
/// wait's deadline and by at most [`MAX_QUEUED_PER_SLOT`] waiters per slot).
///
/// The retry hint adapts to the overload ([`Pacing`]): a fixed hint would have thousands of
/// clients come back in lockstep and spend the worker on refusals. With
/// [`Admission::with_held_refusals`] the server enforces the hint: a refusal's reply is held
/// for it (up to a bound), so a client that retries at once is paced anyway.
#[derive(Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    capacity: usize,
    waiting: Arc<AtomicUsize>,
    service: Arc<ServiceTime>,
    pacing: Arc<Pacing>,
    max_wait: Duration,
    max_hold: Duration,
}

/// Waiters per slot at most, whatever the estimate says: the bound on memory (a waiting
/// request is a task and its message) when the service time is not known yet or tiny.
pub const MAX_QUEUED_PER_SLOT: usize = 16;

impl Admission {
    /// At most `in_flight` requests at once, the rest refused at once (no wait, no hold); a
    /// refusal's retry hint starts at `retry_after`.
    pub fn new(in_flight: usize, retry_after: Duration) -> Self {
        let capacity = in_flight.max(1);
        Admission {
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            waiting: Arc::new(AtomicUsize::new(0)),
            service: Arc::new(ServiceTime::default()),
            pacing: Arc::new(Pacing::new(retry_after)),
            max_wait: Duration::ZERO,
            max_hold: Duration::ZERO,
        }
    }

    /// A request that finds every slot taken waits for one if it can expect to start within
    /// `max_wait`, and for no longer than that.
    pub fn with_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Holds a refusal's reply for its retry hint, up to `max_hold`, and tells the client the
    /// rest of the hint (at least 1 ms): a client that honours the hint comes back when it
    /// would have anyway, one that ignores it is paced by the server. The held replies wait on
    /// one timer task per endpoint, not a task each ([`Worker::serve_admitted`]).
    ///
    /// [`Worker::serve_admitted`]: crate::Worker::serve_admitted
    pub fn with_held_refusals(mut self, max_hold: Duration) -> Self {
        self.max_hold = max_hold;
        self
    }

    pub(crate) fn holds_refusals(&self) -> bool {
        !self.max_hold.is_zero()
    }

    /// What to do with a request that arrived now. Called in the endpoint loop: it must not
    /// wait, and costs a few atomic operations.
    fn admit(&self) -> Admit {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            self.pacing.admitted();
            return Admit::Now(self.slot(permit));
        }
        if self.max_wait.is_zero() {
            return Admit::Refuse;
        }
        let ahead = self.waiting.load(Ordering::Relaxed);
        if ahead >= self.capacity * MAX_QUEUED_PER_SLOT
            || self.service.expected_wait(ahead + 1, self.capacity) > self.max_wait
        {
            return Admit::Refuse;
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Admit::Wait(Waiter {
            admission: self.clone(),
        })
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            _permit: permit,
            since: Instant::now(),
            service: self.service.clone(),
        }
    }

    /// A refusal of a request that has already waited `waited`: its retry hint and how much
    /// longer its reply is held.
    fn refusal(&self, waited: Duration) -> Refusal {
        let hint = Duration::from_millis(self.pacing.refused());
        let hold = hint.min(self.max_hold);
        Refusal {
            retry_after_ms: (hint - hold).as_millis().max(1) as u64,
            hold: hold.saturating_sub(waited),
        }
    }
}

/// What the endpoint loop does with a request.
enum Admit {
    /// A slot was free: it is the request's.
    Now(Slot),
    /// No slot now, but one is expected within the wait: the request's task waits for it.
    Wait(Waiter),
    /// Refused at once.
    Refuse,
}

/// A request waiting for a slot, counted in [`Admission::waiting`] until it leaves the queue.
struct Waiter {
    admission: Admission,
}

impl Waiter {
    /// The slot, once one is free before `deadline`; `None` when the wait ran out.
    async fn slot(self, deadline: Instant) -> Option<Slot> {
        let admission = &self.admission;
        // The semaphore is fair: waiters get slots in the order they came, and a request
        // arriving meanwhile cannot take a freed slot before them (`try_acquire` fails while
        // anyone waits).
        let permit =
            tokio::time::timeout_at(deadline.into(), admission.slots.clone().acquire_owned())
                .await
                .ok()?
                .ok()?;
        admission.pacing.admitted();
        Some(admission.slot(permit))
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.admission.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A slot held by an admitted request; freeing it measures how long it was held.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    since: Instant,
    service: Arc<ServiceTime>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.service.record(self.since.elapsed());
    }
}

/// A refused request's retry hint and its reply's hold.
struct Refusal {
    retry_after_ms: u64,
    hold: Duration,
}

/// How long admitted requests hold a slot: an exponentially weighted moving average (each
/// new measurement weighs 1/8), in nanoseconds; 0 until the first one. Updated
/// with a compare-and-swap loop, so concurrent slot releases never lose one another.
#[derive(Default)]
pub struct ServiceTime {
    ewma_ns: AtomicU64,
}

impl ServiceTime {
    fn record(&self, held: Duration) {
        let sample = (held.as_nanos() as u64).max(1);
        let _ = self
            .ewma_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    (old * 7 + sample) / 8
                })
            });
    }

    /// How long the request at `position` in the queue (1 = next) can expect to wait with
    /// `slots` slots: the queue moves by one every `service time / slots`.
    fn expected_wait(&self, position: usize, slots: usize) -> Duration {
        let ewma = self.ewma_ns.load(Ordering::Relaxed);
        Duration::from_nanos(ewma.saturating_mul(position as u64) / slots.max(1) as u64)
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
    /// Where refusals' replies are held, when `admission` holds them.
    pub holding: Option<Holding>,
    pub client: Client,
    pub state: S,
    pub handler: Arc<H>,
    pub stopping: CancellationToken,
    pub requests: TaskTracker,
}

/// How a request that was not refused got (or gets) its slot.
enum Entry {
    /// The endpoint has no bound.
    Unbounded,
    Slot(Slot),
    /// It waits for one in its task.
    Wait(Waiter),
}

impl<S, H> Serving<S, H> {
    /// Refuses `request` from the endpoint loop: its reply handed to the holder for
    /// `refusal.hold`, or sent now (no hold, or the holder is full).
    async fn refuse(
        &self,
        request: &async_nats::Message,
        refusal: Refusal,
        arrived: Instant,
        metrics: &metrics::EndpointMetrics,
        stats: &micro::EndpointStats,
    ) {
        let Some(reply) = request.reply.clone() else {
            return;
        };
        let held = Held {
            reply,
            retry_after_ms: refusal.retry_after_ms,
            arrived,
            due: arrived + refusal.hold,
        };
        let now = match &self.holding {
            Some(holding) if !refusal.hold.is_zero() => holding.hold(held).err(),
            _ => Some(held),
        };
        if let Some(held) = now {
            held::publish(&self.client, held.reply, held.retry_after_ms).await;
        }
        // The work a refusal cost, without its hold (which the holder counts as `held`).
        let took = arrived.elapsed();
        stats.record(took, Some("503:unavailable"));
        stats.latency.refused.record(took);
        metrics.answered(Some(ErrorCode::Unavailable), took);
    }

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
            let entry = match &self.admission {
                None => Entry::Unbounded,
                Some(admission) => match admission.admit() {
                    Admit::Now(slot) => Entry::Slot(slot),
                    Admit::Wait(waiter) => Entry::Wait(waiter),
                    Admit::Refuse => {
                        // Answered here, not in a task of its own: a spawned refusal
                        // waits in the runtime's queue behind the admitted requests'
                        // tasks, milliseconds on a busy worker; the answer is one publish
                        // into the connection's buffer, or one message to the holder.
                        let refusal = admission.refusal(Duration::ZERO);
                        self.refuse(&request, refusal, arrived, &metrics, &stats)
                            .await;
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
                    let slot = match entry {
                        Entry::Unbounded => None,
                        Entry::Slot(slot) => Some(slot),
                        Entry::Wait(waiter) => {
                            let admission = waiter.admission.clone();
                            match waiter.slot(arrived + admission.max_wait).await {
                                Some(slot) => Some(slot),
                                None => {
                                    // The wait ran out: refused as if at once (nothing was
                                    // done), its hold shortened by the wait already spent.
                                    let refusal = admission.refusal(arrived.elapsed());
                                    let took = arrived.elapsed();
                                    stats.record(took, Some("503:unavailable"));
                                    stats.latency.expired.record(took);
                                    metrics.finished(Some(ErrorCode::Unavailable), took);
                                    let Some(reply) = request.reply.clone() else {
                                        return;
                                    };
                                    // This task exists already: it holds its own reply.
                                    if !refusal.hold.is_zero() {
                                        tokio::time::sleep(refusal.hold).await;
                                    }
                                    held::publish(&client, reply, refusal.retry_after_ms).await;
                                    if !refusal.hold.is_zero() {
                                        stats.latency.held.record(arrived.elapsed());
                                    }
                                    return;
                                }
                            }
                        }
                    };
                    let result = match decode::<Req>(&request.payload) {
                        // Boxed: the handler's future is large, and a request waiting for a
                        // slot should hold only this task's small state, not that too.
                        Ok(body) => Box::pin(handler(state, body)).await.map_err(|e| {
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
                    stats.latency.served.record(took);
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

    #[tokio::test]
    async fn a_request_waits_only_when_the_measured_service_time_says_it_can_start_in_time() {
        let admission =
            Admission::new(2, Duration::from_millis(50)).with_wait(Duration::from_millis(100));
        let (Admit::Now(first), Admit::Now(_second)) = (admission.admit(), admission.admit())
        else {
            panic!("two free slots were not given");
        };
        // Nothing measured yet: the third waits.
        let Admit::Wait(waiter) = admission.admit() else {
            panic!("with no service time known, a request was not let wait");
        };
        assert_eq!(admission.waiting.load(Ordering::Relaxed), 1);
        // A slot held 1 ms frees: the waiter gets it, and the service time is measured.
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(5);
        // Kept, so both slots stay taken for what follows.
        let third = waiter.slot(deadline).await;
        assert!(third.is_some(), "the freed slot went nowhere");
        assert_eq!(admission.waiting.load(Ordering::Relaxed), 0);
        // Slots held about 1 s each: a wait of ~500 ms is beyond 100 ms: refused at once.
        admission
            .service
            .ewma_ns
            .store(1_000_000_000, Ordering::Relaxed);
        assert!(matches!(admission.admit(), Admit::Refuse));
        // Held 100 µs: the next in line can expect 50 µs, and waits.
        admission.service.ewma_ns.store(100_000, Ordering::Relaxed);
        assert!(matches!(admission.admit(), Admit::Wait(_)));
    }

    #[test]
    fn a_held_refusal_tells_the_rest_of_its_hint() {
        let admission = Admission::new(1, Duration::from_millis(50))
            .with_held_refusals(Duration::from_millis(20));
        for _ in 0..100 {
            let refusal = admission.refusal(Duration::ZERO);
            // The hint is 25..75 ms (jittered): 20 of it held, the rest told.
            assert_eq!(refusal.hold, Duration::from_millis(20));
            assert!(
                (5..=55).contains(&refusal.retry_after_ms),
                "{}",
                refusal.retry_after_ms
            );
        }
        let unheld = Admission::new(1, Duration::from_millis(50)).refusal(Duration::ZERO);
        assert!(unheld.hold.is_zero() && unheld.retry_after_ms >= 25);
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
