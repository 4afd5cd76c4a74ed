//! A user's orders: create (rate-limited per user), read, list, cancel. The user is always
//! the token's; another user's order is `not_found`, so its existence is not revealed.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use shop_contracts::endpoint::{OrderCancel, OrderCreate, OrderGet, OrderList};
use shop_contracts::order::{
    CancelRequest, CreateOrderRequest, GetOrderRequest, ListOrdersReply, ListOrdersRequest, Order,
};
use shop_contracts::OrderSn;

use crate::auth::{Caller, User};
use crate::extract::{self, Path, Query};
use crate::problem::{Code, Problem};
use crate::state::AppState;
use crate::views::{CreateOrderBody, IdempotencyKey, OrdersQuery};

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Creates an order for the token's user. `Idempotency-Key` makes repeats return the same
/// order. Prices come from the goods service, never from the client, so one rule of a
/// create is beyond this document: its total (each goods' current price times its quantity,
/// summed) must stay within 2^53-1 cents, and a larger one is refused with 400.
#[utoipa::path(post, operation_id = "create_order", path = "/v1/orders", tag = "orders", security(("bearer" = [])),
    params(("Idempotency-Key" = inline(Option<IdempotencyKey>), Header, description = "repeat a create safely: the same key returns the same order")),
    request_body = CreateOrderBody,
    responses((status = 201, body = Order, headers(("Location" = String, description = "/v1/orders/{order_sn}"))),
        (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    User(caller): User,
    headers: HeaderMap,
    body: extract::RawJson,
) -> Result<Response, Problem> {
    // The limit comes first: a refused create costs a worker nothing, however malformed.
    if let Err(wait) = state.limiter.check(caller.user_id) {
        return Err(
            Problem::new(Code::RateLimited, "too many orders; slow down").with_retry_after(wait),
        );
    }
    let body: CreateOrderBody = extract::decode(&body.0)?;
    let idempotency_key = headers
        .get(IDEMPOTENCY_KEY)
        .map(IdempotencyKey::parse)
        .transpose()
        .map_err(Problem::bad_request)?;
    let request = CreateOrderRequest {
        user_id: caller.user_id,
        items: body.items,
        address: body.address,
        receiver_name: body.receiver_name,
        receiver_phone: body.receiver_phone,
        note: body.note,
        idempotency_key,
    };
    let order: Order = state.nats.request::<OrderCreate>(&request).await?;
    let location = format!("/v1/orders/{}", order.order_sn);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response())
}

/// The caller's order, or `not_found` when it is someone else's.
async fn owned(state: &AppState, caller: Caller, order_sn: OrderSn) -> Result<Order, Problem> {
    let order: Order = state
        .nats
        .request::<OrderGet>(&GetOrderRequest { order_sn })
        .await?;
    if order.user_id != caller.user_id {
        return Err(Problem::not_found(format!(
            "order {order_sn} does not exist"
        )));
    }
    Ok(order)
}

/// One of the caller's orders.
#[utoipa::path(get, operation_id = "get_order", path = "/v1/orders/{order_sn}", tag = "orders", security(("bearer" = [])),
    params(("order_sn" = OrderSn, Path)),
    responses((status = 200, body = Order), (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    User(caller): User,
    Path(order_sn): Path<OrderSn>,
) -> Result<Json<Order>, Problem> {
    owned(&state, caller, order_sn).await.map(Json)
}

/// The caller's orders, newest first.
#[utoipa::path(get, operation_id = "list_orders", path = "/v1/orders", tag = "orders", security(("bearer" = [])), params(OrdersQuery),
    responses((status = 200, body = ListOrdersReply), (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    User(caller): User,
    Query(query): Query<OrdersQuery>,
) -> Result<Json<ListOrdersReply>, Problem> {
    let request = ListOrdersRequest {
        user_id: caller.user_id,
        before_sn: query.before_sn,
        limit: query.limit,
    };
    state.nats.request::<OrderList>(&request).await.map(Json)
}

/// Cancels one of the caller's unpaid orders; its stock comes back.
#[utoipa::path(post, operation_id = "cancel_order", path = "/v1/orders/{order_sn}/cancel", tag = "orders", security(("bearer" = [])),
    params(("order_sn" = OrderSn, Path)),
    responses((status = 200, body = Order), (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn cancel(
    State(state): State<AppState>,
    User(caller): User,
    Path(order_sn): Path<OrderSn>,
) -> Result<Json<Order>, Problem> {
    owned(&state, caller, order_sn).await?;
    state
        .nats
        .request::<OrderCancel>(&CancelRequest { order_sn })
        .await
        .map(Json)
}
