//! Every SQL statement of the order worker.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shop_contracts::order::{Order, OrderItem, OrderStatus};
use shop_contracts::partition::Slot;
use shop_contracts::txn::{event_msg_id, OrderEventKind, OrderStreams};
use shop_contracts::{Cents, GoodsId, OrderSn, Quantity, UserId};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::OrderError;

#[derive(sqlx::FromRow)]
struct OrderRow {
    order_sn: i64,
    user_id: i64,
    status: String,
    total_cents: i64,
    address: String,
    receiver_name: String,
    receiver_phone: String,
    note: String,
    created_at: DateTime<Utc>,
    pay_deadline: DateTime<Utc>,
    paid_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    order_sn: i64,
    goods_id: i64,
    title: String,
    price_cents: i64,
    quantity: i32,
}

const COLUMNS: &str = "order_sn, user_id, status, total_cents, address, receiver_name, \
     receiver_phone, note, created_at, pay_deadline, paid_at, closed_at";

fn bug(what: &str) -> OrderError {
    OrderError::Bug(format!("stored order has an invalid {what}"))
}

fn assemble(row: OrderRow, items: Vec<OrderItem>) -> Result<Order, OrderError> {
    Ok(Order {
        order_sn: OrderSn::new(row.order_sn).map_err(|_| bug("order_sn"))?,
        user_id: UserId::new(row.user_id).map_err(|_| bug("user_id"))?,
        status: OrderStatus::parse(&row.status).ok_or_else(|| bug("status"))?,
        items,
        total_cents: Cents::new(row.total_cents).map_err(|_| bug("total"))?,
        address: row.address,
        receiver_name: row.receiver_name,
        receiver_phone: row.receiver_phone,
        note: row.note,
        created_at: row.created_at,
        pay_deadline: row.pay_deadline,
        paid_at: row.paid_at,
        closed_at: row.closed_at,
    })
}

fn item(row: &ItemRow) -> Result<OrderItem, OrderError> {
    Ok(OrderItem {
        goods_id: GoodsId::new(row.goods_id).map_err(|_| bug("goods_id"))?,
        title: row.title.clone(),
        price_cents: Cents::new(row.price_cents).map_err(|_| bug("price"))?,
        quantity: Quantity::new(i64::from(row.quantity)).map_err(|_| bug("quantity"))?,
    })
}

async fn with_items(
    conn: &mut PgConnection,
    rows: Vec<OrderRow>,
) -> Result<Vec<Order>, OrderError> {
    let sns: Vec<i64> = rows.iter().map(|r| r.order_sn).collect();
    let items: Vec<ItemRow> = sqlx::query_as(
        "SELECT order_sn, goods_id, title, price_cents, quantity FROM order_items \
         WHERE order_sn = ANY($1) ORDER BY order_sn, goods_id",
    )
    .bind(&sns)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let mine = items
                .iter()
                .filter(|i| i.order_sn == row.order_sn)
                .map(item)
                .collect::<Result<Vec<_>, _>>()?;
            assemble(row, mine)
        })
        .collect()
}

pub async fn get(conn: &mut PgConnection, sn: OrderSn) -> Result<Option<Order>, OrderError> {
    let rows: Vec<OrderRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE order_sn = $1"))
            .bind(sn.get())
            .fetch_all(&mut *conn)
            .await?;
    Ok(with_items(conn, rows).await?.pop())
}

/// Newest first; one more than `limit` is fetched to know whether a next page exists.
pub async fn list(
    pool: &PgPool,
    user: UserId,
    before: Option<OrderSn>,
    limit: i64,
) -> Result<(Vec<Order>, bool), OrderError> {
    let mut conn = pool.acquire().await?;
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM orders WHERE user_id = $1 AND order_sn < $2 \
         ORDER BY order_sn DESC LIMIT $3"
    ))
    .bind(user.get())
    .bind(before.map_or(i64::MAX, OrderSn::get))
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let more = rows.len() as i64 > limit;
    let mut orders = with_items(&mut conn, rows).await?;
    orders.truncate(limit as usize);
    Ok((orders, more))
}

