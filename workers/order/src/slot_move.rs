//! Moving slots of orders from one partition's database to another's, while both serve
//! (`shop partitions move order`, docs/scaling.md "Moving slots").
//!
//! Every row of an order (the order, its items, its fence, its idempotency key) carries its
//! order_sn, and the order_sn carries its user's slot, so a slot's rows are found by the
//! `order_slot(order_sn)` index of migration `20261207000001_slot_moves`. The database is
//! the arbiter, not the map: a partition refuses to write an order of a slot it gave away
//! (`slots_away`), so a worker routing by an old map, or a request already on its way, can
//! never write where nobody will read again. It answers such a request `unavailable` with a
//! retry hint ([`OrderError::SlotMoved`]).
//!
//! One move of `slots` from `from` to `to` ([`move_slots`]):
//! 1. `from`: each slot's lock taken exclusively (creates, fences and claims of the slot hold
//!    it shared, so none is half done), the slot written into `slots_away`, and every row of
//!    the slot read `FOR UPDATE` (a pay, cancel or close of one of them waits, and then finds
//!    it gone).
//! 2. `to`: whatever an earlier, interrupted move left of these slots is deleted, the rows are
//!    written, and the slots leave `to`'s `slots_away`; committed.
//! 3. `from`: the rows deleted; committed. The caller then writes the map that names `to`.
//!
//! A crash before 3 commits leaves `from` as it was (its transaction rolls back) and a copy
//! in `to` that no request reaches (the map still names `from`) and that the next move
//! replaces. A crash after 3, before the map is written, leaves the slots unavailable until
//! the move is run again: `from` then says the slots are already in `to` (its `slots_away`),
//! and they are not copied again. The outbox stays where it was written: its rows are events
//! already decided, published by `from`'s relay.

use shop_contracts::partition::{PartitionId, Slot};
use sqlx::{PgConnection, PgPool};

use crate::OrderError;

/// What one move did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Slots whose rows were copied and deleted by this move.
    pub slots: Vec<Slot>,
    /// Slots an earlier move had already taken to the same partition (nothing done).
    pub already: Vec<Slot>,
    pub orders: u64,
    pub fences: u64,
    pub keys: u64,
}

/// The tables of a slot, parents first, each with the condition that selects a slot's rows
/// (`$1`: the slots). Items follow their orders.
const TABLES: [(&str, &str); 4] = [
    ("orders", "order_slot(order_sn) = ANY($1)"),
    (
        "order_items",
        "order_sn IN (SELECT order_sn FROM orders WHERE order_slot(order_sn) = ANY($1))",
    ),
    ("aborted_orders", "order_slot(order_sn) = ANY($1)"),
    ("idempotency_keys", "order_slot(order_sn) = ANY($1)"),
];

