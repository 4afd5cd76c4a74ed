//! The system's own ceilings, measured in the same run, at the same concurrency, against the
//! same servers as the creates, so that machine noise and server settings weigh on both:
//!
//! - (a) [`echo`]: NATS request/reply to a trivial responder: the messaging alone.
//! - (b) [`database::split`]: the database work of one create issued directly, no NATS: the
//!   stock transaction, then the order's commit, with the workers' own functions, each in
//!   its own database. What the workers could reach if NATS and their own code were free.
//! - (c) [`database::monolith`]: the same work as one transaction in one database holding
//!   both schemas: what a monolith would reach.
//!
//! The database ceilings run on scratch databases beside the workers' ([`scratch`]).

mod database;
mod echo;
mod scratch;

use std::time::Duration;

use serde::Serialize;

use super::create::Creates;
use super::record::Figures;
use crate::BenchConfig;

#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    /// (a), in requests.
    pub nats_request_reply: Figures,
    /// (b), in creates.
    pub database_split: Figures,
    /// (c), in creates.
    pub database_monolith: Figures,
}

pub async fn measure(
    config: &BenchConfig,
    client: &async_nats::Client,
    creates: Creates,
    concurrency: usize,
    window: Duration,
) -> anyhow::Result<Ceilings> {
    let nats_request_reply =
        echo::measure(config, client, concurrency, window, creates.body()).await?;
    println!(
        "ceiling (a) NATS request/reply: {}",
        nats_request_reply.summary("requests")
    );
    let database_split = database::split(config, creates, concurrency, window).await?;
    println!(
        "ceiling (b) database, split: {}",
        database_split.summary("creates")
    );
    let database_monolith = database::monolith(config, creates, concurrency, window).await?;
    println!(
        "ceiling (c) database, monolith: {}",
        database_monolith.summary("creates")
    );
    Ok(Ceilings {
        nats_request_reply,
        database_split,
        database_monolith,
    })
}
