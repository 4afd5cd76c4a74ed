//! One module per subcommand.

pub mod audit;
pub mod bench;
pub mod gateway;
pub mod migrate;
pub mod move_slots;
pub mod partitions;
pub mod req;
pub mod seed;
pub mod soak;
pub mod token;
pub mod up;
pub mod worker;

/// Resolves on Ctrl-C or SIGTERM, the two ways a process is asked to stop.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("ctrl-c: stopping"),
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
    }
}
