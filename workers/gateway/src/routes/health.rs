//! Liveness (the process answers) and readiness (NATS and all three services answer
//! `$SRV.PING`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use shop_contracts::subjects;

use crate::problem::Problem;
use crate::state::AppState;
use crate::views::Health;

/// The process is up.
#[utoipa::path(get, operation_id = "healthz", path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn live() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: BTreeMap::new(),
    })
}

/// NATS is connected and goods, stock and order each answer `$SRV.PING`; otherwise 503
/// `unavailable` whose `details.checks` says which did not.
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", tag = "operations",
    responses((status = 200, body = Health),
        (status = 503, body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Health>, Problem> {
    let client = &state.nats.client;
    let timeout = state.nats.timeout;
    let connected = client.connection_state() == async_nats::connection::State::Connected;
    let ping = |service: &'static str| async move {
        let request = async_nats::Request::new().timeout(Some(timeout));
        let answered = client
            .send_request(format!("$SRV.PING.{service}"), request)
            .await
            .is_ok();
        (service.to_owned(), answered)
    };
    let (goods, stock, order) = tokio::join!(
        ping(subjects::goods::SERVICE),
        ping(subjects::stock::SERVICE),
        ping(subjects::order::SERVICE),
    );
    let mut checks = BTreeMap::from([goods, stock, order]);
    checks.insert("nats".into(), connected);
    if checks.values().all(|up| *up) {
        return Ok(Json(Health {
            status: "ok".into(),
            checks,
        }));
    }
    let down: Vec<&str> = checks
        .iter()
        .filter(|(_, up)| !**up)
        .map(|(name, _)| name.as_str())
        .collect();
    let mut problem =
        Problem::unavailable(format!("not ready: {} did not answer", down.join(", ")));
    problem
        .details
        .insert("checks".into(), serde_json::json!(checks));
    Err(problem)
}
