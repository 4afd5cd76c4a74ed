//! The invariants of CONTRACT section 6 as pure functions over two database snapshots and the
//! replayed `STOCK_ROLLBACK` events: each returns what it finds wrong, nothing when all hold.
//!
//! Work that is still in flight is not a finding: anything that changed within the grace
//! period (an order paid, closed or cancelled, a deduct whose order may still commit, a
//! rollback event on its way) is only judged once it is older than that. This also covers
//! the two snapshots being taken one after the other.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shop_contracts::order::OrderStatus;
use shop_contracts::stock::SellStatus;
use shop_contracts::txn::RollbackReason;
use shop_order::audit::OrderSnapshot;
use shop_stock::audit::StockSnapshot;

/// One violated invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// Invariant 1.
    Oversold { goods_id: i64, available: i64 },
    /// Invariant 2: `available + sold` differs from the sum of `stock.set` adjustments.
    Unbalanced {
        goods_id: i64,
        available: i64,
        sold: i64,
        adjusted: i64,
    },
    /// Invariant 2: the counts differ from the sums of the goods' ledger rows, which are
    /// written in the same transaction as every change.
    LedgerDisagrees {
        goods_id: i64,
        available: i64,
        sold: i64,
        ledger_available: i64,
        ledger_sold: i64,
    },
    /// Invariant 2: `sold` differs from the quantities of `deducted` sell records.
    SoldDisagrees {
        goods_id: i64,
        sold: i64,
        deducted: i64,
    },
    /// Invariant 3: a paid or unpaid order without a `deducted` sell record of its items,
    /// past the grace period.
    OrderWithoutStock {
        order_sn: String,
        status: &'static str,
        items: Vec<(i64, i64)>,
        deducted: Option<Vec<(i64, i64)>>,
    },
    /// Invariant 3: a closed or cancelled order still holds stock past the grace period.
    FinishedOrderHoldsStock {
        order_sn: String,
        status: &'static str,
    },
    /// Invariant 3: stock deducted for an order_sn that has no order, past the grace period.
    StockWithoutOrder { order_sn: String },
    /// An unpaid order whose deadline passed more than the grace period ago: the checker is
    /// behind or stuck.
    OverdueUnpaid {
        order_sn: String,
        pay_deadline: String,
    },
    /// An unpaid order with no timer left (no half message in `ORDER_TXN`, no deadline in
    /// `ORDER_TIMERS`): nothing will ever close it, so its stock would be held forever if it
    /// is never paid.
    UnpaidWithoutTimer { order_sn: String },
    /// A rollback event whose sell record is not `returned`.
    RollbackNotApplied { order_sn: String, reason: String },
    /// A rollback event whose reason the order database contradicts.
    RollbackDisagrees {
        order_sn: String,
        reason: String,
        order_status: &'static str,
    },
    /// A `STOCK_ROLLBACK` message that is not a rollback event.
    MalformedRollback { sequence: u64 },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Oversold {
                goods_id,
                available,
            } => {
                write!(f, "goods {goods_id} is oversold: available {available}")
            }
            Finding::Unbalanced {
                goods_id,
                available,
                sold,
                adjusted,
            } => write!(
                f,
                "goods {goods_id}: available {available} + sold {sold} != adjustments {adjusted}"
            ),
            Finding::LedgerDisagrees {
                goods_id,
                available,
                sold,
                ledger_available,
                ledger_sold,
            } => write!(
                f,
                "goods {goods_id}: counts {available}/{sold}, but the ledger sums to \
                 {ledger_available}/{ledger_sold}"
            ),
            Finding::SoldDisagrees {
                goods_id,
                sold,
                deducted,
            } => write!(
                f,
                "goods {goods_id}: sold {sold}, but deducted sell records hold {deducted}"
            ),
            Finding::OrderWithoutStock {
                order_sn,
                status,
                items,
                deducted,
            } => write!(
                f,
                "{status} order {order_sn} has items {items:?} but deducted {deducted:?}"
            ),
            Finding::FinishedOrderHoldsStock { order_sn, status } => {
                write!(f, "{status} order {order_sn} still holds its stock")
            }
            Finding::StockWithoutOrder { order_sn } => {
                write!(f, "stock is deducted for {order_sn}, which has no order")
            }
            Finding::OverdueUnpaid {
                order_sn,
                pay_deadline,
            } => write!(
                f,
                "order {order_sn} is still unpaid after its deadline {pay_deadline}"
            ),
            Finding::UnpaidWithoutTimer { order_sn } => write!(
                f,
                "unpaid order {order_sn} has no timer (no half message in ORDER_TXN, no \
                 deadline in ORDER_TIMERS): nothing will close it"
            ),
            Finding::RollbackNotApplied { order_sn, reason } => {
                write!(f, "the {reason} rollback of {order_sn} was not applied")
            }
            Finding::RollbackDisagrees {
                order_sn,
                reason,
                order_status,
            } => write!(
                f,
                "a {reason} rollback was published for {order_sn}, whose order is {order_status}"
            ),
            Finding::MalformedRollback { sequence } => {
                write!(
                    f,
                    "STOCK_ROLLBACK message {sequence} is not a rollback event"
                )
            }
        }
    }
}

