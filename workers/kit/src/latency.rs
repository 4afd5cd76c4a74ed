//! The server's own view of an endpoint's latency: lock-free histograms of how long its
//! requests took inside this process, from their arrival at the endpoint loop to their
//! reply, split by what became of them ([`Latencies`]), which `$SRV.STATS` reports per
//! endpoint (`data.latency_us`) so a load generator can put the server's share beside the
//! latency its clients saw (docs/performance.md, "The server's share").
//!
//! The Prometheus histogram of [`crate::metrics`] has buckets for dashboards (0.5 ms and up);
//! these have the resolution a refusal needs (1 µs steps below 32 µs, then 16 steps per
//! power of two, about 6%), and cost one atomic add per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

/// Exact microseconds below this; above, 16 buckets per power of two.
const LINEAR: u64 = 32;
const SUB_BITS: u32 = 4;
/// Powers of two above `LINEAR` covered: up to 2^36 µs (19 hours); longer counts as that.
const POWERS: usize = 31;
const BUCKETS: usize = LINEAR as usize + (POWERS << SUB_BITS);

/// A histogram of durations in microseconds.
pub struct Histogram {
    counts: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The bucket of `us` microseconds.
fn bucket(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let power = 63 - us.leading_zeros(); // >= 5
    let sub = (us >> (power - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    let index = LINEAR as usize + (((power - 5) as usize) << SUB_BITS) + sub as usize;
    index.min(BUCKETS - 1)
}

/// The largest value (µs) bucket `index` holds.
fn upper(index: usize) -> u64 {
    if index < LINEAR as usize {
        return index as u64;
    }
    let power = ((index - LINEAR as usize) >> SUB_BITS) as u32 + 5;
    let sub = ((index - LINEAR as usize) & ((1 << SUB_BITS) - 1)) as u64;
    let step = 1u64 << (power - SUB_BITS);
    (1u64 << power) + (sub + 1) * step - 1
}

impl Histogram {
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The non-empty buckets as `[[upper bound in µs, count], ..]`, ascending: cumulative
    /// since the process started, so a reader subtracts two readings to get a window.
    pub fn to_json(&self) -> Value {
        let buckets: Vec<Value> = self
            .counts
            .iter()
            .enumerate()
            .filter_map(|(i, count)| {
                let count = count.load(Ordering::Relaxed);
                (count > 0).then(|| json!([upper(i), count]))
            })
            .collect();
        Value::Array(buckets)
    }
}

/// One endpoint's server-side latencies.
#[derive(Default)]
pub struct Latencies {
    /// Requests handled (admitted, at once or after waiting for a slot): arrival to reply,
    /// the wait included.
    pub served: Histogram,
    /// Requests refused at admission: arrival to the moment the refusal was decided and its
    /// reply sent or handed to the holder, the work a refusal costs.
    pub refused: Histogram,
    /// Requests that waited for a slot and were refused when the wait ran out: arrival to
    /// the refusal, the wait included (their hold, if any, is counted in `held`).
    pub expired: Histogram,
    /// Refusals whose reply was held (the retry hint enforced by the server): arrival to the
    /// reply's actual publish, the deliberate hold included.
    pub held: Histogram,
}

impl Latencies {
    pub fn to_json(&self) -> Value {
        json!({
            "served": self.served.to_json(),
            "refused": self.refused.to_json(),
            "expired": self.expired.to_json(),
            "held": self.held.to_json(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_in_a_bucket_that_holds_it_within_seven_percent() {
        let mut last = 0;
        for us in (0..100_000u64).chain([1 << 30, (1 << 36) - 1]) {
            let i = bucket(us);
            assert!(i >= last, "buckets are not ascending at {us}");
            last = i;
            let top = upper(i);
            assert!(top >= us, "{us} µs in a bucket up to {top}");
            assert!(
                top - us <= us / 15,
                "{us} µs in a bucket up to {top}: too coarse"
            );
            if i > 0 {
                assert!(upper(i - 1) < us, "{us} µs fits the bucket below");
            }
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn a_histogram_reports_its_nonempty_buckets_with_their_counts() {
        let histogram = Histogram::default();
        histogram.record(Duration::from_micros(3));
        histogram.record(Duration::from_micros(3));
        histogram.record(Duration::from_millis(2));
        let json = histogram.to_json();
        let buckets = json.as_array().unwrap();
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[0], json!([3, 2]));
        let top = buckets[1][0].as_u64().unwrap();
        assert!((2000..2130).contains(&top), "{top}");
        assert_eq!(buckets[1][1], 1);
    }
}
