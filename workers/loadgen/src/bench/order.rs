//! `shop bench order`: whole `order.create`s through the running workers, each one unit of
//! one goods (CONTRACT section 5: `goods.batch`, the half message, `stock.deduct`, the
//! order's commit), so this is the figure a shop sees. Then, in the same run, the ceilings
//! of the same work, the settle wait and the audit. The orders are left unpaid; the
//! checker closes them at their deadline.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use serde_json::json;

use super::alternate::{self, Alternate, Split};
use super::ceilings::{self, Ceilings};
use super::create::Creates;
use super::drive::Mode;
use super::http::HttpCreate;
use super::record::Figures;
use super::settle::{self, Settle};
use super::steady;
use super::system::{self, SystemRun, Verdict};
use super::{cpu, fixture, plot, report, rss};
use crate::cli::{LoadArgs, Via};
use crate::BenchConfig;

/// What `shop bench order` measures besides the creates over NATS.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The three ceilings of the same work.
    pub with_ceilings: bool,
    /// Also through the HTTP gateway: in a run of its own after the NATS run (`Http`), or
    /// in a run that alternates between the two (`Alternate`).
    pub via: Via,
}

pub async fn run(
    config: &BenchConfig,
    client: &async_nats::Client,
    creates: Creates,
    load: &LoadArgs,
    options: Options,
    settle: &Settle,
) -> anyhow::Result<()> {
    fixture::upsert_goods(client, creates.goods_ids()).await?;
    fixture::fill_stock(client, creates.goods_ids()).await?;
    let mode = super::mode(load);
    let label = load.run.label.as_deref();
    let strategy = fixture::stock_strategy(client).await?;
    let title = format!(
        "order goods={} {mode} stock={strategy}{}",
        creates.goods,
        label.map(|l| format!(" [{l}]")).unwrap_or_default()
    );
    let window = load.run.seconds.map_or_else(
        || steady::default_run(settle.check_delay),
        std::time::Duration::from_secs,
    );

    let system = system::run(config, client, creates, mode, window, "system").await?;
    print_system(&title, &system);
    // The same creates (same goods, users and load) through the gateway: the gateway's
    // overhead is the ratio of the two ways. That run starts once the NATS run's work has
    // settled, as the NATS run did: otherwise it would carry the checker's first look at
    // every order of the NATS run (a read, a timer schedule and an ack each), which is not
    // the gateway's cost.
    if options.via != Via::Nats {
        println!(
            "settling before the run through the gateway ({}s check delay)",
            settle.check_delay.as_secs()
        );
        settle::wait_until_settled(client, system.ended, settle).await?;
    }
    let http_title = format!("{title} via http");
    let http = if options.via == Via::Http {
        let operation = Arc::new(HttpCreate::new(config, creates)?);
        eprintln!("through the gateway at {}", operation.url());
        let run =
            system::run_with(config, client, creates, operation, mode, window, "http").await?;
        print_system(&http_title, &run);
        Some(run)
    } else {
        None
    };
    let alternate_title = format!("{title} alternating nats/http");
    let alternate = if options.via == Via::Alternate {
        let http = HttpCreate::new(config, creates)?;
        eprintln!(
            "over NATS and through the gateway at {} in turn, {} s each",
            http.url(),
            alternate::SLICE.as_secs()
        );
        let operation = Arc::new(Alternate::new(system::nats_create(client, creates), http));
        let run = system::run_with(
            config,
            client,
            creates,
            operation.clone(),
            mode,
            window,
            "alternate",
        )
        .await?;
        print_system(&alternate_title, &run);
        Some((run, operation.split(window)))
    } else {
        None
    };
    let ended = [
        http.as_ref().map(|run| run.ended),
        alternate.as_ref().map(|(run, _)| run.ended),
    ]
    .into_iter()
    .flatten()
    .fold(system.ended, Instant::max);
    let audit = settle::settle_then_audit(config, client, ended, settle).await;

    let ceilings = if options.with_ceilings {
        Some(ceilings::measure(config, client, creates, load.concurrency, window).await?)
    } else {
        None
    };
    let ratios = ceilings.as_ref().map(|c| Ratios::of(&system.figures, c));
    println!("{}", result_line(&title, mode, &system, ceilings.as_ref()));
    let http_ratio = http
        .as_ref()
        .map(|run| run.figures.ok_per_second / system.figures.ok_per_second.max(f64::MIN_POSITIVE));
    if let (Some(run), Some(ratio)) = (&http, http_ratio) {
        println!(
            "{}; {ratio:.2} of the {:.0} creates/s over NATS",
            result_line(&http_title, mode, run, None),
            system.figures.ok_per_second
        );
    }
    if let Some((run, split)) = &alternate {
        println!("{}", alternate_line(&alternate_title, run, split));
    }

    let document = report::document(
        report::header("order", label),
        json!({
            "goods": creates.goods,
            "stock_strategy": strategy,
            "load": mode,
            "concurrency": load.concurrency,
            "seconds": window.as_secs(),
            "system": system.figures,
            "steady_state": system.steady,
            "sold_check": system.sold,
            "workers_rss": system.memory,
            "cpu_ms_per_create": system.cpu,
            "server_latency_ms": system.server,
            "ceilings": ceilings,
            "ratios": ratios,
            "via_http": http.as_ref().map(|run| json!({
                "system": run.figures,
                "sold_check": run.sold,
                "workers_rss": run.memory,
                "cpu_ms_per_create": run.cpu,
                "server_latency_ms": run.server,
                "ratio_to_nats": http_ratio,
            })),
            "alternate": alternate.as_ref().map(|(run, split)| json!({
                "slice_seconds": alternate::SLICE.as_secs_f64(),
                "split": split,
                "system": run.figures,
                "sold_check": run.sold,
                "cpu_ms_per_create": run.cpu,
            })),
            "audit": if audit.is_ok() { "passed" } else { "failed" },
        }),
    );
    let name = report::file_name(
        &format!("order-{}", creates.goods),
        matches!(mode, Mode::Closed { .. }).then_some(load.concurrency),
        load.rate,
        label,
    );
    let ceiling_lines: Vec<(&str, f64)> = ceilings
        .as_ref()
        .map(|c| {
            vec![
                ("ceiling (b) database", c.database_split.ok_per_second),
                ("ceiling (c) monolith", c.database_monolith.ok_per_second),
            ]
        })
        .unwrap_or_default();
    let mut runs = vec![plot::Run {
        name: "system",
        figures: &system.figures,
    }];
    if let Some(run) = &http {
        runs.push(plot::Run {
            name: "via http",
            figures: &run.figures,
        });
    }
    report::save(
        &load.run.out,
        &name,
        &document,
        &title,
        "creates",
        &runs,
        &ceiling_lines,
    )?;

    audit?;
    let alternate_run = alternate.as_ref().map(|(run, _)| run);
    for run in std::iter::once(&system).chain(&http).chain(alternate_run) {
        if run.sold.verdict == Verdict::RefusalsDeducted {
            bail!("refused creates took stock: {}", run.sold.summary());
        }
    }
    Ok(())
}

