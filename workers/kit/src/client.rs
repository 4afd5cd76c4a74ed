//! Calling another service: request with a deadline and the caller's trace context, decode
//! the reply or the contract error, and the contract error a caller answers with when the
//! call failed ([`CallError::to_contract`]).
//!
//! [`request`] is the typed call: the [`Endpoint`] names the subject and both bodies, so
//! they cannot be mismatched ([`request_json`] takes the body as JSON and checks it against
//! the endpoint's type before sending). [`call`] and [`call_raw`] remain for subjects that
//! are not contract endpoints (`$SRV.*`, a bench's echo) and for `shop req`.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_contracts::error::HEADER_ERROR_CODE;
use shop_contracts::{Endpoint, ErrorBody, ErrorDetail};
use thiserror::Error;

use crate::ServiceError;

#[derive(Debug, Error)]
pub enum CallError {
    /// The service answered with a contract error: a definite answer.
    #[error("{0}")]
    Refused(ErrorDetail),
    /// Nobody answered, or not in time: the request may or may not have taken effect.
    #[error("{subject} did not answer: {reason}")]
    NoAnswer { subject: String, reason: String },
    /// The reply was not what the contract promises.
    #[error("{subject} sent a reply that does not match the contract: {reason}")]
    BadReply { subject: String, reason: String },
}

impl ServiceError for CallError {
    /// What a caller answers when this call failed: a refusal is passed on as it came (a
    /// shed request's `unavailable` with its `retry_after_ms` too); no responders or no
    /// answer in time is `unavailable`, naming the service only (the reason may name hosts
    /// and is for the log); a reply that breaks the contract is a bug, `internal`.
    fn to_contract(&self) -> ErrorDetail {
        match self {
            CallError::Refused(detail) => detail.clone(),
            CallError::NoAnswer { subject, .. } => {
                let service = subject.split('.').next().unwrap_or("a");
                ErrorDetail::unavailable(format!("the {service} service did not answer in time"))
            }
            CallError::BadReply { .. } => ErrorDetail::internal(),
        }
    }
}

/// Sends `body` to the endpoint `E` and waits at most `timeout` for its reply.
pub async fn request<E: Endpoint>(
    client: &async_nats::Client,
    body: &E::Request,
    timeout: Duration,
) -> Result<E::Reply, CallError> {
    call(client, E::SUBJECT, body, timeout).await
}

/// [`request`] on another subject that serves the same endpoint: a partition's own
/// `stock.part.<partition>.<op>` ([`shop_contracts::subjects::stock::partition`]), with the
/// bodies of `E` still tied to it.
pub async fn request_on<E: Endpoint>(
    client: &async_nats::Client,
    subject: &str,
    body: &E::Request,
    timeout: Duration,
) -> Result<E::Reply, CallError> {
    call(client, subject, body, timeout).await
}

/// [`request`] with the body written as JSON (a seed's or a fixture's literal). It must
/// decode as `E::Request` here, before anything is sent: a body that does not fit the
/// endpoint fails as an encoding failure of [`call`] does, and never reaches the service.
pub async fn request_json<E: Endpoint>(
    client: &async_nats::Client,
    body: serde_json::Value,
    timeout: Duration,
) -> Result<E::Reply, CallError> {
    let body: E::Request = serde_json::from_value(body).map_err(|e| CallError::BadReply {
        subject: E::SUBJECT.to_owned(),
        reason: format!("the request does not fit the endpoint: {e}"),
    })?;
    request::<E>(client, &body, timeout).await
}

/// Sends `body` to `subject` and waits at most `timeout` for the reply.
pub async fn call<Req: Serialize, Rep: DeserializeOwned>(
    client: &async_nats::Client,
    subject: &str,
    body: &Req,
    timeout: Duration,
) -> Result<Rep, CallError> {
    let payload = serde_json::to_vec(body).map_err(|e| CallError::BadReply {
        subject: subject.to_owned(),
        reason: format!("could not encode the request: {e}"),
    })?;
    call_raw(client, subject, payload, timeout).await
}

/// Sends `payload` as it is (an empty one too, as `$SRV.PING` takes) to `subject` and waits
/// at most `timeout` for the reply.
pub async fn call_raw<Rep: DeserializeOwned>(
    client: &async_nats::Client,
    subject: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Rep, CallError> {
    let mut request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(timeout));
    // The callee's span becomes a child of ours (W3C `traceparent`).
    let mut headers = async_nats::HeaderMap::new();
    if crate::trace::inject(&mut headers) {
        request = request.headers(headers);
    }
    let message = client
        .send_request(subject.to_owned(), request)
        .await
        .map_err(|e| CallError::NoAnswer {
            subject: subject.to_owned(),
            reason: e.to_string(),
        })?;
    let bad = |reason: String| CallError::BadReply {
        subject: subject.to_owned(),
        reason,
    };
    let is_error = message
        .headers
        .as_ref()
        .is_some_and(|h| h.get(HEADER_ERROR_CODE).is_some());
    if is_error {
        let body: ErrorBody =
            serde_json::from_slice(&message.payload).map_err(|e| bad(e.to_string()))?;
        return Err(CallError::Refused(body.error));
    }
    serde_json::from_slice(&message.payload).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use shop_contracts::ErrorCode;

    use super::*;

    #[track_caller]
    fn check(error: CallError, expected: ErrorDetail) {
        assert_eq!(error.to_contract(), expected);
    }

    #[test]
    fn a_failed_call_becomes_one_contract_error() {
        let shed =
            ErrorDetail::unavailable("the worker is at capacity; nothing was done, try again")
                .with("retry_after_ms", 40);
        check(CallError::Refused(shed.clone()), shed);
        let short = ErrorDetail::new(
            ErrorCode::InsufficientStock,
            "goods 7: 3 requested, 1 available",
        )
        .with("goods_id", 7);
        check(CallError::Refused(short.clone()), short);
        for reason in ["no responders", "request timed out: deadline has elapsed"] {
            check(
                CallError::NoAnswer {
                    subject: "stock.deduct".into(),
                    reason: reason.into(),
                },
                ErrorDetail::unavailable("the stock service did not answer in time"),
            );
        }
        check(
            CallError::BadReply {
                subject: "goods.batch".into(),
                reason: "missing field `goods` at line 1 column 2".into(),
            },
            ErrorDetail::internal(),
        );
    }
}
