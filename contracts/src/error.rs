//! The contract's error codes, their statuses, and the error body.
//!
//! An error reply carries the headers [`HEADER_ERROR`] (human message) and
//! [`HEADER_ERROR_CODE`] (numeric status) *and* an [`ErrorBody`], so both the `nats` CLI
//! and JSON clients see it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const HEADER_ERROR: &str = "Nats-Service-Error";
pub const HEADER_ERROR_CODE: &str = "Nats-Service-Error-Code";

/// Every error code of CONTRACT section 1.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    InsufficientStock,
    OffSale,
    OrderCancelled,
    NotPayable,
    AmountMismatch,
    Conflict,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The HTTP-like status sent in `Nats-Service-Error-Code`.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::InsufficientStock
            | ErrorCode::OffSale
            | ErrorCode::OrderCancelled
            | ErrorCode::NotPayable
            | ErrorCode::AmountMismatch
            | ErrorCode::Conflict => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InsufficientStock => "insufficient_stock",
            ErrorCode::OffSale => "off_sale",
            ErrorCode::OrderCancelled => "order_cancelled",
            ErrorCode::NotPayable => "not_payable",
            ErrorCode::AmountMismatch => "amount_mismatch",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error": {...}}`: the body of every error reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// One contract error: code, human message, and details (always an object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default)]
    pub details: Map<String, Value>,
}

impl ErrorDetail {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorDetail {
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    /// Adds one entry to `details`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// A bug. The message is fixed so nothing internal (SQL, hosts, secrets) can leak.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl std::fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorDetail {}