/// The result line of an alternating run: the two ways' creates/s and their ratio.
fn alternate_line(title: &str, run: &SystemRun, split: &Split) -> String {
    format!(
        "result {title}: through the gateway {:.0} creates/s = {:.2} of the {:.0} over NATS \
         in the same run ({} s slices); cpu {} ms/create for both",
        split.second_ok as f64 / split.second_seconds.max(f64::MIN_POSITIVE),
        split.ratio,
        split.first_ok as f64 / split.first_seconds.max(f64::MIN_POSITIVE),
        alternate::SLICE.as_secs(),
        run.cpu
            .as_ref()
            .map_or("-".to_owned(), |cpu| format!("{:.2}", cpu.total)),
    )
}

/// The system's creates/s as a fraction of each database ceiling.
#[derive(Debug, Clone, serde::Serialize)]
struct Ratios {
    to_database_split: f64,
    to_database_monolith: f64,
    nats_request_reply_per_second: f64,
}

impl Ratios {
    fn of(system: &Figures, ceilings: &Ceilings) -> Ratios {
        let ratio =
            |ceiling: &Figures| system.ok_per_second / ceiling.ok_per_second.max(f64::MIN_POSITIVE);
        Ratios {
            to_database_split: ratio(&ceilings.database_split),
            to_database_monolith: ratio(&ceilings.database_monolith),
            nats_request_reply_per_second: ceilings.nats_request_reply.ok_per_second,
        }
    }
}

/// The one line `./dev bench` gathers from every run: the figures the table of
/// docs/performance.md needs.
fn result_line(title: &str, mode: Mode, system: &SystemRun, ceilings: Option<&Ceilings>) -> String {
    let figures = &system.figures;
    let mut line = format!("result {title}: {:.0} creates/s", figures.ok_per_second);
    if let Mode::Open { rate } = mode {
        line += &format!(" (asked {rate}/s, sent {:.0}/s)", figures.sent_per_second);
    }
    if let Some(latency) = &figures.latency_ms {
        line += &format!(", p50 {:.2} ms, p99 {:.2} ms", latency.p50, latency.p99);
    }
    if figures.refused + figures.timeouts + figures.failed() > 0 {
        line += &format!(
            " ({} refused, {} timeouts, {} failed)",
            figures.refused,
            figures.timeouts,
            figures.failed()
        );
    }
    if let Some(ceilings) = ceilings {
        let ratios = Ratios::of(figures, ceilings);
        line += &format!(
            "; {:.2} of (b) {:.0}/s, {:.2} of (c) {:.0}/s; (a) {:.0} requests/s",
            ratios.to_database_split,
            ceilings.database_split.ok_per_second,
            ratios.to_database_monolith,
            ceilings.database_monolith.ok_per_second,
            ratios.nats_request_reply_per_second
        );
    }
    if let Some(cpu) = &system.cpu {
        line += &format!("; cpu {:.2} ms/create", cpu.total);
    }
    if let Some(steady) = &system.steady {
        line += &format!(
            "; last {} s {:.0}/s = {:.2} of the first {} s",
            steady::WINDOW.as_secs(),
            steady.last.ok_per_second,
            steady.ratio,
            steady::WINDOW.as_secs()
        );
        if let Some(after) = steady.after_request_ms {
            line += &format!(" (work after the request {after:+.3} ms/create)");
        }
    }
    line + "; RSS " + &rss::summary(&system.memory)
}

/// The system's figures, the stock check, the CPU per create and the workers' memory, for
/// the terminal.
pub fn print_system(title: &str, run: &SystemRun) {
    println!("{title}: {}", run.figures.summary("creates"));
    println!("  {}", run.sold.summary());
    println!("  server side (order.create): {}", run.server.summary());
    println!("  {}", cpu::summary(run.cpu.as_ref()));
    if let Some(steady) = &run.steady {
        println!("  {}", steady.summary());
    }
    println!("  worker memory: {}", rss::summary(&run.memory));
}
