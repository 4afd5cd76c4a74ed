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

mod load;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use shop_devstack::{NatsServer, NatsServerSpec, PostgresCluster, PostgresSpec};
use tokio::process::Child;

use super::up::{serving_and_seeded, spawn_worker_with, stop, WORKERS};
use crate::cli::SoakArgs;
use crate::config::Config;

/// Worker settings of the soak: deadlines and checks fast enough to happen many times.
const WORKER_ENV: &[(&str, &str)] = &[
    ("SHOP_ORDER__PAY_TIMEOUT", "10s"),
    ("SHOP_ORDER__CHECK_DELAY", "3s"),
    ("SHOP_ORDER__REQUEST_TIMEOUT", "3s"),
    // The soak prints its own progress; the workers' info lines would bury it.
    ("SHOP_LOG__FILTER", "warn"),
];
/// How long after the load stops the final audit may take to come out clean.
const SETTLE: Duration = Duration::from_secs(120);

pub async fn run(mut config: Config, args: SoakArgs) -> anyhow::Result<()> {
    let root = args
        .root
        .canonicalize()
        .with_context(|| format!("{} does not exist", args.root.display()))?;
    let data = root.join(&config.dev.data_dir).join("soak");
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("wiping {}", data.display()))?;
    }
    let logs = data.join("logs");
    let mut nats = NatsServer::start(NatsServerSpec {
        binary: root.join(&config.dev.nats_server_bin),
        config: root.join(&config.dev.nats_config),
        port: config.dev.nats_port,
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
        port: config.dev.postgres_port,
        log_file: logs.join("postgres.log"),
        throwaway: false,
    })
    .context("starting PostgreSQL")?;
    config.nats.url = nats.url();
    config.goods.database_url = postgres.url("shop_goods");
    config.stock.database_url = postgres.url("shop_stock");
    config.order.database_url = postgres.url("shop_order");
    super::migrate::run(&config).await?;

    let mut workers: Vec<(&str, Child)> = Vec::new();
    for (kind, _) in WORKERS {
        workers.push((kind, spawn(&config, kind)?));
    }
    config.nats.user = Some("admin".into());
    config.nats.password = Some("admin-dev".into());
    let admin = serving_and_seeded(&config, "shop-soak", 1_000_000_000).await?;

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
            workers[i].1 = spawn(&config, kind)?;
            *kills.entry(kind).or_default() += 1;
            next_kill = now + args.kill_every;
        }
        if now >= next_restart {
            nats.restart().context("restarting nats-server")?;
            nats_restarts += 1;
            next_restart = now + args.nats_restart_every;
        }
        if now >= next_audit {
            let passed = audit(&config, "60s").await?;
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
        if audit(&config, "0s").await? {
            break true;
        }
        if settle_started.elapsed() > SETTLE {
            break false;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let final_rss = worker_rss(&workers);
    for (_, child) in &mut workers {
        stop(child).await;
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

fn spawn(config: &Config, kind: &str) -> anyhow::Result<Child> {
    let password = WORKERS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, p)| *p)
        .context("a worker kind")?;
    spawn_worker_with(config, kind, password, WORKER_ENV)
}

/// Runs `shop audit --grace <grace>` against the soak's stack; whether it passed.
async fn audit(config: &Config, grace: &str) -> anyhow::Result<bool> {
    let exe = std::env::current_exe().context("locating the shop binary")?;
    let out = tokio::process::Command::new(exe)
        .args(["audit", "--grace", grace])
        .env("SHOP_NATS__URL", &config.nats.url)
        .env("SHOP_NATS__USER", "admin")
        .env("SHOP_NATS__PASSWORD", "admin-dev")
        .env("SHOP_GOODS__DATABASE_URL", &config.goods.database_url)
        .env("SHOP_STOCK__DATABASE_URL", &config.stock.database_url)
        .env("SHOP_ORDER__DATABASE_URL", &config.order.database_url)
        .output()
        .await
        .context("running shop audit")?;
    Ok(out.status.success())
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
