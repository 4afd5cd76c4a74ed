//! Calling another service: request with a deadline and the caller's trace context, decode
//! the reply or the contract error.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_contracts::error::HEADER_ERROR_CODE;
use shop_contracts::{ErrorBody, ErrorDetail};
use thiserror::Error;

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
