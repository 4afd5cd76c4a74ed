//! The servers shared by every test of one run: started on first use on a thread that lives
//! as long as the test process, and killed by the kernel when it exits (PR_SET_PDEATHSIG),
//! whether the tests passed, failed or the run was interrupted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};

use shop_devstack::{free_port, NatsServer, NatsServerSpec, PostgresCluster, PostgresSpec};

/// NATS accounts prepared in the server config; each test takes the next one.
pub const ACCOUNTS: usize = 200;
/// Password of every generated user (loopback-only test server).
pub const PASSWORD: &str = "test";

pub struct Stack {
    pub nats_url: String,
    pub postgres_port: u16,
    pub dir: PathBuf,
    next_account: AtomicUsize,
}

static STACK: OnceLock<Stack> = OnceLock::new();

/// The shared servers, started on first call.
pub fn stack() -> &'static Stack {
    STACK.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("test-servers".into())
            .spawn(move || {
                let started = start();
                match started {
                    Ok((stack, nats, postgres)) => {
                        tx.send(Ok(stack)).ok();
                        // Keep the servers (and this thread, which they are bound to) alive
                        // until the process exits.
                        let _keep = (nats, postgres);
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => {
                        tx.send(Err(e)).ok();
                    }
                }
            })
            .expect("spawning the server thread");
        rx.recv()
            .expect("server thread died")
            .unwrap_or_else(|e| panic!("test servers: {e}"))
    })
}

impl Stack {
    /// A fresh account index for one test.
    pub fn take_account(&self) -> usize {
        let n = self.next_account.fetch_add(1, Ordering::SeqCst);
        assert!(
            n < ACCOUNTS,
            "more than {ACCOUNTS} tests in one run: raise stack::ACCOUNTS"
        );
        n
    }

    pub fn postgres_url(&self, database: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{database}",
            shop_devstack::SUPERUSER,
            self.postgres_port
        )
    }
}

pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub fn nats_server_binary() -> PathBuf {
    std::env::var_os("SHOP_TEST_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join(".tools/venv/bin/nats-server"))
}

fn start() -> Result<(Stack, NatsServer, PostgresCluster), String> {
    let dir = std::env::temp_dir().join(format!("shop-it-{}", std::process::id()));
    remove_stale_dirs();
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("nats.conf");
    std::fs::write(&config, server_config(ACCOUNTS)).map_err(|e| e.to_string())?;
    let nats = NatsServer::start(NatsServerSpec {
        binary: nats_server_binary(),
        config,
        port: free_port().map_err(|e| e.to_string())?,
        monitor_port: None,
        store_dir: dir.join("jetstream"),
        log_file: dir.join("nats-server.log"),
        cluster: None,
    })
    .map_err(|e| e.to_string())?;
    let postgres = PostgresCluster::start(PostgresSpec {
        bin_dir: None,
        data_dir: dir.join("pg"),
        port: free_port().map_err(|e| e.to_string())?,
        log_file: dir.join("postgres.log"),
        throwaway: true,
    })
    .map_err(|e| e.to_string())?;
    let stack = Stack {
        nats_url: nats.url(),
        postgres_port: postgres.port(),
        dir,
        next_account: AtomicUsize::new(0),
    };
    Ok((stack, nats, postgres))
}

/// A server config with `accounts` isolated accounts `A<n>`, each with the worker users
/// `a<n>-goods|stock|order|gateway` (the permission sets of nats-config/permissions.conf) and an
/// all-powerful `a<n>-admin` for the test itself.
pub fn server_config(accounts: usize) -> String {
    server_config_with_password(accounts, PASSWORD)
}

/// [`server_config`] with another password for every user (the secrets test uses a
/// distinctive one, to look for it in logs).
pub fn server_config_with_password(accounts: usize, password: &str) -> String {
    // Inlined rather than `include`d: include paths are relative to the including file,
    // which lives in a temporary directory.
    let path = project_root().join("nats-config/permissions.conf");
    let permissions =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut conf = format!(
        "{permissions}\njetstream {{ max_memory_store: 512MB, max_file_store: 8GB }}\naccounts {{\n"
    );
    for n in 0..accounts {
        let _ = writeln!(
            conf,
            "  A{n}: {{ jetstream: enabled, users: [\n\
             \x20   {{ user: a{n}-goods, password: \"{password}\", permissions: $GOODS_PERMISSIONS }}\n\
             \x20   {{ user: a{n}-stock, password: \"{password}\", permissions: $STOCK_PERMISSIONS }}\n\
             \x20   {{ user: a{n}-order, password: \"{password}\", permissions: $ORDER_PERMISSIONS }}\n\
             \x20   {{ user: a{n}-gateway, password: \"{password}\", permissions: $GATEWAY_PERMISSIONS }}\n\
             \x20   {{ user: a{n}-admin, password: \"{password}\", permissions: $ADMIN_PERMISSIONS }}\n  ] }}"
        );
    }
    conf.push_str("}\n");
    conf
}

/// Removes `shop-it-<pid>` directories whose process is gone (runs that were killed).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("shop-it-")) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
