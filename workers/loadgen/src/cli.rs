//! The command-line arguments of `shop bench` and `shop soak`, which the binary embeds in
//! its own command line (`shop bench <target>`, `shop soak`): flags, defaults and value
//! checks live with the code that reads them.

use std::path::PathBuf;

use clap::Subcommand;

/// `shop bench <target>`: one scenario per subcommand.
#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Single-unit deducts against `--goods` goods, straight to the stock workers.
    ///
    /// The lock strategy is a worker setting (`SHOP_STOCK__STRATEGY`); the bench measures the
    /// running workers and refuses to run when they report another strategy than `--strategy`.
    Stock {
        /// The strategy the running stock workers use (e.g. atomic, pessimistic, optimistic,
        /// kv_lock, batch); the bench checks it against `$SRV.INFO.stock`.
        #[arg(long)]
        strategy: String,
        /// Goods to spread the deducts over: 1 is one hot goods.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        goods: i64,
        /// First goods id used (ids `first..first+goods`), away from the seed data.
        #[arg(long, default_value_t = 1_000_001, value_parser = clap::value_parser!(i64).range(1..))]
        first_goods_id: i64,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Whole `order.create`s through all three workers, against the system's own ceilings.
    ///
    /// Each create is one unit of one goods. Then, at the same concurrency, the ceilings of
    /// the same work: (a) NATS request/reply to a trivial responder, (b) the stock and order
    /// transactions issued directly, (c) both as one transaction in one database. Waits for
    /// the system to settle and audits it: a run that breaks an invariant fails.
    Order {
        /// Goods to spread the orders over: 1 is one hot goods.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        goods: i64,
        /// First goods id used (ids `first..first+goods`), away from the seed data.
        #[arg(long, default_value_t = 2_000_001, value_parser = clap::value_parser!(i64).range(1..))]
        first_goods_id: i64,
        #[command(flatten)]
        load: LoadArgs,
        /// Measure the system only, without the three ceilings.
        #[arg(long)]
        no_ceilings: bool,
        /// `http`: after the creates over NATS, the same creates (same goods, same load)
        /// through the HTTP gateway (`POST /v1/orders` at `gateway.listen`, a token per
        /// user), and the ratio of the two.
        #[arg(long, value_enum, default_value_t = Via::Nats)]
        via: Via,
        #[command(flatten)]
        settle: SettleArgs,
    },
    /// A flash sale: a peak run, then an overload run with many more clients.
    ///
    /// Reports the overload's goodput (successful creates/s) as a ratio of the peak's, its
    /// refusals and their latency, its timeouts, and whether any refused create took stock;
    /// then settles and audits.
    Overload {
        /// Goods to spread the orders over.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        goods: i64,
        /// First goods id used (ids `first..first+goods`), away from the seed data.
        #[arg(long, default_value_t = 3_000_001, value_parser = clap::value_parser!(i64).range(1..))]
        first_goods_id: i64,
        /// Clients of the peak run, the reference for goodput.
        #[arg(long, default_value_t = 32, value_parser = at_least_one)]
        peak_concurrency: usize,
        /// Clients of the overload run.
        #[arg(long, default_value_t = 4000, value_parser = at_least_one)]
        concurrency: usize,
        /// Start the overload run's clients spread evenly over this many seconds instead of
        /// all in one instant (viewers who press "buy" within seconds, not in the same
        /// microsecond); the window starts with the first client.
        #[arg(long, default_value_t = 0.0, value_parser = ramp_seconds)]
        ramp: f64,
        /// `http`: both runs through the HTTP gateway (`POST /v1/orders` at
        /// `gateway.listen`, a token per user) instead of over NATS.
        #[arg(long, value_enum, default_value_t = OverloadVia::Nats)]
        via: OverloadVia,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        settle: SettleArgs,
    },
    /// Pay deadlines at scale, in the running order workers' timer mode (`order.timer`).
    ///
    /// Seeds `--waiting` unpaid orders in bulk and waits until each waits for its deadline;
    /// then reports nats-server's RSS and CPU while they wait, how long a create whose worker
    /// died after the deduct takes to be rolled back, and how late `--burst` deadlines that
    /// fall in one second are closed. Needs a fresh stack of its own: the seeded orders have
    /// no `created` events, so `shop audit` would report them.
    Timers(TimersArgs),
    /// What retained orders cost nats-server: publishes `--orders` created-then-closed
    /// orders' events and rollbacks, then reports nats-server's RSS and the streams' bytes per
    /// order. Needs a fresh stack of its own.
    Retention(RetentionArgs),
    /// What a live room's viewers cost the gateway: `--viewers` event streams on one room
    /// while creates run, beside the same creates without them.
    ///
    /// Reports the gateway's RSS before, with the viewers and after they left, the time for
    /// a stock change to reach the last viewer (p50/p99), and creates/s with and without
    /// viewers. `--gateway` several times measures several gateways (e.g. two builds) in turn
    /// in one run. The gateway needs `gateway.max_event_streams` and `ulimit -n` above
    /// `--viewers`.
    Viewers(ViewersArgs),
}

