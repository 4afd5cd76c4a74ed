//! The SQL every strategy shares: sell records, the ledger, `stock.set`, `stock.get`,
//! `stock.sell_detail`, returns, and the slots this partition gave away (the guards of the
//! request path; [`crate::slot_move`] moves them). Functions take a pool or a connection inside the caller's
//! transaction, and plain contract types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use shop_contracts::partition::{PartitionId, Slot};
use shop_contracts::stock::{
    NormalizedLines, OrderLine, SellDetail, SellStatus, StockLevel, Units,
};
use shop_contracts::{GoodsId, OrderSn};
use sqlx::{PgConnection, PgPool};

use crate::StockError;

/// What the sell record of an order_sn said when a deduct or return tried to claim it.
#[derive(Debug)]
pub enum Claim {
    /// This transaction inserted the record: go on and change the counts.
    New,
    /// A record existed already (committed by an earlier or concurrent call).
    Existing {
        status: SellStatus,
        items: Vec<OrderLine>,
    },
}

/// The summed, sorted lines as contract order lines. A goods whose duplicates sum to more
/// than one line may hold is a `bad_request` (the reply could not say what was deducted).
pub fn lines_to_items(lines: &NormalizedLines) -> Result<Vec<OrderLine>, StockError> {
    lines
        .to_lines()
        .map_err(|too_large| StockError::BadRequest(too_large.to_string()))
}

pub(crate) fn encode_items(items: &[OrderLine]) -> Result<String, StockError> {
    serde_json::to_string(items).map_err(|e| StockError::Bug(e.to_string()))
}

pub(crate) fn decode_items(text: &str) -> Result<Vec<OrderLine>, StockError> {
    serde_json::from_str(text)
        .map_err(|e| StockError::Bug(format!("stored sell record items: {e}")))
}

pub(crate) fn decode_status(text: &str) -> Result<SellStatus, StockError> {
    match text {
        "deducted" => Ok(SellStatus::Deducted),
        "returned" => Ok(SellStatus::Returned),
        other => Err(StockError::Bug(format!(
            "stored sell record status {other:?}"
        ))),
    }
}

/// Inserts the sell record of `sn` with `status` and `items`, or reads the one that exists.
///
/// Called first in every deduct and return transaction: concurrent calls for one order_sn
/// serialise on the primary key (the loser's insert waits for the winner to commit, then
/// sees its row), before either touches a stock row.
pub async fn claim_sell_record(
    conn: &mut PgConnection,
    sn: OrderSn,
    status: SellStatus,
    items: &[OrderLine],
) -> Result<Claim, StockError> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO sell_records (order_sn, status, items) VALUES ($1, $2, $3::jsonb)
         ON CONFLICT (order_sn) DO NOTHING RETURNING order_sn",
    )
    .bind(sn.get())
    .bind(status.as_str())
    .bind(encode_items(items)?)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_some() {
        return Ok(Claim::New);
    }
    // FOR UPDATE: a return holds the record until it has given the stock back, so two
    // returns of one order cannot both see `deducted`.
    let (status, items): (String, String) = sqlx::query_as(
        "SELECT status, items::text FROM sell_records WHERE order_sn = $1 FOR UPDATE",
    )
    .bind(sn.get())
    .fetch_one(&mut *conn)
    .await?;
    Ok(Claim::Existing {
        status: decode_status(&status)?,
        items: decode_items(&items)?,
    })
}

/// Ledger kinds.
#[derive(Debug, Clone, Copy)]
pub enum Entry {
    Adjustment,
    Deduct,
    Return,
}

impl Entry {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Entry::Adjustment => "adjustment",
            Entry::Deduct => "deduct",
            Entry::Return => "return",
        }
    }
}

/// Appends one ledger row per `(goods_id, delta_available, delta_sold)`.
pub async fn ledger(
    conn: &mut PgConnection,
    kind: Entry,
    sn: Option<OrderSn>,
    rows: &[(GoodsId, i64, i64)],
) -> Result<(), StockError> {
    let goods: Vec<i64> = rows.iter().map(|r| r.0.get()).collect();
    let available: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let sold: Vec<i64> = rows.iter().map(|r| r.2).collect();
    sqlx::query(
        "INSERT INTO stock_ledger (kind, goods_id, delta_available, delta_sold, order_sn)
         SELECT $1, g, a, s, $5
         FROM unnest($2::BIGINT[], $3::BIGINT[], $4::BIGINT[]) AS t(g, a, s)",
    )
    .bind(kind.as_str())
    .bind(goods)
    .bind(available)
    .bind(sold)
    .bind(sn.map(OrderSn::get))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The error for a goods a deduct could not take `requested` from: unknown, or short.
pub async fn shortfall(
    conn: &mut PgConnection,
    goods_id: GoodsId,
    requested: i64,
) -> Result<StockError, StockError> {
    let available: Option<i64> =
        sqlx::query_scalar("SELECT available FROM stock WHERE goods_id = $1")
            .bind(goods_id.get())
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match available {
        None => not_found(goods_id),
        Some(available) => StockError::InsufficientStock {
            goods_id,
            requested,
            available,
        },
    })
}

