//! A consistent read of the order database for `shop audit`: every order's status, items and
//! the time of its last change, the fenced order_sns, and the database clock. Read-only; one
//! REPEATABLE READ transaction.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use shop_contracts::order::OrderStatus;
use sqlx::PgPool;

use crate::OrderError;

/// One order as the audit needs it: `items` as `(goods_id, quantity)` in ascending goods_id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    pub status: OrderStatus,
    pub items: Vec<(i64, i64)>,
    /// When the order last changed status (closed, paid or created).
    pub changed_at: DateTime<Utc>,
    pub pay_deadline: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct OrderSnapshot {
    /// By order_sn.
    pub orders: BTreeMap<i64, OrderView>,
    /// order_sns fenced by the checker or a refused create: they can never commit.
    pub fenced: BTreeSet<i64>,
    /// The order database's clock when the snapshot was taken.
    pub now: DateTime<Utc>,
}

impl OrderSnapshot {
    /// One snapshot of the partitions' snapshots. An order lives in one partition, so the
    /// orders and fences are a union; the clock is the earliest of the partitions' (work
    /// counts as settled only when it is older than the grace by every partition's clock).
    pub fn merge(parts: Vec<OrderSnapshot>) -> Option<OrderSnapshot> {
        let mut parts = parts.into_iter();
        let mut merged = parts.next()?;
        for part in parts {
            merged.orders.extend(part.orders);
            merged.fenced.extend(part.fenced);
            merged.now = merged.now.min(part.now);
        }
        Some(merged)
    }
}

pub async fn snapshot(pool: &PgPool) -> Result<OrderSnapshot, OrderError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let rows: Vec<(i64, String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT order_sn, status, COALESCE(closed_at, paid_at, created_at), pay_deadline \
         FROM orders",
    )
    .fetch_all(&mut *tx)
    .await?;
    let items: Vec<(i64, i64, i32)> = sqlx::query_as(
        "SELECT order_sn, goods_id, quantity FROM order_items ORDER BY order_sn, goods_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let fenced: Vec<i64> = sqlx::query_scalar("SELECT order_sn FROM aborted_orders")
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;

    let mut orders = BTreeMap::new();
    for (sn, status, changed_at, pay_deadline) in rows {
        let status = OrderStatus::parse(&status)
            .ok_or_else(|| OrderError::Bug(format!("stored order status {status:?}")))?;
        orders.insert(
            sn,
            OrderView {
                status,
                items: Vec::new(),
                changed_at,
                pay_deadline,
            },
        );
    }
    for (sn, goods_id, quantity) in items {
        if let Some(order) = orders.get_mut(&sn) {
            order.items.push((goods_id, i64::from(quantity)));
        }
    }
    Ok(OrderSnapshot {
        orders,
        fenced: fenced.into_iter().collect(),
        now,
    })
}

/// Those of `sns` that are unpaid now (read after the snapshot, to tell an order that was
/// resolved meanwhile from one that is stuck).
pub async fn still_unpaid(pool: &PgPool, sns: &[i64]) -> Result<Vec<i64>, OrderError> {
    Ok(sqlx::query_scalar(
        "SELECT order_sn FROM orders WHERE order_sn = ANY($1) AND status = 'unpaid' \
         ORDER BY order_sn",
    )
    .bind(sns)
    .fetch_all(pool)
    .await?)
}