/// `shop bench viewers`: viewers of one live room.
#[derive(Debug, clap::Args)]
pub struct ViewersArgs {
    /// Event streams held open on the room.
    #[arg(long, default_value_t = 20_000, value_parser = at_least_one)]
    pub viewers: usize,
    /// The room they watch; the bench sets it to its goods plus the probe goods.
    #[arg(long, default_value_t = 900_001, value_parser = clap::value_parser!(i64).range(1..))]
    pub room_id: i64,
    /// Goods the creates spread over (the room's goods); one more, the probe, is only ever
    /// changed by the bench's timed `stock.set`s.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=99))]
    pub goods: i64,
    /// First goods id used (ids `first..=first+goods`), away from the seed data.
    #[arg(long, default_value_t = 4_000_001, value_parser = clap::value_parser!(i64).range(1..))]
    pub first_goods_id: i64,
    /// Clients of the creates' closed loop (over NATS).
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub concurrency: usize,
    /// How long each run of creates lasts, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Stock changes of the probe goods timed to every viewer during the run with viewers.
    #[arg(long, default_value_t = 30, value_parser = at_least_one)]
    pub probes: usize,
    /// Viewers connecting at once.
    #[arg(long, default_value_t = 256, value_parser = at_least_one)]
    pub connect_concurrency: usize,
    /// A gateway to measure (its `gateway.listen`); repeat it to compare gateways side by
    /// side in one run (default: this configuration's `gateway.listen`).
    #[arg(long)]
    pub gateway: Vec<std::net::SocketAddr>,
    /// Directory for the JSON results and SVG plots.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// A name for the setup measured, added to the file name.
    #[arg(long, value_parser = file_name_part)]
    pub label: Option<String>,
}

/// `shop bench timers`: pay deadlines at scale.
#[derive(Debug, clap::Args)]
pub struct TimersArgs {
    /// Unpaid orders waiting for their deadline, seeded in bulk (rows in the databases,
    /// half messages published asynchronously).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub waiting: u64,
    /// The pay window of the waiting orders: long enough that none falls due during the run.
    #[arg(long, default_value = "30m", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub pay_window: std::time::Duration,
    /// Seconds nats-server's CPU is measured over while the orders wait.
    #[arg(long, default_value = "20s", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub idle: std::time::Duration,
    /// Creates whose worker died after the deduct, timed until their stock is back.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub orphans: u64,
    /// More orders whose deadlines all fall in the same second.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub burst: u64,
    /// How far ahead the burst's deadline lies: time to seed it and for the checker's first
    /// look (the check delay).
    #[arg(long, default_value = "60s", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub burst_lead: std::time::Duration,
    /// The order workers' `order.check_delay` (default: this process's configuration).
    #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
    pub check_delay: Option<std::time::Duration>,
    /// How long to wait for each stage before reporting what did not happen.
    #[arg(long, default_value = "5m", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub give_up: std::time::Duration,
    /// Directory for the JSON results.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// A name for the setup measured, added to the file name.
    #[arg(long, value_parser = file_name_part)]
    pub label: Option<String>,
}

/// `shop soak`: how long, and how hard the faults come.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long the load runs (fractions allowed: 0.5 is 30 s).
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Concurrent buyers.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    pub clients: usize,
    /// A random worker is SIGKILLed and replaced this often.
    #[arg(long, default_value = "5s", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub kill_every: std::time::Duration,
    /// nats-server is restarted this often.
    #[arg(long, default_value = "90s", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub nats_restart_every: std::time::Duration,
    /// `shop audit` runs this often (work younger than a minute counts as in flight).
    #[arg(long, default_value = "60s", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub audit_every: std::time::Duration,
    /// Directory for the JSON summary.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Project directory holding nats-config/ (default: the current directory).
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
}

