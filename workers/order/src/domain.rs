//! What the endpoints do: create (half message, deduct, local commit), pay, cancel, get, list.

use std::sync::Arc;

use async_nats::jetstream;
use serde_json::json;
use shop_contracts::endpoint::{GoodsBatch, StockDeduct};
use shop_contracts::goods::{GoodsBatchRequest, GoodsStatus};
use shop_contracts::order::{
    CancelRequest, CreateOrderRequest, GetOrderRequest, ListOrdersReply, ListOrdersRequest, Order,
    OrderItem, OrderStatus, PayRequest,
};
use shop_contracts::partition::{Slot, SLOT_MOVED_DETAIL};
use shop_contracts::stock::{DeductReply, DeductRequest, NormalizedLines, OrderLine};
use shop_contracts::txn::{
    event_msg_id, half_message_id, rollback_msg_id, rollback_subject, HalfMessage, OrderEventKind,
    OrderStreams, RollbackEvent, RollbackReason,
};
use shop_contracts::{Cents, Endpoint, ErrorCode, ErrorDetail, ItemList, OrderSn, UserId};
use shop_kit::client::{request, request_on, CallError};
use shop_kit::crash;
use shop_kit::partitions::sole_owner;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;

use crate::committer::Committer;
use crate::ids::Ids;
use crate::repo::{self, Commit, NewOrder, OutboxEntry, Paid};
use crate::{slot_move, Failpoint, OrderError, Settings};

/// Everything a handler needs.
#[derive(Clone)]
pub struct Ctx {
    pub pool: PgPool,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub ids: Ids,
    pub settings: Arc<Settings>,
    /// Wakes the outbox relay after a commit that wrote to the outbox.
    pub outbox: Arc<Notify>,
    /// Commits created orders in batches.
    pub committer: Committer,
    /// The stock partition map, followed: where a deduct's goods live.
    pub stock_map: shop_kit::partitions::Partitions,
}

impl Ctx {
    /// This partition's half-message and deadline streams.
    pub fn streams(&self) -> OrderStreams {
        OrderStreams::of(self.settings.placement.partition)
    }
}

/// A fingerprint of what a create asks for, to tell a repeat from a different request
/// under the same idempotency key.
fn fingerprint(req: &CreateOrderRequest, lines: &NormalizedLines) -> String {
    json!({
        "items": lines,
        "address": req.address.as_str(),
        "receiver_name": req.receiver_name.as_str(),
        "receiver_phone": req.receiver_phone.as_str(),
        "note": req.note.as_ref().map_or("", |n| n.as_str()),
    })
    .to_string()
}

/// What an idempotency key says about a create that repeats it.
enum Repeat {
    /// The key is free: this create goes ahead.
    New,
    /// The create that holds the key committed this order: the repeat returns it.
    Done(Order),
}

/// Looks at the create that holds `key`, if any: its order when it committed; `conflict`
/// when it asked for something else, or is still in flight (its outcome is not known yet,
/// and waiting for it here would hold a request slot for as long as it takes).
async fn repeat_of(
    conn: &mut PgConnection,
    user: UserId,
    key: &str,
    fingerprint: &str,
) -> Result<Repeat, OrderError> {
    let Some((sn, stored)) = repo::idempotency_key(conn, user, key).await? else {
        return Ok(Repeat::New);
    };
    holder_outcome(conn, sn, &stored, fingerprint).await
}

/// The outcome of the create `sn` that holds an idempotency key, seen by a repeat.
async fn holder_outcome(
    conn: &mut PgConnection,
    sn: OrderSn,
    stored: &str,
    fingerprint: &str,
) -> Result<Repeat, OrderError> {
    if stored != fingerprint {
        return Err(OrderError::Conflict(
            ErrorDetail::new(
                ErrorCode::Conflict,
                "this idempotency_key was used for a different order",
            )
            .with("order_sn", sn.to_string()),
        ));
    }
    match repo::get(conn, sn).await? {
        Some(order) => Ok(Repeat::Done(order)),
        None => Err(OrderError::Conflict(
            ErrorDetail::new(
                ErrorCode::Conflict,
                "a create with this idempotency_key is in progress; ask again shortly",
            )
            .with("order_sn", sn.to_string())
            .with("retry_after_ms", IN_FLIGHT_RETRY_MS),
        )),
    }
}

