//! What every handler shares: the NATS client with its deadline, the token verifier, the
//! payment secret, the order rate limiter, the live-event hub, the OpenAPI document and the
//! shutdown signal. Extractors that need one part ask for it alone (`FromRef`), so they
//! never name this state.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use shop_contracts::Endpoint;

use crate::auth::Verifier;
use crate::events::Hub;
use crate::openapi::Document;
use crate::problem::Problem;
use crate::rate_limit::OrderLimiter;
use crate::settings::Settings;
use crate::shutdown::Drain;

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
    /// The document served at `/openapi.json`.
    pub document: Document,
    /// The stop signal the event streams watch, and the count of what is still running.
    pub drain: Drain,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl FromRef<AppState> for Document {
    fn from_ref(state: &AppState) -> Self {
        state.document.clone()
    }
}

impl FromRef<AppState> for Drain {
    fn from_ref(state: &AppState) -> Self {
        state.drain.clone()
    }
}

/// Requests to the workers, each with the configured deadline.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub timeout: Duration,
}

impl Nats {
    /// One request to the contract endpoint `E`; a refusal or no answer becomes the matching
    /// problem.
    pub async fn request<E: Endpoint>(&self, body: &E::Request) -> Result<E::Reply, Problem> {
        Ok(shop_kit::client::request::<E>(&self.client, body, self.timeout).await?)
    }
}
