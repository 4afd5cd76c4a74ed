//! Local server processes: a nats-server (or a cluster of them) and a PostgreSQL cluster, started as children of
//! the calling process, for `shop up` and for the integration-test harness.
//!
//! Owns finding the binaries, free ports, data directories, readiness waits, making sure
//! the servers die with their parent, and keeping child processes running (`supervise`:
//! restart what exits, stop with SIGTERM). It knows nothing about shop's schema or streams.

mod nats;
mod postgres;
mod process;
mod supervise;

pub use nats::{
    cluster_specs, local_cluster_specs, ClusterMember, NatsCluster, NatsServer, NatsServerSpec,
};
pub use postgres::{find_bin_dir, PostgresCluster, PostgresSpec, SUPERUSER};
pub use process::{die_with_parent, free_port, wait_for_port};
pub use supervise::{spawn_child, stop, stop_all, supervise, Supervised};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{what} not found: {hint}")]
    Missing { what: &'static str, hint: String },
    #[error("could not run {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error("{what} was not ready within {seconds}s (log: {log})")]
    NotReady {
        what: &'static str,
        seconds: u64,
        log: PathBuf,
    },
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StackError {
    let path = path.into();
    move |source| StackError::Io { path, source }
}
