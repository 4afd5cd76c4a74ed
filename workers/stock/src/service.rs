//! The `stock` micro service: one handler per subject of CONTRACT section 3, plus the
//! rollback consumer running beside it.

use std::collections::HashMap;

use shop_contracts::stock::{
    DeductReply, DeductRequest, NormalizedLines, ReturnReply, ReturnRequest, SellDetail,
    SellDetailRequest, SellStatus, StockGetReply, StockGetRequest, StockLevel, StockSetRequest,
};
use shop_contracts::subjects::stock as subject;
use shop_kit::{ServiceConfig, Worker};
use sqlx::PgPool;

use crate::changes::Changes;
use crate::strategies::Deducter;
use crate::{repo, rollback, Settings, StockError, SERVICE_VERSION};

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
            metadata: HashMap::from([(
                "strategy".to_owned(),
                settings.strategy.as_str().to_owned(),
            )]),
            stats: Some(Box::new(stats)),
        },
    )
    .await?;
    if let Some(writer) = writer {
        worker.background("stock batch writer", writer.run(worker.draining()));
    }
    let changes = Changes::start(&mut worker, client.clone(), pool.clone());

    worker
        .serve(subject::SET, (pool.clone(), changes.clone()), set)
        .await?;
    worker.serve(subject::GET, pool.clone(), get).await?;
    worker
        .serve(subject::DEDUCT, (deducter, changes.clone()), deduct)
        .await?;
    worker
        .serve(subject::RETURN, (pool.clone(), changes.clone()), return_)
        .await?;
    worker
        .serve(subject::SELL_DETAIL, pool.clone(), sell_detail)
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
            pool,
            settings.rollback_retry_delay,
            changes,
            worker.stopping(),
        ),
    );
    tracing::info!(strategy = %settings.strategy, "stock strategy");
    Ok(worker)
}

#[tracing::instrument(skip_all, fields(goods_id = %req.goods_id))]
async fn set(
    (pool, changes): (PgPool, Changes),
    req: StockSetRequest,
) -> Result<StockLevel, StockError> {
    let level = repo::set(&pool, req.goods_id, req.available).await?;
    changes.goods([req.goods_id]);
    Ok(level)
}

async fn get(pool: PgPool, req: StockGetRequest) -> Result<StockGetReply, StockError> {
    Ok(StockGetReply {
        items: repo::get(&pool, req.goods_ids.as_slice()).await?,
    })
}

async fn deduct(
    (deducter, changes): (Deducter, Changes),
    req: DeductRequest,
) -> Result<DeductReply, StockError> {
    let lines = NormalizedLines::new(req.items.iter());
    let items = deducter.deduct(req.order_sn, &lines).await?;
    shop_kit::crash::point("stock.deduct.after_commit");
    changes.goods(items.iter().map(|line| line.goods_id));
    Ok(DeductReply {
        order_sn: req.order_sn,
        status: SellStatus::Deducted,
        items,
    })
}

async fn return_(
    (pool, changes): (PgPool, Changes),
    req: ReturnRequest,
) -> Result<ReturnReply, StockError> {
    let returned = repo::return_order(&pool, req.order_sn).await?;
    if returned {
        changes.returned(req.order_sn);
    }
    Ok(ReturnReply {
        order_sn: req.order_sn,
        status: SellStatus::Returned,
        returned,
    })
}

#[tracing::instrument(skip_all, fields(order_sn = %req.order_sn))]
async fn sell_detail(pool: PgPool, req: SellDetailRequest) -> Result<SellDetail, StockError> {
    repo::sell_detail(&pool, req.order_sn).await
}
