//! Errors of the goods worker, one variant per contract code it can answer with.
//!
//! The three workers name alike the variants that mean the same: `BadRequest`, `NotFound`,
//! `Conflict`, `DatabaseUnavailable` (the worker's database is away; the cause is logged,
//! the caller gets a fixed message), `Unexpected` (any other database error: `internal`),
//! `Bug` (a broken invariant or a stopped task: `internal`).

use std::sync::Arc;

use shop_contracts::ErrorDetail;
use shop_kit::ServiceError;
use thiserror::Error;

/// Cloneable (database errors are shared behind an `Arc`), so one coalesced read that fails
/// can give every request in it the same error.
#[derive(Debug, Clone, Error)]
pub enum GoodsError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The database did not answer in time (pool exhausted, connection refused).
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(#[source] Arc<sqlx::Error>),
    /// Every goods id below 2^53 above the largest used one is taken.
    #[error("goods ids are exhausted: no id below 2^53 is left above the largest one used")]
    IdsExhausted,
    #[error("unexpected database error: {0}")]
    Unexpected(#[source] Arc<sqlx::Error>),
    /// A task of the worker that a request depends on has stopped (a bug).
    #[error("unexpected: {0}")]
    Bug(String),
}

impl From<sqlx::Error> for GoodsError {
    fn from(e: sqlx::Error) -> Self {
        // 2200H: the goods_id identity reached its MAXVALUE (2^53-1).
        if matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("2200H")) {
            GoodsError::IdsExhausted
        } else if shop_kit::db::is_unavailable(&e) {
            GoodsError::DatabaseUnavailable(Arc::new(e))
        } else {
            GoodsError::Unexpected(Arc::new(e))
        }
    }
}

impl ServiceError for GoodsError {
    fn to_contract(&self) -> ErrorDetail {
        match self {
            GoodsError::BadRequest(m) => ErrorDetail::bad_request(m),
            GoodsError::NotFound(m) => ErrorDetail::not_found(m),
            GoodsError::IdsExhausted => {
                ErrorDetail::new(shop_contracts::ErrorCode::Conflict, self.to_string())
            }
            // The cause is logged by the endpoint; the caller gets no SQL or hosts.
            GoodsError::DatabaseUnavailable(_) => {
                ErrorDetail::unavailable("the goods database is unavailable")
            }
            GoodsError::Unexpected(_) | GoodsError::Bug(_) => ErrorDetail::internal(),
        }
    }
}

#[cfg(test)]
mod tests {
    use shop_contracts::ErrorCode;

    use super::*;

    #[track_caller]
    fn check(error: GoodsError, code: ErrorCode, message: &str) {
        let contract = error.to_contract();
        assert_eq!((contract.code, contract.message.as_str()), (code, message));
    }

    #[test]
    fn each_variant_answers_its_code_and_no_cause() {
        let secret = || sqlx::Error::Protocol("SELECT secret FROM goods".into());
        check(
            GoodsError::BadRequest("b".into()),
            ErrorCode::BadRequest,
            "b",
        );
        check(GoodsError::NotFound("n".into()), ErrorCode::NotFound, "n");
        check(
            GoodsError::from(sqlx::Error::PoolTimedOut),
            ErrorCode::Unavailable,
            "the goods database is unavailable",
        );
        check(
            GoodsError::from(secret()),
            ErrorCode::Internal,
            "internal error",
        );
        check(
            GoodsError::Bug("secret".into()),
            ErrorCode::Internal,
            "internal error",
        );
    }
}
