//! `shop soak --minutes M`: a mixed load with faults on a stack of its own, audited as it
//! goes (issue 12, point 7).
//!
//! It starts nats-server, PostgreSQL and one worker of each kind in `<data_dir>/soak`
//! (wiped first) on the configured dev ports, seeds ten goods, and runs `--clients` buyers
//! (create; then pay, cancel, or leave the order to close at a short deadline) while it:
//! - SIGKILLs a random worker every `--kill-every` and starts a replacement at once;
//! - restarts nats-server every `--nats-restart-every`;
//! - runs `shop audit` every `--audit-every` (work younger than a minute counts as in
//!   flight) and samples the workers' RSS.
//!
//! At the end it stops the load, waits for the system to settle, and requires a clean
//! `shop audit --grace 0s`. It prints a summary, writes it as JSON, and exits non-zero when
//! any audit failed.
//!
//! Starting, stopping and seeding `shop`'s own processes is the binary's business: it
//! passes a [`Stack`] that does those, and the soak decides only when.

mod load;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use shop_devstack::{NatsServer, NatsServerSpec, PostgresCluster, PostgresSpec};
use tokio::process::Child;

use shop_kit::server::NatsTarget;

use crate::cli::SoakArgs;

/// The worker kinds, one process of each.
const KINDS: [&str; 3] = ["goods", "stock", "order"];

/// Worker settings of the soak: deadlines and checks fast enough to happen many times.
pub const WORKER_ENV: &[(&str, &str)] = &[
    ("SHOP_ORDER__PAY_TIMEOUT", "10s"),
    ("SHOP_ORDER__CHECK_DELAY", "3s"),
    ("SHOP_ORDER__REQUEST_TIMEOUT", "3s"),
    // The soak prints its own progress; the workers' info lines would bury it.
    ("SHOP_LOG__FILTER", "warn"),
];
/// How long after the load stops the final audit may take to come out clean.
const SETTLE: Duration = Duration::from_secs(120);
/// How long the audit waits for a database connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the soak's own servers come from: the `dev.*` settings.
#[derive(Debug, Clone)]
pub struct Dev {
    /// `dev.data_dir`; the soak uses (and wipes) its `soak/` directory.
    pub data_dir: PathBuf,
    pub nats_server_bin: PathBuf,
    pub nats_config: PathBuf,
    pub nats_port: u16,
    pub postgres_port: u16,
}

/// Where the soak's servers listen, once started.
#[derive(Debug, Clone)]
pub struct Urls {
    pub nats: String,
    pub goods_database: String,
    pub stock_database: String,
    pub order_database: String,
}

/// What the binary does for the soak: `shop`'s own processes and their setup.
pub trait Stack {
    /// Creates the databases at `urls` and applies every worker's migrations.
    fn migrate(&self, urls: &Urls) -> impl Future<Output = anyhow::Result<()>>;
    /// Starts a worker of `kind` on `urls` as its own NATS user, with [`WORKER_ENV`].
    fn spawn(&self, urls: &Urls, kind: &str) -> anyhow::Result<Child>;
    /// Stops a worker politely (SIGTERM, then SIGKILL).
    fn stop(&self, child: &mut Child) -> impl Future<Output = ()>;
    /// How an admin client connects to the soak's nats-server, named `name`.
    fn admin(&self, urls: &Urls, name: &str) -> NatsTarget;
    /// Waits until every worker kind answers, then seeds the demo room with `stock` of
    /// each goods; returns the admin connection.
    fn serving_and_seeded(
        &self,
        urls: &Urls,
        stock: i64,
    ) -> impl Future<Output = anyhow::Result<async_nats::Client>>;
}