/// What a repeat of an in-flight create is told to wait before asking again: about one
/// create's round trip under load.
const IN_FLIGHT_RETRY_MS: u64 = 100;

/// The lines as stock deducts them: one per goods, duplicates summed, each sum within the
/// contract's quantity range.
fn order_lines(lines: &NormalizedLines) -> Result<Vec<OrderLine>, OrderError> {
    lines
        .to_lines()
        .map_err(|too_large| OrderError::BadRequest(too_large.to_string()))
}

/// Prices and titles from `goods.batch` for the summed lines.
async fn price(ctx: &Ctx, lines: &[OrderLine]) -> Result<Vec<OrderItem>, OrderError> {
    let ids = lines.iter().map(|line| line.goods_id).collect();
    let batch = GoodsBatchRequest {
        goods_ids: ItemList::new(ids).map_err(|e| OrderError::BadRequest(e.to_string()))?,
    };
    let reply = request::<GoodsBatch>(&ctx.client, &batch, ctx.settings.request_timeout).await?;
    if let Some(missing) = reply.missing.first() {
        return Err(OrderError::NotFound(format!(
            "goods {missing} does not exist"
        )));
    }
    let mut items = Vec::with_capacity(lines.len());
    for &OrderLine { goods_id, quantity } in lines {
        let Some(goods) = reply.goods.iter().find(|g| g.goods_id == goods_id) else {
            return Err(OrderError::NotFound(format!(
                "goods {goods_id} does not exist"
            )));
        };
        if goods.status != GoodsStatus::OnSale {
            return Err(OrderError::OffSale(
                ErrorDetail::new(
                    ErrorCode::OffSale,
                    format!("goods {goods_id} is not on sale"),
                )
                .with("goods_id", goods_id.get()),
            ));
        }
        items.push(OrderItem {
            goods_id,
            title: goods.title.clone(),
            price_cents: goods.price_cents,
            quantity,
        });
    }
    Ok(items)
}

fn total(items: &[OrderItem]) -> Result<Cents, OrderError> {
    let mut sum: i64 = 0;
    for it in items {
        sum = it
            .price_cents
            .get()
            .checked_mul(i64::from(it.quantity.get()))
            .and_then(|line| sum.checked_add(line))
            .ok_or_else(|| OrderError::BadRequest("the order total is too large".into()))?;
    }
    Cents::new(sum).map_err(|_| OrderError::BadRequest("the order total is too large".into()))
}

/// Publishes to JetStream with a `Nats-Msg-Id` and waits for the stream's ack.
pub async fn publish(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    payload: Vec<u8>,
) -> Result<(), async_nats::Error> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    js.publish_with_headers(subject, headers, payload.into())
        .await?
        .await?;
    Ok(())
}

/// Writes an ORDER_EVENTS fact into the outbox, in the caller's transaction.
pub async fn outbox_event(
    conn: &mut PgConnection,
    streams: OrderStreams,
    order: &Order,
    kind: OrderEventKind,
) -> Result<(), OrderError> {
    let row = event_entry(streams, order, kind)?;
    repo::outbox_add(conn, &row.subject, &row.msg_id, &row.payload).await
}

/// Writes a STOCK_ROLLBACK event into the outbox, in the caller's transaction. `order` is
/// the order when there is one: its goods name the stock partitions that must give back
/// (without it, every partition does).
pub async fn outbox_rollback(
    conn: &mut PgConnection,
    sn: OrderSn,
    reason: RollbackReason,
    order: Option<&Order>,
) -> Result<(), OrderError> {
    let row = rollback_entry(sn, reason, order)?;
    repo::outbox_add(conn, &row.subject, &row.msg_id, &row.payload).await
}

