//! The command line: one subcommand per thing `shop` does.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shop",
    version,
    about = "Order, stock and goods workers of the live-stream shop, on NATS"
)]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text (same as SHOP_LOG__FORMAT=json).
    #[arg(long, global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a goods worker (the `goods` micro service).
    Goods,
    /// Run a stock worker (the `stock` micro service and the stock-rollback consumer).
    Stock,
    /// Run an order worker (the `order` micro service and the order-txn-checker).
    Order,
    /// Run the HTTP gateway (CONTRACT section 7) in front of the workers.
    Gateway,
    /// Mint a development bearer token for the gateway, signed with the configured HS256
    /// secret (`gateway.auth.hs256_secret`, or the dev secret `shop up` keeps in .data/).
    Token {
        /// The user id the token names (its `sub`).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        user: i64,
        /// Give the token `role: "admin"` (the /v1/admin routes).
        #[arg(long)]
        admin: bool,
        /// How long the token is valid (e.g. 30m, 1h, 7d).
        #[arg(long, default_value = "1h", value_parser = humantime_serde::re::humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Create the databases if needed and apply every worker's migrations.
    Migrate,
    /// Load demo data through the running workers: a live room with 10 goods and their stock.
    Seed {
        /// The live room to fill.
        #[arg(long, default_value_t = 1)]
        room_id: i64,
        /// Units of stock per goods (only set for goods that have no stock yet).
        #[arg(long, default_value_t = 100)]
        stock: i64,
    },
    /// Run the whole local stack: nats-server, PostgreSQL, migrations, workers, seed data.
    /// Ctrl-C stops everything it started; data stays in the data directory for next time.
    Up {
        /// Worker processes of each kind.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// nats-servers: 1 (dev.conf) or a 3-node JetStream cluster (nats-config/cluster/).
        #[arg(long, default_value_t = 1, value_parser = nats_nodes)]
        nats_nodes: usize,
        /// Replicas of the streams and KV buckets the workers create (nats.replicas); default:
        /// the number of nats-servers. Streams that exist keep theirs.
        #[arg(long)]
        nats_replicas: Option<usize>,
        /// Stock partitions, each a PostgreSQL server of its own (on the ports after
        /// dev.postgres_port) with its own stock workers; the first run writes an even map
        /// (docs/scaling.md). Orders are not partitioned yet.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
        partitions: u16,
        /// Project directory holding nats-config/ (default: the current directory).
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// A mixed load with faults on a stack of its own, audited as it goes: a random worker
    /// SIGKILLed and replaced every few seconds, nats-server restarted now and then, `shop
    /// audit` every minute; at the end the system settles and the audit must be clean. Uses
    /// the dev ports (dev.nats_port, dev.postgres_port) and <dev.data_dir>/soak (wiped).
    Soak(shop_loadgen::SoakArgs),
    /// Send one request and print the reply, like `nats req` (for machines without the
    /// nats CLI). Exits 1 with the contract error on stderr when the service refuses.
    Req {
        /// Subject, e.g. goods.room.list
        subject: String,
        /// JSON body, e.g. '{"room_id":1}'; none (or '') sends an empty request, as `nats req`
        /// does, which is what `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` take.
        body: Option<String>,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Check every invariant of the running system without changing it: one snapshot of each
    /// database, a look-up of every unpaid order's half message in ORDER_TXN, then a replay
    /// of the whole STOCK_ROLLBACK stream. Exits 1 and lists the problems when any invariant
    /// does not hold.
    Audit {
        /// Work younger than this counts as in flight and is not judged (e.g. 30s, 2m).
        #[arg(long, default_value = "2m", value_parser = humantime_serde::re::humantime::parse_duration)]
        grace: std::time::Duration,
        /// Print the report as JSON, with every finding.
        #[arg(long)]
        json: bool,
    },
    /// Show the stock and order partition maps: each one's revision and the partition owning
    /// each range of slots (docs/scaling.md). `shop partitions move` moves slots.
    Partitions {
        #[command(subcommand)]
        action: Option<PartitionsAction>,
    },
    /// Measure the running system: deducts or whole creates per second and their latency,
    /// against the system's own ceilings; writes JSON and an SVG plot per run.
    Bench {
        #[command(subcommand)]
        target: shop_loadgen::BenchTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum PartitionsAction {
    /// Move a range of slots to another partition while the shop serves: their data goes to
    /// that partition's database, then the map names it. Requests for the moving slots are
    /// answered `unavailable` with `retry_after_ms` meanwhile. Safe to run again after a
    /// failure, and it must be, to finish a move that stopped.
    Move {
        /// What moves: `order` (orders, by user_id) or `stock` (counts and sell records, by
        /// goods_id).
        kind: MovedKind,
        /// The slots, `A-B` (inclusive, within 0-255) or one slot `A`.
        #[arg(long, value_parser = slot_range)]
        slots: std::ops::RangeInclusive<usize>,
        /// The partition that gets them (its database must be in
        /// `order.partition_databases` or `stock.partition_databases`).
        #[arg(long)]
        to: shop_contracts::partition::PartitionId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MovedKind {
    Stock,
    Order,
}

fn slot_range(text: &str) -> Result<std::ops::RangeInclusive<usize>, String> {
    let bound = |part: &str| {
        part.trim()
            .parse::<usize>()
            .ok()
            .filter(|&slot| slot < shop_contracts::partition::SLOTS)
            .ok_or_else(|| format!("{part:?} is not a slot (0-255)"))
    };
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (bound(first)?, bound(last)?),
        None => (bound(text)?, bound(text)?),
    };
    if first > last {
        return Err(format!("{text:?}: the first slot comes after the last"));
    }
    Ok(first..=last)
}

fn nats_nodes(text: &str) -> Result<usize, String> {
    match text {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(format!(
            "{text:?}: 1 (one server) or 3 (the cluster of nats-config/cluster/)"
        )),
    }
}
