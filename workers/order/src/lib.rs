//! The order worker: orders, the half-message transaction with stock, and the checker that
//! closes unpaid orders at their deadline (CONTRACT sections 4 and 5).
//!
//! Owns one partition's `shop_order` database (`order.partition`, 0 unless the shop is
//! partitioned; docs/scaling.md) and the `order` micro service. It asks goods for prices
//! (`goods.batch`) and stock for deducts (`stock.deduct`); it gives stock back only through
//! `STOCK_ROLLBACK`, never by a direct request. Orders are partitioned by `user_id`, and an
//! `order_sn` carries its user's slot ([`ids`]).
//!
//! - [`service`]: the endpoints of one partition's worker (its own `order.part.<p>.*` and
//!   the public ones) and start-up.
//! - [`route`]: the public subjects over every partition: each request to the partition
//!   that owns its user or its order_sn.
//! - [`domain`]: create, pay, cancel, get, list, in this partition's database.
//! - [`checker`]: the durable consumers `order-txn-checker` on `ORDER_TXN` and
//!   `order-timer-closer` on `ORDER_TIMERS`.
//! - [`timers`]: pay deadlines as message schedules on `ORDER_TIMERS`.
//! - [`committer`]: group commit of created orders, one transaction per batch.
//! - [`ids`]: snowflake order_sns with a node id leased from KV bucket `order_nodes`.
//! - [`outbox`]: relays `ORDER_EVENTS` written in the order's transactions.
//! - [`repo`]: every SQL statement of the endpoints, the checker and the relay.
//! - [`slot_move`]: moving slots of orders to another partition's database, and the guard
//!   that keeps a partition from writing a slot it gave away.
//! - [`audit`]: a consistent read of orders and fences for `shop audit`.
//! - [`error`]: [`OrderError`], mapped 1:1 onto contract codes.

use std::time::Duration;

pub mod audit;
pub mod checker;
pub mod committer;
pub mod domain;
pub mod error;
pub mod ids;
pub mod outbox;
pub mod repo;
pub mod route;
pub mod service;
pub mod slot_move;
pub mod timers;

pub use error::OrderError;
pub use service::start;

/// The worker's schema, embedded from `migrations/order/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/order");

