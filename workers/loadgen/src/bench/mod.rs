//! `shop bench`: load over NATS against the running workers, measured against the
//! system's own ceilings; prints its figures and writes them as JSON and an SVG plot.
//!
//! Scenarios, one per subcommand:
//! - [`stock`]: `shop bench stock`, deducts straight to the stock workers.
//! - [`order`]: `shop bench order`, whole creates through all three workers, then the
//!   [`ceilings`] of the same work, the [`settle`] wait and the audit; with `--via http`
//!   the same creates through the HTTP gateway too.
//! - [`overload`]: `shop bench overload`, a peak run then an overload run.
//! - [`timers`]: `shop bench timers`, pay deadlines with many orders waiting.
//! - [`retention`]: `shop bench retention`, what retained orders cost nats-server.
//! - [`viewers`]: `shop bench viewers`, what a live room's viewers cost the gateway while
//!   creates run.
//!
//! Their parts:
//! - [`drive`]: closed and open loops over an operation, with a progress display.
//! - [`request`]: a NATS request as an operation; [`http`]: a create through the gateway as
//!   one, over [`keepalive`] connections; [`outcome`]: how a reply is classified.
//! - [`record`]: HdrHistograms, in total and per second, and the figures.
//! - [`create`]: what one bench create is; [`fixture`]: the bench goods and their stock.
//! - [`system`]: one run of creates, and the stock check right after it.
//! - [`procs`]: the stack's processes in /proc; [`cpu`]: the CPU each one spends per
//!   create; [`rss`]: the workers' memory; [`server_share`]: the order workers' own share
//!   of the latency, from their `$SRV.STATS` histograms.
//! - [`report`] and [`plot`]: the JSON and SVG files.

mod alternate;
mod ceilings;
mod cpu;
mod create;
mod drive;
mod fixture;
mod http;
mod keepalive;
mod order;
mod outcome;
mod overload;
mod plot;
mod procs;
mod record;
mod report;
mod request;
mod retention;
mod rss;
mod server_share;
mod settle;
mod steady;
mod stock;
mod system;
mod timers;
mod viewers;

use anyhow::Context;

use self::create::Creates;
use self::drive::Mode;
use self::settle::Settle;
use crate::cli::{BenchTarget, LoadArgs, SettleArgs};
use crate::BenchConfig;

pub async fn run(config: &BenchConfig, target: BenchTarget) -> anyhow::Result<()> {
    let client = shop_kit::server::connect(&config.nats_target("shop-bench"))
        .await
        .context("connecting to NATS")?;
    match &target {
        BenchTarget::Stock {
            strategy,
            goods,
            first_goods_id,
            load,
        } => stock::run(&client, strategy, *goods, *first_goods_id, load).await,
        BenchTarget::Order {
            goods,
            first_goods_id,
            load,
            no_ceilings,
            via,
            settle,
        } => {
            let creates = Creates {
                first_goods_id: *first_goods_id,
                goods: *goods,
            };
            let settle = settle_of(config, settle);
            let options = order::Options {
                with_ceilings: !no_ceilings,
                via: *via,
            };
            order::run(config, &client, creates, load, options, &settle).await
        }
        BenchTarget::Overload {
            goods,
            first_goods_id,
            peak_concurrency,
            concurrency,
            ramp,
            via,
            run,
            settle,
        } => {
            let creates = Creates {
                first_goods_id: *first_goods_id,
                goods: *goods,
            };
            let settle = settle_of(config, settle);
            let crowds = overload::Crowds {
                peak_concurrency: *peak_concurrency,
                concurrency: *concurrency,
                ramp_seconds: *ramp,
            };
            overload::run(config, &client, creates, crowds, *via, run, &settle).await
        }
        BenchTarget::Timers(args) => timers::run(config, &client, args).await,
        BenchTarget::Retention(args) => retention::run(config, &client, args).await,
        BenchTarget::Viewers(args) => viewers::run(config, &client, args).await,
    }
}

/// The open loop when `--rate` is given, else the closed loop.
fn mode(load: &LoadArgs) -> Mode {
    match load.rate {
        Some(rate) => Mode::Open { rate },
        None => Mode::Closed {
            concurrency: load.concurrency,
            waits_retry_after: !load.run.ignore_retry_after,
            ramp_seconds: load.ramp,
        },
    }
}

fn settle_of(config: &BenchConfig, args: &SettleArgs) -> Settle {
    Settle {
        check_delay: args.check_delay.unwrap_or(config.check_delay),
        timeout: args.settle_timeout,
    }
}

/// A progress bar for a bench stage of `len` steps, named `what`.
fn progress(what: &str, len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len).with_style(
        indicatif::ProgressStyle::with_template(
            "  {prefix} [{bar:30}] {pos}/{len} ({per_sec}, {elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

/// JetStream publishes awaiting their acknowledgement at once, at most, in bulk seeding.
const PUBLISH_WINDOW: usize = 2048;

/// Runs `publish(i)` for every `i` in `0..count`, [`PUBLISH_WINDOW`] at a time, a step of
/// `bar` each; stops at the first error.
async fn publish_all<F, Fut>(
    count: u64,
    bar: &indicatif::ProgressBar,
    publish: F,
) -> anyhow::Result<()>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(0..count)
        .map(publish)
        .buffer_unordered(PUBLISH_WINDOW)
        .try_for_each(|()| {
            bar.inc(1);
            futures::future::ready(Ok(()))
        })
        .await
}