/// Serialises the create's commit with the checker's fence for one order_sn; first takes
/// its slot's lock, shared, so a move of the slot waits for this transaction
/// ([`crate::slot_move`]). Fails with [`OrderError::SlotMoved`] when this partition gave
/// the slot away: nothing of the order may be written here any more.
pub async fn lock_sn(tx: &mut Transaction<'_, Postgres>, sn: OrderSn) -> Result<(), OrderError> {
    let slot = Slot::of_order(sn);
    // Both locks in one round trip (a move takes only slot locks, so their order cannot
    // deadlock with it); then a new statement, whose snapshot sees a move that committed
    // while this waited.
    sqlx::query(
        "SELECT pg_advisory_xact_lock_shared(order_slot_lock_class(), $1), \
                pg_advisory_xact_lock($2)",
    )
    .bind(slot.index() as i32)
    .bind(sn.get())
    .execute(&mut **tx)
    .await?;
    if let Some(to) = crate::slot_move::moved_to(tx, slot).await? {
        return Err(OrderError::SlotMoved(to));
    }
    Ok(())
}

pub async fn is_fenced(conn: &mut PgConnection, sn: OrderSn) -> Result<bool, OrderError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM aborted_orders WHERE order_sn = $1)")
            .bind(sn.get())
            .fetch_one(conn)
            .await?,
    )
}

/// Fences `sn` (no order can ever commit under it) and frees the idempotency key it claimed,
/// so a retry of that create can go ahead. Call under [`lock_sn`].
pub async fn fence(conn: &mut PgConnection, sn: OrderSn) -> Result<(), OrderError> {
    sqlx::query(
        "WITH fenced AS (INSERT INTO aborted_orders (order_sn) VALUES ($1) ON CONFLICT DO NOTHING) \
         DELETE FROM idempotency_keys WHERE order_sn = $1",
    )
    .bind(sn.get())
    .execute(conn)
    .await?;
    Ok(())
}

/// A created order waiting for its commit.
pub struct NewOrder {
    pub sn: OrderSn,
    pub user: UserId,
    pub items: Vec<OrderItem>,
    pub total: Cents,
    pub address: String,
    pub receiver_name: String,
    pub receiver_phone: String,
    pub note: String,
    pub pay_timeout_ms: i64,
}

impl NewOrder {
    /// The order as it will read once committed, but for its two times, which the database
    /// decides when it commits.
    fn order(&self) -> Order {
        Order {
            order_sn: self.sn,
            user_id: self.user,
            status: OrderStatus::Unpaid,
            items: self.items.clone(),
            total_cents: self.total,
            address: self.address.clone(),
            receiver_name: self.receiver_name.clone(),
            receiver_phone: self.receiver_phone.clone(),
            note: self.note.clone(),
            created_at: DateTime::UNIX_EPOCH,
            pay_deadline: DateTime::UNIX_EPOCH,
            paid_at: None,
            closed_at: None,
        }
    }
}

/// What [`commit_created`] did with one order.
#[derive(Debug)]
pub enum Commit {
    /// The order is stored, with its `created` event in the outbox.
    Committed(Order),
    /// The checker fenced this order_sn first: nothing was written, and nothing ever will be.
    Fenced,
    /// The order's slot was moved away from this partition since the create was routed here:
    /// nothing was written (the checker of the new owner finds no order, and fences it).
    Moved(shop_contracts::partition::PartitionId),
}

/// Commits one created order of partition 0 (the bench's database ceiling):
/// [`commit_created_batch`] with a batch of one.
pub async fn commit_created(conn: &mut PgConnection, new: &NewOrder) -> Result<Commit, OrderError> {
    let streams = OrderStreams::of(Default::default());
    commit_created_batch(conn, streams, std::slice::from_ref(new))
        .await?
        .pop()
        .ok_or_else(|| OrderError::Bug("a batch of one gave no outcome".into()))
}

