//! `optimistic`: read the rows without locking, check, then write each one only if its
//! `version` is still the one read. A lost race rolls back and the caller retries.

use shop_contracts::stock::NormalizedLines;
use sqlx::PgConnection;

use super::{read_and_check, Attempt};
use crate::StockError;

pub async fn take(conn: &mut PgConnection, lines: &NormalizedLines) -> Result<Attempt, StockError> {
    let rows = read_and_check(conn, lines).await?;
    // Writes in ascending goods_id order: a writer that passed the version check holds the
    // row until commit, and the order keeps two multi-item writers from deadlocking.
    for ((goods_id, quantity), (_, _, _, version)) in lines.as_slice().iter().zip(&rows) {
        let written = sqlx::query(
            "UPDATE stock SET available = available - $2, sold = sold + $2,
                              version = version + 1, updated_at = now()
             WHERE goods_id = $1 AND version = $3",
        )
        .bind(goods_id.get())
        .bind(quantity)
        .bind(version)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if written == 0 {
            return Ok(Attempt::Retry);
        }
    }
    Ok(Attempt::Done)
}