/// The outbox row of an ORDER_EVENTS event (in this partition's events stream, `streams`):
/// the order itself, under `<order_sn>-<event>`.
pub fn event_entry(
    streams: OrderStreams,
    order: &Order,
    kind: OrderEventKind,
) -> Result<OutboxEntry, OrderError> {
    Ok(OutboxEntry {
        subject: streams.event_subject(order.order_sn, kind),
        msg_id: event_msg_id(order.order_sn, kind),
        payload: serde_json::to_vec(order).map_err(|e| OrderError::Bug(e.to_string()))?,
    })
}

/// The outbox row of a STOCK_ROLLBACK event, under `rollback-<order_sn>`.
pub fn rollback_entry(
    sn: OrderSn,
    reason: RollbackReason,
    order: Option<&Order>,
) -> Result<OutboxEntry, OrderError> {
    let event = RollbackEvent {
        order_sn: sn,
        reason,
        goods_ids: order.map(|order| order.items.iter().map(|line| line.goods_id).collect()),
    };
    Ok(OutboxEntry {
        subject: rollback_subject(sn),
        msg_id: rollback_msg_id(sn),
        payload: serde_json::to_vec(&event).map_err(|e| OrderError::Bug(e.to_string()))?,
    })
}

#[tracing::instrument(skip_all, fields(user_id = %req.user_id, order_sn))]
pub async fn create(ctx: &Ctx, req: CreateOrderRequest) -> Result<Order, OrderError> {
    let lines = NormalizedLines::new(req.items.iter());
    // A repeat of a finished create is answered before anything is published or deducted.
    let key = match &req.idempotency_key {
        Some(key) => {
            let print = fingerprint(&req, &lines);
            let mut conn = ctx.pool.acquire().await?;
            if let Repeat::Done(order) =
                repeat_of(&mut conn, req.user_id, key.as_str(), &print).await?
            {
                return Ok(order);
            }
            Some((key.as_str(), print))
        }
        None => None,
    };
    let deduct_lines = order_lines(&lines)?;
    // The order_sn carries the user's slot: pay, cancel and get find this partition by it.
    let sn = ctx
        .ids
        .next(Slot::of_key(req.user_id.get()))
        .ok_or_else(|| OrderError::Unavailable("no order_sn can be issued right now".into()))?;
    tracing::Span::current().record("order_sn", tracing::field::display(sn));

    // 1. The half message: from here on, the checker gives the stock back unless the
    //    order commits. It names only goods and quantities, so it is published while goods
    //    prices the lines (two round trips in parallel, not in series); a create that then
    //    fails its pricing fences its order_sn, and the checker acks the half message.
    let (priced, published) = tokio::join!(
        price(ctx, &deduct_lines),
        publish_half_message(ctx, sn, &deduct_lines)
    );
    published?;
    crash::point("order.create.after_half_message");
    let (items, total) = match priced.and_then(|items| Ok((total(&items)?, items))) {
        Ok((total, items)) => (items, total),
        Err(error) => {
            fence_quietly(ctx, sn).await;
            return Err(error);
        }
    };

    // 2. The idempotency key, claimed before the deduct: of concurrent repeats exactly one
    //    deducts. A loser fences its own order_sn at once (it will never commit), so the
    //    checker acks its half message without a rollback.
    if let Some((key, print)) = &key {
        let mut conn = ctx.pool.acquire().await?;
        if let repo::KeyClaim::Taken {
            sn: holder,
            fingerprint,
        } = repo::claim_idempotency_key(&mut conn, req.user_id, key, print, sn).await?
        {
            // Give the connection back before the fence takes one: losers holding one
            // each while waiting for another could drain the pool.
            drop(conn);
            fence_quietly(ctx, sn).await;
            let mut conn = ctx.pool.acquire().await?;
            return match holder_outcome(&mut conn, holder, &fingerprint, print).await? {
                Repeat::Done(order) => Ok(order),
                Repeat::New => Err(OrderError::Bug("a taken key has no holder".into())),
            };
        }
    }

    // 3. The deduct.
    deduct(ctx, sn, deduct_lines).await?;
    crash::point("order.create.after_deduct");
    match ctx.settings.failpoint {
        Failpoint::AfterDeduct => {
            tracing::error!("failpoint after_deduct: aborting");
            std::process::abort();
        }
        Failpoint::CommitAfterFence => wait_for_fence(ctx, sn).await?,
        Failpoint::None | Failpoint::ClockBehind | Failpoint::ClockAhead => {}
    }

    // 4. The local commit, exclusive with the checker's fence for this order_sn, in the
    //    committer's next batch.
    let committed = ctx
        .committer
        .commit(NewOrder {
            sn,
            user: req.user_id,
            items,
            total,
            address: req.address.as_str().to_owned(),
            receiver_name: req.receiver_name.as_str().to_owned(),
            receiver_phone: req.receiver_phone.as_str().to_owned(),
            note: req.note.as_ref().map_or("", |n| n.as_str()).to_owned(),
            pay_timeout_ms: ctx.settings.pay_timeout.as_millis() as i64,
        })
        .await?;
    match committed {
        Commit::Committed(order) => {
            crash::point("order.create.after_commit");
            Ok(order)
        }
        // Its stock was deducted and comes back only through the checker, after the check
        // delay: not a refusal before any work, so no retry hint (CONTRACT section 1).
        Commit::Moved(to) => {
            tracing::info!(%to, "the order's slot moved while it was created; the checker gives its stock back");
            Err(OrderError::Unavailable(
                "the order's partition moved while it was created; nothing was ordered".into(),
            ))
        }
        Commit::Fenced => Err(OrderError::Unavailable(
            "the order took too long and was rolled back; nothing was ordered".into(),
        )),
    }
}

