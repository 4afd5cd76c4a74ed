//! `shop up`: the whole local stack in one process tree.
//!
//! Starts nats-server (nats-config/dev.conf, or with `--nats-nodes 3` the 3-node cluster of
//! nats-config/cluster/) and a PostgreSQL cluster whose data lives in `.data/`, applies
//! migrations, runs the workers and the HTTP gateway as child processes (each as its own NATS
//! user; the gateway with the random dev secrets this command keeps in the data directory),
//! seeds demo data, and waits. A worker or gateway process that exits is started again (and
//! the log says so; `shop_devstack::supervise` owns the restarts and the stop). Ctrl-C stops everything it started, each worker finishing what it
//! admitted; the next run reuses the data. Every child dies with this process even if it is
//! SIGKILLed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use shop_devstack::{
    local_cluster_specs, stop_all, supervise, NatsCluster, NatsServer, NatsServerSpec,
    PostgresCluster, PostgresSpec, Supervised,
};

use super::partitions::PartitionServers;
use crate::config::{Config, DEV_SECRETS_FILE};

/// Worker kinds with their NATS user and dev password (nats-config/dev.conf).
pub(super) const WORKERS: [(&str, &str); 3] = [
    ("goods", "goods-dev"),
    ("stock", "stock-dev"),
    ("order", "order-dev"),
];

/// How many nats-servers, and the replicas of what the workers create on them.
#[derive(Debug, Clone, Copy)]
pub struct NatsLayout {
    pub nodes: usize,
    pub replicas: usize,
}

/// The NATS side of the stack.
enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    fn url(&self) -> String {
        match self {
            Nats::Single(server) => server.url(),
            Nats::Cluster(cluster) => cluster.url(),
        }
    }
}

