//! Stock service bodies (CONTRACT section 3).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::ids::{GoodsId, OrderSn, Quantity, MAX_SAFE_INTEGER};
use crate::list::ItemList;

crate::ids::ranged_int!(
    /// A stock count set by an admin.
    Units(i64): 0, MAX_SAFE_INTEGER, "available must be between 0 and 2^53-1"
);

/// One line of an order as stock sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderLine {
    pub goods_id: GoodsId,
    pub quantity: Quantity,
}

/// Order lines with duplicate goods summed and sorted by ascending `goods_id`: the order in
/// which stock takes its row locks, and the form in which two deducts are compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct NormalizedLines(Vec<(GoodsId, i64)>);

impl NormalizedLines {
    pub fn new<'a>(lines: impl IntoIterator<Item = &'a OrderLine>) -> Self {
        let mut summed: BTreeMap<GoodsId, i64> = BTreeMap::new();
        for line in lines {
            *summed.entry(line.goods_id).or_default() += i64::from(line.quantity);
        }
        NormalizedLines(summed.into_iter().collect())
    }

    /// `(goods_id, total quantity)` in ascending `goods_id` order.
    pub fn as_slice(&self) -> &[(GoodsId, i64)] {
        &self.0
    }

    /// The summed lines as order lines, or the first goods whose sum no line can hold.
    pub fn to_lines(&self) -> Result<Vec<OrderLine>, SumTooLarge> {
        self.0
            .iter()
            .map(|&(goods_id, quantity)| {
                Ok(OrderLine {
                    goods_id,
                    quantity: Quantity::new(quantity)
                        .map_err(|_| SumTooLarge { goods_id, quantity })?,
                })
            })
            .collect()
    }
}

/// Duplicate lines of one goods that add up to more than one line may hold (10000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SumTooLarge {
    pub goods_id: GoodsId,
    pub quantity: i64,
}

impl std::fmt::Display for SumTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "goods {}: quantities sum to {}, more than 10000",
            self.goods_id, self.quantity
        )
    }
}

/// `stock.set`: an admin restock (or write-down); ledgered as an adjustment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockSetRequest {
    pub goods_id: GoodsId,
    pub available: Units,
}

/// The counts of one goods.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub goods_id: GoodsId,
    pub available: i64,
    pub sold: i64,
}

/// `stock.changed.<goods_id>`: a notification, not a source of truth (a client that missed
/// one reads the stock again).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockChanged {
    pub goods_id: GoodsId,
    pub available: i64,
}

/// `stock.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockGetRequest {
    pub goods_ids: ItemList<GoodsId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockGetReply {
    pub items: Vec<StockLevel>,
}

/// `stock.deduct`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeductRequest {
    pub order_sn: OrderSn,
    pub items: ItemList<OrderLine>,
}

/// The state of an order's sell record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SellStatus {
    Deducted,
    Returned,
    /// No sell record exists (only in `stock.sell_detail` replies).
    None,
}

impl SellStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            SellStatus::Deducted => "deducted",
            SellStatus::Returned => "returned",
            SellStatus::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeductReply {
    pub order_sn: OrderSn,
    /// Always `deducted`.
    pub status: SellStatus,
    /// What was deducted: duplicate goods summed, ascending `goods_id`.
    pub items: Vec<OrderLine>,
}

/// `stock.return`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReturnRequest {
    pub order_sn: OrderSn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReturnReply {
    pub order_sn: OrderSn,
    /// Always `returned`.
    pub status: SellStatus,
    /// `true` when this call gave stock back; `false` for a repeat or a null compensation.
    pub returned: bool,
}

/// `stock.sell_detail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SellDetailRequest {
    pub order_sn: OrderSn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SellDetail {
    pub order_sn: OrderSn,
    pub status: SellStatus,
    pub items: Vec<OrderLine>,
    /// `null` when `status` is `none`.
    #[serde(with = "crate::time::rfc3339_opt")]
    pub updated_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_lines_sum_and_sort() {
        let line = |g, q| OrderLine {
            goods_id: GoodsId::new(g).unwrap(),
            quantity: Quantity::new(q).unwrap(),
        };
        let lines = [line(3, 1), line(1, 2), line(3, 4)];
        let norm = NormalizedLines::new(&lines);
        let ids: Vec<(i64, i64)> = norm.as_slice().iter().map(|(g, q)| (g.get(), *q)).collect();
        assert_eq!(ids, vec![(1, 2), (3, 5)]);
        assert_eq!(norm.to_lines().unwrap(), vec![line(1, 2), line(3, 5)]);
        let too_much = NormalizedLines::new(&[line(7, 6000), line(7, 5000)]);
        let error = too_much.to_lines().unwrap_err();
        assert_eq!((error.goods_id.get(), error.quantity), (7, 11000));
        assert_eq!(
            error.to_string(),
            "goods 7: quantities sum to 11000, more than 10000"
        );
    }
}