/// Invariants 1 and 2, within the stock snapshot: no goods below zero; `available + sold`
/// equals its adjustments; the ledger sums to both counts; `sold` equals the quantities of
/// its `deducted` sell records.
pub fn stock_counts(stock: &StockSnapshot) -> Vec<Finding> {
    let mut deducted: BTreeMap<i64, i64> = BTreeMap::new();
    for sell in stock.sells.values() {
        if sell.status == SellStatus::Deducted {
            for (goods_id, quantity) in &sell.items {
                *deducted.entry(*goods_id).or_default() += quantity;
            }
        }
    }
    let mut findings = Vec::new();
    for g in &stock.goods {
        if g.available < 0 {
            findings.push(Finding::Oversold {
                goods_id: g.goods_id,
                available: g.available,
            });
        }
        if g.available + g.sold != g.adjusted {
            findings.push(Finding::Unbalanced {
                goods_id: g.goods_id,
                available: g.available,
                sold: g.sold,
                adjusted: g.adjusted,
            });
        }
        if (g.available, g.sold) != (g.ledger_available, g.ledger_sold) {
            findings.push(Finding::LedgerDisagrees {
                goods_id: g.goods_id,
                available: g.available,
                sold: g.sold,
                ledger_available: g.ledger_available,
                ledger_sold: g.ledger_sold,
            });
        }
        let held = deducted.get(&g.goods_id).copied().unwrap_or(0);
        if g.sold != held {
            findings.push(Finding::SoldDisagrees {
                goods_id: g.goods_id,
                sold: g.sold,
                deducted: held,
            });
        }
    }
    findings
}

/// A grace that excuses nothing: every change is judged, however recent (for callers that
/// know nothing is in flight, such as a test whose requests have all been answered).
pub const NO_GRACE: chrono::Duration = chrono::Duration::MIN;

/// Invariant 3, across both snapshots. `now` is the order database's clock.
pub fn agreement(
    stock: &StockSnapshot,
    orders: &OrderSnapshot,
    grace: chrono::Duration,
) -> Vec<Finding> {
    let settled = |at: DateTime<Utc>| orders.now - at > grace;
    let mut findings = Vec::new();
    for (sn, order) in &orders.orders {
        let sell = stock.sells.get(sn);
        // A record a slot move emptied is `deducted` with no items: it holds nothing.
        let deducted = sell
            .filter(|s| s.status == SellStatus::Deducted && !s.items.is_empty())
            .map(|s| &s.items);
        match order.status {
            OrderStatus::Paid | OrderStatus::Unpaid => {
                if deducted != Some(&order.items) && settled(order.changed_at) {
                    findings.push(Finding::OrderWithoutStock {
                        order_sn: sn.to_string(),
                        status: order.status.as_str(),
                        items: order.items.clone(),
                        deducted: deducted.cloned(),
                    });
                }
            }
            OrderStatus::Closed | OrderStatus::Cancelled => {
                if deducted.is_some() && settled(order.changed_at) {
                    findings.push(Finding::FinishedOrderHoldsStock {
                        order_sn: sn.to_string(),
                        status: order.status.as_str(),
                    });
                }
            }
        }
    }
    for (sn, sell) in &stock.sells {
        if sell.status == SellStatus::Deducted
            && !sell.items.is_empty()
            && !orders.orders.contains_key(sn)
            && settled(sell.updated_at)
        {
            findings.push(Finding::StockWithoutOrder {
                order_sn: sn.to_string(),
            });
        }
    }
    findings
}

/// Unpaid orders past their deadline by more than the grace period.
pub fn overdue(orders: &OrderSnapshot, grace: chrono::Duration) -> Vec<Finding> {
    orders
        .orders
        .iter()
        .filter(|(_, o)| o.status == OrderStatus::Unpaid && orders.now - o.pay_deadline > grace)
        .map(|(sn, o)| Finding::OverdueUnpaid {
            order_sn: sn.to_string(),
            pay_deadline: shop_contracts::time::format(&o.pay_deadline),
        })
        .collect()
}