/// `shop bench retention`: what retained orders cost nats-server.
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// Created-then-closed orders to leave in ORDER_EVENTS and STOCK_ROLLBACK.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub orders: u64,
    /// Publish the same messages to a scratch stream on 256 subjects instead of one subject
    /// per order, to see what the subjects cost.
    #[arg(long)]
    pub shared_subjects: bool,
    /// How long to wait before reading the memory that stays.
    #[arg(long, default_value = "60s", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub idle: std::time::Duration,
    /// Directory for the JSON results.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// A name for the setup measured, added to the file name.
    #[arg(long, value_parser = file_name_part)]
    pub label: Option<String>,
}

/// How `shop bench order` sends its creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// `order.create` over NATS only.
    Nats,
    /// Over NATS, then through the HTTP gateway, side by side.
    Http,
    /// Over NATS, then one run that alternates between NATS and the gateway every second:
    /// the steadier ratio on a machine whose speed drifts.
    Alternate,
}

/// How `shop bench overload` sends its creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OverloadVia {
    /// `order.create` over NATS.
    Nats,
    /// `POST /v1/orders` through the HTTP gateway.
    Http,
}

/// How hard a benchmark loads the system.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Clients of the closed loop (each sends its next request when the previous one is
    /// answered); also the clients of the ceilings.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub concurrency: usize,
    /// Open loop instead: start this many requests per second on a fixed schedule, whether
    /// or not earlier ones finished; latency counts from the scheduled start.
    #[arg(long, value_parser = requests_per_second)]
    pub rate: Option<f64>,
    /// Closed loop: start the clients spread evenly over this many seconds instead of all in
    /// one instant (viewers who press "buy" within seconds, not in the same microsecond).
    /// The window starts with the first client, so its first seconds run below full load.
    #[arg(long, default_value_t = 0.0, value_parser = ramp_seconds, conflicts_with = "rate")]
    pub ramp: f64,
    #[command(flatten)]
    pub run: RunArgs,
}

/// How long a benchmark runs, how its clients behave, and where its figures go.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// How long each run loads the system, in seconds [default: 10; `bench order`: three
    /// times the check delay and at least 30, so that its last seconds carry the work each
    /// create leaves for after its check delay].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: Option<u64>,
    /// Directory for the JSON results and SVG plots.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// A name for the setup measured (e.g. `production`), added to the file names and the
    /// results so runs on different setups do not overwrite each other.
    #[arg(long, value_parser = file_name_part)]
    pub label: Option<String>,
    /// Closed loop: a client refused with `retry_after_ms` sends its next request at once
    /// instead of waiting as the contract asks (measures the system under a retry storm).
    #[arg(long)]
    pub ignore_retry_after: bool,
}

impl RunArgs {
    /// Seconds of a run when `--seconds` is not given, for the benches other than `order`.
    pub const DEFAULT_SECONDS: u64 = 10;

    /// `--seconds`, or `default`.
    pub fn seconds_or(&self, default: u64) -> u64 {
        self.seconds.unwrap_or(default)
    }
}

/// How the bench waits for the system to finish a run's work before it audits.
#[derive(Debug, clap::Args)]
pub struct SettleArgs {
    /// The order workers' `order.check_delay`: a create that deducted but never committed is
    /// given back that long after it started, and the audit waits for it (default: the
    /// `order.check_delay` of this process's configuration).
    #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
    pub check_delay: Option<std::time::Duration>,
    /// Fail when the system has not settled this long after the run (e.g. 5m).
    #[arg(long, default_value = "5m", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub settle_timeout: std::time::Duration,
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?} is not a whole number of at least 1")),
    }
}

fn ramp_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=3600.0).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "{text:?} is not a number of seconds from 0 to 3600"
        )),
    }
}

fn requests_per_second(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate in requests per second above 0 (at most 1000000)"
        )),
    }
}

fn file_name_part(text: &str) -> Result<String, String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if !text.is_empty() && text.chars().all(fine) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} must be letters, digits, '-' or '_' (it becomes part of file names)"
        ))
    }
}
