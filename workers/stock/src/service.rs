//! The `stock` micro service of one partition: its own subjects `stock.part.<p>.<op>`
//! ([`crate::local`]), the public subjects of CONTRACT section 3 over every partition
//! ([`crate::route`]), and the rollback consumer running beside them.

use std::collections::HashMap;

use shop_contracts::partition::STOCK_MAP_KEY;
use shop_contracts::subjects::stock::{self as subject, partition};
use shop_kit::partitions::Peers;
use shop_kit::{ServiceConfig, Worker};
use sqlx::PgPool;

use crate::changes::Changes;
use crate::local::Local;
use crate::route::Router;
use crate::strategies::Deducter;
use crate::{rollback, Settings, SERVICE_VERSION};

/// The `stock` worker on `client`: its endpoints, the `stock-rollback` consumer beside them
/// and the strategy's writer, ready to [`Worker::run`]. `replicas` (`nats.replicas`) is what
/// the stream and bucket it creates get; existing ones keep theirs.
pub async fn start(
    client: async_nats::Client,
    pool: PgPool,
    settings: Settings,
    replicas: usize,
) -> Result<Worker, async_nats::Error> {
    let js = async_nats::jetstream::new(client.clone());
    let consumer = rollback::setup(&js, replicas).await?;
    let (deducter, writer) = Deducter::start(&js, pool.clone(), &settings, replicas).await?;
    let stats = {
        let deducter = deducter.clone();
        move |endpoint: &str| match endpoint {
            // `$SRV.STATS.stock`: `stock.deduct` reports the strategy's figures (batch sizes).
            subject::DEDUCT => deducter.stats(),
            _ => serde_json::Value::Null,
        }
    };
    let mut worker = Worker::start(
        client.clone(),
        ServiceConfig {
            name: subject::SERVICE,
            version: SERVICE_VERSION,
            description: "stock counts, sell records and the ledger",
            metadata: HashMap::from([
                ("strategy".to_owned(), settings.strategy.as_str().to_owned()),
                (
                    "partition".to_owned(),
                    settings.placement.partition.to_string(),
                ),
            ]),
            stats: Some(Box::new(stats)),
        },
    )
    .await?;
    if let Some(writer) = writer {
        worker.background("stock batch writer", writer.run(worker.draining()));
    }
    let changes = Changes::start(&mut worker, client.clone(), pool.clone());

    let (partitions, follow) =
        shop_kit::partitions::follow(&js, STOCK_MAP_KEY, replicas, worker.draining()).await?;
    worker.background("stock partition map", follow);
    let me = settings.placement.partition;
    let local = Local {
        pool,
        deducter,
        changes,
    };
    let router = Router {
        peers: Peers {
            me,
            partitions,
            client: client.clone(),
            timeout: settings.placement.forward_timeout,
            subject_of: partition,
        },
        local: local.clone(),
        js: js.clone(),
    };

    // This partition's own subjects, `stock.part.<me>.<op>`: only its database answers.
    // (Leaked once per process: the frame names endpoints by `&'static str`.)
    let own = |public: &str| -> &'static str { Box::leak(partition(public, me).into_boxed_str()) };
    worker
        .serve(own(subject::SET), local.clone(), Local::set)
        .await?;
    worker
        .serve(own(subject::GET), local.clone(), Local::get)
        .await?;
    worker
        .serve(own(subject::DEDUCT), local.clone(), Local::deduct)
        .await?;
    worker
        .serve(own(subject::RETURN), local.clone(), Local::return_share)
        .await?;
    worker
        .serve(own(subject::SELL_DETAIL), local, Local::sell_detail)
        .await?;
    // The public subjects of CONTRACT section 3, over every partition.
    worker
        .serve(subject::SET, router.clone(), Router::set)
        .await?;
    worker
        .serve(subject::GET, router.clone(), Router::get)
        .await?;
    worker
        .serve(subject::DEDUCT, router.clone(), Router::deduct)
        .await?;
    worker
        .serve(subject::RETURN, router.clone(), Router::return_)
        .await?;
    worker
        .serve(subject::SELL_DETAIL, router.clone(), Router::sell_detail)
        .await?;
    // `shop_consumer_pending` / `shop_consumer_ack_pending` of stock-rollback: returns waiting.
    worker.background(
        "stock-rollback gauges",
        shop_kit::metrics::global()
            .consumer("stock-rollback")
            .watch_until(
                consumer.clone(),
                std::time::Duration::from_secs(5),
                worker.draining(),
            ),
    );
    worker.intake(
        "STOCK_ROLLBACK consumer",
        rollback::run(
            consumer,
            router,
            settings.rollback_retry_delay,
            worker.stopping(),
        ),
    );
    tracing::info!(strategy = %settings.strategy, "stock strategy");
    tracing::info!("serving stock partition {me}");
    Ok(worker)
}
