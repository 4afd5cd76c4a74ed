//! One test's world: an account on the shared nats-server, databases, worker processes.

use shop_contracts::partition::{PartitionMap, ORDER_MAP_KEY, STOCK_MAP_KEY};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use shop_contracts::error::{HEADER_ERROR, HEADER_ERROR_CODE};
use shop_contracts::ErrorBody;
use shop_devstack::{
    cluster_specs, free_port, NatsCluster, NatsServer, NatsServerSpec, PostgresCluster,
    PostgresSpec,
};

use crate::stack::{self, stack, PASSWORD};

/// The kinds of worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    Goods,
    Stock,
    Order,
}

impl Worker {
    pub fn name(self) -> &'static str {
        match self {
            Worker::Goods => "goods",
            Worker::Stock => "stock",
            Worker::Order => "order",
        }
    }

    /// The key of its partition map, for the kinds that are partitioned.
    fn map_key(self) -> Option<&'static str> {
        match self {
            Worker::Goods => None,
            Worker::Stock => Some(STOCK_MAP_KEY),
            Worker::Order => Some(ORDER_MAP_KEY),
        }
    }

    /// Its `SHOP_<KIND>__PARTITION` setting.
    fn partition_setting(self) -> &'static str {
        match self {
            Worker::Goods => "SHOP_GOODS__PARTITION",
            Worker::Stock => "SHOP_STOCK__PARTITION",
            Worker::Order => "SHOP_ORDER__PARTITION",
        }
    }

    /// Its `SHOP_<KIND>__DATABASE_URL` setting.
    fn database_setting(self) -> &'static str {
        match self {
            Worker::Goods => "SHOP_GOODS__DATABASE_URL",
            Worker::Stock => "SHOP_STOCK__DATABASE_URL",
            Worker::Order => "SHOP_ORDER__DATABASE_URL",
        }
    }
}

/// How many partitions stock and orders have in a test (each a database of its own, with
/// worker processes of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions {
    pub stock: u16,
    pub order: u16,
}

impl Partitions {
    /// What `SHOP_TEST_STOCK_PARTITIONS` and `SHOP_TEST_ORDER_PARTITIONS` say (1 each unless
    /// set): `./dev test` runs some tests again over 3 of each.
    pub fn from_env() -> Partitions {
        let count = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1)
        };
        Partitions {
            stock: count("SHOP_TEST_STOCK_PARTITIONS"),
            order: count("SHOP_TEST_ORDER_PARTITIONS"),
        }
    }

    /// The partitions of `kind` (1 for goods).
    pub fn of(self, kind: Worker) -> u16 {
        match kind {
            Worker::Goods => 1,
            Worker::Stock => self.stock,
            Worker::Order => self.order,
        }
    }
}

/// A contract error reply: the two headers and the body.
#[derive(Debug, Clone)]
pub struct ErrorReply {
    pub status: String,
    pub message: String,
    pub body: ErrorBody,
}

impl ErrorReply {
    pub fn code(&self) -> &'static str {
        self.body.error.code.as_str()
    }
}

/// A worker running as a child process of the test.
pub struct WorkerProcess {
    pub kind: Worker,
    /// The partition it serves (stock and order workers only).
    pub partition: Option<u16>,
    child: Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// SIGKILL: the process gets no chance to clean up, as in a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (and reaps it if so).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM, then waits up to `within` for the process to exit; its status, or `None` if
    /// it is still running then.
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        crate::wait::terminate(&mut self.child, within).await
    }

    /// What the process has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `within` for the process to exit by itself; `false` if it did not.
    pub async fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.has_exited() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// PEM files of a test PKI for a TLS nats-server: the CA, the server's certificate (for
/// 127.0.0.1 and localhost) and a client certificate, all signed by the CA. The test makes
/// them at run time; nothing secret is committed.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub struct TestApp {
    pub account: usize,
    nats_url: String,
    /// Password of every user of the account.
    password: String,
    /// Set: the nats-server requires TLS with client certificates, and every client of the
    /// test (its own, the workers, `shop` commands) connects with these files.
    tls: Option<TlsFiles>,
    /// The test's own nats-server or cluster, for tests that kill and restart servers.
    own_nats: Option<OwnNats>,
    /// The test's own PostgreSQL server, for tests that stop and restart it.
    own_postgres: Option<std::sync::Mutex<PostgresCluster>>,
    client: async_nats::Client,
    /// Extra `SHOP_*` settings passed to every worker started from now on.
    pub env: Vec<(String, String)>,
    workers: Vec<WorkerProcess>,
    /// Stock and order partitions (1 unless the test asks for more, or the environment
    /// sets it for all: [`Partitions::from_env`]).
    partitions: Partitions,
}

