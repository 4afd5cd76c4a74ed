//! The steady state of a run of creates: its first seconds beside its last.
//!
//! Every create leaves work for after its reply: the outbox's `created` event at once, and
//! once its half message is `check_delay` old the checker's look, the deadline's schedule
//! and the half message's ack. A run no longer than the check delay measures a burst that
//! none of that later work has caught up with. A run of at least two [`WINDOW`]s is split:
//! its first window (before the checker's looks at the run's creates begin, when the check
//! delay is at least a window) against its last (which carries the looks at the creates of
//! one check delay before, as every second of a shop that sells all day does), each with
//! its creates/s and its CPU per create. The CPU of the last window above the first's is
//! what the work after the request costs each create.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;

use super::cpu::{self, CpuPerCreate, Sample};
use super::procs::Stack;
use super::record::Figures;

/// The length of the first and of the last window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// A run's length when none is asked: three times the check delay, and at least three
/// windows, so that its last window is well past the first looks at its creates.
pub fn default_run(check_delay: Duration) -> Duration {
    (3 * check_delay).max(3 * WINDOW)
}

/// The CPU samples at the end of the first window and at the start of the last, taken
/// while the run goes on.
pub struct Marks {
    taken: JoinHandle<(Sample, Sample)>,
}

impl Marks {
    /// Samples `stack` at `started + WINDOW` and at `started + window - WINDOW`; `None` when
    /// the run is shorter than two windows (it has no steady state to show).
    pub fn start(stack: &Stack, started: Instant, window: Duration) -> Option<Marks> {
        if window < 2 * WINDOW {
            return None;
        }
        let stack = stack.clone();
        let taken = tokio::spawn(async move {
            tokio::time::sleep_until((started + WINDOW).into()).await;
            let first_end = cpu::sample(&stack);
            tokio::time::sleep_until((started + window - WINDOW).into()).await;
            (first_end, cpu::sample(&stack))
        });
        Some(Marks { taken })
    }

    /// The steady state of the run of `figures`, whose CPU was sampled `before` it started
    /// and `after` it ended. `None` if the sampler failed.
    pub async fn finish(
        self,
        stack: &Stack,
        figures: &Figures,
        before: &Sample,
        after: &Sample,
    ) -> Option<SteadyState> {
        let (first_end, last_start) = self.taken.await.ok()?;
        let seconds = figures.series.len() as u64;
        let width = WINDOW.as_secs();
        let first = Phase::of(figures, 1, width, stack, before, &first_end);
        let last = Phase::of(
            figures,
            seconds - width + 1,
            seconds,
            stack,
            &last_start,
            after,
        );
        let after_request_ms = match (&first.cpu, &last.cpu) {
            (Some(first), Some(last)) => Some(last.total - first.total),
            _ => None,
        };
        Some(SteadyState {
            ratio: last.ok_per_second / first.ok_per_second.max(f64::MIN_POSITIVE),
            first,
            last,
            after_request_ms,
        })
    }
}

/// A run's first window beside its last.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyState {
    pub first: Phase,
    pub last: Phase,
    /// The last window's creates/s over the first's.
    pub ratio: f64,
    /// CPU per create of the last window above the first's: the work each create leaves
    /// for after its check delay (the checker, the timers); the outbox's `created` event
    /// is published at once, so it is in both.
    pub after_request_ms: Option<f64>,
}

/// One window of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Its first and last second, counted from 1.
    pub from_second: u64,
    pub to_second: u64,
    pub ok_per_second: f64,
    /// CPU per create finished in the window, by component.
    pub cpu: Option<CpuPerCreate>,
}

impl Phase {
    fn of(
        figures: &Figures,
        from_second: u64,
        to_second: u64,
        stack: &Stack,
        before: &Sample,
        after: &Sample,
    ) -> Phase {
        let ok: u64 = figures
            .series
            .iter()
            .filter(|s| (from_second..=to_second).contains(&s.second))
            .map(|s| s.ok)
            .sum();
        Phase {
            from_second,
            to_second,
            ok_per_second: ok as f64 / (to_second + 1 - from_second) as f64,
            cpu: CpuPerCreate::between(stack, before, after, ok),
        }
    }
}

impl SteadyState {
    /// Two lines for the terminal: the windows' rates and CPU, and where the difference went.
    pub fn summary(&self) -> String {
        let window = |phase: &Phase| {
            format!(
                "seconds {}-{} {:.0} creates/s, cpu {}",
                phase.from_second,
                phase.to_second,
                phase.ok_per_second,
                phase
                    .cpu
                    .as_ref()
                    .map_or("-".into(), |cpu| format!("{:.3} ms/create", cpu.total)),
            )
        };
        let mut line = format!(
            "steady state: {}; {} = {:.2} of the first",
            window(&self.first),
            window(&self.last),
            self.ratio
        );
        if let (Some(first), Some(last)) = (&self.first.cpu, &self.last.cpu) {
            let grew: Vec<String> = first
                .components
                .iter()
                .zip(&last.components)
                .map(|((key, then), (_, now))| (key, now - then))
                .filter(|(_, more)| more.abs() >= 0.005)
                .map(|(key, more)| format!("{key} {more:+.2}"))
                .collect();
            line += &format!(
                "\n  cpu after the request (last window above the first): {} | total {:+.3} ms/create",
                if grew.is_empty() { "-".into() } else { grew.join(", ") },
                last.total - first.total
            );
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bench::record::Second;

    fn figures(ok_per_second: &[u64]) -> Figures {
        let series: Vec<Second> = ok_per_second
            .iter()
            .enumerate()
            .map(|(i, &ok)| Second {
                second: i as u64 + 1,
                ok,
                refused: 0,
                timeouts: 0,
                failed: 0,
                p50_ms: None,
                p99_ms: None,
                refused_p50_ms: None,
                refused_p99_ms: None,
            })
            .collect();
        let ok = ok_per_second.iter().sum();
        Figures {
            seconds: series.len() as f64,
            sent: ok,
            sent_per_second: 0.0,
            ok,
            ok_per_second: 0.0,
            refused: 0,
            refused_per_second: 0.0,
            shed: 0,
            timeouts: 0,
            failures: BTreeMap::new(),
            latency_ms: None,
            refused_latency_ms: None,
            start_lag_ms: None,
            series,
        }
    }

    #[test]
    fn a_window_counts_the_creates_of_its_own_seconds_only() {
        // 30 s: 100/s for the first ten, 90/s after.
        let rates: Vec<u64> = (1..=30).map(|s| if s <= 10 { 100 } else { 90 }).collect();
        let figures = figures(&rates);
        let stack = Stack::of(&crate::BenchConfig::dev());
        let sample = cpu::sample(&stack);
        let first = Phase::of(&figures, 1, 10, &stack, &sample, &sample);
        let last = Phase::of(&figures, 21, 30, &stack, &sample, &sample);
        assert_eq!(first.ok_per_second, 100.0);
        assert_eq!(last.ok_per_second, 90.0);
        assert_eq!(last.cpu.expect("creates").total, 0.0);
    }

    #[test]
    fn a_default_run_outlasts_three_check_delays_and_three_windows() {
        assert_eq!(
            default_run(Duration::from_secs(10)),
            Duration::from_secs(30)
        );
        assert_eq!(
            default_run(Duration::from_secs(20)),
            Duration::from_secs(60)
        );
        assert_eq!(default_run(Duration::from_secs(2)), Duration::from_secs(30));
    }
}