pub async fn run(
    mut config: Config,
    per_kind: usize,
    layout: NatsLayout,
    partitions: u16,
    root: PathBuf,
) -> anyhow::Result<()> {
    if layout.replicas == 0 || layout.replicas > layout.nodes {
        bail!(
            "--nats-replicas {} on {} nats-server(s): replicas must be between 1 and the servers",
            layout.replicas,
            layout.nodes
        );
    }
    let started = Instant::now();
    let root = root
        .canonicalize()
        .with_context(|| format!("{} does not exist", root.display()))?;
    let nats_config = root.join(&config.dev.nats_config);
    if !nats_config.exists() {
        bail!(
            "{} not found: run shop up from the project directory or pass --root",
            nats_config.display()
        );
    }
    let data = root.join(&config.dev.data_dir);
    let logs = data.join("logs");

    // These blocking calls run on the main thread on purpose: the servers are bound to the
    // life of the thread that spawns them (PR_SET_PDEATHSIG), and this one lives longest.
    let nats = if layout.nodes == 1 {
        Nats::Single(
            NatsServer::start(NatsServerSpec {
                binary: root.join(&config.dev.nats_server_bin),
                config: nats_config,
                port: config.dev.nats_port,
                // 8222 for the usual 4222: a second stack on another port (the bench's) gets
                // its own.
                monitor_port: Some(config.dev.nats_port.wrapping_add(4000)),
                store_dir: data.join("nats"),
                log_file: logs.join("nats-server.log"),
                cluster: None,
            })
            .context("starting nats-server")?,
        )
    } else {
        Nats::Cluster(start_cluster(&config, &root, &data, layout.nodes)?)
    };
    let postgres = PostgresCluster::start(PostgresSpec {
        bin_dir: None,
        data_dir: data.join("pg"),
        port: config.dev.postgres_port,
        log_file: logs.join("postgres.log"),
        throwaway: false,
    })
    .context("starting PostgreSQL")?;
    // Stock and order partitions 1.. each get a PostgreSQL server of their own.
    let servers = PartitionServers::start(&config, &data, partitions)?;
    tracing::info!(nats = %nats.url(), postgres_port = postgres.port(), "servers up");

    config.nats.url = nats.url();
    config.nats.replicas = layout.replicas;
    config.goods.database_url = postgres.url("shop_goods");
    config.stock.database_url = postgres.url("shop_stock");
    config.order.database_url = postgres.url("shop_order");
    super::migrate::run(&config).await?;
    servers.migrate_and_map(&mut config, &data).await?;

    dev_secrets(&mut config, &data)?;
    let exe = std::env::current_exe().context("locating the shop binary")?;
    let mut children = Vec::new();
    // Each worker serves /metrics on a port of its own, after NATS's by 5000 like the
    // monitor port after it by 4000, so a second stack (the bench's) gets its own too.
    let mut metrics = Vec::new();
    for (kind, password) in WORKERS {
        for i in 0..per_kind {
            let name = format!("{kind}-{i}");
            let port = config
                .dev
                .nats_port
                .wrapping_add(5000)
                .wrapping_add(children.len() as u16);
            metrics.push(format!("{name} http://127.0.0.1:{port}/metrics"));
            let listen = format!("127.0.0.1:{port}");
            let (config, exe) = (config.clone(), exe.clone());
            children.push(Supervised::start(name, move || {
                let env = [("SHOP_METRICS__LISTEN", listen.as_str())];
                worker_command(&exe, &config, kind, password, &env)
            })?);
        }
    }
    // The other partitions' workers, each on its own partition's database.
    for (kind, p, url) in servers.urls() {
        let password = WORKERS
            .iter()
            .find(|(k, _)| *k == kind.name())
            .map_or("", |(_, password)| *password);
        for i in 0..per_kind {
            let name = format!("{}-p{p}-{i}", kind.name());
            let (config, exe) = (config.clone(), exe.clone());
            let (url, partition) = (url.clone(), p.to_string());
            children.push(Supervised::start(name, move || {
                let env = [
                    (kind.partition_setting(), partition.as_str()),
                    (kind.database_setting(), url.as_str()),
                ];
                worker_command(&exe, &config, kind.name(), password, &env)
            })?);
        }
    }

    serving_and_seeded(&config, "shop-up", 100).await?;
    children.push(Supervised::start("gateway".to_owned(), {
        let config = config.clone();
        move || gateway_command(&exe, &config)
    })?);
    let port = config.gateway.listen.port();
    let listening = tokio::task::spawn_blocking(move || {
        shop_devstack::wait_for_port(port, Duration::from_secs(30), || false)
    });
    if !listening.await? {
        bail!("the gateway did not listen on port {port} within 30s");
    }
    let http = format!("http://{}", config.gateway.listen);

    eprintln!(
        "\nshop is up in {:.1}s: NATS {} (JetStream, streams at {} replica(s)), PostgreSQL 127.0.0.1:{}, {} worker(s) of each kind (and partition), stock and orders in {partitions} partition(s).\n\
         HTTP gateway {http}: live room {http}/rooms/1, API docs {http}/docs\n\
         Try:  nats req goods.room.list '{{\"room_id\":1}}'\n\
         \x20     curl {http}/v1/rooms/1\n\
         \x20     TOKEN=$(target/debug/shop token --user 7); curl -H \"Authorization: Bearer $TOKEN\" {http}/v1/orders\n\
         Metrics: {}\n\
         Logs of the servers: {}\nCtrl-C stops everything.\n",
        started.elapsed().as_secs_f64(),
        nats.url(),
        layout.replicas,
        postgres.port(),
        per_kind,
        metrics.join(", "),
        logs.display(),
    );

    tokio::select! {
        _ = super::shutdown_signal() => {}
        _ = supervise(&mut children) => {}
    }
    // All at once: each finishes what it admitted within its own shutdown_timeout.
    stop_all(&mut children).await;
    drop(servers);
    drop(postgres);
    drop(nats);
    Ok(())
}

