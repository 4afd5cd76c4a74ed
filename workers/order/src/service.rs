//! The `order` worker of one partition: start-up (streams, checker, id lease, outbox relay,
//! the partition map, all owned by its [`Worker`]), its own subjects `order.part.<p>.<op>`
//! ([`crate::domain`] on its database) and the public subjects of CONTRACT section 4 over
//! every partition ([`crate::route`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_nats::jetstream;
use shop_contracts::order::{
    CancelRequest, CreateOrderRequest, GetOrderRequest, ListOrdersReply, ListOrdersRequest, Order,
    PayRequest,
};
use shop_contracts::partition::{ORDER_MAP_KEY, STOCK_MAP_KEY};
use shop_contracts::subjects::order::{self as subject, partition};
use shop_contracts::txn::{OrderStreams, ORDER_EVENTS_STREAM};
use shop_contracts::Endpoint;
use shop_kit::jetstream::{
    consumer_config, ensure_consumer, ensure_stream, partition_stream_config, stream_config,
    ORDER_EVENTS_STREAM_JSON, ORDER_TXN_CHECKER_JSON, ORDER_TXN_STREAM_JSON,
    STOCK_ROLLBACK_STREAM_JSON,
};
use shop_kit::partitions::Peers;
use shop_kit::{Admission, ServiceConfig, Worker};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::checker::{OrderCheck, Questions, Source, Verdicts};
use crate::committer::Committer;
use crate::domain::{self, Ctx};
use crate::ids::{Clock, Ids};
use crate::route::Router;
use crate::{checker, outbox, timers, Failpoint, OrderError, Settings, TimerMode, SERVICE_VERSION};

