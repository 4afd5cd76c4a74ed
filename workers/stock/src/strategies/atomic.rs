//! `atomic`: one conditional update per goods; PostgreSQL's row lock is held only for the
//! statement's transaction, and the `WHERE available >= n` makes the check and the write one.

use shop_contracts::stock::NormalizedLines;
use sqlx::PgConnection;

use super::Attempt;
use crate::{repo, StockError};

pub async fn take(conn: &mut PgConnection, lines: &NormalizedLines) -> Result<Attempt, StockError> {
    for (goods_id, quantity) in lines.as_slice() {
        let taken = sqlx::query(
            "UPDATE stock SET available = available - $2, sold = sold + $2,
                              version = version + 1, updated_at = now()
             WHERE goods_id = $1 AND available >= $2",
        )
        .bind(goods_id.get())
        .bind(quantity)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if taken == 0 {
            return Err(repo::shortfall(conn, *goods_id, *quantity).await?);
        }
    }
    Ok(Attempt::Done)
}