impl TestApp {
    /// A world with one worker process of each kind in `kinds`, all answering.
    pub async fn start(kinds: &[Worker]) -> TestApp {
        Self::start_with_env(kinds, &[]).await
    }

    /// Like [`TestApp::start`], with `SHOP_*` settings for the workers.
    pub async fn start_with_env(kinds: &[Worker], env: &[(&str, &str)]) -> TestApp {
        let stack = stack();
        let account = stack.take_account();
        let app = TestApp::connect(account, stack.nats_url.clone(), None, PASSWORD, None).await;
        app.with_workers(kinds, env).await
    }

    /// Like [`TestApp::start_with_env`] but on a nats-server of the test's own, which
    /// [`TestApp::restart_nats`] can restart without touching other tests.
    pub async fn start_with_own_nats(kinds: &[Worker], env: &[(&str, &str)]) -> TestApp {
        let stack = stack();
        let account = stack.take_account();
        let dir = stack.dir.join(format!("own-nats-{account}"));
        std::fs::create_dir_all(&dir).expect("creating the test's nats dir");
        let config = dir.join("nats.conf");
        // The same accounts layout as the shared server, so user names line up.
        std::fs::write(&config, stack::server_config(stack::ACCOUNTS)).expect("writing nats.conf");
        let server = NatsServer::start(NatsServerSpec {
            binary: stack::nats_server_binary(),
            config,
            port: free_port().expect("a free port"),
            monitor_port: None,
            store_dir: dir.join("jetstream"),
            log_file: dir.join("nats-server.log"),
            cluster: None,
        })
        .expect("starting the test's own nats-server");
        let app = TestApp::connect(
            account,
            server.url(),
            Some(OwnNats::Server(server)),
            PASSWORD,
            None,
        )
        .await;
        app.with_workers(kinds, env).await
    }

    /// Like [`TestApp::start_with_own_nats`], on a nats-server that requires TLS and
    /// verifies client certificates (`tls` from the test's PKI), with `password` for every
    /// user. Workers connect to `tls://` with `nats.tls_ca`, `nats.tls_cert`, `nats.tls_key`.
    pub async fn start_with_own_tls_nats(
        kinds: &[Worker],
        env: &[(&str, &str)],
        tls: &TlsFiles,
        password: &str,
    ) -> TestApp {
        let stack = stack();
        let account = stack.take_account();
        let dir = stack.dir.join(format!("own-nats-{account}"));
        std::fs::create_dir_all(&dir).expect("creating the test's nats dir");
        let config = dir.join("nats.conf");
        let conf = format!(
            "{}\ntls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 5\n}}\n",
            stack::server_config_with_password(stack::ACCOUNTS, password),
            tls.server_cert.display(),
            tls.server_key.display(),
            tls.ca.display(),
        );
        std::fs::write(&config, conf).expect("writing nats.conf");
        let server = NatsServer::start(NatsServerSpec {
            binary: stack::nats_server_binary(),
            config,
            port: free_port().expect("a free port"),
            monitor_port: None,
            store_dir: dir.join("jetstream"),
            log_file: dir.join("nats-server.log"),
            cluster: None,
        })
        .expect("starting the test's own nats-server");
        let url = format!("tls://127.0.0.1:{}", server.port());
        let app = TestApp::connect(
            account,
            url,
            Some(OwnNats::Server(server)),
            password,
            Some(tls.clone()),
        )
        .await;
        app.with_workers(kinds, env).await
    }

    /// Like [`TestApp::start_with_env`] but on a JetStream cluster of `nodes` nats-servers of
    /// the test's own: the workers get every node's URL and create streams and buckets with
    /// `nodes` replicas (`SHOP_NATS__REPLICAS`); [`TestApp::nats_cluster`] kills and
    /// restarts nodes.
    pub async fn start_with_nats_cluster(
        kinds: &[Worker],
        env: &[(&str, &str)],
        nodes: usize,
    ) -> TestApp {
        let app = Self::own_nats_cluster(&vec![Vec::new(); nodes]).await;
        let replicas = nodes.to_string();
        let mut env = env.to_vec();
        env.push(("SHOP_NATS__REPLICAS", &replicas));
        app.with_workers(kinds, &env).await
    }