/// Publishes the half message of `sn` and waits for the stream's ack.
async fn publish_half_message(
    ctx: &Ctx,
    sn: OrderSn,
    items: &[OrderLine],
) -> Result<(), OrderError> {
    let half = HalfMessage {
        order_sn: sn,
        items: items.to_vec(),
    };
    let payload = serde_json::to_vec(&half).map_err(|e| OrderError::Bug(e.to_string()))?;
    publish(
        &ctx.js,
        ctx.streams().half_message_subject(sn),
        &half_message_id(sn),
        payload,
    )
    .await
    .map_err(|error| {
        tracing::warn!(%error, "could not publish the half message");
        OrderError::Unavailable("the transaction log did not answer; nothing was ordered".into())
    })
}

/// Asks stock to deduct `items` for `sn`. A definite refusal fences `sn` at once and is
/// passed on; no answer leaves the decision to the checker.
async fn deduct(ctx: &Ctx, sn: OrderSn, items: Vec<OrderLine>) -> Result<(), OrderError> {
    let deduct = DeductRequest {
        order_sn: sn,
        items: ItemList::new(items).map_err(|e| OrderError::BadRequest(e.to_string()))?,
    };
    let deducted = ask_stock(ctx, &deduct).await;
    match deducted {
        Ok(_) => Ok(()),
        Err(CallError::Refused(d))
            if !matches!(d.code, ErrorCode::Unavailable | ErrorCode::Internal) =>
        {
            // Nothing was taken. Fencing now lets the checker ack the half message on its
            // first look instead of publishing a rollback after the check delay: in a
            // sell-out most creates are refused, and each would otherwise cost a rollback
            // event and a null-compensation record.
            fence_quietly(ctx, sn).await;
            Err(CallError::Refused(d).into())
        }
        // No answer, or a failure of stock itself: the deduct may have been applied, so the
        // checker decides (and rolls it back). The endpoint logs the cause.
        Err(error) => Err(error.into()),
    }
}

