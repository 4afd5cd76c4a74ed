//! Test support for shop's black-box tests: real servers, real worker processes, no mocks.
//!
//! Once per test run (per test binary) one nats-server and one PostgreSQL cluster start on
//! random ports with temporary stores ([`stack`]). Each test then gets a [`TestApp`] of its
//! own: a NATS *account* of its own (so subjects, `$SRV` and streams of parallel tests never
//! meet, while the subject names stay the contract's), its own databases, and worker
//! processes started from the real `shop` binary as the least-privilege users of
//! `nats-config/permissions.conf`.

pub mod app;
pub mod browser;
pub mod gateway;
pub mod proxy;
pub mod stack;
pub mod wait;

pub use app::{ask, Answer, ErrorReply, Partitions, TestApp, TlsFiles, Worker, WorkerProcess};
pub use browser::Browser;
pub use gateway::Gateway;
pub use proxy::Proxy;
pub use wait::eventually;
