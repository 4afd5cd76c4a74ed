//! The two snapshots every check reads, one consistent read of each database. The SQL is
//! owned by the workers (`shop_stock::audit`, `shop_order::audit`); this names their errors.

use sqlx::PgPool;

pub use shop_order::audit::OrderSnapshot;
pub use shop_stock::audit::StockSnapshot;

use crate::AuditError;

/// Every stock partition's snapshot, merged into one ([`StockSnapshot::merge`]).
pub async fn stock(pools: &[PgPool]) -> Result<StockSnapshot, AuditError> {
    let mut parts = Vec::with_capacity(pools.len());
    for pool in pools {
        parts.push(
            shop_stock::audit::snapshot(pool)
                .await
                .map_err(AuditError::Stock)?,
        );
    }
    Ok(StockSnapshot::merge(parts))
}

/// Every order partition's snapshot, merged into one ([`OrderSnapshot::merge`]).
pub async fn orders(pools: &[PgPool]) -> Result<OrderSnapshot, AuditError> {
    let mut parts = Vec::with_capacity(pools.len());
    for pool in pools {
        parts.push(
            shop_order::audit::snapshot(pool)
                .await
                .map_err(AuditError::Order)?,
        );
    }
    OrderSnapshot::merge(parts).ok_or(AuditError::NoOrderDatabase)
}
