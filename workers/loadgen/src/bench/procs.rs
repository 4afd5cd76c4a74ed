//! Which processes in /proc make up the stack under test: the workers, the nats-server, and
//! the PostgreSQL cluster with its backends. [`rss`](super::rss) and [`cpu`](super::cpu)
//! both read them from here.
//!
//! A stack is found through what it listens on and connects to, never through names or
//! conventions that vary with how it was started: the binary may be a copy with another
//! name (`shop-v6`) or read `shop (deleted)` after a rebuild, and `shop up`, the test suite
//! and scripts each spell their settings their own way. So:
//! - the nats-servers are those whose `-p` is the port of one of the bench's NATS URLs (a
//!   cluster's nodes are summed as one component);
//! - the postmaster is the `postgres` whose `-p` is the port of the bench's database URLs,
//!   and its children are the rest of the cluster;
//! - a worker is a process whose first argument is `goods`, `stock`, `order` or `gateway`
//!   (the HTTP gateway counts as one: the one whose `SHOP_GATEWAY__LISTEN` is the bench's
//!   `gateway.listen`) and whose environment has
//!   `SHOP_NATS__URL` on one of the bench's NATS ports (`shop up` and the test
//!   suite pass it to every worker). Several stacks can share one nats-server (the test
//!   suite runs one account per test), so a worker whose environment names a database for
//!   its kind counts only when that is the bench's database for the kind.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

use crate::BenchConfig;

/// The worker kinds, in the order the bench reports them (the order of a create's path,
/// from the worker that answers it).
pub const KINDS: [&str; 3] = ["order", "stock", "goods"];

/// The HTTP gateway: a process of the stack like a worker, in front of them, without a
/// database.
pub const GATEWAY: &str = "gateway";

/// What the bench's configuration says about where its stack listens.
#[derive(Debug, Clone)]
pub struct Stack {
    nats_ports: BTreeSet<u16>,
    postgres_ports: BTreeSet<u16>,
    /// Each worker kind with the port and name of its database.
    databases: Vec<(&'static str, u16, String)>,
    /// Where the bench's gateway listens: of the gateways on the bench's NATS (the test
    /// suite runs many, one per account), the one that listens there is the stack's.
    gateway_listen: std::net::SocketAddr,
    /// What a worker uses without `SHOP_NATS__URL` or `SHOP_GATEWAY__LISTEN`.
    unset_nats_url: String,
    unset_gateway_listen: std::net::SocketAddr,
}

impl Stack {
    pub fn of(config: &BenchConfig) -> Stack {
        let databases: Vec<_> = KINDS
            .into_iter()
            .flat_map(|kind| {
                let urls: Vec<&str> = match kind {
                    "goods" => vec![config.goods.url.as_str()],
                    "stock" => config.stock_databases(),
                    _ => config.order_databases(),
                };
                urls.into_iter().filter_map(move |url| {
                    let (port, database) = database_of(url)?;
                    Some((kind, port, database))
                })
            })
            .collect();
        Stack {
            nats_ports: nats_ports(&config.nats.url),
            postgres_ports: databases.iter().map(|(_, port, _)| *port).collect(),
            databases,
            gateway_listen: config.gateway_listen,
            unset_nats_url: config.unset_nats_url.clone(),
            unset_gateway_listen: config.unset_gateway_listen,
        }
    }

    /// The bench's databases, one per kind in [`KINDS`] order, without repeats.
    pub fn database_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for (_, _, name) in &self.databases {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        names
    }
}

/// What a process is to the stack.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    /// A worker of that kind (`goods`, `stock`, `order`).
    Worker(String),
    Nats,
    /// A PostgreSQL backend serving one of the bench's databases.
    Database(String),
    /// The postmaster.
    Postmaster,
    /// Any other child of the postmaster: walwriter, checkpointer, autovacuum, backends of
    /// other databases.
    PostgresOther,
}

/// One process of the stack, with its /proc/<pid>/stat as read during the scan.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    pub component: Component,
    pub stat: Stat,
}

/// The fields of /proc/<pid>/stat the bench uses, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// utime + stime (fields 14 and 15): the CPU this process has used.
    pub own_ticks: u64,
    /// cutime + cstime (fields 16 and 17): the CPU of its children that exited and that it
    /// waited for.
    pub children_ticks: u64,
}