/// The unpaid orders older than the grace period: each must still have its timer.
pub fn unpaid_to_check(orders: &OrderSnapshot, grace: chrono::Duration) -> Vec<i64> {
    orders
        .orders
        .iter()
        .filter(|(_, o)| o.status == OrderStatus::Unpaid && orders.now - o.changed_at > grace)
        .map(|(sn, _)| *sn)
        .collect()
}

/// A rollback event read back from `STOCK_ROLLBACK`, with the time the stream stored it.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub order_sn: i64,
    pub reason: RollbackReason,
    pub published: DateTime<Utc>,
}

/// One replayed rollback event against both snapshots: once older than the grace period, it
/// must agree with the order's fate and have left its sell record `returned`.
pub fn rollback(
    event: &Replayed,
    stock: &StockSnapshot,
    orders: &OrderSnapshot,
    grace: chrono::Duration,
) -> Vec<Finding> {
    if orders.now - event.published <= grace {
        return Vec::new();
    }
    let sn = event.order_sn;
    let reason = reason_str(event.reason);
    let mut findings = Vec::new();
    let order = orders.orders.get(&sn).map(|o| o.status);
    let agrees = match event.reason {
        RollbackReason::Aborted => order.is_none() && orders.fenced.contains(&sn),
        RollbackReason::Closed => order == Some(OrderStatus::Closed),
        RollbackReason::Cancelled => order == Some(OrderStatus::Cancelled),
    };
    if !agrees {
        findings.push(Finding::RollbackDisagrees {
            order_sn: sn.to_string(),
            reason: reason.to_owned(),
            order_status: order.map_or("absent", OrderStatus::as_str),
        });
    }
    let returned = stock
        .sells
        .get(&sn)
        .is_some_and(|s| s.status == SellStatus::Returned);
    if !returned {
        findings.push(Finding::RollbackNotApplied {
            order_sn: sn.to_string(),
            reason: reason.to_owned(),
        });
    }
    findings
}

