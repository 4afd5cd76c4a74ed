//! The audit: checks the invariants of CONTRACT section 6 against the live system without
//! changing it. It reads one consistent snapshot of each database, looks up the timer of
//! every unpaid order, then replays the whole `STOCK_ROLLBACK` stream against the
//! snapshots, and reports what is wrong. `shop audit` prints the report; the bench and the
//! soak call [`run`] or [`audit`] in-process; the integration tests call the pure checks of
//! [`check`] on the snapshots of [`snapshot`].
//!
//! - [`check`]: the invariants, as pure functions over the snapshots.
//! - [`timers`]: every unpaid order still has its timer (half message or deadline).
//! - [`replay`]: one read of `STOCK_ROLLBACK` through an ordered consumer.
//!
//! It reads and never writes; it connects nowhere itself (the caller passes the pools and
//! the NATS client), and it knows no configuration keys.

pub mod check;
pub mod replay;
pub mod snapshot;
pub mod timers;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use self::check::Finding;
use self::replay::Stored;

/// Why an audit could not be made, or (from [`run`]) that it found problems.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the grace period is too long")]
    GraceTooLong,
    #[error("reading the stock database")]
    Stock(#[source] shop_stock::StockError),
    #[error("reading the order database")]
    Order(#[source] shop_order::OrderError),
    #[error("no order database to read")]
    NoOrderDatabase,
    #[error("stream {0} not found: have the workers started once?")]
    NoStream(
        &'static str,
        #[source] async_nats::jetstream::context::GetStreamError,
    ),
    /// A NATS or JetStream call failed; `what` says which.
    #[error("{what}")]
    Nats {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("a stored order_sn is out of range: {0}")]
    BadOrderSn(i64),
    #[error("printing the report")]
    Print(#[source] serde_json::Error),
    #[error("the audit found {0} problem(s)")]
    Findings(usize),
}

impl AuditError {
    fn nats(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        AuditError::Nats {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// What the audit reads: the stock and the order databases (one per partition, partition 0
/// first), and the NATS account of the workers.
pub struct Sources {
    pub stock_dbs: Vec<PgPool>,
    pub order_dbs: Vec<PgPool>,
    pub nats: async_nats::Client,
}

/// Findings printed in the human report; the JSON report has all of them.
const SHOWN: usize = 50;

/// What one audit saw, and every finding.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub goods: usize,
    pub sell_records: BTreeMap<&'static str, usize>,
    pub orders: BTreeMap<&'static str, usize>,
    pub fenced: usize,
    /// Unpaid orders whose timer was looked up in `ORDER_TXN` and `ORDER_TIMERS`.
    pub unpaid_checked: usize,
    pub rollback_events: u64,
    pub findings: Vec<Finding>,
    /// The order database's clock when its snapshot was read.
    #[serde(skip)]
    pub now: chrono::DateTime<chrono::Utc>,
    #[serde(skip)]
    pub grace: chrono::Duration,
}

/// Audits and prints the report (as JSON with `json`); [`AuditError::Findings`] when any
/// invariant does not hold.
pub async fn run(sources: &Sources, grace: Duration, json: bool) -> Result<(), AuditError> {
    let report = audit(sources, grace, Progress::Shown).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(AuditError::Print)?
        );
    } else {
        print_human(&report);
    }
    if !report.findings.is_empty() {
        return Err(AuditError::Findings(report.findings.len()));
    }
    Ok(())
}

/// Whether the audit draws progress bars (on a terminal) while it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Shown,
    Hidden,
}

/// One audit: the findings are in the report, an `Err` means it could not be made. Work
/// younger than `grace` counts as in flight and is not judged.
pub async fn audit(
    sources: &Sources,
    grace: Duration,
    progress: Progress,
) -> Result<Report, AuditError> {
    let grace = chrono::Duration::from_std(grace).map_err(|_| AuditError::GraceTooLong)?;
    // The two snapshots are of two moments; what changed between them is younger than the
    // grace period, which the checks treat as in flight.
    let stock = snapshot::stock(&sources.stock_dbs).await?;
    let orders = snapshot::orders(&sources.order_dbs).await?;

    let mut report = Report {
        goods: stock.goods.len(),
        fenced: orders.fenced.len(),
        now: orders.now,
        grace,
        ..Report::default()
    };
    for sell in stock.sells.values() {
        *report.sell_records.entry(sell.status.as_str()).or_default() += 1;
    }
    for order in orders.orders.values() {
        *report.orders.entry(order.status.as_str()).or_default() += 1;
    }
    report.findings.extend(check::stock_counts(&stock));
    report
        .findings
        .extend(check::agreement(&stock, &orders, grace));
    report.findings.extend(check::overdue(&orders, grace));

    let js = async_nats::jetstream::new(sources.nats.clone());
    let unpaid = check::unpaid_to_check(&orders, grace);
    let bar = progress_bar(progress, "ORDER_TXN, ORDER_TIMERS: unpaid orders' timers");
    let partitions = u16::try_from(sources.order_dbs.len()).unwrap_or(u16::MAX);
    let gone = timers::missing(&js, partitions, &unpaid, &bar).await?;
    bar.finish_and_clear();
    // A timer is gone once its order is paid, cancelled or closed: only an order that is
    // still unpaid after its timer was found gone has lost it.
    let mut still = Vec::new();
    for pool in &sources.order_dbs {
        still.extend(
            shop_order::audit::still_unpaid(pool, &gone)
                .await
                .map_err(AuditError::Order)?,
        );
    }
    still.sort_unstable();
    let gone = still;
    report.unpaid_checked = unpaid.len();
    report
        .findings
        .extend(gone.into_iter().map(|sn| Finding::UnpaidWithoutTimer {
            order_sn: sn.to_string(),
        }));

    let bar = progress_bar(
        progress,
        &format!("{}: replaying rollback events", replay::STREAM),
    );
    report.rollback_events = replay::replay(&js, &bar, |stored| match stored {
        Stored::Event(event) => report
            .findings
            .extend(check::rollback(&event, &stock, &orders, grace)),
        Stored::Malformed { sequence } => report
            .findings
            .push(Finding::MalformedRollback { sequence }),
    })
    .await?;
    bar.finish_and_clear();
    Ok(report)
}

fn progress_bar(progress: Progress, what: &str) -> indicatif::ProgressBar {
    if progress == Progress::Hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

/// The report for a person: the counts, then at most 50 findings.
pub fn print_human(report: &Report) {
    let (now, grace) = (report.now, report.grace);
    let counts = |map: &BTreeMap<&str, usize>| {
        map.iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "audit at {} (work younger than {}s counts as in flight)",
        shop_contracts::time::format(&now),
        grace.num_seconds()
    );
    println!(
        "  stock:  {} goods; sell records: {}",
        report.goods,
        counts(&report.sell_records)
    );
    println!(
        "  orders: {}; {} order_sns fenced",
        counts(&report.orders),
        report.fenced
    );
    println!(
        "  ORDER_TXN, ORDER_TIMERS: timers of {} unpaid order(s) looked up",
        report.unpaid_checked
    );
    println!(
        "  {}: {} rollback event(s) replayed",
        replay::STREAM,
        report.rollback_events
    );
    if report.findings.is_empty() {
        println!("every invariant holds");
        return;
    }
    println!("{} problem(s):", report.findings.len());
    for finding in report.findings.iter().take(SHOWN) {
        println!("  - {finding}");
    }
    if report.findings.len() > SHOWN {
        println!(
            "  ... and {} more (--json lists them all)",
            report.findings.len() - SHOWN
        );
    }
}
