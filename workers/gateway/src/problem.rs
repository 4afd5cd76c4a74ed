//! Errors as `application/problem+json` (RFC 9457, CONTRACT section 7): the contract's
//! `code` and `details`, the section-1 status, plus the gateway-only codes. This module owns
//! that mapping and the last-resort layer that turns any other error response (an unknown
//! route, a method not allowed, a body over the limit, a timeout) into one.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use shop_contracts::{ErrorCode, ErrorDetail};
use shop_kit::client::CallError;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// The codes only the gateway gives, besides the contract's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Contract(ErrorCode),
    Unauthorized,
    Forbidden,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Contract(code) => code.as_str(),
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::PayloadTooLarge => "payload_too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::RateLimited => "rate_limited",
        }
    }

    pub fn status(self) -> StatusCode {
        let status = match self {
            Code::Contract(code) => code.status(),
            Code::Unauthorized => 401,
            Code::Forbidden => 403,
            Code::PayloadTooLarge => 413,
            Code::UnsupportedMediaType => 415,
            Code::RateLimited => 429,
        };
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// One error answer.
#[derive(Debug, Clone)]
pub struct Problem {
    pub code: Code,
    pub detail: String,
    pub details: Map<String, Value>,
    /// Sent as `Retry-After` (whole seconds, at least 1).
    pub retry_after: Option<Duration>,
    /// A status other than the code's: only 405, which no code of the contract names.
    status: Option<StatusCode>,
}

/// The body, as RFC 9457 names its members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody {
    /// `urn:shop:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// A contract error code (CONTRACT section 1) or a gateway-only one: `unauthorized`,
    /// `forbidden`, `payload_too_large`, `unsupported_media_type`, `rate_limited`.
    pub code: String,
    /// Always an object; e.g. `{goods_id, requested, available}` for `insufficient_stock`.
    pub details: Map<String, Value>,
}

impl Problem {
    pub fn new(code: Code, detail: impl Into<String>) -> Problem {
        let retry_after = (code == Code::Contract(ErrorCode::Unavailable)
            || code == Code::RateLimited)
            .then_some(Duration::from_secs(1));
        Problem {
            code,
            detail: detail.into(),
            details: Map::new(),
            retry_after,
            status: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(Code::Contract(ErrorCode::BadRequest), detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(Code::Contract(ErrorCode::NotFound), detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(Code::Contract(ErrorCode::Unavailable), detail)
    }

    pub fn internal() -> Problem {
        Problem::new(Code::Contract(ErrorCode::Internal), "internal error")
    }

    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(Code::Unauthorized, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(Code::Forbidden, detail)
    }

    pub fn with_retry_after(mut self, after: Duration) -> Problem {
        self.retry_after = Some(after);
        self
    }

    fn status(&self) -> StatusCode {
        self.status.unwrap_or(self.code.status())
    }

    fn body(&self) -> ProblemBody {
        let status = self.status();
        ProblemBody {
            type_: format!("urn:shop:problem:{}", self.code.as_str()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.as_str().to_owned(),
            details: self.details.clone(),
        }
    }
}

/// A worker's refusal keeps its code, message and details; no answer is `unavailable`.
impl From<ErrorDetail> for Problem {
    fn from(error: ErrorDetail) -> Problem {
        let retry_after = error
            .details
            .get("retry_after_ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis);
        let mut problem = Problem::new(Code::Contract(error.code), error.message);
        problem.details = error.details;
        if let (Some(after), Some(_)) = (retry_after, problem.retry_after) {
            problem.retry_after = Some(after);
        }
        problem
    }
}

impl From<CallError> for Problem {
    fn from(error: CallError) -> Problem {
        match error {
            CallError::Refused(detail) => detail.into(),
            CallError::NoAnswer { subject, reason } => {
                tracing::warn!(%subject, %reason, "no answer");
                let service = subject.split('.').next().unwrap_or("a");
                Problem::unavailable(format!("the {service} service did not answer in time"))
            }
            CallError::BadReply { subject, reason } => {
                tracing::error!(%subject, %reason, "reply does not match the contract");
                Problem::internal()
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up: a client waiting less would be refused again.
            let seconds = after.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                headers.insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// The last layer before the client: an error response that is not a problem yet (made by
/// axum or a tower layer: 404 route, 405, 413 body limit, 408/503 timeout) becomes one.
pub async fn ensure_problem(request: Request<Body>, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(CONTENT_TYPE.as_bytes()));
    if is_problem {
        return response;
    }
    let problem = match status {
        StatusCode::NOT_FOUND => Problem::not_found("no such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            Problem::bad_request("this route does not take that method")
        }
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            Code::PayloadTooLarge,
            "the request body is larger than 64 KiB",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            Code::UnsupportedMediaType,
            "the request body must be application/json",
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            Problem::unavailable("the request took too long; try again")
        }
        s if s.is_client_error() => Problem::bad_request("the request was not understood"),
        _ => Problem::internal(),
    };
    let method_not_allowed = status == StatusCode::METHOD_NOT_ALLOWED;
    let problem = Problem {
        status: method_not_allowed.then_some(status),
        ..problem
    };
    let mut rewritten = problem.into_response();
    if method_not_allowed {
        if let Some(allow) = response.headers().get(header::ALLOW) {
            rewritten.headers_mut().insert(header::ALLOW, allow.clone());
        }
    }
    rewritten
}
