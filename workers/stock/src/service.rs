//! The `stock` micro service: one handler per subject of CONTRACT section 3, plus the
//! rollback consumer running beside it.

use std::collections::HashMap;

use async_nats::service::ServiceExt;
use shop_contracts::stock::{
    DeductReply, DeductRequest, NormalizedLines, ReturnReply, ReturnRequest, SellDetail,
    SellDetailRequest, SellStatus, StockGetReply, StockGetRequest, StockLevel, StockSetRequest,
};
use shop_contracts::subjects::{stock as subject, QUEUE_GROUP};
use shop_kit::serve;
use sqlx::PgPool;

use crate::changes::Changes;
use crate::strategies::Deducter;
use crate::{repo, rollback, Settings, StockError, SERVICE_VERSION};

/// Starts the `stock` service and the `stock-rollback` consumer on `client`, and serves until
/// the connection closes. `replicas` (`nats.replicas`) is what the stream and bucket it
/// creates get; existing ones keep theirs.
pub async fn run(
    client: async_nats::Client,
    pool: PgPool,
    settings: Settings,
    replicas: usize,
) -> Result<(), async_nats::Error> {
    let js = async_nats::jetstream::new(client.clone());
    let consumer = rollback::setup(&js, replicas).await?;
    let (deducter, background) = Deducter::start(&js, pool.clone(), &settings, replicas).await?;
    let (changes, _notifying) = Changes::start(client.clone(), pool.clone());

    let service = client
        .service_builder()
        .description("stock counts, sell records and the ledger")
        .metadata(HashMap::from([(
            "strategy".to_owned(),
            settings.strategy.as_str().to_owned(),
        )]))
        .queue_group(QUEUE_GROUP)
        // `$SRV.STATS.stock`: `stock.deduct` reports the strategy's figures (batch sizes).
        .stats_handler({
            let deducter = deducter.clone();
            move |endpoint, _stats| match endpoint.as_str() {
                subject::DEDUCT => deducter.stats(),
                _ => serde_json::Value::Null,
            }
        })
        .start(subject::SERVICE, SERVICE_VERSION)
        .await?;

    let endpoints = [
        serve(&service, subject::SET, (pool.clone(), changes.clone()), set).await?,
        serve(&service, subject::GET, pool.clone(), get).await?,
        serve(
            &service,
            subject::DEDUCT,
            (deducter, changes.clone()),
            deduct,
        )
        .await?,
        serve(
            &service,
            subject::RETURN,
            (pool.clone(), changes.clone()),
            return_,
        )
        .await?,
        serve(&service, subject::SELL_DETAIL, pool.clone(), sell_detail).await?,
    ];
    // `shop_consumer_pending` / `shop_consumer_ack_pending` of stock-rollback: returns waiting.
    tokio::spawn(
        shop_kit::metrics::global()
            .consumer("stock-rollback")
            .watch_forever(consumer.clone(), std::time::Duration::from_secs(5)),
    );
    let consuming = tokio::spawn(rollback::run(
        consumer,
        pool,
        settings.rollback_retry_delay,
        changes,
    ));
    tracing::info!(
        service = subject::SERVICE,
        version = SERVICE_VERSION,
        strategy = %settings.strategy,
        "serving"
    );
    let serving = futures::future::join_all(endpoints);
    tokio::select! {
        _ = serving => Ok(()),
        result = consuming => match result {
            Ok(Ok(())) => Err("the STOCK_ROLLBACK consumer stopped".into()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e.into()),
        },
        result = background.ended() => match result {
            Ok(()) => Err("the batch writer stopped".into()),
            Err(e) => Err(e.into()),
        },
    }
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