/// Sends `deduct` to the stock partition owning all its goods when one does and the stock is
/// partitioned (`stock.part.<p>.deduct`: one hop less than a stock router, which would
/// forward it there three times in four with four partitions), else to the public
/// `stock.deduct`, whose router splits it over the owners. An owner that says its goods'
/// slot moved (this worker's map a moment old) did nothing, and the router is asked instead;
/// any other answer (a shed refusal included) is the answer.
async fn ask_stock(ctx: &Ctx, deduct: &DeductRequest) -> Result<DeductReply, CallError> {
    let timeout = ctx.settings.request_timeout;
    let map = ctx.stock_map.now();
    let owner = map
        .map
        .is_split()
        .then(|| sole_owner(&map.map, deduct.items.iter().map(|l| l.goods_id.get())))
        .flatten();
    let Some(owner) = owner else {
        return request::<StockDeduct>(&ctx.client, deduct, timeout).await;
    };
    let subject = shop_contracts::subjects::stock::partition(StockDeduct::SUBJECT, owner);
    match request_on::<StockDeduct>(&ctx.client, &subject, deduct, timeout).await {
        Err(CallError::Refused(d))
            if d.code == ErrorCode::Unavailable && d.details.contains_key(SLOT_MOVED_DETAIL) =>
        {
            request::<StockDeduct>(&ctx.client, deduct, timeout).await
        }
        answered => answered,
    }
}

/// Fences an order_sn that will never commit; if that fails, the checker's slow path still
/// resolves it after the check delay.
async fn fence_quietly(ctx: &Ctx, sn: OrderSn) {
    if let Err(error) = fence_refused(ctx, sn).await {
        tracing::warn!(%error, "could not fence an order_sn that will not commit; the checker will");
    }
}

/// The `commit_after_fence` failpoint: polls until the checker has fenced `sn` (a test hook,
/// never configured in production).
async fn wait_for_fence(ctx: &Ctx, sn: OrderSn) -> Result<(), OrderError> {
    tracing::warn!("failpoint commit_after_fence: waiting for the checker's fence");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        let mut conn = ctx.pool.acquire().await?;
        if repo::is_fenced(&mut conn, sn).await? {
            return Ok(());
        }
        drop(conn);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(OrderError::Bug(
        "failpoint commit_after_fence: no fence came".into(),
    ))
}

/// Fences an order_sn whose deduct was refused, under the same lock as the commit and the
/// checker, so nothing can commit it later.
async fn fence_refused(ctx: &Ctx, sn: OrderSn) -> Result<(), OrderError> {
    let mut tx = ctx.pool.begin().await?;
    repo::lock_sn(&mut tx, sn).await?;
    repo::fence(&mut tx, sn).await?;
    tx.commit().await?;
    Ok(())
}

fn not_found(sn: OrderSn) -> OrderError {
    OrderError::NotFound(format!("order {sn} does not exist"))
}

/// `sn`'s order in this partition, or why there is none: it never existed (`not_found`), or
/// its slot was moved to another partition since the request was routed here.
async fn order_here(conn: &mut PgConnection, sn: OrderSn) -> Result<Order, OrderError> {
    if let Some(order) = repo::get(conn, sn).await? {
        return Ok(order);
    }
    Err(match slot_move::moved_to(conn, Slot::of_order(sn)).await? {
        Some(to) => OrderError::SlotMoved(to),
        None => not_found(sn),
    })
}

