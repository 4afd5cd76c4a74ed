//! `pessimistic`: lock each goods row with `SELECT ... FOR UPDATE` (ascending goods_id, so
//! two multi-item deducts cannot deadlock), check, then write.

use shop_contracts::stock::NormalizedLines;
use sqlx::PgConnection;

use super::Attempt;
use crate::{repo, StockError};

pub async fn take(conn: &mut PgConnection, lines: &NormalizedLines) -> Result<Attempt, StockError> {
    for (goods_id, quantity) in lines.as_slice() {
        let available: Option<i64> =
            sqlx::query_scalar("SELECT available FROM stock WHERE goods_id = $1 FOR UPDATE")
                .bind(goods_id.get())
                .fetch_optional(&mut *conn)
                .await?;
        let Some(available) = available else {
            return Err(repo::not_found(*goods_id));
        };
        if available < *quantity {
            return Err(StockError::InsufficientStock {
                goods_id: *goods_id,
                requested: *quantity,
                available,
            });
        }
        sqlx::query(
            "UPDATE stock SET available = available - $2, sold = sold + $2,
                              version = version + 1, updated_at = now()
             WHERE goods_id = $1",
        )
        .bind(goods_id.get())
        .bind(quantity)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Attempt::Done)
}
