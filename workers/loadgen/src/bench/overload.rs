//! `shop bench overload`: a flash sale in one invocation. A peak run at a concurrency the
//! system handles (32 clients), then an overload run with far more clients (4000), on the
//! same goods. A system that admits only what it can finish keeps its goodput (successful
//! creates per second) near the peak's and refuses the rest at once, with `unavailable`
//! and a retry hint, before taking any stock. Then the settle wait and the audit. Both runs
//! go over NATS or, with `--via http`, through the HTTP gateway; with
//! `--ignore-retry-after` (both runs' clients retry at once: a retry storm) the goodput is
//! still the ratio to the same invocation's peak. Beside each client-side latency it reports
//! the order workers' own share ([`super::server_share`]).

use anyhow::bail;
use serde_json::json;

use std::sync::Arc;

use super::create::Creates;
use super::drive::Mode;
use super::http::HttpCreate;
use super::order::print_system;
use super::settle::{self, Settle};
use super::system::{self, Verdict};
use super::{fixture, plot, report, rss, server_share};
use crate::cli::{OverloadVia, RunArgs};
use crate::BenchConfig;

/// The clients of the two runs.
#[derive(Debug, Clone, Copy)]
pub struct Crowds {
    /// Clients of the peak run, which start together.
    pub peak_concurrency: usize,
    /// Clients of the overload run.
    pub concurrency: usize,
    /// The overload run's clients start spread evenly over this many seconds.
    pub ramp_seconds: f64,
}

pub async fn run(
    config: &BenchConfig,
    client: &async_nats::Client,
    creates: Creates,
    crowds: Crowds,
    via: OverloadVia,
    args: &RunArgs,
    settle: &Settle,
) -> anyhow::Result<()> {
    let Crowds {
        peak_concurrency,
        concurrency,
        ramp_seconds,
    } = crowds;
    fixture::upsert_goods(client, creates.goods_ids()).await?;
    fixture::fill_stock(client, creates.goods_ids()).await?;
    let label = args.label.as_deref();
    let window = std::time::Duration::from_secs(args.seconds_or(RunArgs::DEFAULT_SECONDS));
    let strategy = fixture::stock_strategy(client).await?;
    let title =
        format!(
        "overload goods={} peak={peak_concurrency} overload={concurrency}{} stock={strategy}{}{}",
        creates.goods,
        if args.ignore_retry_after { " retrying at once" } else { "" },
        if via == OverloadVia::Http { " via http" } else { "" },
        label.map(|l| format!(" [{l}]")).unwrap_or_default()
    );
    let http = match via {
        OverloadVia::Nats => None,
        OverloadVia::Http => {
            let operation = Arc::new(HttpCreate::new(config, creates)?);
            eprintln!("through the gateway at {}", operation.url());
            Some(operation)
        }
    };
    let run = |mode: Mode, name: &'static str| {
        let http = http.clone();
        async move {
            match http {
                None => system::run(config, client, creates, mode, window, name).await,
                Some(operation) => {
                    system::run_with(config, client, creates, operation, mode, window, name).await
                }
            }
        }
    };

    let peak_mode = Mode::Closed {
        concurrency: peak_concurrency,
        waits_retry_after: !args.ignore_retry_after,
        ramp_seconds: 0.0,
    };
    let peak = run(peak_mode, "peak").await?;
    print_system(&format!("peak {peak_mode}"), &peak);
    let overload_mode = Mode::Closed {
        concurrency,
        waits_retry_after: !args.ignore_retry_after,
        ramp_seconds,
    };
    let overload = run(overload_mode, "overload").await?;
    print_system(&format!("overload {overload_mode}"), &overload);
    let goodput =
        overload.figures.ok_per_second / peak.figures.ok_per_second.max(f64::MIN_POSITIVE);
    let refused_p99 = overload
        .figures
        .refused_latency_ms
        .as_ref()
        .map_or_else(|| "-".to_owned(), |r| format!("{:.2} ms", r.p99));
    let ok_p99 = overload
        .figures
        .latency_ms
        .as_ref()
        .map_or_else(|| "-".to_owned(), |r| format!("{:.2} ms", r.p99));
    let server = &overload.server;
    let server_p99 = |q: &Option<server_share::Quantiles>| {
        q.as_ref()
            .map_or_else(|| "-".to_owned(), |q| format!("{:.3} ms", q.p99))
    };
    println!(
        "result {title}: goodput {:.0} creates/s = {goodput:.2} of the peak's {:.0}; {} refused \
         (p99 {refused_p99}; server side {} refusing, {} held), {} timeouts; successes p99 \
         {ok_p99} (server side {}); sold check: {:?}; cpu {}; RSS {}",
        overload.figures.ok_per_second,
        peak.figures.ok_per_second,
        overload.figures.refused,
        server_p99(&server.refused),
        server_p99(&server.held),
        overload.figures.timeouts,
        server_p99(&server.served),
        overload.sold.verdict,
        overload
            .cpu
            .as_ref()
            .map_or_else(|| "-".to_owned(), |c| format!("{:.2} ms/create", c.total)),
        rss::summary(&overload.memory)
    );
    let audit = settle::settle_then_audit(config, client, overload.ended, settle).await;

    let document = report::document(
        report::header("overload", label),
        json!({
            "goods": creates.goods,
            "stock_strategy": strategy,
            "seconds": args.seconds_or(RunArgs::DEFAULT_SECONDS),
            "via": if via == OverloadVia::Http { "http" } else { "nats" },
            "peak": {"load": peak_mode, "system": peak.figures, "sold_check": peak.sold, "workers_rss": peak.memory, "cpu_ms_per_create": peak.cpu, "server_latency_ms": peak.server},
            "overload": {"load": overload_mode, "system": overload.figures, "sold_check": overload.sold, "workers_rss": overload.memory, "cpu_ms_per_create": overload.cpu, "server_latency_ms": overload.server},
            "goodput_ratio_to_peak": goodput,
            "audit": if audit.is_ok() { "passed" } else { "failed" },
        }),
    );
    let name = report::file_name(
        &format!(
            "overload-{}{}{}",
            creates.goods,
            if via == OverloadVia::Http {
                "-http"
            } else {
                ""
            },
            if args.ignore_retry_after {
                "-storm"
            } else {
                ""
            }
        ),
        Some(concurrency),
        None,
        label,
    );
    report::save(
        &args.out,
        &name,
        &document,
        &title,
        "creates",
        &[
            plot::Run {
                name: "peak",
                figures: &peak.figures,
            },
            plot::Run {
                name: "overload",
                figures: &overload.figures,
            },
        ],
        &[],
    )?;

    audit?;
    for (run, sold) in [("peak", &peak.sold), ("overload", &overload.sold)] {
        if sold.verdict == Verdict::RefusalsDeducted {
            bail!("{run}: refused creates took stock: {}", sold.summary());
        }
    }
    Ok(())
}
