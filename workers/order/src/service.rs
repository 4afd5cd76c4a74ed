//! The `order` micro service: start-up (streams, checker, id lease, outbox relay) and one
//! handler per subject of CONTRACT section 4.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_nats::jetstream;
use async_nats::service::ServiceExt;
use shop_contracts::order::{
    CancelRequest, CreateOrderRequest, GetOrderRequest, ListOrdersReply, ListOrdersRequest, Order,
    PayRequest,
};
use shop_contracts::subjects::{order as subject, QUEUE_GROUP};
use shop_kit::jetstream::{
    consumer_config, ensure_consumer, ensure_stream, stream_config, ORDER_EVENTS_STREAM_JSON,
    ORDER_TXN_CHECKER_JSON, ORDER_TXN_STREAM_JSON, STOCK_ROLLBACK_STREAM_JSON,
};
use shop_kit::{serve, serve_admitted, Admission};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::committer::Committer;
use crate::domain::{self, Ctx};
use crate::ids::{Clock, Ids};
use crate::{checker, outbox, Failpoint, OrderError, Settings, SERVICE_VERSION};

/// Starts the `order` service on `client` and serves until the connection closes.
pub async fn run(
    client: async_nats::Client,
    pool: PgPool,
    settings: Settings,
) -> Result<(), async_nats::Error> {
    let js = jetstream::new(client.clone());
    let txn = ensure_stream(&js, stream_config("ORDER_TXN", ORDER_TXN_STREAM_JSON)?).await?;
    ensure_stream(
        &js,
        stream_config("STOCK_ROLLBACK", STOCK_ROLLBACK_STREAM_JSON)?,
    )
    .await?;
    ensure_stream(
        &js,
        stream_config("ORDER_EVENTS", ORDER_EVENTS_STREAM_JSON)?,
    )
    .await?;
    let mut checker_config = consumer_config("order-txn-checker", ORDER_TXN_CHECKER_JSON)?;
    checker_config.max_ack_pending = settings.max_ack_pending;
    let consumer = ensure_consumer(&txn, checker_config).await?;

    let clock = Clock {
        offset_ms: match settings.failpoint {
            Failpoint::ClockBehind => -3_600_000,
            _ => 0,
        },
    };
    let ids = Ids::start(&js, settings.node_lease_ttl, clock).await?;
    let outbox = Arc::new(Notify::new());
    let ctx = Ctx {
        committer: Committer::start(pool.clone(), outbox.clone()),
        pool,
        client: client.clone(),
        js: js.clone(),
        ids,
        settings: Arc::new(settings),
        outbox,
    };
    tokio::spawn(outbox::relay_forever(
        ctx.pool.clone(),
        js,
        ctx.outbox.clone(),
    ));
    let pending = Arc::new(AtomicU64::new(0));
    tokio::spawn(checker::run(ctx.clone(), consumer, pending.clone()));

    let service = client
        .service_builder()
        .description("orders: create, pay, cancel; closes unpaid orders at the deadline")
        .queue_group(QUEUE_GROUP)
        // `$SRV.STATS.order`: each endpoint reports the checker's pending timers.
        .stats_handler(move |_endpoint, _stats| {
            serde_json::json!({"checker_pending_timers": pending.load(Ordering::Relaxed)})
        })
        .start(subject::SERVICE, SERVICE_VERSION)
        .await?;

    let tasks = [
        serve_admitted(
            &service,
            subject::CREATE,
            Some(Admission::new(
                ctx.settings.max_creates_in_flight,
                ctx.settings.retry_after,
            )),
            ctx.clone(),
            create,
        )
        .await?,
        serve(&service, subject::PAY, ctx.clone(), pay).await?,
        serve(&service, subject::CANCEL, ctx.clone(), cancel).await?,
        serve(&service, subject::GET, ctx.clone(), get).await?,
        serve(&service, subject::LIST, ctx.clone(), list).await?,
    ];
    tracing::info!(
        service = subject::SERVICE,
        version = SERVICE_VERSION,
        node = ?ctx.ids.node(),
        "serving"
    );
    for task in tasks {
        task.await?;
    }
    Ok(())
}

async fn create(ctx: Ctx, req: CreateOrderRequest) -> Result<Order, OrderError> {
    domain::create(&ctx, req).await
}

async fn pay(ctx: Ctx, req: PayRequest) -> Result<Order, OrderError> {
    domain::pay(&ctx, req).await
}

async fn cancel(ctx: Ctx, req: CancelRequest) -> Result<Order, OrderError> {
    domain::cancel(&ctx, req).await
}

async fn get(ctx: Ctx, req: GetOrderRequest) -> Result<Order, OrderError> {
    domain::get(&ctx, req).await
}

async fn list(ctx: Ctx, req: ListOrdersRequest) -> Result<ListOrdersReply, OrderError> {
    domain::list(&ctx, req).await
}
