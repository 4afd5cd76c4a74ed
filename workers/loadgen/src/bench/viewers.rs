//! `shop bench viewers`: what a live room's viewers cost the gateway, while creates run.
//!
//! For each gateway named (`--gateway`, several to compare builds side by side in one run):
//! creates over NATS for `--seconds` without viewers; then `--viewers` event streams on one
//! room, held open; the same creates again while `--probes` stock changes of a goods of the
//! room (one the creates do not touch) are timed to every viewer; then the viewers leave.
//! Reported: the gateway's RSS before, with the viewers and after they left (and per
//! stream), the time from a change's notification on NATS (and from its `stock.set`) to
//! the last viewer, p50 and p99 over the probes, every viewer's delivery p50/p99, and the
//! creates/s of both runs. The room is `--room-id`, set to the bench goods plus the probe.
//!
//! Each viewer is one task on a raw TCP connection that scans what arrives for the probe's
//! frame, so 20,000 of them cost this process little: the figures are the gateway's.
//! 20,000 connections need as many file descriptors here and in the gateway: the bench
//! raises its soft limit to the hard one and refuses to start when that is not enough.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use shop_contracts::endpoint::{GoodsRoomSet, StockSet};
use shop_kit::client::request_json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::create::Creates;
use super::drive::Mode;
use super::order::print_system;
use super::procs::{self, Component, Stack};
use super::request::TIMEOUT;
use super::{fixture, plot, report, system};
use crate::cli::ViewersArgs;
use crate::BenchConfig;

/// The probe goods' `available` is set to this plus the probe's number: a value no other
/// change gives it, so a viewer knows which change reached it.
const MARK: i64 = 7_000_000;

/// The stock worker publishes a goods' change at most every 100 ms: probes further apart
/// are each published alone.
const PROBE_SPACING: Duration = Duration::from_millis(250);

/// How long a probe may take to reach every viewer before the bench counts it as missed.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);

/// File descriptors the bench needs besides its viewers (NATS, databases, the runtime).
const SPARE_FDS: u64 = 256;

pub async fn run(
    config: &BenchConfig,
    client: &async_nats::Client,
    args: &ViewersArgs,
) -> anyhow::Result<()> {
    let limit = shop_gateway::serve::raise_open_files_limit()
        .context("reading or raising the open files limit")?;
    if args.viewers as u64 + SPARE_FDS > limit {
        bail!(
            "{} viewers need {} open files and the limit is {limit} (ulimit -n; the hard limit \
             bounds it): pass fewer --viewers or raise the hard limit",
            args.viewers,
            args.viewers as u64 + SPARE_FDS
        );
    }
    let creates = Creates {
        first_goods_id: args.first_goods_id,
        goods: args.goods,
    };
    let probe = args.first_goods_id + args.goods;
    fixture::upsert_goods(client, creates.first_goods_id..probe + 1).await?;
    fixture::fill_stock(client, creates.goods_ids()).await?;
    let mut room: Vec<i64> = creates.goods_ids().collect();
    room.push(probe);
    request_json::<GoodsRoomSet>(
        client,
        json!({"room_id": args.room_id, "goods_ids": room, "current_goods_id": probe}),
        TIMEOUT,
    )
    .await
    .context("goods.room.set of the bench room")?;

    let gateways = if args.gateway.is_empty() {
        vec![config.gateway_listen]
    } else {
        args.gateway.clone()
    };
    let mode = Mode::Closed {
        concurrency: args.concurrency,
        waits_retry_after: true,
        ramp_seconds: 0.0,
    };
    let window = Duration::from_secs(args.seconds);
    let mut results = Vec::new();
    let mut runs = Vec::new();
    for gateway in gateways {
        let (result, without, with) =
            one_gateway(config, client, args, creates, probe, gateway, mode, window).await?;
        print(&result);
        results.push(result);
        runs.push((without, with));
    }
    let name = report::file_name(
        &format!("viewers-{}", args.viewers),
        Some(args.concurrency),
        None,
        args.label.as_deref(),
    );
    let document = report::document(
        report::header("viewers", args.label.as_deref()),
        json!({"viewers": args.viewers, "room_id": args.room_id, "goods": args.goods,
               "concurrency": args.concurrency, "seconds": args.seconds,
               "probes": args.probes, "gateways": results}),
    );
    let names: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            (
                format!("{} without viewers", r.gateway),
                format!("{} with {} viewers", r.gateway, r.viewers),
            )
        })
        .collect();
    let plot_runs: Vec<plot::Run<'_>> = runs
        .iter()
        .zip(&names)
        .flat_map(|((without, with), (a, b))| {
            [
                plot::Run {
                    name: a,
                    figures: &without.figures,
                },
                plot::Run {
                    name: b,
                    figures: &with.figures,
                },
            ]
        })
        .collect();
    report::save(
        &args.out,
        &name,
        &document,
        "creates with and without viewers",
        "creates",
        &plot_runs,
        &[],
    )
}