pub fn not_found(goods_id: GoodsId) -> StockError {
    StockError::NotFound(format!("goods {goods_id} has no stock record"))
}

/// `stock.set`: sets `available`, ledgered as an adjustment of the difference.
pub async fn set(
    pool: &PgPool,
    goods_id: GoodsId,
    available: Units,
) -> Result<StockLevel, StockError> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO stock (goods_id, available) VALUES ($1, 0) ON CONFLICT DO NOTHING")
        .bind(goods_id.get())
        .execute(&mut *tx)
        .await?;
    // A new statement after the insert, which waited out a slot move's lock on `stock`: a
    // goods whose slot left must not come back to life here.
    if let Some(to) = moved_to(&mut tx, [goods_id]).await? {
        return Err(StockError::SlotMoved(to));
    }
    let before: i64 =
        sqlx::query_scalar("SELECT available FROM stock WHERE goods_id = $1 FOR UPDATE")
            .bind(goods_id.get())
            .fetch_one(&mut *tx)
            .await?;
    let (available, sold): (i64, i64) = sqlx::query_as(
        "UPDATE stock SET available = $2, version = version + 1, updated_at = now()
         WHERE goods_id = $1 RETURNING available, sold",
    )
    .bind(goods_id.get())
    .bind(available.get())
    .fetch_one(&mut *tx)
    .await?;
    ledger(
        &mut tx,
        Entry::Adjustment,
        None,
        &[(goods_id, available - before, 0)],
    )
    .await?;
    tx.commit().await?;
    Ok(StockLevel {
        goods_id,
        available,
        sold,
    })
}

/// `stock.get`: the counts in request order; any unknown id is `not_found`.
pub async fn get(pool: &PgPool, ids: &[GoodsId]) -> Result<Vec<StockLevel>, StockError> {
    let raw: Vec<i64> = ids.iter().map(|id| id.get()).collect();
    let rows: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT goods_id, available, sold FROM stock WHERE goods_id = ANY($1)")
            .bind(raw)
            .fetch_all(pool)
            .await?;
    ids.iter()
        .map(|id| {
            rows.iter()
                .find(|r| r.0 == id.get())
                .map(|r| StockLevel {
                    goods_id: *id,
                    available: r.1,
                    sold: r.2,
                })
                .ok_or_else(|| not_found(*id))
        })
        .collect()
}

/// `stock.sell_detail`.
pub async fn sell_detail(pool: &PgPool, sn: OrderSn) -> Result<SellDetail, StockError> {
    let row: Option<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT status, items::text, updated_at FROM sell_records WHERE order_sn = $1",
    )
    .bind(sn.get())
    .fetch_optional(pool)
    .await?;
    let Some((status, items, updated_at)) = row else {
        return Ok(SellDetail {
            order_sn: sn,
            status: SellStatus::None,
            items: Vec::new(),
            updated_at: None,
        });
    };
    Ok(SellDetail {
        order_sn: sn,
        status: decode_status(&status)?,
        items: decode_items(&items)?,
        updated_at: Some(updated_at),
    })
}

