//! Moving slots of stock from one partition's database to another's, while both serve
//! (`shop partitions move stock`, docs/scaling.md "Moving slots while serving").
//!
//! The database is the arbiter, not the map: a partition never writes a goods of a slot it
//! gave away (`stock_slots_away`), so a request routed by an old map is answered `unavailable`
//! with a retry hint ([`StockError::SlotMoved`]) instead of writing where nobody reads.
//!
//! One move of `slots` from `from` to `to` ([`move_slots`]), in three transactions:
//! 1. **Leave** (`from`): with `sell_records` and `stock` locked against writers (every
//!    deduct and return claims its sell record before it touches a count, so the in-flight
//!    ones finish first, and nothing can deadlock), the slots' goods go from `stock` to
//!    `stock_leaving` and the slots into `stock_slots_away` as `leaving`. From here on their data
//!    in `from` is frozen: a deduct or `stock.get` finds no such goods, a return finds no row
//!    to give back to, and `stock.set` finds the slot away; each answers `unavailable`.
//! 2. **Copy** (`to`), unless `to`'s `stock_slots_arrived` says it was done: the goods' counts and
//!    ledger, every sell record's share of those goods (merged with a record of the same
//!    order_sn that `to` has, see [`merge`]), and every null-compensation tombstone (so a
//!    deduct that comes after its return is refused in `to` as well); the slots leave `to`'s
//!    `stock_slots_away` and enter its `stock_slots_arrived`.
//! 3. **Finish** (`from`): the leaving goods and their ledger deleted, each split sell record
//!    left with the items that stayed (none, maybe) and marked in
//!    `sell_shares_moved` (a return here then tells its caller to return in `to` as well),
//!    the slots `gone`.
//!
//! Then the caller writes the map naming `to`. A move that stopped anywhere is finished by
//! running it again: each step looks at what the one before left.
//!
//! Returns that arrive here by an old map after step 1: a return of an order_sn whose
//! record has a share in `to`, or one that leaves a tombstone here while slots are away,
//! answers which partitions must return it too (`also_in`), and the router asks them.

use std::collections::{BTreeMap, HashSet};

use shop_contracts::partition::{PartitionId, Slot};
use shop_contracts::stock::OrderLine;
use shop_contracts::{GoodsId, OrderSn};
use sqlx::{PgConnection, PgPool};

use crate::repo::{away_states, decode_items, encode_items, keys};
use crate::StockError;

/// What one move did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Slots this run took through every step.
    pub slots: Vec<Slot>,
    /// Slots an earlier run had finished (nothing done here).
    pub already: Vec<Slot>,
    pub goods: u64,
    /// Sell records with a share of the moved goods.
    pub records: u64,
    pub tombstones: u64,
}