fn reason_str(reason: RollbackReason) -> &'static str {
    match reason {
        RollbackReason::Aborted => "aborted",
        RollbackReason::Closed => "closed",
        RollbackReason::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use chrono::{Duration, TimeZone};
    use shop_order::audit::OrderView;
    use shop_stock::audit::{GoodsBalance, Sell};

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    const GRACE: i64 = 60;

    /// Goods 1 with 10 adjusted units; order 100 paid for 2, order 101 cancelled (returned).
    fn healthy() -> (StockSnapshot, OrderSnapshot) {
        let stock = StockSnapshot {
            goods: vec![GoodsBalance {
                goods_id: 1,
                available: 8,
                sold: 2,
                adjusted: 10,
                ledger_available: 8,
                ledger_sold: 2,
            }],
            sells: BTreeMap::from([
                (
                    100,
                    Sell {
                        status: SellStatus::Deducted,
                        items: vec![(1, 2)],
                        updated_at: at(0),
                    },
                ),
                (
                    101,
                    Sell {
                        status: SellStatus::Returned,
                        items: vec![(1, 3)],
                        updated_at: at(5),
                    },
                ),
            ]),
        };
        let orders = OrderSnapshot {
            orders: BTreeMap::from([
                (
                    100,
                    OrderView {
                        status: OrderStatus::Paid,
                        items: vec![(1, 2)],
                        changed_at: at(1),
                        pay_deadline: at(100),
                    },
                ),
                (
                    101,
                    OrderView {
                        status: OrderStatus::Cancelled,
                        items: vec![(1, 3)],
                        changed_at: at(4),
                        pay_deadline: at(100),
                    },
                ),
            ]),
            fenced: BTreeSet::new(),
            now: at(1000),
        };
        (stock, orders)
    }

    fn cancelled_101() -> Replayed {
        Replayed {
            order_sn: 101,
            reason: RollbackReason::Cancelled,
            published: at(4),
        }
    }

    #[test]
    fn a_healthy_shop_has_no_findings() {
        let (stock, orders) = healthy();
        let grace = Duration::seconds(GRACE);
        assert_eq!(stock_counts(&stock), []);
        assert_eq!(agreement(&stock, &orders, grace), []);
        assert_eq!(rollback(&cancelled_101(), &stock, &orders, grace), []);
    }

    #[test]
    fn counts_that_do_not_add_up_are_found() {
        let (mut stock, _) = healthy();
        stock.goods[0].sold = 3;
        let found = stock_counts(&stock);
        assert!(found
            .iter()
            .any(|f| matches!(f, Finding::Unbalanced { .. })));
        assert!(found
            .iter()
            .any(|f| matches!(f, Finding::SoldDisagrees { .. })));
        assert!(found
            .iter()
            .any(|f| matches!(f, Finding::LedgerDisagrees { .. })));
        stock.goods[0].available = -1;
        assert!(stock_counts(&stock)
            .iter()
            .any(|f| matches!(f, Finding::Oversold { .. })));
    }

    #[test]
    fn counts_the_ledger_does_not_sum_to_are_found() {
        let (mut stock, _) = healthy();
        stock.goods[0].ledger_available = 9;
        stock.goods[0].ledger_sold = 1;
        assert_eq!(
            stock_counts(&stock),
            [Finding::LedgerDisagrees {
                goods_id: 1,
                available: 8,
                sold: 2,
                ledger_available: 9,
                ledger_sold: 1,
            }]
        );
    }

    #[test]
    fn disagreement_is_found_only_once_settled() {
        let grace = Duration::seconds(GRACE);
        let (mut stock, mut orders) = healthy();
        // The cancelled order still holds stock: in flight for a while, then a finding.
        stock.sells.get_mut(&101).unwrap().status = SellStatus::Deducted;
        stock.goods[0].sold = 5;
        stock.goods[0].available = 5;
        orders.now = at(30);
        assert_eq!(agreement(&stock, &orders, grace), []);
        orders.now = at(1000);
        assert_eq!(
            agreement(&stock, &orders, grace),
            [Finding::FinishedOrderHoldsStock {
                order_sn: "101".into(),
                status: "cancelled"
            }]
        );
        // A paid order whose stock came back.
        let (mut stock, orders) = healthy();
        stock.sells.get_mut(&100).unwrap().status = SellStatus::Returned;
        assert!(matches!(
            agreement(&stock, &orders, grace)[..],
            [Finding::OrderWithoutStock { .. }]
        ));
        // Stock deducted for no order.
        let (mut stock, orders) = healthy();
        stock.sells.insert(
            102,
            Sell {
                status: SellStatus::Deducted,
                items: vec![(1, 1)],
                updated_at: at(0),
            },
        );
        assert_eq!(
            agreement(&stock, &orders, grace),
            [Finding::StockWithoutOrder {
                order_sn: "102".into()
            }]
        );
    }

    #[test]
    fn an_unpaid_order_past_its_deadline_is_overdue_once_settled() {
        let grace = Duration::seconds(GRACE);
        let (_, mut orders) = healthy();
        assert_eq!(overdue(&orders, grace), []);
        assert_eq!(unpaid_to_check(&orders, grace), Vec::<i64>::new());
        let order = orders.orders.get_mut(&100).unwrap();
        order.status = OrderStatus::Unpaid;
        orders.now = at(100 + GRACE);
        assert_eq!(overdue(&orders, grace), [], "still within the grace period");
        assert_eq!(unpaid_to_check(&orders, grace), [100]);
        orders.now = at(101 + GRACE);
        assert!(matches!(
            overdue(&orders, grace)[..],
            [Finding::OverdueUnpaid { .. }]
        ));
    }

    #[test]
    fn rollbacks_must_match_the_order_and_be_applied() {
        let grace = Duration::seconds(GRACE);
        let (mut stock, orders) = healthy();
        let paid = Replayed {
            order_sn: 100,
            reason: RollbackReason::Closed,
            published: at(2),
        };
        assert!(matches!(
            rollback(&paid, &stock, &orders, grace)[..],
            [
                Finding::RollbackDisagrees { .. },
                Finding::RollbackNotApplied { .. }
            ]
        ));
        stock.sells.get_mut(&101).unwrap().status = SellStatus::Deducted;
        assert!(matches!(
            rollback(&cancelled_101(), &stock, &orders, grace)[..],
            [Finding::RollbackNotApplied { .. }]
        ));
        // A young event is in flight: not judged yet.
        let young = Replayed {
            published: at(990),
            ..paid.clone()
        };
        assert_eq!(rollback(&young, &stock, &orders, grace), []);
        // An aborted order_sn must be fenced and have no order.
        let aborted = Replayed {
            order_sn: 7,
            reason: RollbackReason::Aborted,
            published: at(0),
        };
        let (stock, mut orders) = healthy();
        assert_eq!(rollback(&aborted, &stock, &orders, grace).len(), 2);
        orders.fenced.insert(7);
        assert!(matches!(
            rollback(&aborted, &stock, &orders, grace)[..],
            [Finding::RollbackNotApplied { .. }]
        ));
    }
}