/// Parses /proc/<pid>/stat. Field 2, `(comm)`, may hold spaces and parentheses (a process
/// can name itself anything), so the fields are counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let (_, rest) = stat.rsplit_once(')')?;
    // After comm: field 3 (state) is index 0, so field n is index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        own_ticks: field(14)? + field(15)?,
        children_ticks: field(16)? + field(17)?,
    })
}

/// The processes of `stack` running now. Processes that vanish or cannot be read while the
/// scan runs are skipped: the scan is a snapshot, not an inventory.
pub fn scan(stack: &Stack) -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let all: Vec<(u32, Vec<String>, Stat)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let dir = Path::new("/proc").join(pid.to_string());
            let stat = parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
            let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
            let args = cmdline
                .split(|b| *b == 0)
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            Some((pid, args, stat))
        })
        .collect();
    let postmasters: BTreeSet<u32> = all
        .iter()
        .filter(|(_, args, _)| program_is(args, "postgres") || program_is(args, "postmaster"))
        .filter(|(_, args, _)| port_arg(args).is_some_and(|p| stack.postgres_ports.contains(&p)))
        .map(|(pid, _, _)| *pid)
        .collect();
    let databases = stack.database_names();
    let mut found: Vec<Process> = all
        .into_iter()
        .filter_map(|(pid, args, stat)| {
            let component = if postmasters.contains(&pid) {
                Component::Postmaster
            } else if postmasters.contains(&stat.ppid) {
                // A backend's title replaces its argv: one string, then padding.
                match args.first().and_then(|title| backend_database(title)) {
                    Some(db) if databases.contains(&db) => Component::Database(db.to_owned()),
                    _ => Component::PostgresOther,
                }
            } else if program_is(&args, "nats-server")
                && port_arg(&args).is_some_and(|p| stack.nats_ports.contains(&p))
            {
                Component::Nats
            } else {
                let kind = args
                    .get(1)
                    .filter(|kind| KINDS.contains(&kind.as_str()) || *kind == GATEWAY)?;
                if !is_our_worker(stack, pid, kind) {
                    return None;
                }
                Component::Worker(kind.clone())
            };
            Some(Process {
                pid,
                component,
                stat,
            })
        })
        .collect();
    found.sort_by(|a, b| (&a.component, a.pid).cmp(&(&b.component, b.pid)));
    found
}

/// Whether a process started as `<program> <kind>` is a worker of `stack`, judged by the
/// settings in its environment.
fn is_our_worker(stack: &Stack, pid: u32, kind: &str) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        // Someone else's process: nothing says it is ours.
        return false;
    };
    let var = |name: &str| {
        environ.split(|b| *b == 0).find_map(|entry| {
            let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            Some(String::from_utf8_lossy(value).into_owned())
        })
    };
    // Without the variable the worker uses the default URL (or shop.toml's, which this
    // cannot see): the best guess there is.
    let nats = var("SHOP_NATS__URL").unwrap_or_else(|| stack.unset_nats_url.clone());
    if !nats_port(&nats).is_some_and(|p| stack.nats_ports.contains(&p)) {
        return false;
    }
    if kind == GATEWAY {
        // No database to tell gateways apart: the address it serves (the default when the
        // variable is absent) says which is the stack's.
        let listen = var("SHOP_GATEWAY__LISTEN")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or(stack.unset_gateway_listen);
        return listen == stack.gateway_listen;
    }
    let setting = format!("SHOP_{}__DATABASE_URL", kind.to_uppercase());
    match var(&setting) {
        // Compared by port and name: `localhost` and `127.0.0.1` are the same server here.
        Some(url) => stack
            .databases
            .iter()
            .any(|(k, port, name)| *k == kind && database_of(&url) == Some((*port, name.clone()))),
        None => true,
    }
}

/// Whether argv[0]'s file name is `name`.
fn program_is(args: &[String], name: &str) -> bool {
    args.first()
        .and_then(|program| Path::new(program).file_name())
        .is_some_and(|file| file == name)
}

/// The port a server was started with: `-p 4222`, `-p4222` or `--port 4222`/`--port=4222`.
fn port_arg(args: &[String]) -> Option<u16> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "-p" | "--port" => args.next().map(String::as_str),
            _ => arg
                .strip_prefix("--port=")
                .or_else(|| arg.strip_prefix("-p").filter(|v| !v.is_empty())),
        };
        if let Some(port) = value.and_then(|v| v.parse().ok()) {
            return Some(port);
        }
    }
    None
}

