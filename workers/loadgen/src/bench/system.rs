//! One run of whole creates through the running workers, and what is read about the system
//! around it: the CPU each component of the stack used per successful create, the `sold`
//! counts of the bench goods (to check that no refused create took stock), the memory of
//! each worker, and the order workers' own share of the latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use shop_contracts::endpoint::OrderCreate;
use shop_contracts::order::CreateOrderRequest;

use super::cpu::{self, CpuPerCreate};
use super::create::Creates;
use super::drive::{self, Mode, Operation};
use super::fixture;
use super::procs::Stack;
use super::record::Figures;
use super::request::NatsRequest;
use super::rss::{self, WorkerMemory};
use super::server_share::{self, ServerShare};
use super::steady::{Marks, SteadyState};
use crate::BenchConfig;

pub struct SystemRun {
    pub figures: Figures,
    pub sold: SoldCheck,
    pub memory: Vec<WorkerMemory>,
    /// None when no create succeeded.
    pub cpu: Option<CpuPerCreate>,
    /// When the last request of the run finished: the settle wait counts from here.
    pub ended: Instant,
    /// The order workers' own share of `order.create`'s latency during the run.
    pub server: ServerShare,
    /// The first window beside the last, when the run is long enough to have both.
    pub steady: Option<SteadyState>,
}

/// Runs creates over NATS (`order.create`) in `mode` for `window`.
pub async fn run(
    config: &BenchConfig,
    client: &async_nats::Client,
    creates: Creates,
    mode: Mode,
    window: Duration,
    title: &str,
) -> anyhow::Result<SystemRun> {
    let request = Arc::new(nats_create(client, creates));
    run_with(config, client, creates, request, mode, window, title).await
}

/// The creates of `creates` as `order.create` requests over NATS.
pub fn nats_create(
    client: &async_nats::Client,
    creates: Creates,
) -> NatsRequest<impl Fn(u64) -> CreateOrderRequest + Send + Sync + 'static> {
    NatsRequest::to::<OrderCreate>(client, creates.body())
}

/// Runs `operation`, which makes the creates of `creates` (over NATS, through the gateway),
/// in `mode` for `window`.
pub async fn run_with<O: Operation>(
    config: &BenchConfig,
    client: &async_nats::Client,
    creates: Creates,
    operation: Arc<O>,
    mode: Mode,
    window: Duration,
    title: &str,
) -> anyhow::Result<SystemRun> {
    let sold_before = fixture::sold(client, creates.goods_ids()).await?;
    let request = operation;
    let stack = Stack::of(config);
    // Sampled as close to the run as can be, so that the CPU counted is the run's: the
    // in-flight tail is inside (its successes count in `figures.ok`), the checks are not.
    let server_before = server_share::read(client).await;
    let cpu_before = cpu::sample(&stack);
    let marks = Marks::start(&stack, Instant::now(), window);
    let figures = drive::run(request, mode, window, title, "creates").await?;
    let ended = Instant::now();
    let cpu_after = cpu::sample(&stack);
    let steady = match marks {
        Some(marks) => {
            marks
                .finish(&stack, &figures, &cpu_before, &cpu_after)
                .await
        }
        None => None,
    };
    let server_after = server_share::read(client).await;
    // Read at once: from `check_delay` after a create that deducted and then failed, the
    // checker starts giving its stock back, which would hide it from this check.
    let sold = fixture::sold(client, creates.goods_ids()).await? - sold_before;
    let memory = rss::workers(&stack);
    Ok(SystemRun {
        sold: SoldCheck::new(sold, &figures),
        cpu: CpuPerCreate::between(&stack, &cpu_before, &cpu_after, figures.ok),
        figures,
        memory,
        ended,
        server: ServerShare::between(&server_before, &server_after),
        steady,
    })
}

/// Whether the stock taken during a run is explained by its creates. Every create takes one
/// unit, so `sold` grew by the successes, plus at most one unit per create that failed in a
/// way that may have come after its deduct (a timeout, `unavailable` without a retry hint,
/// another error). A shed refusal (with `retry_after_ms`) must take nothing.
#[derive(Debug, Clone, Serialize)]
pub struct SoldCheck {
    /// Growth of `sold` over the bench goods during the run.
    pub sold: i64,
    pub successes: u64,
    /// Creates that failed after perhaps deducting: an upper bound on the excess.
    pub may_have_deducted: u64,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// `sold` grew by exactly the successes.
    Exact,
    /// More was sold than succeeded, but no more than the creates that may have deducted.
    Explained,
    /// Less was sold than succeeded: something else changed these goods during the run.
    OtherActivity,
    /// More was sold than any create but a shed refusal can explain: a refusal took stock.
    RefusalsDeducted,
}

impl SoldCheck {
    pub fn new(sold: i64, figures: &Figures) -> SoldCheck {
        let successes = figures.ok;
        let shed = figures.shed;
        let may_have_deducted = figures.timeouts + (figures.refused - shed) + figures.failed();
        let excess = sold - successes as i64;
        let verdict = if excess == 0 {
            Verdict::Exact
        } else if excess < 0 {
            Verdict::OtherActivity
        } else if excess as u64 <= may_have_deducted {
            Verdict::Explained
        } else {
            Verdict::RefusalsDeducted
        };
        SoldCheck {
            sold,
            successes,
            may_have_deducted,
            verdict,
        }
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let what = match self.verdict {
            Verdict::Exact => "exactly the successful creates",
            Verdict::Explained => "more than the successes, within the creates that may have deducted",
            Verdict::OtherActivity => "less than the successes: something else changed these goods",
            Verdict::RefusalsDeducted => "MORE than the successes and every create that may have deducted: refused creates took stock",
        };
        format!(
            "sold +{} for {} successful creates ({} may have deducted): {what}",
            self.sold, self.successes, self.may_have_deducted
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn figures(ok: u64, refused: u64, shed: u64, timeouts: u64) -> Figures {
        Figures {
            seconds: 1.0,
            sent: ok + refused + timeouts,
            sent_per_second: (ok + refused + timeouts) as f64,
            ok,
            ok_per_second: ok as f64,
            refused,
            refused_per_second: refused as f64,
            shed,
            timeouts,
            failures: BTreeMap::new(),
            latency_ms: None,
            refused_latency_ms: None,
            start_lag_ms: None,
            series: Vec::new(),
        }
    }

    #[test]
    fn sold_beyond_what_failures_explain_means_a_refusal_took_stock() {
        let all_shed = figures(100, 50, 50, 0);
        assert_eq!(SoldCheck::new(100, &all_shed).verdict, Verdict::Exact);
        assert_eq!(
            SoldCheck::new(101, &all_shed).verdict,
            Verdict::RefusalsDeducted
        );
        let some_timeouts = figures(100, 50, 50, 3);
        assert_eq!(
            SoldCheck::new(103, &some_timeouts).verdict,
            Verdict::Explained
        );
        assert_eq!(
            SoldCheck::new(104, &some_timeouts).verdict,
            Verdict::RefusalsDeducted
        );
        assert_eq!(
            SoldCheck::new(99, &some_timeouts).verdict,
            Verdict::OtherActivity
        );
    }
}