/// The `order` worker on `client`: its endpoints, the checker and closer consumers, the
/// committer, the outbox relay and the node-id lease, ready to [`Worker::run`].
/// `replicas` (`nats.replicas`) is what the streams and buckets it creates get; existing
/// ones keep theirs.
pub async fn start(
    client: async_nats::Client,
    pool: PgPool,
    settings: Settings,
    replicas: usize,
) -> Result<Worker, async_nats::Error> {
    let js = jetstream::new(client.clone());
    // This partition's own half-message stream (partition 0's is the contract's `ORDER_TXN`).
    let streams = OrderStreams::of(settings.placement.partition);
    let stream_tags = settings.placement.stream_tags();
    let txn_config = partition_stream_config(
        "ORDER_TXN",
        ORDER_TXN_STREAM_JSON,
        streams.txn_stream(),
        streams.txn_subjects(),
        &stream_tags,
    )?;
    let txn = ensure_stream(&js, txn_config, replicas).await?;
    ensure_stream(
        &js,
        stream_config("STOCK_ROLLBACK", STOCK_ROLLBACK_STREAM_JSON)?,
        replicas,
    )
    .await?;
    // The contract's ORDER_EVENTS always (partition 0 publishes there, other systems read
    // it); a partition p > 0 publishes to its own ORDER_EVENTS_P<p>, which ORDER_EVENTS
    // sources back under the contract's subjects.
    ensure_stream(
        &js,
        stream_config("ORDER_EVENTS", ORDER_EVENTS_STREAM_JSON)?,
        replicas,
    )
    .await?;
    if let Some((from, to)) = streams.events_transform() {
        let events = partition_stream_config(
            "ORDER_EVENTS",
            ORDER_EVENTS_STREAM_JSON,
            streams.events_stream(),
            streams.events_subjects(),
            &stream_tags,
        )?;
        ensure_stream(&js, events, replicas).await?;
        let source = jetstream::stream::Source {
            name: streams.events_stream(),
            subject_transforms: vec![jetstream::stream::SubjectTransform {
                source: from,
                destination: to,
            }],
            ..Default::default()
        };
        shop_kit::jetstream::ensure_source(&js, ORDER_EVENTS_STREAM, source).await?;
    }
    let mut checker_config = consumer_config("order-txn-checker", ORDER_TXN_CHECKER_JSON)?;
    checker_config.max_ack_pending = settings.max_ack_pending;
    // A redelivery means "held at least the check delay" (checker.rs): a first delivery whose
    // nak never arrived must not come back sooner than that.
    checker_config.ack_wait = checker_config
        .ack_wait
        .max(settings.check_delay + std::time::Duration::from_secs(1));
    let checker = ensure_consumer(&txn, checker_config).await?;
    // The closer runs whenever the server can hold schedules, whatever the timer mode: after
    // a switch back to `nak_delay`, deadlines already scheduled must still close their orders.
    let server_version = client.server_info().version;
    let closer = if timers::server_has_schedules(&server_version) {
        Some(timers::setup(&js, streams, replicas, &stream_tags).await?)
    } else if settings.timer == TimerMode::Schedule {
        return Err(format!(
            "order.timer = \"schedule\" needs nats-server 2.12 or newer (message schedules); \
             this server is {server_version}: upgrade it or set order.timer = \"nak_delay\""
        )
        .into());
    } else {
        None
    };

    let clock = Clock {
        offset_ms: match settings.failpoint {
            Failpoint::ClockBehind => -3_600_000,
            Failpoint::ClockAhead => 600_000,
            _ => 0,
        },
    };
    let (ids, renewing) = Ids::start(&js, settings.node_lease_ttl, clock, replicas).await?;
    let waiting = Arc::new(WaitingTimers {
        partition: settings.placement.partition.get(),
        ..WaitingTimers::default()
    });
    waiting.export_metrics();
    let mut worker = Worker::start(
        client.clone(),
        ServiceConfig {
            name: subject::SERVICE,
            version: SERVICE_VERSION,
            description: "orders: create, pay, cancel; closes unpaid orders at the deadline",
            // `$SRV.INFO.order` says how deadlines wait, so `shop bench timers` can label its
            // figures, and which partition the worker serves.
            metadata: HashMap::from([
                ("timer".to_owned(), settings.timer.as_str().to_owned()),
                (
                    "partition".to_owned(),
                    settings.placement.partition.to_string(),
                ),
            ]),
            // `$SRV.STATS.order`: each endpoint reports the timers waiting in both places.
            stats: Some(Box::new({
                let waiting = waiting.clone();
                move |_endpoint: &str| waiting.to_json()
            })),
        },
    )
    .await?;

    let (partitions, follow) =
        shop_kit::partitions::follow(&js, ORDER_MAP_KEY, replicas, worker.draining()).await?;
    worker.background("order partition map", follow);
    // The stock map too: a deduct whose goods are all one stock partition's goes to that
    // partition's workers directly (`domain::ask_stock`), not through a stock router.
    let (stock_map, follow_stock) =
        shop_kit::partitions::follow(&js, STOCK_MAP_KEY, replicas, worker.draining()).await?;
    worker.background("stock partition map", follow_stock);
    let me = settings.placement.partition;
    let peers = Peers {
        me,
        partitions,
        client: client.clone(),
        timeout: settings.placement.forward_timeout,
        subject_of: partition,
    };

    let outbox = Arc::new(Notify::new());
    let (committer, committing) = Committer::new(pool.clone(), streams, outbox.clone());
    let node = ids.node();
    let ctx = Ctx {
        committer,
        pool,
        client: client.clone(),
        js: js.clone(),
        ids,
        settings: Arc::new(settings),
        outbox,
        stock_map,
    };
    let draining = worker.draining();
    worker.background("order committer", committing.run(draining.clone()));
    worker.background(
        "outbox relay",
        outbox::relay_until(ctx.pool.clone(), js, ctx.outbox.clone(), draining.clone()),
    );
    worker.background(
        "outbox backlog gauge",
        outbox::measure_backlog_until(ctx.pool.clone(), draining.clone()),
    );
    worker.background(
        "timer probe",
        waiting.probe_until(
            checker.clone(),
            closer.as_ref().map(|(timers, _)| timers.clone()),
            draining.clone(),
        ),
    );
    worker.background("node id lease", async move {
        tokio::select! {
            _ = renewing => {}
            _ = draining.cancelled() => {}
        }
        Ok::<(), std::convert::Infallible>(())
    });
    worker.intake(
        "order-txn-checker consumer",
        checker::run(
            ctx.clone(),
            peers.clone(),
            checker,
            Source::HalfMessages,
            worker.stopping(),
        ),
    );
    if let Some((_, closer)) = closer {
        worker.intake(
            "order-timer-closer consumer",
            checker::run(
                ctx.clone(),
                peers.clone(),
                closer,
                Source::DueDeadlines,
                worker.stopping(),
            ),
        );
    }

    // This partition's own subjects, `order.part.<me>.<op>`: only its database answers.
    // (Leaked once per process: the frame names endpoints by `&'static str`.)
    let own = |public: &str| -> &'static str { Box::leak(partition(public, me).into_boxed_str()) };
    let admission = || {
        Admission::new(ctx.settings.max_creates_in_flight, ctx.settings.retry_after)
            .with_wait(ctx.settings.create_wait)
    };
    worker
        .serve_admitted(own(subject::CREATE), Some(admission()), ctx.clone(), create)
        .await?;
    worker.serve(own(subject::PAY), ctx.clone(), pay).await?;
    worker
        .serve(own(subject::CANCEL), ctx.clone(), cancel)
        .await?;
    worker.serve(own(subject::GET), ctx.clone(), get).await?;
    worker.serve(own(subject::LIST), ctx.clone(), list).await?;
    worker
        .serve(own(OrderCheck::SUBJECT), ctx.clone(), check)
        .await?;

    // The public subjects of CONTRACT section 4, over every partition. A create forwarded to
    // its owner holds one of this worker's slots too (its own, separate bound), so a router
    // flooded with creates for other partitions refuses them before they are sent.
    let router = Router {
        peers,
        local: ctx.clone(),
    };
    worker
        .serve_admitted(
            subject::CREATE,
            Some(admission().with_held_refusals(ctx.settings.max_refusal_hold)),
            router.clone(),
            Router::create,
        )
        .await?;
    worker
        .serve(subject::PAY, router.clone(), Router::pay)
        .await?;
    worker
        .serve(subject::CANCEL, router.clone(), Router::cancel)
        .await?;
    worker
        .serve(subject::GET, router.clone(), Router::get)
        .await?;
    worker.serve(subject::LIST, router, Router::list).await?;
    tracing::info!(node = ?node, timer = ?ctx.settings.timer, partition = %me,
        "order node, timers and partition");
    Ok(worker)
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

async fn check(ctx: Ctx, asked: Questions) -> Result<Verdicts, OrderError> {
    let verdicts = checker::decide(&ctx, &asked.questions).await?;
    Ok(Verdicts { verdicts })
}

/// Timers waiting in this worker's order partition's streams (each partition has its own,
/// `OrderStreams`), for `$SRV.STATS.order`, refreshed every few seconds from the server. The
/// shop's total is the sum over one worker of each partition (`partition` in the figures).
#[derive(Default)]
struct WaitingTimers {
    partition: u16,
    /// Half messages ack-pending on `order-txn-checker`: in `nak_delay` mode, every unpaid
    /// order; in `schedule` mode, only creates younger than the check delay.
    checker_pending: AtomicU64,
    /// Messages in `ORDER_TIMERS`: deadlines scheduled and not yet closed on.
    scheduled: AtomicU64,
    /// Half messages on `order-txn-checker` not yet delivered (for the metrics only).
    checker_undelivered: AtomicU64,
}

impl WaitingTimers {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    async fn probe_until(
        self: Arc<Self>,
        mut checker: jetstream::consumer::PullConsumer,
        mut timers: Option<jetstream::stream::Stream>,
        done: CancellationToken,
    ) -> Result<(), std::convert::Infallible> {
        while !done.is_cancelled() {
            if let Ok(info) = checker.info().await {
                self.checker_pending
                    .store(info.num_ack_pending as u64, Ordering::Relaxed);
                self.checker_undelivered
                    .store(info.num_pending, Ordering::Relaxed);
            }
            if let Some(stream) = &mut timers {
                if let Ok(info) = stream.info().await {
                    self.scheduled.store(info.state.messages, Ordering::Relaxed);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Self::EVERY) => {}
                _ = done.cancelled() => {}
            }
        }
        Ok(())
    }

    /// The same figures as Prometheus gauges, read from the last probe at each scrape.
    fn export_metrics(self: &Arc<Self>) {
        let metrics = shop_kit::metrics::global();
        let checker = metrics.consumer("order-txn-checker");
        let pending = metrics.gauge(
            "checker_pending_timers",
            "Half messages ack-pending on order-txn-checker (with timer = nak_delay: every unpaid order)",
        );
        let scheduled = metrics.gauge(
            "scheduled_timers",
            "Pay deadlines stored as message schedules in ORDER_TIMERS",
        );
        let waiting = self.clone();
        metrics.on_scrape(move || {
            let ack_pending = waiting.checker_pending.load(Ordering::Relaxed);
            let undelivered = waiting.checker_undelivered.load(Ordering::Relaxed);
            checker.set_counts(undelivered, ack_pending);
            pending.set(ack_pending as i64);
            scheduled.set(waiting.scheduled.load(Ordering::Relaxed) as i64);
        });
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "partition": self.partition,
            "checker_pending_timers": self.checker_pending.load(Ordering::Relaxed),
            "scheduled_timers": self.scheduled.load(Ordering::Relaxed),
        })
    }
}