/// The ports of a comma-separated list of NATS URLs (4222 when none parses).
fn nats_ports(urls: &str) -> BTreeSet<u16> {
    let ports: BTreeSet<u16> = urls.split(',').filter_map(nats_port).collect();
    if ports.is_empty() {
        BTreeSet::from([4222])
    } else {
        ports
    }
}

/// The port of a NATS URL (the first of a comma-separated list).
fn nats_port(url: &str) -> Option<u16> {
    let first = url.split(',').next()?.trim();
    async_nats::ServerAddr::from_str(first)
        .ok()
        .map(|addr| addr.port())
}

/// The port and database name of a PostgreSQL URL.
fn database_of(url: &str) -> Option<(u16, String)> {
    let options = sqlx::postgres::PgConnectOptions::from_str(url).ok()?;
    Some((options.get_port(), options.get_database()?.to_owned()))
}

/// The database of a backend from its process title, `postgres: <user> <database> <client>
/// <state>` (with `postgres: <cluster_name>: ` first when cluster_name is set). Auxiliary
/// processes (`postgres: checkpointer`, `postgres: autovacuum worker shop_goods`) have no
/// client, `host(port)` or `[local]`, and so no database here.
pub fn backend_database(title: &str) -> Option<&str> {
    let rest = title.trim().strip_prefix("postgres: ")?;
    let mut words = rest.split_whitespace().peekable();
    if words.peek().is_some_and(|w| w.ends_with(':')) {
        words.next();
    }
    let (_user, database, client) = (words.next()?, words.next()?, words.next()?);
    (client == "[local]" || client.ends_with(')')).then_some(database)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let tail = "S 21124 21121 21121 0 -1 4194560 1200 0 0 0 731 402 9 4 20 0 3 0 5";
        let plain = format!("21182 (shop) {tail}");
        let expected = Stat {
            ppid: 21124,
            own_ticks: 731 + 402,
            children_ticks: 9 + 4,
        };
        assert_eq!(parse_stat(&plain), Some(expected));
        // comm is whatever the process named itself, spaces and parentheses included.
        let odd = format!("21182 (a) b (c) S 1 2) {tail}");
        assert_eq!(parse_stat(&odd), Some(expected));
        assert_eq!(parse_stat("21182 (shop) S 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn a_backend_title_names_its_database() {
        for (title, database) in [
            (
                "postgres: shop shop_goods 127.0.0.1(48396) idle",
                Some("shop_goods"),
            ),
            (
                "postgres: shop shop_order 127.0.0.1(36724) COMMIT",
                Some("shop_order"),
            ),
            (
                "postgres: shop t5_stock [local] idle in transaction",
                Some("t5_stock"),
            ),
            (
                "postgres: 15/main: shop shop_stock localhost(5) UPDATE",
                Some("shop_stock"),
            ),
            ("postgres: checkpointer ", None),
            ("postgres: background writer ", None),
            ("postgres: autovacuum worker shop_goods", None),
            ("postgres: logical replication launcher ", None),
            ("/usr/lib/postgresql/15/bin/postgres", None),
        ] {
            assert_eq!(backend_database(title), database, "{title}");
        }
    }

    #[test]
    fn servers_are_told_apart_by_their_port_argument() {
        let args = |line: &str| line.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let nats = args("/x/nats-server -c dev.conf -a 127.0.0.1 -p 4555 -js -sd /d -m 8555");
        assert_eq!(port_arg(&nats), Some(4555));
        assert!(program_is(&nats, "nats-server"));
        assert_eq!(port_arg(&args("postgres -D /d -p5566")), Some(5566));
        assert_eq!(port_arg(&args("postgres --port=5566")), Some(5566));
        assert_eq!(port_arg(&args("postgres -D /d")), None);
        assert_eq!(nats_port("nats://127.0.0.1:4555"), Some(4555));
        assert_eq!(
            nats_port("nats://u:p@localhost:4555,nats://b:1"),
            Some(4555)
        );
        assert_eq!(nats_port("nats://127.0.0.1"), Some(4222));
        assert_eq!(
            nats_ports("nats://127.0.0.1:4655,nats://127.0.0.1:4656"),
            BTreeSet::from([4655, 4656])
        );
        assert_eq!(
            database_of("postgres://shop@127.0.0.1:5566/shop_goods"),
            Some((5566, "shop_goods".to_owned()))
        );
    }

    #[test]
    fn the_scan_never_lists_this_test_process() {
        let stack = Stack::of(&BenchConfig::dev());
        assert!(scan(&stack).iter().all(|p| p.pid != std::process::id()));
    }
}
