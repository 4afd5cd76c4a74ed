//! Errors of the stock worker, one variant per contract code it can answer with.
//!
//! The three workers name alike the variants that mean the same: `BadRequest`, `NotFound`,
//! `Conflict`, `DatabaseUnavailable` (the worker's database is away; the cause is logged,
//! the caller gets a fixed message), `Unexpected` (any other database error: `internal`),
//! `Bug` (a broken invariant or a stopped task: `internal`).
//!
//! [`StockError`] is `Clone` (the database cause sits behind an `Arc`) because the `batch`
//! strategy answers every order of a failed batch with the same error.

use std::sync::Arc;

use shop_contracts::{ErrorCode, ErrorDetail, GoodsId, OrderSn};
use shop_kit::client::CallError;
use shop_kit::ServiceError;
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum StockError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("goods {goods_id}: {requested} requested, {available} available")]
    InsufficientStock {
        goods_id: GoodsId,
        requested: i64,
        available: i64,
    },
    /// The order_sn was already returned (or null-compensated): a late deduct must not hang.
    #[error("order {0} was already returned; a deduct for it is refused")]
    OrderCancelled(String),
    /// Contention: nothing was done; the same deduct may succeed when tried again.
    #[error("{0}")]
    Conflict(String),
    /// The order_sn's sell record holds other items: it stands, and this deduct is refused.
    /// A `conflict` with detail `sell_record: "deducted"`, so that a router across
    /// partitions can tell it from contention whatever worker answered it.
    #[error("order {0} was already deducted with other items")]
    OtherItems(OrderSn),
    /// The database did not answer in time (pool exhausted, connection refused).
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(#[source] Arc<sqlx::Error>),
    /// NATS (the kv_lock bucket) did not answer.
    #[error("lock service unavailable: {0}")]
    LockUnavailable(String),
    #[error("unexpected database error: {0}")]
    Unexpected(#[source] Arc<sqlx::Error>),
    /// A call to another stock partition failed: its own mapping decides the answer (a
    /// refusal passed on as it came, no answer `unavailable`).
    #[error("{0}")]
    Partition(#[source] Arc<CallError>),
    /// A deduct refused in one partition could not record the rollback that gives back the
    /// others' share: the outcome is left to the caller's checker.
    #[error("the rollback of a partly deducted order could not be published: {0}")]
    RollbackUnpublished(String),
    /// A deduct across partitions of which one share took stock and another has no definite
    /// answer (it did not answer, was shed, or its slot was moving): the outcome is the
    /// caller's checker's to settle; never with a retry hint, since something was done.
    #[error("a share of the deduct took stock and another did not finish: {0}")]
    Unfinished(String),
    /// The goods' slot was moved to another partition (`shop partitions move stock`) since
    /// the request was routed here: nothing was done; the retry is routed by the new map.
    #[error("the goods' slot moved to partition {0}")]
    SlotMoved(shop_contracts::partition::PartitionId),
    #[error("unexpected: {0}")]
    Bug(String),
}

/// The detail of a `conflict` that says the order_sn's sell record stands with other items.
pub const SELL_RECORD_DETAIL: &str = "sell_record";

/// The retry hint of [`StockError::SlotMoved`]: a move writes the new map a moment after the
/// data moves, and every worker follows it within milliseconds.
pub const SLOT_MOVED_RETRY_MS: u64 = 200;

impl From<sqlx::Error> for StockError {
    fn from(e: sqlx::Error) -> Self {
        if shop_kit::db::is_unavailable(&e) {
            StockError::DatabaseUnavailable(Arc::new(e))
        } else {
            StockError::Unexpected(Arc::new(e))
        }
    }
}

impl From<CallError> for StockError {
    fn from(e: CallError) -> Self {
        StockError::Partition(Arc::new(e))
    }
}

impl StockError {
    /// A refusal that means nothing was done (the code is neither `unavailable` nor
    /// `internal`): the order worker fences such a create at once, so a deduct that took
    /// stock in another partition must give it back before it answers this.
    pub fn is_definite(&self) -> bool {
        !matches!(
            self.to_contract().code,
            ErrorCode::Unavailable | ErrorCode::Internal
        )
    }

    /// Whether retrying the same operation later may succeed (the rollback consumer naks
    /// these with a delay instead of terminating the message).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StockError::DatabaseUnavailable(_)
                | StockError::LockUnavailable(_)
                | StockError::Unexpected(_)
                | StockError::Bug(_)
                | StockError::Conflict(_)
                | StockError::Partition(_)
                | StockError::RollbackUnpublished(_)
                | StockError::Unfinished(_)
                | StockError::SlotMoved(_)
        )
    }
}