/// Moves `slots` (all owned by `from_id`'s database `from`) to partition `to_id`, whose
/// database is `to`. Nothing is lost whatever step fails; see the module docs.
pub async fn move_slots(
    from: &PgPool,
    from_id: PartitionId,
    to: &PgPool,
    to_id: PartitionId,
    slots: &[Slot],
) -> Result<Moved, OrderError> {
    let mut slots: Vec<Slot> = slots.to_vec();
    slots.sort_unstable();
    slots.dedup();
    let mut moved = Moved::default();
    let mut out = from.begin().await?;
    lock_slots(&mut out, &slots).await?;
    for (slot, away_to) in slots_away(&mut out, &slots).await? {
        if away_to == to_id {
            moved.already.push(slot);
        } else {
            return Err(OrderError::Conflict(shop_contracts::ErrorDetail::new(
                shop_contracts::ErrorCode::Conflict,
                format!(
                    "slot {} of partition {from_id} was moved to partition {away_to} by a \
                     move that did not finish; run that move again first",
                    slot.index()
                ),
            )));
        }
    }
    moved.slots = slots
        .iter()
        .copied()
        .filter(|s| !moved.already.contains(s))
        .collect();
    if moved.slots.is_empty() {
        return Ok(moved);
    }
    let keys: Vec<i32> = moved.slots.iter().map(|s| s.index() as i32).collect();
    sqlx::query("INSERT INTO slots_away (slot, moved_to) SELECT unnest($1::int[]), $2")
        .bind(&keys)
        .bind(i32::from(to_id.get()))
        .execute(&mut *out)
        .await?;
    // Each table's rows of the slots as one JSON array, read FOR UPDATE (orders and fences:
    // the rows a concurrent write could change; items and keys only change with them).
    let mut rows = Vec::with_capacity(TABLES.len());
    for (table, slot_rows) in TABLES {
        let lock = if table == "order_items" {
            ""
        } else {
            "FOR UPDATE"
        };
        let json: String = sqlx::query_scalar(&format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]'::jsonb)::text \
             FROM (SELECT * FROM {table} WHERE {slot_rows} {lock}) t"
        ))
        .bind(&keys)
        .fetch_one(&mut *out)
        .await?;
        rows.push(json);
    }

    let mut into = to.begin().await?;
    lock_slots(&mut into, &moved.slots).await?;
    for (table, slot_rows) in TABLES.iter().rev() {
        sqlx::query(&format!("DELETE FROM {table} WHERE {slot_rows}"))
            .bind(&keys)
            .execute(&mut *into)
            .await?;
    }
    for ((table, _), json) in TABLES.iter().zip(&rows) {
        let written = sqlx::query(&format!(
            "INSERT INTO {table} SELECT * FROM jsonb_populate_recordset(NULL::{table}, $1::jsonb)"
        ))
        .bind(json)
        .execute(&mut *into)
        .await?
        .rows_affected();
        match *table {
            "orders" => moved.orders = written,
            "aborted_orders" => moved.fences = written,
            "idempotency_keys" => moved.keys = written,
            _ => {}
        }
    }
    sqlx::query("DELETE FROM slots_away WHERE slot = ANY($1)")
        .bind(&keys)
        .execute(&mut *into)
        .await?;
    into.commit().await?;

    for (table, slot_rows) in TABLES.iter().rev() {
        sqlx::query(&format!("DELETE FROM {table} WHERE {slot_rows}"))
            .bind(&keys)
            .execute(&mut *out)
            .await?;
    }
    out.commit().await?;
    Ok(moved)
}

/// Takes each slot's lock exclusively, ascending, until the transaction ends.
async fn lock_slots(conn: &mut PgConnection, slots: &[Slot]) -> Result<(), OrderError> {
    for slot in slots {
        sqlx::query("SELECT pg_advisory_xact_lock(order_slot_lock_class(), $1)")
            .bind(slot.index() as i32)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Which of `slots` this database gave away, and to whom.
async fn slots_away(
    conn: &mut PgConnection,
    slots: &[Slot],
) -> Result<Vec<(Slot, PartitionId)>, OrderError> {
    let keys: Vec<i32> = slots.iter().map(|s| s.index() as i32).collect();
    let rows: Vec<(i32, i32)> =
        sqlx::query_as("SELECT slot, moved_to FROM slots_away WHERE slot = ANY($1) ORDER BY slot")
            .bind(&keys)
            .fetch_all(conn)
            .await?;
    rows.into_iter()
        .map(|(slot, to)| {
            let bad = |_| OrderError::Bug("slots_away holds an impossible row".into());
            let slot = Slot::new(slot as usize).map_err(bad)?;
            let to = u16::try_from(to)
                .ok()
                .and_then(|p| PartitionId::new(p).ok())
                .ok_or_else(|| {
                    OrderError::Bug("slots_away names an impossible partition".into())
                })?;
            Ok((slot, to))
        })
        .collect()
}

/// The partition `slot` was moved to, if this database gave it away: the guard of every
/// path that finds no row of an order (an answer `not_found` there would be wrong).
pub async fn moved_to(
    conn: &mut PgConnection,
    slot: Slot,
) -> Result<Option<PartitionId>, OrderError> {
    Ok(slots_away(conn, &[slot]).await?.pop().map(|(_, to)| to))
}
