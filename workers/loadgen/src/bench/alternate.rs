//! Two ways of making the same creates, compared inside one run: the run is cut into
//! slices of [`SLICE`], and each request goes the first way when it starts in an even
//! slice, the second way in an odd one. Both ways see the same machine within a second of
//! each other, so the ratio of their successes per second does not move with the machine's
//! drift, which on a shared box moves a ratio of two runs made a minute apart by ±20%.
//!
//! Requests are counted in the slice they start in; the clients are the same for both ways,
//! so a slice begins with the last requests of the other way still finishing (a few
//! milliseconds of a one-second slice, the same for both ways).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::drive::Operation;
use super::outcome::Outcome;

/// Length of one slice: long against a create's latency (tens of ms), short against the
/// machine's drift (seconds to minutes).
pub const SLICE: Duration = Duration::from_secs(1);

pub struct Alternate<A, B> {
    first: A,
    second: B,
    /// When the first request started: slice 0 begins here.
    start: OnceLock<Instant>,
    successes: [AtomicU64; 2],
}

/// What one alternating run found.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Split {
    pub first_ok: u64,
    pub second_ok: u64,
    /// Seconds of the run spent in slices of each way.
    pub first_seconds: f64,
    pub second_seconds: f64,
    /// The second way's successes per second as a fraction of the first way's.
    pub ratio: f64,
}

impl<A: Operation, B: Operation> Alternate<A, B> {
    pub fn new(first: A, second: B) -> Self {
        Alternate {
            first,
            second,
            start: OnceLock::new(),
            successes: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// The split of a run that lasted `window`.
    pub fn split(&self, window: Duration) -> Split {
        let (first_seconds, second_seconds) = seconds_per_way(window);
        let first_ok = self.successes[0].load(Ordering::Relaxed);
        let second_ok = self.successes[1].load(Ordering::Relaxed);
        let rate = |ok: u64, seconds: f64| ok as f64 / seconds.max(f64::MIN_POSITIVE);
        Split {
            first_ok,
            second_ok,
            first_seconds,
            second_seconds,
            ratio: rate(second_ok, second_seconds)
                / rate(first_ok, first_seconds).max(f64::MIN_POSITIVE),
        }
    }
}

/// How much of `window` falls into even slices and into odd ones.
fn seconds_per_way(window: Duration) -> (f64, f64) {
    let slice = SLICE.as_secs_f64();
    let total = window.as_secs_f64();
    let whole = (total / slice).floor();
    let rest = total - whole * slice;
    let even_whole = (whole / 2.0).ceil();
    let odd_whole = whole - even_whole;
    // The partial last slice is even when the number of whole slices before it is.
    if (whole as u64).is_multiple_of(2) {
        (even_whole * slice + rest, odd_whole * slice)
    } else {
        (even_whole * slice, odd_whole * slice + rest)
    }
}

impl<A: Operation, B: Operation> Operation for Alternate<A, B> {
    async fn call(&self, n: u64) -> Outcome {
        let start = *self.start.get_or_init(Instant::now);
        let way = (start.elapsed().as_nanos() / SLICE.as_nanos()) % 2;
        let outcome = if way == 0 {
            self.first.call(n).await
        } else {
            self.second.call(n).await
        };
        if outcome == Outcome::Ok {
            self.successes[way as usize].fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_shared_slice_by_slice() {
        assert_eq!(seconds_per_way(Duration::from_secs(10)), (5.0, 5.0));
        assert_eq!(seconds_per_way(Duration::from_secs(3)), (2.0, 1.0));
        assert_eq!(seconds_per_way(Duration::from_millis(2500)), (1.5, 1.0));
        assert_eq!(seconds_per_way(Duration::from_millis(3500)), (2.0, 1.5));
    }
}