/// `stock.return` (and a rollback event): gives back what `sn` deducted, once. Returns
/// whether this call gave stock back. An unknown `sn` leaves a `returned` record with no
/// items (null compensation), so a late deduct is refused.
///
/// The same for every strategy: relative updates under row locks taken in ascending
/// goods_id order, bumping `version` so optimistic and kv_lock writers notice.
///
/// Also says which other partitions must return `sn` as well: those a slot move took a
/// share of its record to, and after a null compensation every partition this one gave
/// slots to ([`also_in`]); empty unless slots moved.
#[tracing::instrument(skip_all, fields(order_sn = %sn))]
pub async fn return_order(
    pool: &PgPool,
    sn: OrderSn,
) -> Result<(bool, Vec<PartitionId>), StockError> {
    let mut tx = pool.begin().await?;
    let items = match claim_sell_record(&mut tx, sn, SellStatus::Returned, &[]).await? {
        Claim::New => {
            let also_in = also_in(&mut tx, sn, true).await?;
            tx.commit().await?;
            tracing::info!("null compensation: no deduct for this order_sn yet");
            return Ok((false, also_in));
        }
        Claim::Existing {
            status: SellStatus::Deducted,
            items,
        } => items,
        Claim::Existing { .. } => {
            let also_in = also_in(&mut tx, sn, false).await?;
            return Ok((false, also_in));
        }
    };
    // Items are stored summed and in ascending goods_id order.
    for line in &items {
        let updated = sqlx::query(
            "UPDATE stock SET available = available + $2, sold = sold - $2,
                              version = version + 1, updated_at = now()
             WHERE goods_id = $1",
        )
        .bind(line.goods_id.get())
        .bind(i64::from(line.quantity))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            // Its goods is leaving for another partition (a slot move): nothing is given
            // back here (the transaction rolls back); the retry goes where the goods went.
            return Err(match moved_to(&mut tx, [line.goods_id]).await? {
                Some(to) => StockError::SlotMoved(to),
                None => StockError::Bug(format!(
                    "the sell record of {sn} names goods {} without a stock record",
                    line.goods_id
                )),
            });
        }
    }
    let rows: Vec<(GoodsId, i64, i64)> = items
        .iter()
        .map(|l| (l.goods_id, i64::from(l.quantity), -i64::from(l.quantity)))
        .collect();
    ledger(&mut tx, Entry::Return, Some(sn), &rows).await?;
    // With the marks of the shares a slot move took away, in the same round trip.
    let moved: Vec<i32> = sqlx::query_scalar(
        "UPDATE sell_records SET status = 'returned', updated_at = now() WHERE order_sn = $1
         RETURNING (SELECT coalesce(array_agg(moved_to ORDER BY moved_to), '{}')
                    FROM sell_shares_moved WHERE order_sn = $1)",
    )
    .bind(sn.get())
    .fetch_one(&mut *tx)
    .await?;
    let also_in = moved
        .into_iter()
        .map(partition)
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit().await?;
    Ok((true, also_in))
}

// Slots given away by a slot move ([`crate::slot_move`]): the guards of the request path,
// and the reads a move shares with them.

/// A slot as the tables store it.
pub(crate) fn key(slot: Slot) -> i32 {
    slot.index() as i32
}

pub(crate) fn keys(slots: &[Slot]) -> Vec<i32> {
    slots.iter().copied().map(key).collect()
}

pub(crate) fn partition(raw: i32) -> Result<PartitionId, StockError> {
    u16::try_from(raw)
        .ok()
        .and_then(|p| PartitionId::new(p).ok())
        .ok_or_else(|| StockError::Bug("a slot table names an impossible partition".into()))
}

pub(crate) fn slot(raw: i32) -> Result<Slot, StockError> {
    Slot::new(raw as usize)
        .map_err(|_| StockError::Bug("a slot table holds an impossible slot".into()))
}

/// The slots of `slots` this database gave away (or is giving away): `(to, state)` each.
pub(crate) async fn away_states(
    conn: &mut PgConnection,
    slots: &[Slot],
) -> Result<BTreeMap<Slot, (PartitionId, String)>, StockError> {
    let rows: Vec<(i32, i32, String)> =
        sqlx::query_as("SELECT slot, moved_to, state FROM stock_slots_away WHERE slot = ANY($1)")
            .bind(keys(slots))
            .fetch_all(conn)
            .await?;
    rows.into_iter()
        .map(|(s, p, state)| Ok((slot(s)?, (partition(p)?, state))))
        .collect()
}

/// The partition the first of `goods` whose slot this database gave away went to: the
/// guard of every path that finds no row of a goods (`not_found` there would be wrong).
pub async fn moved_to(
    conn: &mut PgConnection,
    goods: impl IntoIterator<Item = GoodsId>,
) -> Result<Option<PartitionId>, StockError> {
    let mut slots: Vec<Slot> = goods.into_iter().map(|g| Slot::of_key(g.get())).collect();
    slots.sort_unstable();
    slots.dedup();
    Ok(away_states(conn, &slots)
        .await?
        .into_values()
        .next()
        .map(|(p, _)| p))
}

/// Where else a return of `sn` must give back: the partitions that took shares of its
/// record here, and, when this return left a tombstone (`tombstone`), every partition this
/// one gave slots to (a return routed by an old map must leave its tombstone where the
/// goods are now too).
pub async fn also_in(
    conn: &mut PgConnection,
    sn: OrderSn,
    tombstone: bool,
) -> Result<Vec<PartitionId>, StockError> {
    let raw: Vec<i32> = if tombstone {
        sqlx::query_scalar("SELECT DISTINCT moved_to FROM stock_slots_away ORDER BY moved_to")
            .fetch_all(conn)
            .await?
    } else {
        sqlx::query_scalar(
            "SELECT moved_to FROM sell_shares_moved WHERE order_sn = $1 ORDER BY moved_to",
        )
        .bind(sn.get())
        .fetch_all(conn)
        .await?
    };
    raw.into_iter().map(partition).collect()
}