/// Semver of the `order` micro service, reported in `$SRV.INFO.order`.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Order worker settings (`[order]` in `shop.toml`, `SHOP_ORDER__*` in the environment).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Settings {
    /// How long an order may stay unpaid before it is closed.
    #[serde(with = "humantime_serde")]
    pub pay_timeout: Duration,
    /// How old a half message must be before "no order" means "never committed".
    #[serde(with = "humantime_serde")]
    pub check_delay: Duration,
    /// How an unpaid order waits for its deadline: `schedule` (a message schedule on
    /// `ORDER_TIMERS`; needs nats-server 2.12 or newer) or `nak_delay` (its half message stays
    /// pending on the checker until then).
    pub timer: TimerMode,
    /// `max_ack_pending` of the checker consumer. With `timer = "nak_delay"` every unpaid
    /// order holds one slot until its deadline; with `schedule` only until its first look.
    pub max_ack_pending: i64,
    /// How long to wait for `goods.batch` and `stock.deduct`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// TTL of the snowflake node-id lease in KV bucket `order_nodes`.
    #[serde(with = "humantime_serde")]
    pub node_lease_ttl: Duration,
    /// Creates one worker process works on at once; beyond it a create is refused at once
    /// with `unavailable` (before its half message, so it touches no stock). More in flight
    /// makes bigger batches (cheaper per create) but a longer queue. 64 against 32, side by
    /// side when it was chosen (0ba06ef): 4,000 clients got 1.23 of the peak's goodput
    /// instead of 0.88, and an open loop at 1,100 creates/s was refused nothing instead of 48
    /// creates, p99 20.6 ms against 20.2; 128 let that p99 grow to 42.5 ms. The later runs of
    /// record saw the open loop at half the peak refused a few (77 in one run) and its p99 at
    /// 21-48 ms, against a target of 25 ms not met there (docs/performance.md).
    pub max_creates_in_flight: usize,
    /// How long a create that finds all `max_creates_in_flight` slots taken may wait for one.
    /// It waits only if the wait it can expect (the measured time a create holds a slot,
    /// times the creates waiting ahead of it, over the slots) is within this; otherwise, or
    /// once this has passed, it is refused with `unavailable` and `retry_after_ms`, having
    /// done nothing. A burst the worker serves within this is absorbed rather than refused
    /// (issue 21); 0 refuses at once whenever the slots are full.
    #[serde(with = "humantime_serde")]
    pub create_wait: Duration,
    /// The longest a refused `order.create`'s reply is held before it is sent, so a client
    /// that retries at once, ignoring `retry_after_ms`, is paced by the worker anyway: the
    /// reply waits for its hint up to this, and tells the rest of the hint. Applies to the
    /// public subject only (a partition's own subject is called by other workers, which do
    /// not retry). Far below any client's request timeout (the gateway waits 5 s); 0 sends
    /// refusals at once. 2 s against 1 s, side by side under 4,000 clients retrying at once
    /// (docs/performance.md): 1.34 against 1.65 ms of CPU per create (1.33 at the peak).
    #[serde(with = "humantime_serde")]
    pub max_refusal_hold: Duration,
    /// The smallest `retry_after_ms` a refused create is given; under a sustained overload
    /// the hint grows (up to 30 s, jittered) until clients come back about as fast as the
    /// worker finishes creates.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Fault injection for tests; `none` in production.
    pub failpoint: Failpoint,
    /// Its partition, and where the others are (`order.partition`, ...; docs/scaling.md).
    #[serde(flatten)]
    pub placement: shop_kit::partitions::Placement,
}

/// How an unpaid order waits for its pay deadline (CONTRACT section 5, "Timer at scale").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerMode {
    /// Once the checker sees the order committed, the deadline is stored as a message
    /// schedule (`order.timer.at.<order_sn>`) and the half message is acked: a waiting order
    /// costs stream storage, not consumer state, so nothing caps how many can wait.
    #[default]
    Schedule,
    /// The half message stays ack-pending on `order-txn-checker` and is redelivered at the
    /// deadline (nak with delay). Every waiting order holds one of `max_ack_pending` slots;
    /// past that, new half messages (and with them rollbacks of failed creates) wait.
    NakDelay,
}

impl TimerMode {
    /// The config value, e.g. `schedule`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TimerMode::Schedule => "schedule",
            TimerMode::NakDelay => "nak_delay",
        }
    }
}

/// A fault the worker injects into itself, so tests can reach states a healthy run does not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failpoint {
    #[default]
    None,
    /// Abort the process after the stock deduct, before the order commits.
    AfterDeduct,
    /// Make order_sns from a clock one hour behind the real one.
    ClockBehind,
    /// Run on a clock ten minutes ahead of the real one (order_sns, and anything else the
    /// worker would read its clock for): no fence may depend on it.
    ClockAhead,
    /// After the deduct, wait until the checker has fenced the order_sn, then go on to the
    /// commit: a create slower than the check delay, made deterministic.
    CommitAfterFence,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pay_timeout: Duration::from_secs(30 * 60),
            check_delay: Duration::from_secs(10),
            timer: TimerMode::default(),
            max_ack_pending: 100_000,
            request_timeout: Duration::from_secs(5),
            node_lease_ttl: Duration::from_secs(30),
            max_creates_in_flight: 64,
            create_wait: Duration::from_millis(100),
            max_refusal_hold: Duration::from_secs(2),
            retry_after: Duration::from_millis(50),
            failpoint: Failpoint::None,
            placement: Default::default(),
        }
    }
}
