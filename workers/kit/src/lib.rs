//! The NATS plumbing every shop worker shares, so each worker holds only its own logic.
//!
//! - [`decode`]: turn a request body into a contract type under CONTRACT section 1's rules.
//! - [`reply`]: answer with a result, or with a contract error as headers *and* body.
//! - [`worker`]: the frame every worker runs in: its endpoints, consumers and background
//!   tasks, all owned, and the stop that loses no admitted request ([`Worker`]).
//! - [`micro`]: the `$SRV` micro-service protocol, with endpoints that stop by fencing.
//! - [`endpoint`]: serving one endpoint, a task per request, optionally with a bound on
//!   requests in flight beyond which they wait briefly for a slot or are refused
//!   ([`Admission`]); `held`: refusals whose replies are held for their retry hint.
//! - [`queue`]: the bounded coalescing queue behind every batcher ([`Queue`]).
//! - [`jetstream`]: the stream and consumer definitions of `nats-config/`, created or updated
//!   at start-up and read back.
//! - [`client`]: calling another service (typed by its [`shop_contracts::Endpoint`]), telling a
//!   refusal from no answer, and the one contract error a failed call answers with.
//! - [`partitions`]: the slot -> partition map a worker routes by, followed in KV.
//! - [`latency`]: fine-grained server-side latency histograms per endpoint and outcome,
//!   reported in `$SRV.STATS` (`data.latency_us`).
//! - [`metrics`]: the process's Prometheus registry, per-endpoint counts and latencies,
//!   gauges, and `GET /metrics`.
//! - [`trace`]: W3C `traceparent` in NATS headers, so a request's span continues its caller's
//!   trace.
//! - [`db`]: pools that time out instead of hanging, database creation and migration.
//! - [`server`]: connecting, and refusing a nats-server older than the contract requires.
//! - [`crash`]: named crash points for fault tests (off unless armed).
//!
//! It owns no business rules and no database access.

pub mod client;
pub mod crash;
pub mod db;
pub mod decode;
pub mod endpoint;
mod held;
pub mod jetstream;
pub mod latency;
pub mod metrics;
pub mod micro;
pub mod partitions;
pub mod queue;
mod random;
pub mod reply;
pub mod server;
pub mod trace;
pub mod worker;

pub use decode::decode;
pub use endpoint::{Admission, ServiceError};
pub use micro::ServiceConfig;
pub use queue::{Batch, Queue};
pub use worker::{TaskError, Worker, WorkerError};
