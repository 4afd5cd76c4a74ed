//! Errors of the order worker, one variant per contract code it can answer with.

use shop_contracts::{ErrorCode, ErrorDetail};
use shop_kit::ServiceError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum OrderError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(ErrorDetail),
    /// A contract error from goods or stock, passed through as it came.
    #[error("{0}")]
    Refused(ErrorDetail),
    #[error("{0}")]
    NotPayable(ErrorDetail),
    #[error("{0}")]
    AmountMismatch(ErrorDetail),
    /// A dependency did not answer; the message says which (no hosts or SQL).
    #[error("{0}")]
    Unavailable(String),
    #[error("database unavailable: {0}")]
    Database(#[source] sqlx::Error),
    #[error("unexpected database error: {0}")]
    Unexpected(#[source] sqlx::Error),
    #[error("unexpected: {0}")]
    Bug(String),
}

impl From<sqlx::Error> for OrderError {
    fn from(e: sqlx::Error) -> Self {
        if shop_kit::db::is_unavailable(&e) {
            OrderError::Database(e)
        } else {
            OrderError::Unexpected(e)
        }
    }
}

impl ServiceError for OrderError {
    fn to_contract(&self) -> ErrorDetail {
        match self {
            OrderError::BadRequest(m) => ErrorDetail::bad_request(m),
            OrderError::NotFound(m) => ErrorDetail::not_found(m),
            OrderError::Conflict(d)
            | OrderError::Refused(d)
            | OrderError::NotPayable(d)
            | OrderError::AmountMismatch(d) => d.clone(),
            OrderError::Unavailable(m) => ErrorDetail::new(ErrorCode::Unavailable, m),
            OrderError::Database(_) => {
                ErrorDetail::unavailable("the order database is unavailable")
            }
            OrderError::Unexpected(_) | OrderError::Bug(_) => ErrorDetail::internal(),
        }
    }
}
