//! Errors of the order worker, one variant per contract code it can answer with.
//!
//! The three workers name alike the variants that mean the same: `BadRequest`, `NotFound`,
//! `Conflict`, `DatabaseUnavailable` (the worker's database is away; the cause is logged,
//! the caller gets a fixed message), `Unexpected` (any other database error: `internal`),
//! `Bug` (a broken invariant or a stopped task: `internal`).

use shop_contracts::{ErrorCode, ErrorDetail};
use shop_kit::client::CallError;
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
    #[error("{0}")]
    OffSale(ErrorDetail),
    #[error("{0}")]
    NotPayable(ErrorDetail),
    #[error("{0}")]
    AmountMismatch(ErrorDetail),
    /// A call to goods or stock failed; [`CallError`]'s own mapping decides the answer (a
    /// refusal passed on as it came, no answer `unavailable`, a bad reply `internal`).
    #[error("{0}")]
    Call(#[from] CallError),
    /// A dependency other than the database did not answer; the message says which (no
    /// hosts or SQL).
    #[error("{0}")]
    Unavailable(String),
    /// The order's slot was moved to another partition (`shop partitions move`) since the
    /// request was routed here: nothing was done; the retry is routed by the new map.
    #[error("the order's slot moved to partition {0}")]
    SlotMoved(shop_contracts::partition::PartitionId),
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(#[source] sqlx::Error),
    #[error("unexpected database error: {0}")]
    Unexpected(#[source] sqlx::Error),
    #[error("unexpected: {0}")]
    Bug(String),
}

impl From<sqlx::Error> for OrderError {
    fn from(e: sqlx::Error) -> Self {
        if shop_kit::db::is_unavailable(&e) {
            OrderError::DatabaseUnavailable(e)
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
            | OrderError::OffSale(d)
            | OrderError::NotPayable(d)
            | OrderError::AmountMismatch(d) => d.clone(),
            OrderError::Call(e) => e.to_contract(),
            OrderError::Unavailable(m) => ErrorDetail::new(ErrorCode::Unavailable, m),
            OrderError::SlotMoved(_) => ErrorDetail::unavailable(
                "the order's partition is moving; nothing was done, try again",
            )
            .with("retry_after_ms", SLOT_MOVED_RETRY_MS),
            OrderError::DatabaseUnavailable(_) => {
                ErrorDetail::unavailable("the order database is unavailable")
            }
            OrderError::Unexpected(_) | OrderError::Bug(_) => ErrorDetail::internal(),
        }
    }
}

/// The retry hint of [`OrderError::SlotMoved`]: a move writes the new map a moment after the
/// data moves, and every worker follows it within milliseconds.
pub const SLOT_MOVED_RETRY_MS: u64 = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(error: OrderError, code: ErrorCode, message: &str) {
        let contract = error.to_contract();
        assert_eq!((contract.code, contract.message.as_str()), (code, message));
    }

    #[test]
    fn each_variant_answers_its_code_and_no_cause() {
        let secret = || sqlx::Error::Protocol("SELECT secret FROM orders".into());
        check(
            OrderError::BadRequest("b".into()),
            ErrorCode::BadRequest,
            "b",
        );
        check(OrderError::NotFound("n".into()), ErrorCode::NotFound, "n");
        check(
            OrderError::OffSale(ErrorDetail::new(ErrorCode::OffSale, "o")),
            ErrorCode::OffSale,
            "o",
        );
        check(
            OrderError::Unavailable("u".into()),
            ErrorCode::Unavailable,
            "u",
        );
        check(
            OrderError::DatabaseUnavailable(sqlx::Error::PoolTimedOut),
            ErrorCode::Unavailable,
            "the order database is unavailable",
        );
        check(
            OrderError::Unexpected(secret()),
            ErrorCode::Internal,
            "internal error",
        );
        check(
            OrderError::Bug("secret".into()),
            ErrorCode::Internal,
            "internal error",
        );
        check(
            OrderError::from(sqlx::Error::PoolTimedOut),
            ErrorCode::Unavailable,
            "the order database is unavailable",
        );
        check(
            OrderError::from(secret()),
            ErrorCode::Internal,
            "internal error",
        );
        let refused = ErrorDetail::new(ErrorCode::InsufficientStock, "short");
        check(
            CallError::Refused(refused).into(),
            ErrorCode::InsufficientStock,
            "short",
        );
        check(
            CallError::NoAnswer {
                subject: "stock.deduct".into(),
                reason: "timed out".into(),
            }
            .into(),
            ErrorCode::Unavailable,
            "the stock service did not answer in time",
        );
    }
}
