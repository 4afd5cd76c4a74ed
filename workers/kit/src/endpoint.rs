//! Running a micro-service endpoint: every request in its own task, decoded, handled, answered.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::Service;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_contracts::{ErrorCode, ErrorDetail};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::{decode, reply};

/// What a worker's error enum gives the plumbing: the contract error to send.
/// Implemented by each worker's `thiserror` enum; `Internal`/`Unavailable` are logged here
/// with their cause, which never reaches the caller.
pub trait ServiceError: std::error::Error + Send + 'static {
    fn to_contract(&self) -> ErrorDetail;
}

/// A bound on the requests of one endpoint in flight in this process. When it is full, a
/// request is refused at once with `unavailable` and `details.retry_after_ms`, before it is
/// even decoded, so a refused request has done nothing (CONTRACT section 1). Work the
/// process cannot finish in time is never started: under overload, goodput stays at the
/// peak instead of collapsing into timeouts of half-done work.
#[derive(Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    retry_after: Duration,
}

impl Admission {
    /// At most `in_flight` requests at once; a refusal suggests retrying after `retry_after`.
    pub fn new(in_flight: usize, retry_after: Duration) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(in_flight.max(1))),
            retry_after,
        }
    }

    fn refusal(&self) -> ErrorDetail {
        ErrorDetail::unavailable("the worker is at capacity; nothing was done, try again")
            .with("retry_after_ms", self.retry_after.as_millis() as u64)
    }
}

/// Adds `subject` to `service` and serves it with `handler(state.clone(), request)` until
/// the service stops.
///
/// Requests are handled concurrently (one task each): a slow database call for one order
/// must not hold up the next. Returns the task that drains the endpoint.
pub async fn serve<S, Req, Rep, Err, H, Fut>(
    service: &Service,
    subject: &'static str,
    state: S,
    handler: H,
) -> Result<JoinHandle<()>, async_nats::Error>
where
    S: Clone + Send + Sync + 'static,
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send + 'static,
    Err: ServiceError,
    H: Fn(S, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Rep, Err>> + Send + 'static,
{
    serve_admitted(service, subject, None, state, handler).await
}

/// [`serve`], with requests beyond `admission`'s bound refused at once.
pub async fn serve_admitted<S, Req, Rep, Err, H, Fut>(
    service: &Service,
    subject: &'static str,
    admission: Option<Admission>,
    state: S,
    handler: H,
) -> Result<JoinHandle<()>, async_nats::Error>
where
    S: Clone + Send + Sync + 'static,
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send + 'static,
    Err: ServiceError,
    H: Fn(S, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Rep, Err>> + Send + 'static,
{
    let mut endpoint = service.endpoint(subject).await?;
    let handler = Arc::new(handler);
    Ok(tokio::spawn(async move {
        while let Some(request) = endpoint.next().await {
            let slot = match &admission {
                None => None,
                Some(admission) => match admission.slots.clone().try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    Err(_) => {
                        let refusal = admission.refusal();
                        tokio::spawn(async move {
                            reply::respond::<()>(&request, Err(refusal)).await;
                        });
                        continue;
                    }
                },
            };
            let handler = handler.clone();
            let state = state.clone();
            tokio::spawn(async move {
                let result = match decode::<Req>(&request.message.payload) {
                    Ok(body) => handler(state, body).await.map_err(|e| {
                        let contract = e.to_contract();
                        if matches!(contract.code, ErrorCode::Internal | ErrorCode::Unavailable) {
                            tracing::error!(subject, error = %e, "request failed");
                        }
                        contract
                    }),
                    Err(bad) => Err(bad),
                };
                // Free the slot before the reply goes out: a client that sends its next
                // request as soon as it has the answer must find the slot free.
                drop(slot);
                reply::respond(&request, result).await;
            });
        }
    }))
}
