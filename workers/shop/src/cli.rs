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
}