#[tracing::instrument(skip_all, fields(order_sn = %req.order_sn))]
pub async fn pay(ctx: &Ctx, req: PayRequest) -> Result<Order, OrderError> {
    let sn = req.order_sn;
    let mut tx = ctx.pool.begin().await?;
    let payment_ref = req.payment_ref.as_ref().map(|r| r.as_str());
    if let Paid::Now = repo::pay(&mut tx, sn, req.amount_cents, payment_ref).await? {
        let order = order_here(&mut tx, sn).await?;
        outbox_event(&mut tx, ctx.streams(), &order, OrderEventKind::Paid).await?;
        tx.commit().await?;
        ctx.outbox.notify_one();
        crash::point("order.pay.after_commit");
        return Ok(order);
    }
    let order = order_here(&mut tx, sn).await?;
    tx.rollback().await?;
    let mismatch = || {
        OrderError::AmountMismatch(
            ErrorDetail::new(
                ErrorCode::AmountMismatch,
                format!("the order total is {} cents", order.total_cents),
            )
            .with("total_cents", order.total_cents.get())
            .with("amount_cents", req.amount_cents.get()),
        )
    };
    match order.status {
        OrderStatus::Paid if order.total_cents == req.amount_cents => Ok(order),
        OrderStatus::Paid => Err(mismatch()),
        OrderStatus::Unpaid if order.total_cents != req.amount_cents => Err(mismatch()),
        // Unpaid but past its deadline (the checker has not closed it yet), closed, cancelled.
        status => Err(OrderError::NotPayable(
            ErrorDetail::new(
                ErrorCode::NotPayable,
                if status == OrderStatus::Unpaid {
                    "the pay deadline has passed".to_owned()
                } else {
                    format!("the order is {}", status.as_str())
                },
            )
            .with("status", status.as_str())
            .with(
                "pay_deadline",
                shop_contracts::time::format(&order.pay_deadline),
            ),
        )),
    }
}

#[tracing::instrument(skip_all, fields(order_sn = %req.order_sn))]
pub async fn cancel(ctx: &Ctx, req: CancelRequest) -> Result<Order, OrderError> {
    let sn = req.order_sn;
    let mut tx = ctx.pool.begin().await?;
    if repo::cancel(&mut tx, sn).await? {
        let order = order_here(&mut tx, sn).await?;
        // Stock goes back through STOCK_ROLLBACK, relayed from the outbox after the commit.
        outbox_rollback(&mut tx, sn, RollbackReason::Cancelled, Some(&order)).await?;
        outbox_event(&mut tx, ctx.streams(), &order, OrderEventKind::Cancelled).await?;
        tx.commit().await?;
        ctx.outbox.notify_one();
        crash::point("order.cancel.after_commit");
        return Ok(order);
    }
    let order = order_here(&mut tx, sn).await?;
    tx.rollback().await?;
    match order.status {
        OrderStatus::Cancelled => Ok(order),
        status => Err(OrderError::Conflict(
            ErrorDetail::new(
                ErrorCode::Conflict,
                format!("a {} order cannot be cancelled", status.as_str()),
            )
            .with("status", status.as_str()),
        )),
    }
}

pub async fn get(ctx: &Ctx, req: GetOrderRequest) -> Result<Order, OrderError> {
    let mut conn = ctx.pool.acquire().await?;
    order_here(&mut conn, req.order_sn).await
}

pub async fn list(ctx: &Ctx, req: ListOrdersRequest) -> Result<ListOrdersReply, OrderError> {
    let limit = req.limit.unwrap_or_default();
    let (orders, more) = repo::list(&ctx.pool, req.user_id, req.before_sn, limit.get()).await?;
    if orders.is_empty() {
        // None here may mean that the user's slot has just moved to another partition.
        let mut conn = ctx.pool.acquire().await?;
        if let Some(to) = slot_move::moved_to(&mut conn, Slot::of_key(req.user_id.get())).await? {
            return Err(OrderError::SlotMoved(to));
        }
    }
    let next_before_sn = if more {
        orders.last().map(|o| o.order_sn)
    } else {
        None
    };
    Ok(ListOrdersReply {
        orders,
        next_before_sn,
    })
}
