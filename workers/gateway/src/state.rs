//! What every handler shares: the NATS client with its deadline, the token verifier, the
//! payment secret, the order rate limiter, the live-event hub and the shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::auth::Verifier;
use crate::events::Hub;
use crate::problem::Problem;
use crate::rate_limit::OrderLimiter;
use crate::settings::Settings;

/// The state of every handler: one pointer, since axum clones it for each request and for
/// each extractor that asks for it (cloning the fields, the NATS client's among them, was
/// about 2.5% of the gateway's CPU under load).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub nats: Nats,
    pub verifier: Arc<Verifier>,
    pub limiter: Arc<OrderLimiter>,
    pub hub: Hub,
    pub settings: Arc<Settings>,
    /// Becomes `true` when the server is asked to stop: event streams end then.
    pub stopping: watch::Receiver<bool>,
}

/// Requests to the workers, each with the configured deadline.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub timeout: Duration,
}

impl Nats {
    /// One contract request; a refusal or no answer becomes the matching problem.
    pub async fn call<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        subject: &str,
        body: &Req,
    ) -> Result<Rep, Problem> {
        Ok(shop_kit::client::call(&self.client, subject, body, self.timeout).await?)
    }
}
