//! Errors of the goods worker, one variant per contract code it can answer with.

use shop_contracts::ErrorDetail;
use shop_kit::ServiceError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GoodsError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The database did not answer in time (pool exhausted, connection refused).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("unexpected database error: {0}")]
    Unexpected(#[source] sqlx::Error),
}

impl From<sqlx::Error> for GoodsError {
    fn from(e: sqlx::Error) -> Self {
        if shop_kit::db::is_unavailable(&e) {
            GoodsError::Unavailable(e)
        } else {
            GoodsError::Unexpected(e)
        }
    }
}

impl ServiceError for GoodsError {
    fn to_contract(&self) -> ErrorDetail {
        match self {
            GoodsError::BadRequest(m) => ErrorDetail::bad_request(m),
            GoodsError::NotFound(m) => ErrorDetail::not_found(m),
            // The cause is logged by the endpoint; the caller gets no SQL or hosts.
            GoodsError::Unavailable(_) => {
                ErrorDetail::unavailable("the goods database is unavailable")
            }
            GoodsError::Unexpected(_) => ErrorDetail::internal(),
        }
    }
}