/// What one gateway did with the viewers.
#[derive(Debug, Serialize)]
struct GatewayResult {
    gateway: SocketAddr,
    pid: u32,
    viewers: usize,
    rss_before_kib: u64,
    rss_with_viewers_kib: u64,
    rss_after_kib: u64,
    /// (with − before) / viewers.
    kib_per_stream: f64,
    seconds_to_connect: f64,
    /// From the notification on NATS to the last viewer, over the probes.
    to_last_viewer_ms: Option<Spread>,
    /// From the `stock.set` call to the last viewer.
    set_to_last_viewer_ms: Option<Spread>,
    /// Every viewer's delivery of every probe, from the notification on NATS.
    delivery_ms: Option<Spread>,
    /// Probes that did not reach every viewer within 10 s.
    probes_missed: usize,
    creates_per_second_without_viewers: f64,
    creates_per_second_with_viewers: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Spread {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Some(Spread {
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

#[allow(clippy::too_many_arguments)]
async fn one_gateway(
    config: &BenchConfig,
    client: &async_nats::Client,
    args: &ViewersArgs,
    creates: Creates,
    probe: i64,
    gateway: SocketAddr,
    mode: Mode,
    window: Duration,
) -> anyhow::Result<(GatewayResult, system::SystemRun, system::SystemRun)> {
    let config = BenchConfig {
        gateway_listen: gateway,
        ..config.clone()
    };
    let stack = Stack::of(&config);
    let pid = gateway_pid(&stack).with_context(|| {
        format!("no gateway process listening on {gateway} (SHOP_GATEWAY__LISTEN) on this NATS")
    })?;
    let fds_before = open_fds(pid);
    let rss_before_kib = rss_kib(pid);
    println!(
        "gateway {gateway} (pid {pid}): {:.1} MiB before",
        mib(rss_before_kib)
    );

    let without = system::run(&config, client, creates, mode, window, "no viewers").await?;
    print_system(
        &format!("creates, gateway {gateway} without viewers"),
        &without,
    );

    let shared = Arc::new(Shared::new(args.probes));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let viewers = connect_all(gateway, args, probe, &shared, &stop).await?;
    let seconds_to_connect = started.elapsed().as_secs_f64();
    let rss_with_viewers_kib = rss_kib(pid);
    println!(
        "{} viewers connected in {seconds_to_connect:.1}s: gateway {:.1} MiB",
        args.viewers,
        mib(rss_with_viewers_kib)
    );

    let prober = probe_all(client, probe, args.probes, &shared);
    let with_run = system::run(&config, client, creates, mode, window, "viewers");
    let (probes, with) = tokio::join!(prober, with_run);
    let (probes, with) = (probes?, with?);
    print_system(
        &format!("creates, gateway {gateway} with {} viewers", args.viewers),
        &with,
    );

    stop.cancel();
    let mut deliveries = Vec::new();
    let mut last = vec![None::<Instant>; args.probes];
    for arrivals in futures::future::join_all(viewers).await {
        for (i, at) in arrivals.context("a viewer task")? {
            let i = i as usize;
            if last[i].is_none_or(|l| at > l) {
                last[i] = Some(at);
            }
            if let Some(seen) = probes[i].seen {
                deliveries.push(ms(at.saturating_duration_since(seen)));
            }
        }
    }
    // The gateway notices departed viewers on its next write to each (a keep-alive at the
    // latest); then it frees their memory.
    let rss_after_kib = after_viewers_left(pid, fds_before).await;
    let complete = |i: usize| shared.arrived[i].load(Ordering::Relaxed) >= args.viewers;
    let mut to_last = Vec::new();
    let mut set_to_last = Vec::new();
    for (i, timing) in probes.iter().enumerate() {
        let (Some(last), true) = (last[i], complete(i)) else {
            continue;
        };
        if let Some(seen) = timing.seen {
            to_last.push(ms(last.saturating_duration_since(seen)));
        }
        set_to_last.push(ms(last.saturating_duration_since(timing.set)));
    }
    let result = GatewayResult {
        gateway,
        pid,
        viewers: args.viewers,
        rss_before_kib,
        rss_with_viewers_kib,
        rss_after_kib,
        kib_per_stream: rss_with_viewers_kib.saturating_sub(rss_before_kib) as f64
            / args.viewers as f64,
        seconds_to_connect,
        probes_missed: (0..args.probes).filter(|i| !complete(*i)).count(),
        to_last_viewer_ms: Spread::of(to_last),
        set_to_last_viewer_ms: Spread::of(set_to_last),
        delivery_ms: Spread::of(deliveries),
        creates_per_second_without_viewers: without.figures.ok_per_second,
        creates_per_second_with_viewers: with.figures.ok_per_second,
    };
    Ok((result, without, with))
}

fn print(result: &GatewayResult) {
    let spread = |s: Option<Spread>| {
        s.map_or("-".to_owned(), |s| {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                s.p50, s.p99, s.max
            )
        })
    };
    println!(
        "gateway {} with {} viewers:",
        result.gateway, result.viewers
    );
    println!(
        "  RSS {:.1} MiB before, {:.1} MiB with the viewers ({:.1} KiB per stream), {:.1} MiB after they left",
        mib(result.rss_before_kib),
        mib(result.rss_with_viewers_kib),
        result.kib_per_stream,
        mib(result.rss_after_kib)
    );
    println!(
        "  a stock change to the last viewer: {} (from stock.set: {}); {} probe(s) missed",
        spread(result.to_last_viewer_ms),
        spread(result.set_to_last_viewer_ms),
        result.probes_missed
    );
    println!("  every delivery: {}", spread(result.delivery_ms));
    println!(
        "  creates/s {:.0} without viewers, {:.0} with ({:.2})",
        result.creates_per_second_without_viewers,
        result.creates_per_second_with_viewers,
        result.creates_per_second_with_viewers / result.creates_per_second_without_viewers.max(1.0)
    );
}

/// What the viewers and the prober share: how many viewers are streaming, and how many
/// received each probe.
struct Shared {
    ready: AtomicUsize,
    arrived: Vec<AtomicUsize>,
}

impl Shared {
    fn new(probes: usize) -> Shared {
        Shared {
            ready: AtomicUsize::new(0),
            arrived: (0..probes).map(|_| AtomicUsize::new(0)).collect(),
        }
    }
}

type Viewer = tokio::task::JoinHandle<Vec<(u32, Instant)>>;

/// Opens every viewer, `--connect-concurrency` at a time, and returns once each has its
/// room event (or fails when one cannot connect).
async fn connect_all(
    gateway: SocketAddr,
    args: &ViewersArgs,
    probe: i64,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<Viewer>> {
    let request = Arc::new(format!(
        "GET /v1/rooms/{}/events HTTP/1.1\r\nHost: {gateway}\r\nAccept: text/event-stream\r\n\r\n",
        args.room_id
    ));
    let needle: Arc<[u8]> = format!("{{\"goods_id\":{probe},\"available\":")
        .into_bytes()
        .into();
    let opening = Arc::new(Semaphore::new(args.connect_concurrency));
    let bar = super::progress("viewers", args.viewers as u64);
    let mut viewers = Vec::with_capacity(args.viewers);
    let (failed_tx, mut failed) = tokio::sync::mpsc::unbounded_channel::<String>();
    for _ in 0..args.viewers {
        let permit = opening.clone().acquire_owned().await?;
        if let Ok(reason) = failed.try_recv() {
            stop.cancel();
            bail!("a viewer could not open its stream: {reason}");
        }
        bar.set_position(shared.ready.load(Ordering::Relaxed) as u64);
        let (request, needle, shared, stop, failed_tx) = (
            request.clone(),
            needle.clone(),
            shared.clone(),
            stop.clone(),
            failed_tx.clone(),
        );
        viewers.push(tokio::spawn(async move {
            match watch(gateway, &request, &needle, &shared, &stop, permit).await {
                Ok(arrivals) => arrivals,
                Err(error) => {
                    let _ = failed_tx.send(format!("{error:#}"));
                    Vec::new()
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.ready.load(Ordering::Relaxed) < args.viewers {
        if let Ok(reason) = failed.try_recv() {
            stop.cancel();
            bail!("a viewer could not open its stream: {reason}");
        }
        if Instant::now() > deadline {
            stop.cancel();
            bail!("the viewers were not all streaming within 120 s");
        }
        bar.set_position(shared.ready.load(Ordering::Relaxed) as u64);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();
    Ok(viewers)
}

/// One viewer: opens the stream, counts itself ready at its room event (releasing its
/// connect permit), then notes when each probe's frame arrives, until `stop`.
async fn watch(
    gateway: SocketAddr,
    request: &str,
    needle: &[u8],
    shared: &Shared,
    stop: &CancellationToken,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> anyhow::Result<Vec<(u32, Instant)>> {
    let mut tcp = TcpStream::connect(gateway).await?;
    tcp.write_all(request.as_bytes()).await?;
    let mut buffer = Vec::with_capacity(1024);
    let mut permit = Some(permit);
    let mut arrivals = Vec::new();
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return Ok(arrivals),
            read = tcp.read_buf(&mut buffer) => read?,
        };
        if read == 0 {
            bail!("the gateway closed the stream");
        }
        let now = Instant::now();
        if permit.is_some() {
            if !buffer.starts_with(b"HTTP/1.1 200") && buffer.len() >= 12 {
                let head = String::from_utf8_lossy(&buffer[..buffer.len().min(200)]).into_owned();
                bail!("the gateway answered {head:?}");
            }
            if find(&buffer, b"event: room").is_none() {
                continue;
            }
            permit = None;
            shared.ready.fetch_add(1, Ordering::Relaxed);
        }
        let mut consumed = 0;
        while let Some(at) = find(&buffer[consumed..], needle) {
            let start = consumed + at + needle.len();
            let Some(end) = buffer[start..].iter().position(|b| *b == b'}') else {
                break;
            };
            let value = std::str::from_utf8(&buffer[start..start + end])
                .ok()
                .and_then(|v| v.parse::<i64>().ok());
            if let Some(i) = value.and_then(|v| usize::try_from(v - MARK).ok()) {
                if let Some(count) = shared.arrived.get(i) {
                    count.fetch_add(1, Ordering::Relaxed);
                    arrivals.push((i as u32, now));
                }
            }
            consumed = start + end;
        }
        // Keep only a tail that may hold the start of a frame cut by this read.
        let keep_from = buffer.len().saturating_sub(needle.len() + 24).max(consumed);
        buffer.drain(..keep_from);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// When one probe was sent, and when its notification was seen on NATS.
struct Probe {
    set: Instant,
    seen: Option<Instant>,
}

/// Sends `count` stock changes of the probe goods, each once the previous one reached every
/// viewer (or after [`PROBE_DEADLINE`]), at least [`PROBE_SPACING`] apart.
async fn probe_all(
    client: &async_nats::Client,
    probe: i64,
    count: usize,
    shared: &Shared,
) -> anyhow::Result<Vec<Probe>> {
    let mut notifications = client
        .subscribe(format!("stock.changed.{probe}"))
        .await
        .context("subscribing to the probe's stock changes")?;
    let viewers = shared.ready.load(Ordering::Relaxed);
    let mut probes = Vec::with_capacity(count);
    for i in 0..count {
        let mark = MARK + i as i64;
        let set = Instant::now();
        request_json::<StockSet>(
            client,
            json!({"goods_id": probe, "available": mark}),
            TIMEOUT,
        )
        .await
        .context("stock.set of the probe goods")?;
        let deadline = set + PROBE_DEADLINE;
        let mut seen = None;
        while seen.is_none() && Instant::now() < deadline {
            let next = tokio::time::timeout_at(deadline.into(), notifications.next()).await;
            let Ok(Some(message)) = next else { break };
            let value: serde_json::Value =
                serde_json::from_slice(&message.payload).unwrap_or_default();
            if value["available"].as_i64() == Some(mark) {
                seen = Some(Instant::now());
            }
        }
        while shared.arrived[i].load(Ordering::Relaxed) < viewers && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        probes.push(Probe { set, seen });
        tokio::time::sleep(PROBE_SPACING.saturating_sub(set.elapsed())).await;
    }
    Ok(probes)
}

/// Waits until the gateway holds no more file descriptors than before the viewers (their
/// connections are closed) and one period of its memory give-back has passed, then reads
/// its RSS; after 60 s it reads it anyway.
async fn after_viewers_left(pid: u32, fds_before: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_fds(pid) > fds_before + 16 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The gateway looks at its streams every 5 s; the RSS is read once it stops falling.
    let mut rss = rss_kib(pid);
    let settle = Instant::now() + Duration::from_secs(15);
    while Instant::now() < settle {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let now = rss_kib(pid);
        if now + 256 >= rss {
            return now;
        }
        rss = now;
    }
    rss
}

fn gateway_pid(stack: &Stack) -> Option<u32> {
    procs::scan(stack)
        .into_iter()
        .find(|p| p.component == Component::Worker(procs::GATEWAY.to_owned()))
        .map(|p| p.pid)
}

fn rss_kib(pid: u32) -> u64 {
    super::rss::process_kib(pid).unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
