//! Running a micro-service endpoint: every request in its own task, decoded, handled, answered.

use std::future::Future;
use std::sync::Arc;

use async_nats::service::Service;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_contracts::{ErrorCode, ErrorDetail};
use tokio::task::JoinHandle;

use crate::{decode, reply};

/// What a worker's error enum gives the plumbing: the contract error to send.
/// Implemented by each worker's `thiserror` enum; `Internal`/`Unavailable` are logged here
/// with their cause, which never reaches the caller.
pub trait ServiceError: std::error::Error + Send + 'static {
    fn to_contract(&self) -> ErrorDetail;
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
    let mut endpoint = service.endpoint(subject).await?;
    let handler = Arc::new(handler);
    Ok(tokio::spawn(async move {
        while let Some(request) = endpoint.next().await {
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
                reply::respond(&request, result).await;
            });
        }
    }))
}