impl ServiceError for StockError {
    fn to_contract(&self) -> ErrorDetail {
        match self {
            StockError::BadRequest(m) => ErrorDetail::bad_request(m),
            StockError::NotFound(m) => ErrorDetail::not_found(m),
            StockError::InsufficientStock {
                goods_id,
                requested,
                available,
            } => ErrorDetail::new(ErrorCode::InsufficientStock, self.to_string())
                .with("goods_id", goods_id.get())
                .with("requested", *requested)
                .with("available", *available),
            StockError::OrderCancelled(_) => {
                ErrorDetail::new(ErrorCode::OrderCancelled, self.to_string())
            }
            StockError::Conflict(m) => ErrorDetail::new(ErrorCode::Conflict, m),
            StockError::OtherItems(_) => ErrorDetail::new(ErrorCode::Conflict, self.to_string())
                .with(SELL_RECORD_DETAIL, "deducted"),
            // The cause is logged by the endpoint; the caller gets no SQL or hosts.
            StockError::DatabaseUnavailable(_) => {
                ErrorDetail::unavailable("the stock database is unavailable")
            }
            StockError::LockUnavailable(_) => {
                ErrorDetail::unavailable("the stock lock bucket is unavailable")
            }
            StockError::Partition(call) => call.to_contract(),
            StockError::RollbackUnpublished(_) | StockError::Unfinished(_) => {
                ErrorDetail::unavailable("the stock service could not finish the deduct")
            }
            StockError::SlotMoved(_) => ErrorDetail::unavailable(
                "the goods' partition is moving; nothing was done, try again",
            )
            .with("retry_after_ms", SLOT_MOVED_RETRY_MS)
            .with(shop_contracts::partition::SLOT_MOVED_DETAIL, true),
            StockError::Unexpected(_) | StockError::Bug(_) => ErrorDetail::internal(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(error: StockError, code: ErrorCode, message: &str, transient: bool) {
        let contract = error.to_contract();
        assert_eq!((contract.code, contract.message.as_str()), (code, message));
        assert_eq!(error.is_transient(), transient, "{error:?}");
    }

    #[test]
    fn each_variant_answers_its_code_and_no_cause() {
        let secret = || sqlx::Error::Protocol("SELECT secret FROM stock".into());
        check(
            StockError::BadRequest("b".into()),
            ErrorCode::BadRequest,
            "b",
            false,
        );
        check(
            StockError::NotFound("n".into()),
            ErrorCode::NotFound,
            "n",
            false,
        );
        check(
            StockError::Conflict("c".into()),
            ErrorCode::Conflict,
            "c",
            true,
        );
        check(
            StockError::OrderCancelled("7".into()),
            ErrorCode::OrderCancelled,
            "order 7 was already returned; a deduct for it is refused",
            false,
        );
        check(
            StockError::from(sqlx::Error::PoolTimedOut),
            ErrorCode::Unavailable,
            "the stock database is unavailable",
            true,
        );
        check(
            StockError::LockUnavailable("nats at 10.0.0.1".into()),
            ErrorCode::Unavailable,
            "the stock lock bucket is unavailable",
            true,
        );
        check(
            StockError::from(secret()),
            ErrorCode::Internal,
            "internal error",
            true,
        );
        check(
            StockError::Bug("secret".into()),
            ErrorCode::Internal,
            "internal error",
            true,
        );
    }
}
