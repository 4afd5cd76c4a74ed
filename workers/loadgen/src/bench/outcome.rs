//! What became of one request, in the categories the bench reports apart: a success, a
//! refusal (`unavailable`, the answer of a service that is full or whose dependency is),
//! another contract error, or no answer in time.

use std::time::Duration;

use shop_contracts::{ErrorCode, ErrorDetail};
use shop_kit::client::CallError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// `unavailable`. With `details.retry_after_ms` (a *shed* refusal) the worker was full
    /// and refused before doing anything (CONTRACT section 1), and asks the client to wait
    /// that long. Without it, a dependency did not answer in time, and some of the work may
    /// have been done.
    Refused {
        retry_after: Option<Duration>,
    },
    /// Any other error, by kind: a contract code, or what went wrong outside NATS.
    Failed(&'static str),
    /// Nobody answered within the request timeout: the request may or may not have
    /// taken effect.
    Timeout,
}

impl Outcome {
    /// The outcome of a NATS request made with [`shop_kit::client::call`].
    pub fn of_call<T>(result: Result<T, CallError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(CallError::Refused(error)) => Outcome::of_error(&error),
            Err(CallError::NoAnswer { .. }) => Outcome::Timeout,
            Err(CallError::BadReply { .. }) => Outcome::Failed("bad_reply"),
        }
    }

    /// The outcome of a contract error, whether it came over NATS or from a worker's own
    /// function called in-process.
    pub fn of_error(error: &ErrorDetail) -> Outcome {
        if error.code == ErrorCode::Unavailable {
            Outcome::Refused {
                retry_after: error
                    .details
                    .get("retry_after_ms")
                    .map(|ms| Duration::from_millis(ms.as_u64().unwrap_or(0))),
            }
        } else {
            Outcome::Failed(error.code.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(code: ErrorCode, details: serde_json::Value) -> Result<(), CallError> {
        let mut error = ErrorDetail::new(code, "no");
        if let serde_json::Value::Object(details) = details {
            error.details = details;
        }
        Err(CallError::Refused(error))
    }

    #[test]
    fn unavailable_with_a_retry_hint_is_a_shed_refusal() {
        let shed = refused(ErrorCode::Unavailable, json!({"retry_after_ms": 50}));
        assert_eq!(
            Outcome::of_call(shed),
            Outcome::Refused {
                retry_after: Some(Duration::from_millis(50))
            }
        );
        let plain = refused(ErrorCode::Unavailable, json!({}));
        assert_eq!(
            Outcome::of_call(plain),
            Outcome::Refused { retry_after: None }
        );
    }

    #[test]
    fn other_errors_keep_their_code_and_silence_is_a_timeout() {
        let short = refused(ErrorCode::InsufficientStock, json!({}));
        assert_eq!(
            Outcome::of_call(short),
            Outcome::Failed("insufficient_stock")
        );
        let silent: Result<(), _> = Err(CallError::NoAnswer {
            subject: "order.create".into(),
            reason: "timed out".into(),
        });
        assert_eq!(Outcome::of_call(silent), Outcome::Timeout);
    }
}
