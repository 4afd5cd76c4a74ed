//! `shop gateway`: the HTTP API of CONTRACT section 7 in front of the NATS workers.
//!
//! A stateless process (any number can run): it owns no database and holds no state but
//! caches of nothing; every request becomes contract requests over NATS, made with the
//! `shop-contracts` types, so input that reaches a worker is a valid contract request. It
//! imports no worker crate.
//!
//! - [`routes`]: the handlers, one module per resource, and the table that registers each
//!   with its OpenAPI operation.
//! - [`auth`]: bearer tokens (HS256 in dev, RS256/EdDSA public keys in production), the
//!   `User`/`Admin` extractors, dev-token minting for `shop token`.
//! - [`payment`]: the provider's HMAC-SHA256 signature, compared in constant time.
//! - [`problem`]: errors as `application/problem+json`, and the layer that makes every
//!   error response one.
//! - [`extract`]: body, path and query extractors whose rejections are problems.
//! - [`rate_limit`]: the per-user limit on order creation.
//! - [`serve`]: the HTTP connections: hyper's settings, accepting, the graceful stop.
//! - [`direct`]: a connection's first request, answered on the socket when it is an event
//!   stream (no hyper connection buffers per viewer); [`rewind`]: the socket hyper gets
//!   otherwise, with the bytes already read put back.
//! - [`events`]: the notifications hub behind the Server-Sent Events of a room.
//! - [`memory`]: freed memory given back to the system after viewers leave.
//! - [`openapi`]: the OpenAPI 3.1 document's frame (the routes add their operations).
//! - [`shutdown`]: the stop signal the event streams watch, and what is still in flight.
//! - [`settings`]: `[gateway]` configuration.

pub mod auth;
pub mod direct;
pub mod events;
pub mod extract;
pub mod memory;
pub mod openapi;
pub mod payment;
pub mod problem;
pub mod rate_limit;
pub mod rewind;
pub mod routes;
pub mod serve;
pub mod settings;
pub mod shutdown;
pub mod state;
pub mod views;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::Router;
use thiserror::Error;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use settings::{Secret, Settings};

use crate::auth::Verifier;
use crate::events::Hub;
use crate::rate_limit::OrderLimiter;
use crate::shutdown::{Drain, InFlight};
use crate::state::{AppState, Nats, Shared};

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("auth key: {0}")]
    Key(#[from] auth::KeyError),
    #[error("subscribing to change notifications: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
    #[error("the change notifications stopped (NATS connection closed)")]
    HubStopped,
    #[error(
        "stopping took longer than {timeout:?}: abandoned {} request(s) in flight and {} event stream(s)",
        abandoned.requests, abandoned.streams
    )]
    ShutdownTimeout {
        timeout: Duration,
        abandoned: InFlight,
    },
}

/// The application: routes (from [`routes::build`]), extractors' state and every layer
/// (trace, timeout, body limit, CORS, problem+json for every error, the in-flight count).
pub fn app(routes: Router<AppState>, state: AppState) -> Router {
    let settings = state.settings.clone();
    let drain = state.drain.clone();
    let cors = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::LOCATION, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
        .allow_origin(if settings.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                settings
                    .cors_origins
                    .iter()
                    .filter_map(|o| o.parse().ok())
                    .collect::<Vec<_>>(),
            )
        });
    routes
        .with_state(state)
        // Both limits: the tower-http layer refuses a declared or streamed body over 64 KiB
        // before it is read, axum's default limit (2 MiB) is lowered to match.
        .layer(DefaultBodyLimit::max(shop_contracts::MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(shop_contracts::MAX_BODY_BYTES))
        // A response not ready in time is a 503 (made a problem with Retry-After below). It
        // bounds the time to the response head, so event streams are not cut.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(axum::middleware::from_fn(problem::ensure_problem))
        .layer(cors)
        .layer(axum::middleware::from_fn_with_state(drain, shutdown::track))
        .layer(TraceLayer::new_for_http())
}

/// Builds the state, binds, and serves until `shutdown` resolves; then it stops accepting
/// connections, event streams end, and requests in flight finish within
/// `settings.shutdown_timeout` (else [`GatewayError::ShutdownTimeout`], after logging what
/// was abandoned).
pub async fn run(
    client: async_nats::Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let verifier = Verifier::from_settings(&settings.auth)?;
    if settings.payment.secret.is_none() {
        tracing::warn!("gateway.payment.secret is not set: every payment callback gets 401");
    }
    let (hub, hub_task) = Hub::start(&client).await?;
    let drain = Drain::default();
    let limiter = Arc::new(OrderLimiter::new(
        settings.orders_per_second,
        settings.order_burst,
    ));
    let sweeper = {
        let limiter = limiter.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                limiter.forget_idle();
            }
        })
    };
    // Each stream is a file descriptor; a few dozen more serve the rest (NATS, requests).
    match serve::raise_open_files_limit() {
        Ok(limit) if limit < settings.max_event_streams as u64 + 64 => {
            tracing::warn!(
            limit, max_event_streams = settings.max_event_streams,
            "the open files limit (ulimit -n) is below gateway.max_event_streams: viewers past it \
             are refused by the system, not answered 503")
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not read or raise the open files limit"),
    }
    let trimmer = tokio::spawn(memory::give_back_after_viewers_leave(drain.clone()));
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| GatewayError::Bind {
            addr: settings.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(GatewayError::Serve)?;
    let (routes, document) = routes::build();
    let shutdown_timeout = settings.shutdown_timeout;
    let state = AppState::new(Shared {
        nats: Nats {
            client,
            timeout: settings.nats_timeout,
        },
        verifier: Arc::new(verifier),
        limiter,
        hub,
        settings: Arc::new(settings),
        document,
        drain: drain.clone(),
    });
    tracing::info!(%addr, "gateway listening");
    // After the stop: no new connections, idle ones close, each connection finishes the
    // request it is serving; event streams end (they watch the same signal).
    let mut serving = std::pin::pin!(serve::serve(listener, app(routes, state), drain.clone()));
    let result = tokio::select! {
        () = serving.as_mut() => Ok(()),
        _ = hub_task => Err(GatewayError::HubStopped),
        _ = shutdown => {
            let in_flight = drain.in_flight();
            tracing::info!(requests = in_flight.requests, streams = in_flight.streams,
                timeout = ?shutdown_timeout, "stopping: finishing requests in flight, ending event streams");
            drain.stop();
            match tokio::time::timeout(shutdown_timeout, serving).await {
                Ok(()) => Ok(()),
                Err(_) => {
                    let abandoned = drain.in_flight();
                    tracing::error!(requests = abandoned.requests, streams = abandoned.streams,
                        "stopping took longer than gateway.shutdown_timeout: abandoning what is still in flight");
                    Err(GatewayError::ShutdownTimeout { timeout: shutdown_timeout, abandoned })
                }
            }
        }
    };
    sweeper.abort();
    trimmer.abort();
    result
}
