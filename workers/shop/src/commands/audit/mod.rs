//! `shop audit`: checks the invariants of CONTRACT section 6 against the live system without
//! changing it. It reads one consistent snapshot of each database, looks up the timer of
//! every unpaid order, then replays the whole `STOCK_ROLLBACK` stream against the
//! snapshots, and exits non-zero when anything is wrong.
//!
//! - [`check`]: the invariants, as pure functions over the snapshots.
//! - [`timers`]: every unpaid order still has its timer (half message or deadline).
//! - [`replay`]: one read of `STOCK_ROLLBACK` through an ordered consumer.

mod check;
mod replay;
mod timers;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use self::check::Finding;
use self::replay::Stored;
use crate::config::Config;

/// Findings printed in the human report; the JSON report has all of them.
const SHOWN: usize = 50;

#[derive(Debug, Default, Serialize)]
struct Report {
    goods: usize,
    sell_records: BTreeMap<&'static str, usize>,
    orders: BTreeMap<&'static str, usize>,
    fenced: usize,
    /// Unpaid orders whose timer was looked up in `ORDER_TXN` and `ORDER_TIMERS`.
    unpaid_checked: usize,
    rollback_events: u64,
    findings: Vec<Finding>,
}

pub async fn run(config: &Config, grace: Duration, json: bool) -> anyhow::Result<()> {
    let grace = chrono::Duration::from_std(grace).context("--grace is too long")?;
    let stock_db =
        shop_kit::db::connect(&config.stock.database_url, 2, config.stock.acquire_timeout)
            .context("connecting to the stock database")?;
    let order_db =
        shop_kit::db::connect(&config.order.database_url, 2, config.order.acquire_timeout)
            .context("connecting to the order database")?;
    let client = shop_kit::server::connect(&config.nats_target("shop-audit", None))
        .await
        .context("connecting to NATS")?;

    // The two snapshots are of two moments; what changed between them is younger than the
    // grace period, which the checks treat as in flight.
    let stock = shop_stock::audit::snapshot(&stock_db)
        .await
        .context("reading the stock database")?;
    let orders = shop_order::audit::snapshot(&order_db)
        .await
        .context("reading the order database")?;

    let mut report = Report {
        goods: stock.goods.len(),
        fenced: orders.fenced.len(),
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

    let js = async_nats::jetstream::new(client);
    let unpaid = check::unpaid_to_check(&orders, grace);
    let progress = progress_bar("ORDER_TXN, ORDER_TIMERS: unpaid orders' timers");
    let gone = timers::missing(&js, &unpaid, &progress).await?;
    progress.finish_and_clear();
    // A timer is gone once its order is paid, cancelled or closed: only an order that is
    // still unpaid after its timer was found gone has lost it.
    let gone = shop_order::audit::still_unpaid(&order_db, &gone)
        .await
        .context("reading the order database")?;
    report.unpaid_checked = unpaid.len();
    report
        .findings
        .extend(gone.into_iter().map(|sn| Finding::UnpaidWithoutTimer {
            order_sn: sn.to_string(),
        }));

    let progress = progress_bar(&format!("{}: replaying rollback events", replay::STREAM));
    report.rollback_events = replay::replay(&js, &progress, |stored| match stored {
        Stored::Event(event) => report
            .findings
            .extend(check::rollback(&event, &stock, &orders, grace)),
        Stored::Malformed { sequence } => report
            .findings
            .push(Finding::MalformedRollback { sequence }),
    })
    .await?;
    progress.finish_and_clear();

    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report, orders.now, grace);
    }
    if !report.findings.is_empty() {
        bail!("the audit found {} problem(s)", report.findings.len());
    }
    Ok(())
}

fn progress_bar(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

fn print_human(report: &Report, now: chrono::DateTime<chrono::Utc>, grace: chrono::Duration) {
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
