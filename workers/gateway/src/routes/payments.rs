//! The payment provider's callback: the signature over the raw body is checked before the
//! body is even parsed. A repeat of a paid callback returns the paid order (the order worker
//! makes pay idempotent); a callback for a closed or cancelled order is `not_payable`, upon
//! which a real provider refunds the payment.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use shop_contracts::endpoint::OrderPay;
use shop_contracts::order::{Order, PayRequest};

use crate::extract::{self, RawJson};
use crate::payment::{self, SIGNATURE_HEADER};
use crate::problem::Problem;
use crate::state::AppState;

/// Marks an order paid. Signed by the provider: `X-Signature: sha256=<hex HMAC-SHA256 of
/// the raw body>`.
#[utoipa::path(post, operation_id = "payment_callback", path = "/v1/payments/callback", tag = "payments",
    params(("X-Signature" = String, Header, description = "sha256=<hex HMAC-SHA256 of the raw body with the shared secret>")),
    request_body = PayRequest,
    responses((status = 200, body = Order), (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawJson(body): RawJson,
) -> Result<Json<Order>, Problem> {
    let Some(secret) = state.settings.payment.secret.as_ref() else {
        // Without a secret no signature can be checked, so none is accepted.
        return Err(Problem::unauthorized(
            "payment callbacks are not configured",
        ));
    };
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::unauthorized("X-Signature is required"))?;
    if !payment::verify(secret, &body, signature) {
        return Err(Problem::unauthorized("X-Signature does not match the body"));
    }
    let request: PayRequest = extract::decode(&body)?;
    state.nats.request::<OrderPay>(&request).await.map(Json)
}