    /// A cluster of its own, node `i` with the JetStream placement tags `node_tags[i]`
    /// (`server_tags`), no workers yet, orders over `order_partitions`: for tests that place
    /// partitions' streams on nodes of their own.
    pub async fn start_with_tagged_nats_cluster(
        node_tags: &[Vec<String>],
        order_partitions: u16,
    ) -> TestApp {
        let mut app = Self::own_nats_cluster(node_tags).await;
        app.partitions.order = order_partitions;
        app.with_workers(&[], &[]).await
    }

    /// Starts a cluster of `node_tags.len()` nodes for a new account and connects to it.
    async fn own_nats_cluster(node_tags: &[Vec<String>]) -> TestApp {
        let stack = stack();
        let account = stack.take_account();
        let dir = stack.dir.join(format!("own-cluster-{account}"));
        std::fs::create_dir_all(&dir).expect("creating the test's cluster dir");
        let configs: Vec<PathBuf> = node_tags
            .iter()
            .enumerate()
            .map(|(i, tags)| {
                let config = dir.join(format!("nats-{i}.conf"));
                let mut text = stack::server_config(stack::ACCOUNTS);
                if !tags.is_empty() {
                    let quoted: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
                    text.push_str(&format!("\nserver_tags: [{}]\n", quoted.join(", ")));
                }
                std::fs::write(&config, text).expect("writing a node's nats.conf");
                config
            })
            .collect();
        let ports: Vec<(u16, u16, u16)> = node_tags
            .iter()
            .map(|_| {
                let port = || free_port().expect("a free port");
                (port(), port(), port())
            })
            .collect();
        let specs = cluster_specs(
            &stack::nats_server_binary(),
            |i| configs[i].clone(),
            "shop",
            &ports,
            &dir,
        );
        // Started (and restarted) on a runtime thread, as the test's own server is: the
        // nodes die with that thread (PR_SET_PDEATHSIG), which lives as long as the test.
        let cluster = NatsCluster::start(specs).expect("starting the test's nats-server cluster");
        TestApp::connect(
            account,
            cluster.url(),
            Some(OwnNats::Cluster(cluster)),
            PASSWORD,
            None,
        )
        .await
    }

    /// Like [`TestApp::start_with_env`] with stock and orders spread over `partitions`
    /// (`PartitionMap::even`), whatever the environment says.
    pub async fn start_with_partitions(
        kinds: &[Worker],
        env: &[(&str, &str)],
        partitions: Partitions,
    ) -> TestApp {
        let stack = stack();
        let account = stack.take_account();
        let mut app = TestApp::connect(account, stack.nats_url.clone(), None, PASSWORD, None).await;
        app.partitions = partitions;
        app.with_workers(kinds, env).await
    }

    /// Like [`TestApp::start_with_env`] with stock spread over `partitions` partitions
    /// (`PartitionMap::even`), whatever `SHOP_TEST_STOCK_PARTITIONS` says.
    pub async fn start_with_stock_partitions(
        kinds: &[Worker],
        env: &[(&str, &str)],
        partitions: u16,
    ) -> TestApp {
        let map = PartitionMap::even(partitions).expect("1..=256 partitions");
        Self::start_with_stock_map(kinds, env, partitions, &map).await
    }

    /// Like [`TestApp::start_with_stock_partitions`], routed by `map` from the start.
    pub async fn start_with_stock_map(
        kinds: &[Worker],
        env: &[(&str, &str)],
        partitions: u16,
        map: &PartitionMap,
    ) -> TestApp {
        let stack = stack();
        let account = stack.take_account();
        let mut app = TestApp::connect(account, stack.nats_url.clone(), None, PASSWORD, None).await;
        app.partitions.stock = partitions;
        app.write_map(Worker::Stock, map).await;
        app.with_workers(kinds, env).await
    }

    async fn with_workers(mut self, kinds: &[Worker], env: &[(&str, &str)]) -> TestApp {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for kind in [Worker::Stock, Worker::Order] {
            let count = self.partitions.of(kind);
            if count > 1 && self.map(kind).await.1 == 0 {
                self.write_map(kind, &PartitionMap::even(count).expect("1..=256"))
                    .await;
            }
        }
        for kind in kinds {
            self.spawn(*kind).await;
        }
        self
    }

