//! Operators' writes (`role: "admin"`): goods records, stock levels, live rooms.

use axum::extract::State;
use axum::Json;
use shop_contracts::endpoint::{GoodsRoomSet, GoodsUpsert, StockSet};
use shop_contracts::goods::{Goods, Room, RoomSetRequest, UpsertGoods};
use shop_contracts::stock::{StockLevel, StockSetRequest};
use shop_contracts::{GoodsId, RoomId};

use crate::auth::Admin;
use crate::extract::{self, Path};
use crate::problem::Problem;
use crate::state::AppState;
use crate::views::{RoomBody, StockBody};

/// Creates a goods record; its id is assigned (a `goods_id` in the body is ignored).
#[utoipa::path(post, operation_id = "create_goods", path = "/v1/admin/goods", tag = "admin", security(("bearer" = [])),
    request_body = UpsertGoods,
    responses((status = 200, body = Goods), (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn create_goods(
    State(state): State<AppState>,
    _: Admin,
    extract::Json(mut goods): extract::Json<UpsertGoods>,
) -> Result<Json<Goods>, Problem> {
    goods.goods_id = None;
    state.nats.request::<GoodsUpsert>(&goods).await.map(Json)
}

/// Creates or replaces the goods record `{goods_id}` (the path's id; a `goods_id` in the
/// body is ignored, as on create: JSON Schema cannot say it must equal the path's).
#[utoipa::path(put, operation_id = "update_goods", path = "/v1/admin/goods/{goods_id}", tag = "admin", security(("bearer" = [])),
    params(("goods_id" = inline(crate::views::GoodsIdInPath), Path)), request_body = UpsertGoods,
    responses((status = 200, body = Goods), (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn update_goods(
    State(state): State<AppState>,
    _: Admin,
    Path(goods_id): Path<GoodsId>,
    extract::Json(mut goods): extract::Json<UpsertGoods>,
) -> Result<Json<Goods>, Problem> {
    goods.goods_id = Some(goods_id);
    state.nats.request::<GoodsUpsert>(&goods).await.map(Json)
}

/// Sets the available stock of a goods (a restock or write-down, ledgered).
#[utoipa::path(put, operation_id = "set_stock", path = "/v1/admin/stock/{goods_id}", tag = "admin", security(("bearer" = [])),
    params(("goods_id" = inline(crate::views::GoodsIdInPath), Path)), request_body = StockBody,
    responses((status = 200, body = StockLevel), (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn set_stock(
    State(state): State<AppState>,
    _: Admin,
    Path(goods_id): Path<GoodsId>,
    extract::Json(body): extract::Json<StockBody>,
) -> Result<Json<StockLevel>, Problem> {
    let request = StockSetRequest {
        goods_id,
        available: body.available,
    };
    state.nats.request::<StockSet>(&request).await.map(Json)
}

/// Replaces a room's goods list and the goods being presented: `current_goods_id`, when
/// set, must be one of `goods_ids` (else 400 `bad_request`).
#[utoipa::path(put, operation_id = "set_room", path = "/v1/admin/rooms/{room_id}", tag = "admin", security(("bearer" = [])),
    params(("room_id" = inline(crate::views::RoomIdInPath), Path)), request_body = RoomBody,
    responses((status = 200, body = Room), (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn set_room(
    State(state): State<AppState>,
    _: Admin,
    Path(room_id): Path<RoomId>,
    extract::Json(body): extract::Json<RoomBody>,
) -> Result<Json<Room>, Problem> {
    if body.goods_ids.len() > shop_contracts::MAX_ITEMS {
        return Err(Problem::bad_request("a room lists at most 100 goods"));
    }
    let request = RoomSetRequest {
        room_id,
        goods_ids: body.goods_ids,
        current_goods_id: body.current_goods_id,
    };
    state.nats.request::<GoodsRoomSet>(&request).await.map(Json)
}
