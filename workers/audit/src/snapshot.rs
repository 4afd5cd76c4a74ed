//! The two snapshots every check reads, one consistent read of each database. The SQL is
//! owned by the workers (`shop_stock::audit`, `shop_order::audit`); this names their errors.

use sqlx::PgPool;

pub use shop_order::audit::OrderSnapshot;
pub use shop_stock::audit::StockSnapshot;

use crate::AuditError;

pub async fn stock(pool: &PgPool) -> Result<StockSnapshot, AuditError> {
    shop_stock::audit::snapshot(pool)
        .await
        .map_err(AuditError::Stock)
}

pub async fn orders(pool: &PgPool) -> Result<OrderSnapshot, AuditError> {
    shop_order::audit::snapshot(pool)
        .await
        .map_err(AuditError::Order)
}
