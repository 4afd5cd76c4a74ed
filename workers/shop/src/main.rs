//! `shop`: the one binary. `main` loads configuration, sets up logging and dispatches on the
//! subcommand; everything else lives in the worker crates and in `commands/`.

mod cli;
mod commands;
mod config;
mod telemetry;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::{Config, LogFormat};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::load().context("could not load configuration (shop.toml, SHOP_*)")?;
    if cli.log_json {
        config.log.format = LogFormat::Json;
    }
    // A one-shot request or an audit prints a report; connection chatter would only bury it.
    if matches!(
        cli.command,
        Command::Req { .. } | Command::Audit { .. } | Command::Token { .. } | Command::Soak(_)
    ) && config.log.filter == "info"
    {
        config.log.filter = "warn".into();
    }
    // Processes that serve requests pass their trace on (and export it when configured).
    let service = match cli.command {
        Command::Goods => Some("goods"),
        Command::Stock => Some("stock"),
        Command::Order => Some("order"),
        Command::Gateway => Some("gateway"),
        _ => None,
    };
    let _telemetry = telemetry::init(&config.log, service.map(|s| (s, &config.trace)))?;

    match cli.command {
        Command::Goods => commands::worker::goods(&config).await,
        Command::Stock => commands::worker::stock(&config).await,
        Command::Order => commands::worker::order(&config).await,
        Command::Gateway => commands::gateway::run(&config).await,
        Command::Token { user, admin, ttl } => commands::token::run(&config, user, admin, ttl),
        Command::Migrate => commands::migrate::run(&config).await,
        Command::Soak(args) => commands::soak::run(config, args).await,
        Command::Seed { room_id, stock } => commands::seed::run(&config, room_id, stock).await,
        Command::Up {
            workers,
            nats_nodes,
            nats_replicas,
            partitions,
            root,
        } => {
            let nats = commands::up::NatsLayout {
                nodes: nats_nodes,
                replicas: nats_replicas.unwrap_or(nats_nodes),
            };
            commands::up::run(config, workers, nats, partitions, root).await
        }
        Command::Partitions { action: None } => commands::partitions::show(&config).await,
        Command::Partitions {
            action: Some(cli::PartitionsAction::Move { kind, slots, to }),
        } => commands::move_slots::run(&config, kind, slots, to).await,
        Command::Audit { grace, json } => commands::audit::run(&config, grace, json).await,
        Command::Bench { target } => commands::bench::run(&config, target).await,
        Command::Req {
            subject,
            body,
            timeout,
        } => commands::req::run(&config, &subject, body.as_deref(), timeout).await,
    }
}
