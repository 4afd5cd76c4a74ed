//! What a load run measured: every request's outcome and latency, in total and per second
//! of the run, in HdrHistograms; and the figures the reports print and write.
//!
//! A latency is recorded when its request finishes; the driver decides where it started
//! (the send for the closed loop, the scheduled start for the open loop). Per-second figures
//! belong to the second in which requests finished. Throughput counts only what finished
//! inside the measured window, so the tail of requests still in flight when the run stops
//! lowers no rate; their latencies are recorded all the same, since leaving out the slowest
//! requests of an overloaded run would flatter it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::outcome::Outcome;

/// Latencies are kept in microseconds, from 1 µs to 10 minutes (histograms grow past it).
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 600_000_000;
/// Whole-run histograms: 3 significant digits (0.1% resolution).
const RUN_DIGITS: u8 = 3;
/// Per-second histograms only feed a plot: 2 digits keep a long run's memory small.
const SECOND_DIGITS: u8 = 2;

fn histogram(digits: u8) -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, digits)
        .expect("constant histogram bounds are valid");
    histogram.auto(true);
    histogram
}

/// Counts and latencies of a set of requests.
struct Tally {
    /// Latencies of the successful requests.
    ok: Histogram<u64>,
    /// Latencies of the refusals (`unavailable`): a refusal should be quick.
    refused: Histogram<u64>,
    shed: u64,
    timeouts: u64,
    failures: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn new(digits: u8) -> Tally {
        Tally {
            ok: histogram(digits),
            refused: histogram(digits),
            shed: 0,
            timeouts: 0,
            failures: BTreeMap::new(),
        }
    }

    fn add(&mut self, outcome: &Outcome, micros: u64) {
        match outcome {
            Outcome::Ok => self.ok.saturating_record(micros),
            Outcome::Refused { retry_after } => {
                self.refused.saturating_record(micros);
                self.shed += u64::from(retry_after.is_some());
            }
            Outcome::Failed(kind) => *self.failures.entry(kind).or_default() += 1,
            Outcome::Timeout => self.timeouts += 1,
        }
    }

    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// Collects the outcomes of one run; shared by the request tasks behind a mutex (a record
/// is a few array increments, so the lock is never held long).
pub struct Recorder {
    started: Instant,
    window: Duration,
    total: Tally,
    /// Requests that finished inside the window, by second.
    seconds: Vec<Tally>,
    sent: u64,
    /// Open loop: how late each request started after the instant it was due (the load
    /// generator's own lag, which counts in the request's latency).
    start_lag: Histogram<u64>,
}

/// `to - from` in the histograms' unit (microseconds, at least [`LOWEST_US`]).
fn micros_between(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros())
        .unwrap_or(u64::MAX)
        .max(LOWEST_US)
}

impl Recorder {
    pub fn new(started: Instant, window: Duration) -> Recorder {
        Recorder {
            started,
            window,
            total: Tally::new(RUN_DIGITS),
            seconds: Vec::new(),
            sent: 0,
            start_lag: histogram(RUN_DIGITS),
        }
    }

    pub fn sent(&mut self) {
        self.sent += 1;
    }

    /// An open-loop request due at `due` is starting now.
    pub fn started_late(&mut self, due: Instant) {
        self.start_lag
            .saturating_record(micros_between(due, Instant::now()));
    }

    /// Records a request that started at `start` and ended now with `outcome`.
    pub fn record(&mut self, start: Instant, outcome: &Outcome) {
        let now = Instant::now();
        let micros = micros_between(start, now);
        self.total.add(outcome, micros);
        let since = now.saturating_duration_since(self.started);
        if since < self.window {
            let second = since.as_secs() as usize;
            while self.seconds.len() <= second {
                self.seconds.push(Tally::new(SECOND_DIGITS));
            }
            self.seconds[second].add(outcome, micros);
        }
    }

    /// Successes and all other outcomes so far, for the progress display.
    pub fn live(&self) -> (u64, u64) {
        let ok = self.total.ok.len();
        let other = self.total.refused.len() + self.total.timeouts + self.total.failed();
        (ok, other)
    }

    /// The figures of the finished run.
    pub fn figures(&self) -> Figures {
        let window = self.window.as_secs_f64();
        let in_window = |pick: fn(&Tally) -> u64| self.seconds.iter().map(pick).sum::<u64>();
        let ok_in_window = in_window(|t| t.ok.len());
        let refused_in_window = in_window(|t| t.refused.len());
        Figures {
            seconds: window,
            sent: self.sent,
            sent_per_second: self.sent as f64 / window,
            ok: self.total.ok.len(),
            ok_per_second: ok_in_window as f64 / window,
            refused: self.total.refused.len(),
            refused_per_second: refused_in_window as f64 / window,
            shed: self.total.shed,
            timeouts: self.total.timeouts,
            failures: self
                .total
                .failures
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            latency_ms: Percentiles::of(&self.total.ok),
            refused_latency_ms: Percentiles::of(&self.total.refused),
            start_lag_ms: Percentiles::of(&self.start_lag),
            series: (0..self.window.as_secs())
                .map(|second| {
                    let tally = self.seconds.get(second as usize);
                    Second {
                        second: second + 1,
                        ok: tally.map_or(0, |t| t.ok.len()),
                        refused: tally.map_or(0, |t| t.refused.len()),
                        timeouts: tally.map_or(0, |t| t.timeouts),
                        failed: tally.map_or(0, Tally::failed),
                        p50_ms: tally.and_then(|t| quantile_ms(&t.ok, 0.50)),
                        p99_ms: tally.and_then(|t| quantile_ms(&t.ok, 0.99)),
                        refused_p50_ms: tally.and_then(|t| quantile_ms(&t.refused, 0.50)),
                        refused_p99_ms: tally.and_then(|t| quantile_ms(&t.refused, 0.99)),
                    }
                })
                .collect(),
        }
    }
}

fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> Option<f64> {
    (!histogram.is_empty()).then(|| histogram.value_at_quantile(quantile) as f64 / 1000.0)
}

/// Latency percentiles in milliseconds; absent when nothing was recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Option<Percentiles> {
        let at = |q| quantile_ms(histogram, q);
        Some(Percentiles {
            p50: at(0.50)?,
            p90: at(0.90)?,
            p99: at(0.99)?,
            p999: at(0.999)?,
            max: histogram.max() as f64 / 1000.0,
            mean: histogram.mean() / 1000.0,
        })
    }
}

/// One second of a run, for the plot.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    /// 1 for the first second of the run.
    pub second: u64,
    pub ok: u64,
    pub refused: u64,
    pub timeouts: u64,
    pub failed: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Latency of the refusals that finished in this second: a refusal should be quick
    /// from the first second of an overload to the last.
    pub refused_p50_ms: Option<f64>,
    pub refused_p99_ms: Option<f64>,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// The measured window (the requests still in flight at its end are waited for).
    pub seconds: f64,
    /// Requests started in the window.
    pub sent: u64,
    /// `sent` per second: the achieved request rate (in an open loop, compare it with the
    /// rate asked: a generator that fell behind sends less).
    pub sent_per_second: f64,
    pub ok: u64,
    /// Successes that finished inside the window, per second of it.
    pub ok_per_second: f64,
    /// `unavailable` answers, shed or not.
    pub refused: u64,
    pub refused_per_second: f64,
    /// Refusals carrying `details.retry_after_ms`: the worker was full and did nothing.
    pub shed: u64,
    pub timeouts: u64,
    /// Other errors, by kind.
    pub failures: BTreeMap<String, u64>,
    pub latency_ms: Option<Percentiles>,
    pub refused_latency_ms: Option<Percentiles>,
    /// Open loop: how late requests started after their due instant. It is counted in
    /// `latency_ms`; a large lag means the load generator, not only the system, fell behind.
    pub start_lag_ms: Option<Percentiles>,
    pub series: Vec<Second>,
}

impl Figures {
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// One line for the terminal, `unit` naming a success (e.g. "creates").
    pub fn summary(&self, unit: &str) -> String {
        let mut line = format!("{:.0} {unit}/s", self.ok_per_second);
        match &self.latency_ms {
            Some(l) => {
                line += &format!(
                    ", p50 {:.2} ms, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
                    l.p50, l.p90, l.p99, l.p999, l.max
                )
            }
            None => line += ", nothing succeeded",
        }
        if self.refused > 0 {
            line += &format!(", {} refused ({} shed)", self.refused, self.shed);
            if let Some(r) = &self.refused_latency_ms {
                line += &format!(" in p50 {:.2} / p99 {:.2} ms", r.p50, r.p99);
            }
        }
        if let Some(lag) = &self.start_lag_ms {
            line += &format!(
                ", started late by p50 {:.3} / p99 {:.3} ms",
                lag.p50, lag.p99
            );
        }
        if self.timeouts > 0 {
            line += &format!(", {} timeouts", self.timeouts);
        }
        for (kind, count) in &self.failures {
            line += &format!(", {count} {kind}");
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_apart_and_rates_use_the_window_only() {
        let started = Instant::now() - Duration::from_millis(1500);
        let mut recorder = Recorder::new(started, Duration::from_secs(2));
        for _ in 0..4 {
            recorder.sent();
        }
        recorder.record(started, &Outcome::Ok);
        recorder.record(
            started,
            &Outcome::Refused {
                retry_after: Some(Duration::from_millis(5)),
            },
        );
        recorder.record(started, &Outcome::Timeout);
        recorder.record(started, &Outcome::Failed("conflict"));
        let figures = recorder.figures();
        assert_eq!((figures.sent, figures.ok, figures.refused), (4, 1, 1));
        assert_eq!(
            (figures.shed, figures.timeouts, figures.failed()),
            (1, 1, 1)
        );
        assert_eq!(figures.ok_per_second, 0.5);
        assert_eq!(figures.series.len(), 2);
        assert_eq!(figures.series[1].ok, 1);
        assert!(figures.series[0].p50_ms.is_none());
        let latency = figures.latency_ms.expect("one success");
        assert!(latency.p50 >= 1500.0 && latency.max >= latency.p999);
    }

    #[test]
    fn a_request_finishing_after_the_window_counts_but_not_in_the_rate() {
        let started = Instant::now() - Duration::from_secs(3);
        let mut recorder = Recorder::new(started, Duration::from_secs(2));
        recorder.record(started, &Outcome::Ok);
        let figures = recorder.figures();
        assert_eq!((figures.ok, figures.ok_per_second), (1, 0.0));
        assert!(figures.series.iter().all(|s| s.ok == 0));
    }
}