    async fn connect(
        account: usize,
        nats_url: String,
        own_nats: Option<OwnNats>,
        password: &str,
        tls: Option<TlsFiles>,
    ) -> TestApp {
        let mut options = async_nats::ConnectOptions::with_user_and_password(
            format!("a{account}-admin"),
            password.into(),
        )
        .max_reconnects(None);
        if let Some(tls) = &tls {
            options = options
                .require_tls(true)
                .add_root_certificates(tls.ca.clone())
                .add_client_certificate(tls.client_cert.clone(), tls.client_key.clone());
        }
        let client = options
            // One URL or the nodes of a cluster, comma-separated as the workers take them.
            .connect(nats_url.split(',').collect::<Vec<_>>())
            .await
            .expect("connecting the test client");
        TestApp {
            account,
            nats_url,
            password: password.to_owned(),
            tls,
            own_nats,
            own_postgres: None,
            client,
            env: Vec::new(),
            workers: Vec::new(),
            partitions: Partitions::from_env(),
        }
    }

    /// The URL of the test's nats-server.
    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// The test's NATS client (the account's admin user).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client.clone())
    }

    /// The database URL of a worker kind for this test.
    pub fn database_url(&self, kind: Worker) -> String {
        self.named_database_url(&format!("t{}_{}", self.account, kind.name()))
    }

    /// The database of `kind`'s partition `p` (partition 0's is the kind's database).
    pub fn partition_database_url(&self, kind: Worker, p: u16) -> String {
        match p {
            0 => self.database_url(kind),
            p => self.named_database_url(&format!("t{}_{}_p{p}", self.account, kind.name())),
        }
    }

    /// The database of stock partition `p` (partition 0's is the stock database).
    pub fn stock_database_url(&self, p: u16) -> String {
        self.partition_database_url(Worker::Stock, p)
    }

    pub fn stock_partitions(&self) -> u16 {
        self.partitions.stock
    }

    pub fn partitions(&self) -> Partitions {
        self.partitions
    }

    /// The JetStream streams of the order partition owning `sn` by the map this app started
    /// with (`PartitionMap::even`): where its own worker puts its half message and deadline.
    pub fn order_streams_of(&self, sn: i64) -> shop_contracts::txn::OrderStreams {
        let map = PartitionMap::even(self.partitions.order).expect("1..=256 partitions");
        let sn = shop_contracts::OrderSn::new(sn).expect("a valid order_sn");
        shop_contracts::txn::OrderStreams::of(
            map.owner(shop_contracts::partition::Slot::of_order(sn)),
        )
    }

    /// Messages stored in the streams of every order partition that `is_kind` names
    /// (`OrderStreams::is_txn_stream`, `is_timers_stream`); `None` if one cannot be read.
    pub async fn messages_in_order_streams(&self, is_kind: fn(&str) -> bool) -> Option<u64> {
        let js = self.jetstream();
        let mut total = 0;
        for of in shop_contracts::txn::OrderStreams::all(self.partitions.order) {
            for name in [of.txn_stream(), of.timers_stream()] {
                if !is_kind(&name) {
                    continue;
                }
                // A partition's streams exist once its worker has started.
                let mut stream = js.get_stream(&name).await.ok()?;
                total += stream.info().await.ok()?.state.messages;
            }
        }
        Some(total)
    }

    /// Whether `goods` lie in more than one stock partition by the map this app started with
    /// (`PartitionMap::even`): then an order of them deducts in each, and a refusal in one
    /// gives back the others (tombstones included) instead of taking nothing anywhere.
    pub fn stock_split(&self, goods: &[i64]) -> bool {
        let map = PartitionMap::even(self.partitions.stock).expect("1..=256 partitions");
        goods
            .iter()
            .any(|&g| map.owner_of(g) != map.owner_of(goods[0]))
    }

    /// A pool on every partition's database of `kind`, partition 0 first.
    pub async fn dbs(&self, kind: Worker) -> Vec<sqlx::PgPool> {
        let mut pools = Vec::new();
        for p in 0..self.partitions.of(kind) {
            pools.push(pool(&self.partition_database_url(kind, p)).await);
        }
        pools
    }

    /// A pool on every stock partition's database, partition 0 first.
    pub async fn stock_dbs(&self) -> Vec<sqlx::PgPool> {
        self.dbs(Worker::Stock).await
    }

    /// A pool on every order partition's database, partition 0 first.
    pub async fn order_dbs(&self) -> Vec<sqlx::PgPool> {
        self.dbs(Worker::Order).await
    }

    /// A pool on the database of the order partition that holds order `sn` now (by the
    /// slot it carries and the order map).
    pub async fn order_db_of(&self, sn: i64) -> sqlx::PgPool {
        let sn = shop_contracts::OrderSn::new(sn).expect("an order_sn");
        let (store, _) = self.map(Worker::Order).await;
        let map = shop_kit::partitions::read(&store, ORDER_MAP_KEY)
            .await
            .expect("reading the order map")
            .map;
        let owner = map.owner(shop_contracts::partition::Slot::of_order(sn));
        pool(&self.partition_database_url(Worker::Order, owner.get())).await
    }

    /// The sum over every order partition's database of the count `sql` selects.
    pub async fn order_count(&self, sql: &str) -> i64 {
        let mut total = 0;
        for db in self.order_dbs().await {
            total += sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&db)
                .await
                .expect("counting in an order partition");
        }
        total
    }

    /// Writes `map` as the next revision of the stock partition map.
    pub async fn write_stock_map(&self, map: &PartitionMap) {
        self.write_map(Worker::Stock, map).await;
    }

    /// Writes `map` as the next revision of `kind`'s partition map.
    pub async fn write_map(&self, kind: Worker, map: &PartitionMap) {
        let key = kind.map_key().expect("a partitioned kind");
        let (store, now) = self.map(kind).await;
        shop_kit::partitions::write(&store, key, map, now)
            .await
            .expect("writing a partition map");
    }

    /// The partition bucket and `kind`'s map revision now (0: never written).
    async fn map(&self, kind: Worker) -> (async_nats::jetstream::kv::Store, u64) {
        let key = kind.map_key().expect("a partitioned kind");
        let store = shop_kit::partitions::open(&self.jetstream(), 1)
            .await
            .expect("the partition bucket");
        let now = shop_kit::partitions::read(&store, key)
            .await
            .expect("reading a partition map");
        (store, now.revision)
    }

    fn named_database_url(&self, name: &str) -> String {
        match &self.own_postgres {
            Some(cluster) => cluster.lock().expect("the test's postgres").url(name),
            None => stack().postgres_url(name),
        }
    }

    /// Like [`TestApp::start_with_env`] but with a PostgreSQL server of the test's own, which
    /// [`TestApp::restart_postgres`] stops and starts again.
    pub async fn start_with_own_postgres(kinds: &[Worker], env: &[(&str, &str)]) -> TestApp {
        let stack = stack();
        let mut app = TestApp::connect(
            stack.take_account(),
            stack.nats_url.clone(),
            None,
            PASSWORD,
            None,
        )
        .await;
        let dir = stack.dir.join(format!("own-postgres-{}", app.account));
        let cluster = PostgresCluster::start(PostgresSpec {
            bin_dir: None,
            data_dir: dir.join("data"),
            port: free_port().expect("a free port"),
            log_file: dir.join("postgres.log"),
            // Durable: its tests shut it down immediately, and a commit acknowledged with
            // synchronous_commit off may still be in shared memory when that happens.
            throwaway: false,
        })
        .expect("starting the test's own postgres");
        app.own_postgres = Some(std::sync::Mutex::new(cluster));
        app.with_workers(kinds, env).await
    }

    /// Stops the test's own PostgreSQL server (a fast or an immediate shutdown), runs
    /// `while_down`, and starts it again on the same data.
    pub async fn restart_postgres<F: std::future::Future<Output = ()>>(
        &self,
        fast: bool,
        while_down: F,
    ) {
        let cluster = self
            .own_postgres
            .as_ref()
            .expect("a test with its own postgres");
        {
            let mut cluster = cluster.lock().expect("the test's postgres");
            if fast {
                cluster.stop_fast();
            } else {
                cluster.stop();
            }
        }
        while_down.await;
        cluster
            .lock()
            .expect("the test's postgres")
            .restart()
            .expect("restarting the test's postgres");
    }

    /// A pool on a worker's database, for checking invariants directly.
    pub async fn db(&self, kind: Worker) -> sqlx::PgPool {
        pool(&self.database_url(kind)).await
    }

    /// Starts one more worker process of `kind` (of stock and order: one for each partition)
    /// and waits until it answers `$SRV.PING`; the index of the (first) process started.
    pub async fn spawn(&mut self, kind: Worker) -> usize {
        let processes: Vec<WorkerProcess> = (0..self.partitions.of(kind))
            .map(|p| self.spawn_partition(kind, p, &[]))
            .collect();
        // Killed processes no longer answer: count only the live ones.
        let mut expected = processes.len();
        for worker in &mut self.workers {
            if worker.kind == kind && !worker.has_exited() {
                expected += 1;
            }
        }
        let first = self.workers.len();
        self.workers.extend(processes);
        self.wait_for_workers(kind, expected).await;
        first
    }

    /// Starts a stock worker of partition `p` on its own database, without waiting for it.
    pub fn spawn_stock_partition(&self, p: u16, extra_env: &[(&str, &str)]) -> WorkerProcess {
        self.spawn_partition(Worker::Stock, p, extra_env)
    }

    /// Starts a `kind` worker of partition `p` on its own database, without waiting for it.
    /// Partition 0 is a plain worker, so a test's own `SHOP_<KIND>__*` settings (a database
    /// that is away, say) still apply to it.
    pub fn spawn_partition(
        &self,
        kind: Worker,
        p: u16,
        extra_env: &[(&str, &str)],
    ) -> WorkerProcess {
        let partition = p.to_string();
        let url = self.partition_database_url(kind, p);
        let mut env: Vec<(&str, &str)> = Vec::new();
        if p > 0 {
            env.push((kind.partition_setting(), &partition));
            env.push((kind.database_setting(), &url));
        }
        env.extend_from_slice(extra_env);
        self.spawn_process(kind, &env)
    }

    /// The `SHOP_NATS__*` TLS settings of this test's clients (none without TLS).
    fn tls_env(&self) -> Vec<(&'static str, PathBuf)> {
        self.tls
            .iter()
            .flat_map(|tls| {
                [
                    ("SHOP_NATS__TLS_CA", tls.ca.clone()),
                    ("SHOP_NATS__TLS_CERT", tls.client_cert.clone()),
                    ("SHOP_NATS__TLS_KEY", tls.client_key.clone()),
                ]
            })
            .collect()
    }

    /// Starts a worker process without waiting for it, with extra environment.
    pub fn spawn_process(&self, kind: Worker, extra_env: &[(&str, &str)]) -> WorkerProcess {
        let log = stack().dir.join(format!(
            "t{}-{}-{}.log",
            self.account,
            kind.name(),
            free_port().unwrap_or(0)
        ));
        let file = std::fs::File::create(&log).expect("creating a worker log");
        let mut command = Command::new(shop_binary());
        command
            .arg(kind.name())
            .env("SHOP_NATS__URL", &self.nats_url)
            .env(
                "SHOP_NATS__USER",
                format!("a{}-{}", self.account, kind.name()),
            )
            .env("SHOP_NATS__PASSWORD", &self.password)
            .envs(self.tls_env())
            .env("SHOP_GOODS__DATABASE_URL", self.database_url(Worker::Goods))
            .env("SHOP_STOCK__DATABASE_URL", self.database_url(Worker::Stock))
            .env("SHOP_ORDER__DATABASE_URL", self.database_url(Worker::Order))
            .env("SHOP_LOG__FILTER", "info")
            // Tests fire bursts of hundreds of creates and check every reply; the bound on
            // creates in flight has its own test, which sets a small one.
            .env("SHOP_ORDER__MAX_CREATES_IN_FLIGHT", "1024")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file);
        // `./dev test` runs the order tests once more with the other timer mode: every order,
        // timer and close test must pass in both (a test that sets a mode itself wins).
        if let Ok(mode) = std::env::var("SHOP_TEST_ORDER_TIMER") {
            command.env("SHOP_ORDER__TIMER", mode);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let child = command.spawn().expect("starting a worker process");
        let partition = kind.map_key().map(|_| {
            extra_env
                .iter()
                .rev()
                .find(|(key, _)| *key == kind.partition_setting())
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(0)
        });
        WorkerProcess {
            kind,
            partition,
            child,
            log,
        }
    }

    /// Runs `shop <args>` to the end as this test's admin user, against its databases.
    pub fn run_shop(&self, args: &[&str]) -> std::process::Output {
        self.run_shop_with(args, &[])
    }

    /// [`TestApp::run_shop`] with more `SHOP_*` settings.
    pub fn run_shop_with(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        Command::new(shop_binary())
            .args(args)
            .envs(env.iter().copied())
            .env("SHOP_NATS__URL", &self.nats_url)
            .env("SHOP_NATS__USER", format!("a{}-admin", self.account))
            .env("SHOP_NATS__PASSWORD", &self.password)
            .envs(self.tls_env())
            .env("SHOP_GOODS__DATABASE_URL", self.database_url(Worker::Goods))
            .env("SHOP_STOCK__DATABASE_URL", self.database_url(Worker::Stock))
            .env(
                "SHOP_STOCK__PARTITION_DATABASES",
                self.partition_databases(Worker::Stock),
            )
            .env("SHOP_ORDER__DATABASE_URL", self.database_url(Worker::Order))
            .env(
                "SHOP_ORDER__PARTITION_DATABASES",
                self.partition_databases(Worker::Order),
            )
            .env("NO_COLOR", "1")
            .output()
            .expect("running shop")
    }

    /// Adopts a process from [`TestApp::spawn_process`] so it is killed with the app.
    pub fn adopt(&mut self, process: WorkerProcess) -> usize {
        self.workers.push(process);
        self.workers.len() - 1
    }

    /// Every partition's database of `kind`, comma-separated, as `partition_databases`
    /// takes them.
    fn partition_databases(&self, kind: Worker) -> String {
        (0..self.partitions.of(kind))
            .map(|p| self.partition_database_url(kind, p))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of a live worker process of stock partition `p`.
    pub fn stock_worker_of(&mut self, p: u16) -> Option<usize> {
        self.worker_of(Worker::Stock, p)
    }

    /// The index of a live `kind` worker process of partition `p`.
    pub fn worker_of(&mut self, kind: Worker, p: u16) -> Option<usize> {
        self.workers
            .iter_mut()
            .position(|w| w.kind == kind && w.partition == Some(p) && !w.has_exited())
    }

    pub fn worker(&mut self, index: usize) -> &mut WorkerProcess {
        &mut self.workers[index]
    }

    /// The lines of every worker's log that contain `needle` (e.g. `ERROR`).
    pub fn worker_log_lines(&self, needle: &str) -> String {
        self.workers
            .iter()
            .flat_map(|w| {
                std::fs::read_to_string(&w.log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .map(|l| format!("{}: {l}", w.kind.name()))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `count` distinct `kind` workers answer `$SRV.PING.<kind>`.
    pub async fn wait_for_workers(&self, kind: Worker, count: usize) {
        let subject = format!("$SRV.PING.{}", kind.name());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.ping_count(&subject).await >= count {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .workers
                    .iter()
                    .filter(|w| w.kind == kind)
                    .map(|w| std::fs::read_to_string(&w.log).unwrap_or_default())
                    .collect();
                panic!(
                    "{count} {} worker(s) did not answer within 60s; logs:\n{}",
                    kind.name(),
                    logs.join("\n---\n")
                );
            }
        }
    }

    async fn ping_count(&self, subject: &str) -> usize {
        let inbox = self.client.new_inbox();
        let Ok(mut replies) = self.client.subscribe(inbox.clone()).await else {
            return 0;
        };
        if self
            .client
            .publish_with_reply(subject.to_owned(), inbox, "".into())
            .await
            .is_err()
        {
            return 0;
        }
        let mut ids = std::collections::HashSet::new();
        while let Ok(Some(reply)) =
            tokio::time::timeout(Duration::from_millis(300), replies.next()).await
        {
            if let Ok(ping) = serde_json::from_slice::<Value>(&reply.payload) {
                ids.insert(ping["id"].as_str().unwrap_or_default().to_owned());
            }
        }
        ids.len()
    }

    /// Sends a request; `Ok(reply)` for a success body, `Err` for a contract error.
    pub async fn request(&self, subject: &str, body: impl Serialize) -> Result<Value, ErrorReply> {
        let payload = serde_json::to_vec(&body).expect("encodable request");
        self.request_raw(subject, payload).await
    }

    /// Sends raw bytes (for malformed-input tests).
    pub async fn request_raw(&self, subject: &str, payload: Vec<u8>) -> Result<Value, ErrorReply> {
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(Duration::from_secs(15)));
        let reply = self
            .client
            .send_request(subject.to_owned(), request)
            .await
            .unwrap_or_else(|e| panic!("{subject} did not answer: {e}"));
        contract_reply(subject, &reply)
    }

    /// Sends a request that must succeed.
    pub async fn ok(&self, subject: &str, body: impl Serialize) -> Value {
        match self.request(subject, body).await {
            Ok(reply) => reply,
            Err(e) => panic!("{subject} failed: {e:?}"),
        }
    }

    /// Sends a request that must fail with `code`; returns the error.
    pub async fn err(&self, subject: &str, body: impl Serialize, code: &str) -> ErrorReply {
        match self.request(subject, body).await {
            Ok(reply) => panic!("{subject} succeeded ({reply}) but {code} was expected"),
            Err(e) => {
                assert_eq!(e.code(), code, "{subject}: {e:?}");
                e
            }
        }
    }

    /// SIGKILLs and restarts the test's own nats-server on the same port and store.
    pub fn restart_nats(&mut self) {
        let Some(OwnNats::Server(server)) = self.own_nats.as_mut() else {
            panic!("restart_nats needs TestApp::start_with_own_nats");
        };
        server.kill();
        server.restart().expect("restarting nats-server");
    }

    /// The test's own cluster, to kill and restart its nodes.
    pub fn nats_cluster(&mut self) -> &mut NatsCluster {
        let Some(OwnNats::Cluster(cluster)) = self.own_nats.as_mut() else {
            panic!("nats_cluster needs TestApp::start_with_nats_cluster");
        };
        cluster
    }
}

/// Servers a test started for itself.
enum OwnNats {
    Server(NatsServer),
    Cluster(NatsCluster),
}

/// What a caller sees of one request sent while processes may die: a reply (a success body
/// or a contract error), or no reply.
#[derive(Debug)]
pub enum Answer {
    Reply(Result<Value, ErrorReply>),
    /// Nobody answered within the timeout.
    TimedOut,
    /// The server knew of no subscriber to the subject.
    NoResponders,
    /// The request could not be sent (the client's server is down, say).
    Failed(String),
}

/// Sends `body` on `client` and waits at most `timeout`; never panics on a missing reply,
/// so a load can run through kills (a reply that breaks the contract still panics).
pub async fn ask(
    client: &async_nats::Client,
    subject: &str,
    body: &impl Serialize,
    timeout: Duration,
) -> Answer {
    use async_nats::RequestErrorKind;
    let payload = serde_json::to_vec(body).expect("encodable request");
    let request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(timeout));
    match client.send_request(subject.to_owned(), request).await {
        Ok(reply) => Answer::Reply(contract_reply(subject, &reply)),
        Err(e) => match e.kind() {
            RequestErrorKind::TimedOut => Answer::TimedOut,
            RequestErrorKind::NoResponders => Answer::NoResponders,
            _ => Answer::Failed(e.to_string()),
        },
    }
}

/// A reply as the contract defines it: `Err` with both error headers and the body, or a
/// JSON success body. Anything else panics.
fn contract_reply(subject: &str, reply: &async_nats::Message) -> Result<Value, ErrorReply> {
    if let Some(headers) = reply.headers.as_ref() {
        if let Some(status) = headers.get(HEADER_ERROR_CODE) {
            let message = headers
                .get(HEADER_ERROR)
                .map(|v| v.to_string())
                .unwrap_or_default();
            let body: ErrorBody = serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
                panic!(
                    "{subject}: error reply without a contract body ({e}): {:?}",
                    String::from_utf8_lossy(&reply.payload)
                )
            });
            return Err(ErrorReply {
                status: status.to_string(),
                message,
                body,
            });
        }
    }
    Ok(serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
        panic!(
            "{subject}: reply is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&reply.payload)
        )
    }))
}

/// The `shop` binary under test.
pub fn shop_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOP_TEST_SHOP_BIN") {
        return PathBuf::from(path);
    }
    // target/debug/deps/it-<hash> -> target/debug/shop
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("shop");
    assert!(
        bin.exists(),
        "{} not built: run ./dev test (or cargo build -p shop)",
        bin.display()
    );
    bin
}

async fn pool(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .expect("connecting to the worker database")
}
