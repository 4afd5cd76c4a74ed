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
        /// Project directory holding nats-config/ (default: the current directory).
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Send one request and print the reply, like `nats req` (for machines without the
    /// nats CLI). Exits 1 with the contract error on stderr when the service refuses.
    Req {
        /// Subject, e.g. goods.room.list
        subject: String,
        /// JSON body, e.g. '{"room_id":1}'
        #[arg(default_value = "{}")]
        body: String,
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
    /// Measure the running stock workers: deducts per second and latency over NATS.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Concurrent single-unit deducts against `--goods` goods for `--seconds` seconds.
    ///
    /// The lock strategy is a worker setting (`SHOP_STOCK__STRATEGY`); the bench measures the
    /// running workers and refuses to run when they report another strategy than `--strategy`.
    Stock {
        /// atomic | pessimistic | optimistic | kv_lock (what the running workers must use).
        #[arg(long)]
        strategy: String,
        /// Goods to spread the deducts over: 1 is one hot goods.
        #[arg(long, default_value_t = 1)]
        goods: i64,
        /// First goods id used (ids `first..first+goods`), away from the seed data.
        #[arg(long, default_value_t = 1_000_001)]
        first_goods_id: i64,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Concurrent `order.create`s (one unit of one goods each) through all three workers:
    /// prices from goods, the half message, the deduct and the order's commit.
    Order {
        /// Goods to spread the orders over: 1 is one hot goods.
        #[arg(long, default_value_t = 100)]
        goods: i64,
        /// First goods id used (ids `first..first+goods`), away from the seed data.
        #[arg(long, default_value_t = 2_000_001)]
        first_goods_id: i64,
        #[command(flatten)]
        load: LoadArgs,
    },
}

/// How hard and how long a benchmark loads the system, and where its figures go.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Request loops running at once (each waits for its reply before the next request).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long to load, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Directory for the JSON results.
    #[arg(long, default_value = "bench-results")]
    pub out: std::path::PathBuf,
}