/// The gateway's token key and payment secret: from config when set there, otherwise the
/// random pair this command wrote into the data directory on its first run (so tokens
/// minted with `shop token` stay valid across restarts). Never a value from the code.
fn dev_secrets(config: &mut Config, data: &std::path::Path) -> anyhow::Result<()> {
    let auth = &mut config.gateway.auth;
    if auth.hs256_secret.is_some() && config.gateway.payment.secret.is_some() {
        return Ok(());
    }
    let path = data.join(DEV_SECRETS_FILE);
    let random = || shop_gateway::Secret::random().context("reading /dev/urandom");
    let token_secret = match &auth.hs256_secret {
        Some(secret) => secret.clone(),
        None => random()?,
    };
    let payment_secret = match &config.gateway.payment.secret {
        Some(secret) => secret.clone(),
        None => random()?,
    };
    let text = format!(
        "# Development secrets of the local gateway, written by `shop up` (random per machine).\n\
         [gateway.auth]\nhs256_secret = \"{}\"\n[gateway.payment]\nsecret = \"{}\"\n",
        token_secret.expose(),
        payment_secret.expose()
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    auth.hs256_secret = Some(token_secret);
    config.gateway.payment.secret = Some(payment_secret);
    Ok(())
}

/// The command that runs the gateway of the local stack as NATS user `gateway`.
fn gateway_command(exe: &Path, config: &Config) -> Command {
    let mut command = Command::new(exe);
    let secret = |s: &Option<shop_gateway::Secret>| {
        s.as_ref()
            .map(|s| s.expose().to_owned())
            .unwrap_or_default()
    };
    command
        .arg("gateway")
        .env("SHOP_NATS__URL", &config.nats.url)
        .env("SHOP_NATS__USER", "gateway")
        .env("SHOP_NATS__PASSWORD", "gateway-dev")
        .env("SHOP_GATEWAY__LISTEN", config.gateway.listen.to_string())
        .env(
            "SHOP_GATEWAY__AUTH__HS256_SECRET",
            secret(&config.gateway.auth.hs256_secret),
        )
        .env(
            "SHOP_GATEWAY__PAYMENT__SECRET",
            secret(&config.gateway.payment.secret),
        )
        // The local stack is a development stack: the live-room page gets its pay button.
        .env("SHOP_GATEWAY__DEV_MODE", "true")
        .stdin(Stdio::null());
    command
}

/// The cluster of nats-config/cluster/node-<n>.conf on consecutive ports from `nats_port`,
/// each node's store and log in `.data/nats-cluster/shop-<n>/`.
fn start_cluster(
    config: &Config,
    root: &Path,
    data: &Path,
    nodes: usize,
) -> anyhow::Result<NatsCluster> {
    let specs = local_cluster_specs(
        &root.join(&config.dev.nats_server_bin),
        &root.join(&config.dev.nats_cluster_dir),
        "shop",
        config.dev.nats_port,
        nodes,
        &data.join("nats-cluster"),
    )?;
    NatsCluster::start(specs).context("starting the nats-server cluster")
}

/// The command that runs a worker of `kind` as its own NATS user, with extra `SHOP_*`
/// settings.
pub(super) fn worker_command(
    exe: &Path,
    config: &Config,
    kind: &str,
    password: &str,
    extra_env: &[(&str, &str)],
) -> Command {
    let mut command = Command::new(exe);
    command
        .arg(kind)
        .env("SHOP_NATS__URL", &config.nats.url)
        .env("SHOP_NATS__REPLICAS", config.nats.replicas.to_string())
        .env("SHOP_NATS__USER", kind)
        .env("SHOP_NATS__PASSWORD", password)
        .env("SHOP_GOODS__DATABASE_URL", &config.goods.database_url)
        .env("SHOP_STOCK__DATABASE_URL", &config.stock.database_url)
        .env("SHOP_ORDER__DATABASE_URL", &config.order.database_url)
        .env(
            format!("SHOP_{}__MIGRATE_ON_START", kind.to_uppercase()),
            "false",
        )
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null());
    command
}

/// Connects as `name`, waits until every worker kind answers, and seeds the demo room with
/// `stock` of each goods; returns the connection.
pub(super) async fn serving_and_seeded(
    config: &Config,
    name: &str,
    stock: i64,
) -> anyhow::Result<async_nats::Client> {
    let admin = shop_kit::server::connect(&config.nats_target(name, None))
        .await
        .context("connecting to NATS")?;
    for (kind, _) in WORKERS {
        wait_for_service(&admin, kind, Duration::from_secs(60)).await?;
    }
    super::seed::seed(&admin, 1, stock)
        .await
        .context("seeding demo data")?;
    Ok(admin)
}

/// Waits until `$SRV.PING.<service>` is answered, or fails after `within`.
async fn wait_for_service(
    client: &async_nats::Client,
    service: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let subject = format!("$SRV.PING.{service}");
    loop {
        let ping = async_nats::Request::new().timeout(Some(Duration::from_millis(500)));
        if client.send_request(subject.clone(), ping).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the {service} worker did not answer {subject} within {}s",
                within.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
