//! A consistent read of the stock database for `shop audit`: every goods' counts beside the
//! sum of its `stock.set` adjustments and the sums of its whole ledger, and every sell
//! record. Read-only; one REPEATABLE READ
//! transaction, so the counts and the records are of the same moment.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use shop_contracts::stock::SellStatus;
use sqlx::PgPool;

use crate::repo::{decode_items, decode_status};
use crate::StockError;

/// One goods' counts and what its ledger says they must add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoodsBalance {
    pub goods_id: i64,
    pub available: i64,
    pub sold: i64,
    /// Sum of the goods' `adjustment` ledger rows (`delta_available + delta_sold`).
    pub adjusted: i64,
    /// Sums of all the goods' ledger rows' `delta_available` and `delta_sold`: the counts
    /// the ledger says the goods has.
    pub ledger_available: i64,
    pub ledger_sold: i64,
}

/// One sell record: `items` as `(goods_id, quantity)`, summed and in ascending goods_id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sell {
    pub status: SellStatus,
    pub items: Vec<(i64, i64)>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct StockSnapshot {
    pub goods: Vec<GoodsBalance>,
    /// By order_sn.
    pub sells: BTreeMap<i64, Sell>,
}

impl StockSnapshot {
    /// One snapshot of partitioned stock from each partition's: the goods side by side (each
    /// goods lives in one partition), and each order's sell record from its shares. A share
    /// still `deducted` makes the order's record `deducted` with the items of every such
    /// share (so a share left deducted beside a returned one shows as stock the order holds,
    /// and the counts check sees exactly each partition's deducted units); otherwise it is
    /// `returned`. With one partition this is that partition's snapshot.
    pub fn merge(parts: Vec<StockSnapshot>) -> StockSnapshot {
        let mut merged = StockSnapshot::default();
        for part in parts {
            merged.goods.extend(part.goods);
            for (sn, share) in part.sells {
                match merged.sells.entry(sn) {
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(share);
                    }
                    std::collections::btree_map::Entry::Occupied(mut slot) => {
                        let sell = slot.get_mut();
                        sell.updated_at = sell.updated_at.max(share.updated_at);
                        // A record a slot move emptied (`deducted`, no items) says nothing
                        // about the order: the share it gave away says it, elsewhere.
                        let emptied =
                            |s: &Sell| s.status == SellStatus::Deducted && s.items.is_empty();
                        if emptied(&share) {
                            continue;
                        }
                        if emptied(sell) {
                            let updated_at = sell.updated_at;
                            *sell = share;
                            sell.updated_at = updated_at;
                            continue;
                        }
                        match (sell.status, share.status) {
                            (SellStatus::Deducted, SellStatus::Deducted) => {
                                sell.items.extend(share.items);
                                sell.items.sort_unstable();
                            }
                            (_, SellStatus::Deducted) => {
                                sell.status = SellStatus::Deducted;
                                sell.items = share.items;
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        merged.goods.sort_by_key(|g| g.goods_id);
        merged
    }
}

pub async fn snapshot(pool: &PgPool) -> Result<StockSnapshot, StockError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let goods: Vec<(i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT s.goods_id, s.available, s.sold, COALESCE(l.adjusted, 0)::bigint,
                COALESCE(l.available, 0)::bigint, COALESCE(l.sold, 0)::bigint
         FROM stock s
         LEFT JOIN (SELECT goods_id,
                           sum(delta_available + delta_sold)
                             FILTER (WHERE kind = 'adjustment') AS adjusted,
                           sum(delta_available) AS available,
                           sum(delta_sold) AS sold
                    FROM stock_ledger GROUP BY goods_id) l
           USING (goods_id)
         ORDER BY s.goods_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let rows: Vec<(i64, String, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT order_sn, status, items::text, updated_at FROM sell_records")
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    let mut sells = BTreeMap::new();
    for (sn, status, items, updated_at) in rows {
        let items = decode_items(&items)?
            .into_iter()
            .map(|l| (l.goods_id.get(), i64::from(l.quantity.get())))
            .collect();
        sells.insert(
            sn,
            Sell {
                status: decode_status(&status)?,
                items,
                updated_at,
            },
        );
    }
    Ok(StockSnapshot {
        goods: goods
            .into_iter()
            .map(
                |(goods_id, available, sold, adjusted, ledger_available, ledger_sold)| {
                    GoodsBalance {
                        goods_id,
                        available,
                        sold,
                        adjusted,
                        ledger_available,
                        ledger_sold,
                    }
                },
            )
            .collect(),
        sells,
    })
}