/// Commits created orders, their items and their `created` events in one statement (the
/// `commit_created_orders` function of the migrations), each unless the checker fenced its
/// order_sn. Both times come from the database clock. Fine in autocommit (one round trip,
/// one transaction for the whole batch) or inside the caller's transaction. The outcomes
/// are in the order of `batch`.
pub async fn commit_created_batch(
    conn: &mut PgConnection,
    streams: OrderStreams,
    batch: &[NewOrder],
) -> Result<Vec<Commit>, OrderError> {
    let mut orders = Vec::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    for new in batch {
        let order = new.order();
        // The event is this order as the contract writes it; the function fills in the two
        // times, which only the database knows once it has decided them.
        events.push(serde_json::to_value(&order).map_err(|e| OrderError::Bug(e.to_string()))?);
        orders.push(order);
    }
    let lines = || {
        batch
            .iter()
            .flat_map(|new| new.items.iter().map(move |i| (new.sn, i)))
    };
    let committed: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT order_sn, created_at, pay_deadline FROM commit_created_orders(\
         $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(batch.iter().map(|n| n.sn.get()).collect::<Vec<_>>())
    .bind(batch.iter().map(|n| n.user.get()).collect::<Vec<_>>())
    .bind(batch.iter().map(|n| n.total.get()).collect::<Vec<_>>())
    .bind(batch.iter().map(|n| n.address.as_str()).collect::<Vec<_>>())
    .bind(
        batch
            .iter()
            .map(|n| n.receiver_name.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        batch
            .iter()
            .map(|n| n.receiver_phone.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(batch.iter().map(|n| n.note.as_str()).collect::<Vec<_>>())
    .bind(batch.iter().map(|n| n.pay_timeout_ms).collect::<Vec<_>>())
    .bind(lines().map(|(sn, _)| sn.get()).collect::<Vec<_>>())
    .bind(lines().map(|(_, i)| i.goods_id.get()).collect::<Vec<_>>())
    .bind(lines().map(|(_, i)| i.title.as_str()).collect::<Vec<_>>())
    .bind(
        lines()
            .map(|(_, i)| i.price_cents.get())
            .collect::<Vec<_>>(),
    )
    .bind(lines().map(|(_, i)| i.quantity.get()).collect::<Vec<_>>())
    .bind(
        batch
            .iter()
            .map(|n| streams.event_subject(n.sn, OrderEventKind::Created))
            .collect::<Vec<_>>(),
    )
    .bind(
        batch
            .iter()
            .map(|n| event_msg_id(n.sn, OrderEventKind::Created))
            .collect::<Vec<_>>(),
    )
    .bind(events)
    .fetch_all(&mut *conn)
    .await?;
    // Not written: fenced, or (rarely, only while a move runs) of a slot given away.
    let mut away = HashMap::new();
    if committed.len() < batch.len() {
        let mut slots: Vec<Slot> = batch.iter().map(|n| Slot::of_order(n.sn)).collect();
        slots.sort_unstable();
        slots.dedup();
        for slot in slots {
            if let Some(to) = crate::slot_move::moved_to(conn, slot).await? {
                away.insert(slot, to);
            }
        }
    }
    Ok(orders
        .into_iter()
        .map(|mut order| {
            match committed
                .iter()
                .find(|(sn, ..)| *sn == order.order_sn.get())
            {
                Some(&(_, created_at, pay_deadline)) => {
                    order.created_at = created_at;
                    order.pay_deadline = pay_deadline;
                    Commit::Committed(order)
                }
                None => match away.get(&Slot::of_order(order.order_sn)) {
                    Some(&to) => Commit::Moved(to),
                    None => Commit::Fenced,
                },
            }
        })
        .collect())
}

/// What an idempotency key said when a create tried to claim it.
pub enum KeyClaim {
    /// This create holds the key now.
    Claimed,
    /// Another create holds it: its order_sn and the fingerprint of its request.
    Taken { sn: OrderSn, fingerprint: String },
}

/// Claims `(user, key)` for `sn`, or tells who holds it. The claim is made after the half
/// message and before the deduct, so a concurrent repeat deducts nothing; the fence of an
/// order_sn that never commits deletes its claim ([`fence`]).
pub async fn claim_idempotency_key(
    conn: &mut PgConnection,
    user: UserId,
    key: &str,
    fingerprint: &str,
    sn: OrderSn,
) -> Result<KeyClaim, OrderError> {
    loop {
        let claimed: Option<i64> = sqlx::query_scalar(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, order_sn) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING order_sn",
        )
        .bind(user.get())
        .bind(key)
        .bind(fingerprint)
        .bind(sn.get())
        .fetch_optional(&mut *conn)
        .await?;
        if claimed.is_some() {
            return Ok(KeyClaim::Claimed);
        }
        // A new statement, so a claim committed while the insert waited is visible. It may
        // also have been deleted since by a fence; then the key is free: claim it again.
        if let Some((sn, fingerprint)) = idempotency_key(conn, user, key).await? {
            return Ok(KeyClaim::Taken { sn, fingerprint });
        }
    }
}

/// The order_sn that holds an idempotency key, with the fingerprint of its request.
pub async fn idempotency_key(
    conn: &mut PgConnection,
    user: UserId,
    key: &str,
) -> Result<Option<(OrderSn, String)>, OrderError> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT order_sn, fingerprint FROM idempotency_keys WHERE user_id = $1 AND key = $2",
    )
    .bind(user.get())
    .bind(key)
    .fetch_optional(conn)
    .await?;
    row.map(|(sn, fp)| Ok((OrderSn::new(sn).map_err(|_| bug("order_sn"))?, fp)))
        .transpose()
}

pub enum Paid {
    Now,
    /// No row changed: the order is not unpaid, or its deadline has passed.
    NotChanged,
}

/// The one conditional update that decides pay against close (database clock).
pub async fn pay(
    conn: &mut PgConnection,
    sn: OrderSn,
    amount: Cents,
    payment_ref: Option<&str>,
) -> Result<Paid, OrderError> {
    let done = sqlx::query(
        "UPDATE orders SET status = 'paid', paid_at = now(), payment_ref = $3 \
         WHERE order_sn = $1 AND status = 'unpaid' AND now() < pay_deadline \
           AND total_cents = $2",
    )
    .bind(sn.get())
    .bind(amount.get())
    .bind(payment_ref)
    .execute(conn)
    .await?;
    Ok(if done.rows_affected() == 1 {
        Paid::Now
    } else {
        Paid::NotChanged
    })
}

/// unpaid -> cancelled; `true` when this call changed it.
pub async fn cancel(conn: &mut PgConnection, sn: OrderSn) -> Result<bool, OrderError> {
    let done = sqlx::query(
        "UPDATE orders SET status = 'cancelled', closed_at = now() \
         WHERE order_sn = $1 AND status = 'unpaid'",
    )
    .bind(sn.get())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// unpaid -> closed, only from the deadline on; `true` when this call closed it.
pub async fn close_if_due(conn: &mut PgConnection, sn: OrderSn) -> Result<bool, OrderError> {
    let done = sqlx::query(
        "UPDATE orders SET status = 'closed', closed_at = now() \
         WHERE order_sn = $1 AND status = 'unpaid' AND now() >= pay_deadline",
    )
    .bind(sn.get())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Closes every order of `sns` that is still unpaid at its deadline (database clock), in one
/// statement, and returns them as closed; the others (paid, cancelled, closed, or not yet
/// due) are left as they are. The same conditional update as [`close_if_due`], so a pay
/// racing it on the same row loses or wins whole.
pub async fn close_all_due(
    conn: &mut PgConnection,
    sns: &[OrderSn],
) -> Result<Vec<Order>, OrderError> {
    let rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "UPDATE orders SET status = 'closed', closed_at = now() \
         WHERE order_sn = ANY($1) AND status = 'unpaid' AND now() >= pay_deadline \
         RETURNING {COLUMNS}"
    ))
    .bind(sns.iter().map(|sn| sn.get()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    with_items(conn, rows).await
}

/// Where an order stands against its pay deadline, read by the checker and the closer.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub status: OrderStatus,
    /// Seconds until `pay_deadline` by the database clock (negative once it has passed).
    pub left_secs: f64,
    pub pay_deadline: DateTime<Utc>,
}

/// What the checker needs of one order: [`timings`] of just `sn`.
pub async fn timing(conn: &mut PgConnection, sn: OrderSn) -> Result<Option<Timing>, OrderError> {
    Ok(timings(conn, &[sn]).await?.remove(&sn))
}

/// What the checker needs: status and deadline, with the time left by the database clock,
/// of many orders in one read; orders that do not exist are absent.
pub async fn timings(
    conn: &mut PgConnection,
    sns: &[OrderSn],
) -> Result<HashMap<OrderSn, Timing>, OrderError> {
    let rows: Vec<(i64, String, f64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT order_sn, status, EXTRACT(EPOCH FROM (pay_deadline - now()))::double precision, \
                pay_deadline \
         FROM orders WHERE order_sn = ANY($1)",
    )
    .bind(sns.iter().map(|sn| sn.get()).collect::<Vec<_>>())
    // Planned anew at each call, with the table as it is: a connection's cached generic
    // plan, made while `orders` was small and unanalyzed, scans the whole table, and keeps
    // doing so as it grows until an ANALYZE (a fresh bench stack: 11 full scans a second of
    // ~20,000 rows, pg_stat_user_tables.seq_tup_read, against an index scan of the batch).
    .persistent(false)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(sn, status, left_secs, pay_deadline)| {
            let timing = Timing {
                status: OrderStatus::parse(&status).ok_or_else(|| bug("status"))?,
                left_secs,
                pay_deadline,
            };
            Ok((OrderSn::new(sn).map_err(|_| bug("order_sn"))?, timing))
        })
        .collect()
}

pub async fn outbox_add(
    conn: &mut PgConnection,
    subject: &str,
    msg_id: &str,
    payload: &[u8],
) -> Result<(), OrderError> {
    sqlx::query("INSERT INTO outbox (subject, msg_id, payload) VALUES ($1, $2, $3)")
        .bind(subject)
        .bind(msg_id)
        .bind(payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds many outbox rows in one statement.
pub async fn outbox_add_many(
    conn: &mut PgConnection,
    rows: &[OutboxEntry],
) -> Result<(), OrderError> {
    sqlx::query(
        "INSERT INTO outbox (subject, msg_id, payload) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[])",
    )
    .bind(rows.iter().map(|r| r.subject.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.msg_id.as_str()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.payload.as_slice())
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An outbox row to write.
pub struct OutboxEntry {
    pub subject: String,
    pub msg_id: String,
    pub payload: Vec<u8>,
}

pub struct OutboxRow {
    pub id: i64,
    pub subject: String,
    pub msg_id: String,
    pub payload: Vec<u8>,
}

/// Claims up to `limit` outbox rows (skipping rows another relay holds).
/// Rows waiting in the outbox (locked ones too).
pub async fn outbox_backlog(pool: &PgPool) -> Result<i64, OrderError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await?)
}

pub async fn outbox_claim(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<OutboxRow>, OrderError> {
    let rows: Vec<(i64, String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT id, subject, msg_id, payload FROM outbox ORDER BY id \
         LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, subject, msg_id, payload)| OutboxRow {
            id,
            subject,
            msg_id,
            payload,
        })
        .collect())
}

pub async fn outbox_delete(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
) -> Result<(), OrderError> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