pub async fn run(dev: Dev, args: SoakArgs, stack: &impl Stack) -> anyhow::Result<()> {
    let root = args
        .root
        .canonicalize()
        .with_context(|| format!("{} does not exist", args.root.display()))?;
    let data = root.join(&dev.data_dir).join("soak");
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("wiping {}", data.display()))?;
    }
    let logs = data.join("logs");
    let mut nats = NatsServer::start(NatsServerSpec {
        binary: root.join(&dev.nats_server_bin),
        config: root.join(&dev.nats_config),
        port: dev.nats_port,
        // Any free port: dev.conf's own (8222) may belong to a `shop up` running beside it.
        monitor_port: Some(shop_devstack::free_port().context("a port for monitoring")?),
        store_dir: data.join("nats"),
        log_file: logs.join("nats-server.log"),
        cluster: None,
    })
    .context("starting nats-server")?;
    let postgres = PostgresCluster::start(PostgresSpec {
        bin_dir: None,
        data_dir: data.join("pg"),
        port: dev.postgres_port,
        log_file: logs.join("postgres.log"),
        throwaway: false,
    })
    .context("starting PostgreSQL")?;
    let urls = Urls {
        nats: nats.url(),
        goods_database: postgres.url("shop_goods"),
        stock_database: postgres.url("shop_stock"),
        order_database: postgres.url("shop_order"),
    };
    stack.migrate(&urls).await?;

    let mut workers: Vec<(&str, Child)> = Vec::new();
    for kind in KINDS {
        workers.push((kind, stack.spawn(&urls, kind)?));
    }
    let admin = stack.serving_and_seeded(&urls, 1_000_000_000).await?;

    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    println!(
        "soak: {:.1} min, {} clients, a worker SIGKILLed every {:?}, nats-server restarted every {:?}, audit every {:?}",
        args.minutes, args.clients, args.kill_every, args.nats_restart_every, args.audit_every
    );
    let stop_load = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(load::Tally::default());
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            tokio::spawn(load::buyer(
                admin.clone(),
                i,
                stop_load.clone(),
                tally.clone(),
            ))
        })
        .collect();

    let started = Instant::now();
    let mut kills: BTreeMap<&str, u64> = BTreeMap::new();
    let mut nats_restarts = 0;
    let mut audits = Vec::new();
    let mut rss = Vec::new();
    let (mut next_kill, mut next_restart, mut next_audit) = (
        started + args.kill_every,
        started + args.nats_restart_every,
        started + args.audit_every,
    );
    let mut turn = 0_usize;
    while started.elapsed() < duration {
        let now = Instant::now();
        if now >= next_kill {
            // A random enough worker: the kinds in turn, each step a different one.
            turn = turn.wrapping_add(1 + (started.elapsed().as_millis() as usize % 2));
            let i = turn % workers.len();
            let kind = workers[i].0;
            let _ = workers[i].1.start_kill();
            let _ = workers[i].1.wait().await;
            workers[i].1 = stack.spawn(&urls, kind)?;
            *kills.entry(kind).or_default() += 1;
            next_kill = now + args.kill_every;
        }
        if now >= next_restart {
            nats.restart().context("restarting nats-server")?;
            nats_restarts += 1;
            next_restart = now + args.nats_restart_every;
        }
        if now >= next_audit {
            let passed = audit(stack, &urls, Duration::from_secs(60)).await;
            let sample = worker_rss(&workers);
            println!(
                "  {:>5.0}s: {} orders created, {} kills, {} nats restarts, audit {}, worker RSS {:?} KiB",
                started.elapsed().as_secs_f64(),
                tally.created(),
                kills.values().sum::<u64>(),
                nats_restarts,
                if passed { "passed" } else { "FAILED" },
                sample
            );
            audits.push(json!({"at_s": started.elapsed().as_secs(), "passed": passed}));
            rss.push(json!({"at_s": started.elapsed().as_secs(), "rss_kib": sample}));
            next_audit = now + args.audit_every;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_load.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }

    // Settle: deadlines pass, checks run, rollbacks are applied; then the audit must be clean.
    let settle_started = Instant::now();
    let settled = loop {
        if audit(stack, &urls, Duration::ZERO).await {
            break true;
        }
        if settle_started.elapsed() > SETTLE {
            break false;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let final_rss = worker_rss(&workers);
    for (_, child) in &mut workers {
        stack.stop(child).await;
    }
    drop(postgres);
    drop(nats);

    let failed = audits.iter().filter(|a| a["passed"] == false).count();
    let summary = json!({
        "minutes": args.minutes,
        "clients": args.clients,
        "answers": tally.to_json(),
        "faults": {"worker_kills": kills, "nats_restarts": nats_restarts},
        "audits": audits,
        "audits_failed": failed,
        "final_audit_passed": settled,
        "settle_s": settle_started.elapsed().as_secs_f64(),
        "worker_rss": rss,
        "final_worker_rss_kib": final_rss,
    });
    println!(
        "soak done: {} orders created ({} paid, {} cancelled, the rest closed at their deadline); {} worker kills ({:?}), {} nats-server restarts; {} audit(s), {} failed; final audit {} after {:.0}s",
        tally.created(),
        tally.paid(),
        tally.cancelled(),
        kills.values().sum::<u64>(),
        kills,
        nats_restarts,
        audits.len(),
        failed,
        if settled { "clean" } else { "NOT clean" },
        settle_started.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join("soak.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)?;
    println!("wrote {}", path.display());
    if failed > 0 || !settled {
        bail!("the soak broke an invariant: see the audits above");
    }
    Ok(())
}

/// Audits the soak's stack (work younger than `grace` counts as in flight); whether it
/// could and every invariant held. A fresh connection each time, as after a restart.
async fn audit(stack: &impl Stack, urls: &Urls, grace: Duration) -> bool {
    let audited = async {
        let sources = shop_audit::Sources {
            stock_dbs: vec![shop_kit::db::connect(
                &urls.stock_database,
                2,
                ACQUIRE_TIMEOUT,
            )?],
            order_dbs: vec![shop_kit::db::connect(
                &urls.order_database,
                2,
                ACQUIRE_TIMEOUT,
            )?],
            nats: shop_kit::server::connect(&stack.admin(urls, "shop-audit")).await?,
        };
        let report = shop_audit::audit(&sources, grace, shop_audit::Progress::Hidden).await?;
        anyhow::Ok(report.findings.is_empty())
    };
    audited.await.unwrap_or(false)
}

/// VmRSS of each worker, by kind.
fn worker_rss(workers: &[(&str, Child)]) -> BTreeMap<String, u64> {
    workers
        .iter()
        .filter_map(|(kind, child)| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()?)).ok()?;
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some((kind.to_string(), kib))
        })
        .collect()
}