/// Moves `slots` (owned by partition `from_id`, database `from`) to partition `to_id`
/// (database `to`). Nothing is lost whatever step fails; see the module docs.
pub async fn move_slots(
    from: &PgPool,
    from_id: PartitionId,
    to: &PgPool,
    to_id: PartitionId,
    slots: &[Slot],
) -> Result<Moved, StockError> {
    let mut wanted: Vec<Slot> = slots.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut moved = Moved::default();

    // 1. Leave.
    let mut leave = from.begin().await?;
    sqlx::query("LOCK TABLE sell_records, stock IN EXCLUSIVE MODE")
        .execute(&mut *leave)
        .await?;
    let away = away_states(&mut leave, &wanted).await?;
    let mut fresh = Vec::new();
    for &s in &wanted {
        match away.get(&s) {
            None => fresh.push(s),
            Some((p, _)) if *p != to_id => {
                return Err(StockError::Conflict(format!(
                    "slot {} of partition {from_id} is being moved to partition {p} by a move \
                     that did not finish; run that move again first",
                    s.index()
                )))
            }
            Some((_, state)) if state == "gone" => moved.already.push(s),
            Some(_) => {}
        }
    }
    if !fresh.is_empty() {
        let all: Vec<i64> = sqlx::query_scalar("SELECT goods_id FROM stock")
            .fetch_all(&mut *leave)
            .await?;
        let goods = of_slots(&all, &fresh);
        sqlx::query(
            "WITH gone AS (DELETE FROM stock WHERE goods_id = ANY($1) RETURNING *) \
             INSERT INTO stock_leaving SELECT * FROM gone",
        )
        .bind(&goods)
        .execute(&mut *leave)
        .await?;
        sqlx::query(
            "INSERT INTO stock_slots_away (slot, moved_to, state) \
             SELECT unnest($1::int[]), $2, 'leaving'",
        )
        .bind(keys(&fresh))
        .bind(i32::from(to_id.get()))
        .execute(&mut *leave)
        .await?;
    }
    leave.commit().await?;
    moved.slots = wanted
        .iter()
        .copied()
        .filter(|s| !moved.already.contains(s))
        .collect();
    if moved.slots.is_empty() {
        return Ok(moved);
    }
    let leaving_keys = keys(&moved.slots);
    let mut conn = from.acquire().await?;
    let all: Vec<i64> = sqlx::query_scalar("SELECT goods_id FROM stock_leaving")
        .fetch_all(&mut *conn)
        .await?;
    let goods = of_slots(&all, &moved.slots);
    moved.goods = goods.len() as u64;
    let shares = shares_of(&mut conn, &goods).await?;
    moved.records = shares.len() as u64;

    // 2. Copy, once.
    let mut into = to.begin().await?;
    let arrived: Vec<(i32, i32)> = sqlx::query_as(
        "SELECT slot, from_partition FROM stock_slots_arrived WHERE slot = ANY($1) FOR UPDATE",
    )
    .bind(&leaving_keys)
    .fetch_all(&mut *into)
    .await?;
    let from_here = arrived
        .iter()
        .filter(|(_, p)| *p == i32::from(from_id.get()))
        .count();
    if from_here == 0 {
        moved.tombstones = copy(&mut conn, &mut into, &goods, &shares).await?;
        sqlx::query("DELETE FROM stock_slots_away WHERE slot = ANY($1)")
            .bind(&leaving_keys)
            .execute(&mut *into)
            .await?;
        sqlx::query(
            "INSERT INTO stock_slots_arrived (slot, from_partition) SELECT unnest($1::int[]), $2 \
             ON CONFLICT (slot) DO UPDATE SET from_partition = EXCLUDED.from_partition, \
             arrived_at = now()",
        )
        .bind(&leaving_keys)
        .bind(i32::from(from_id.get()))
        .execute(&mut *into)
        .await?;
        into.commit().await?;
    } else if from_here != moved.slots.len() {
        return Err(StockError::Bug(format!(
            "partition {to_id} received {from_here} of {} leaving slots",
            moved.slots.len()
        )));
    } else {
        into.rollback().await?;
    }

    // 3. Finish.
    drop(conn);
    let mut finish = from.begin().await?;
    for (sn, share) in &shares {
        let rest: Vec<OrderLine> = share
            .all
            .iter()
            .filter(|line| !goods.contains(&line.goods_id.get()))
            .copied()
            .collect();
        // A record may be left with no items: it holds nothing here (the audit counts only
        // items), and it stays as it is, not a tombstone: its order was not rolled back.
        sqlx::query("UPDATE sell_records SET items = $2::jsonb WHERE order_sn = $1")
            .bind(sn.get())
            .bind(encode_items(&rest)?)
            .execute(&mut *finish)
            .await?;
        sqlx::query(
            "INSERT INTO sell_shares_moved (order_sn, moved_to) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(sn.get())
        .bind(i32::from(to_id.get()))
        .execute(&mut *finish)
        .await?;
    }
    sqlx::query("DELETE FROM stock_ledger WHERE goods_id = ANY($1)")
        .bind(&goods)
        .execute(&mut *finish)
        .await?;
    sqlx::query("DELETE FROM stock_leaving WHERE goods_id = ANY($1)")
        .bind(&goods)
        .execute(&mut *finish)
        .await?;
    sqlx::query("DELETE FROM stock_slots_arrived WHERE slot = ANY($1)")
        .bind(&leaving_keys)
        .execute(&mut *finish)
        .await?;
    sqlx::query(
        "UPDATE stock_slots_away SET state = 'gone', moved_at = now() WHERE slot = ANY($1)",
    )
    .bind(&leaving_keys)
    .execute(&mut *finish)
    .await?;
    finish.commit().await?;
    Ok(moved)
}

/// The ids of `all` whose slot is one of `slots`.
fn of_slots(all: &[i64], slots: &[Slot]) -> Vec<i64> {
    let slots: HashSet<Slot> = slots.iter().copied().collect();
    all.iter()
        .copied()
        .filter(|&id| slots.contains(&Slot::of_key(id)))
        .collect()
}

/// One sell record with a share of the moving goods.
struct Share {
    status: String,
    /// All its items, as stored.
    all: Vec<OrderLine>,
    /// Those of the moving goods.
    moving: Vec<OrderLine>,
}

/// Every sell record with items of `goods` (found by the ledger, which has a line per goods
/// of every deduct), with its share of them.
async fn shares_of(
    conn: &mut PgConnection,
    goods: &[i64],
) -> Result<BTreeMap<OrderSn, Share>, StockError> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT order_sn, status, items::text FROM sell_records WHERE order_sn IN \
         (SELECT order_sn FROM stock_ledger WHERE goods_id = ANY($1) AND order_sn IS NOT NULL)",
    )
    .bind(goods)
    .fetch_all(&mut *conn)
    .await?;
    let mut shares = BTreeMap::new();
    for (sn, status, items) in rows {
        let all = decode_items(&items)?;
        let moving: Vec<OrderLine> = all
            .iter()
            .filter(|line| goods.contains(&line.goods_id.get()))
            .copied()
            .collect();
        if moving.is_empty() {
            // Split by an earlier run of this move: its share is in the target already.
            continue;
        }
        let sn = OrderSn::new(sn).map_err(|_| StockError::Bug("a stored order_sn".into()))?;
        shares.insert(
            sn,
            Share {
                status,
                all,
                moving,
            },
        );
    }
    Ok(shares)
}

/// Writes into `into` the counts and ledger of `goods`, the shares and the tombstones, read
/// from `from`; returns the number of tombstones copied.
async fn copy(
    from: &mut PgConnection,
    into: &mut PgConnection,
    goods: &[i64],
    shares: &BTreeMap<OrderSn, Share>,
) -> Result<u64, StockError> {
    let counts: String = sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(to_jsonb(s)), '[]'::jsonb)::text \
         FROM stock_leaving s WHERE goods_id = ANY($1)",
    )
    .bind(goods)
    .fetch_one(&mut *from)
    .await?;
    sqlx::query("INSERT INTO stock SELECT * FROM jsonb_populate_recordset(NULL::stock, $1::jsonb)")
        .bind(&counts)
        .execute(&mut *into)
        .await?;
    // The ledger in its order, each line a new id in the target.
    let ledger: String = sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.id), '[]'::jsonb)::text \
         FROM stock_ledger l WHERE goods_id = ANY($1)",
    )
    .bind(goods)
    .fetch_one(&mut *from)
    .await?;
    sqlx::query(
        "INSERT INTO stock_ledger (kind, goods_id, delta_available, delta_sold, order_sn, created_at) \
         SELECT kind, goods_id, delta_available, delta_sold, order_sn, created_at \
         FROM jsonb_populate_recordset(NULL::stock_ledger, $1::jsonb) ORDER BY id",
    )
    .bind(&ledger)
    .execute(&mut *into)
    .await?;
    for (sn, share) in shares {
        merge(into, *sn, share).await?;
    }
    let tombstones: String = sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]'::jsonb)::text FROM sell_records r \
         WHERE status = 'returned' AND items = '[]'::jsonb",
    )
    .fetch_one(&mut *from)
    .await?;
    Ok(sqlx::query(
        "INSERT INTO sell_records SELECT * FROM jsonb_populate_recordset(NULL::sell_records, $1::jsonb) \
         ON CONFLICT (order_sn) DO NOTHING",
    )
    .bind(&tombstones)
    .execute(&mut *into)
    .await?
    .rows_affected())
}

/// Joins a moving share of `sn`'s sell record with the record `into` has of `sn`, if any.
/// One order_sn has one record per partition, and a return is never undone, so: with no
/// record there (or one a move emptied), the share is written as it is; two deducted become one with both items;
/// if either is returned the order is rolled back, so the joined record is returned, and
/// a deducted share meeting a returned record is given back now (counts and ledger); a
/// returned share meeting a deducted record leaves it deducted with its own items, which
/// its own return will give back.
async fn merge(into: &mut PgConnection, sn: OrderSn, share: &Share) -> Result<(), StockError> {
    let there: Option<(String, String)> = sqlx::query_as(
        "SELECT status, items::text FROM sell_records WHERE order_sn = $1 FOR UPDATE",
    )
    .bind(sn.get())
    .fetch_optional(&mut *into)
    .await?;
    // A record that a move emptied (`deducted`, no items) holds nothing: as if none.
    let there = there.filter(|(status, items)| !(status == "deducted" && items == "[]"));
    let Some((status, items)) = there else {
        sqlx::query(
            "INSERT INTO sell_records (order_sn, status, items) VALUES ($1, $2, $3::jsonb) \
             ON CONFLICT (order_sn) DO UPDATE SET status = EXCLUDED.status, \
             items = EXCLUDED.items, updated_at = now()",
        )
        .bind(sn.get())
        .bind(&share.status)
        .bind(encode_items(&share.moving)?)
        .execute(&mut *into)
        .await?;
        return Ok(());
    };
    let joined = || -> Result<String, StockError> {
        let mut lines: BTreeMap<GoodsId, OrderLine> = BTreeMap::new();
        for line in decode_items(&items)?
            .into_iter()
            .chain(share.moving.iter().copied())
        {
            lines.insert(line.goods_id, line);
        }
        encode_items(&lines.into_values().collect::<Vec<_>>())
    };
    match (status.as_str(), share.status.as_str()) {
        ("deducted", "returned") => return Ok(()),
        ("returned", "deducted") => {
            for line in &share.moving {
                let q = i64::from(line.quantity);
                sqlx::query(
                    "UPDATE stock SET available = available + $2, sold = sold - $2, \
                     version = version + 1, updated_at = now() WHERE goods_id = $1",
                )
                .bind(line.goods_id.get())
                .bind(q)
                .execute(&mut *into)
                .await?;
            }
            let rows: Vec<(GoodsId, i64, i64)> = share
                .moving
                .iter()
                .map(|l| (l.goods_id, i64::from(l.quantity), -i64::from(l.quantity)))
                .collect();
            crate::repo::ledger(into, crate::repo::Entry::Return, Some(sn), &rows).await?;
        }
        _ => {}
    }
    sqlx::query(
        "UPDATE sell_records SET items = $2::jsonb, updated_at = now() WHERE order_sn = $1",
    )
    .bind(sn.get())
    .bind(joined()?)
    .execute(&mut *into)
    .await?;
    Ok(())
}
