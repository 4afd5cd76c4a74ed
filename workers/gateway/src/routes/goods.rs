//! Public reads: a live room, one goods, a page of goods; rooms and goods carry `available`.

use std::collections::HashMap;

use axum::extract::State;
use shop_contracts::endpoint::{GoodsDetail, GoodsList, GoodsRoomList, StockGet};
use shop_contracts::goods::{
    Goods, GoodsDetailRequest, GoodsListReply, GoodsListRequest, Room, RoomListRequest,
};
use shop_contracts::stock::StockGetRequest;
use shop_contracts::{ErrorCode, GoodsId, ItemList, RoomId};

use crate::extract::{Path, Query};
use crate::problem::Problem;
use crate::state::{AppState, Nats};
use crate::views::{GoodsQuery, GoodsView, RoomView};
use axum::Json;

/// `available` of each goods; goods whose stock was never set have none (shown as 0).
async fn availability(nats: &Nats, ids: &[GoodsId]) -> Result<HashMap<GoodsId, i64>, Problem> {
    let mut found = HashMap::new();
    // stock.get takes 1..=100 ids; a room or page never holds more, but chunk anyway.
    for chunk in ids.chunks(shop_contracts::MAX_ITEMS) {
        let Ok(goods_ids) = ItemList::new(chunk.to_vec()) else {
            continue;
        };
        match nats
            .request::<StockGet>(&StockGetRequest { goods_ids })
            .await
        {
            Ok(reply) => found.extend(reply.items.iter().map(|l| (l.goods_id, l.available))),
            // One goods without stock fails the whole request: ask for each alone.
            Err(p) if p.code == crate::problem::Code::Contract(ErrorCode::NotFound) => {
                for id in chunk {
                    let one = StockGetRequest {
                        goods_ids: ItemList::new(vec![*id]).expect("one id"),
                    };
                    match nats.request::<StockGet>(&one).await {
                        Ok(reply) => {
                            found.extend(reply.items.iter().map(|l| (l.goods_id, l.available)))
                        }
                        Err(p) if p.code == crate::problem::Code::Contract(ErrorCode::NotFound) => {
                        }
                        Err(p) => return Err(p),
                    }
                }
            }
            Err(p) => return Err(p),
        }
    }
    Ok(found)
}

fn with_stock(goods: Vec<Goods>, available: &HashMap<GoodsId, i64>) -> Vec<GoodsView> {
    goods
        .into_iter()
        .map(|g| GoodsView {
            available: available.get(&g.goods_id).copied().unwrap_or(0),
            goods: g,
        })
        .collect()
}

/// The room with every goods' `available` (the event stream sends it too).
pub async fn room_view(nats: &Nats, room_id: RoomId) -> Result<RoomView, Problem> {
    let room: Room = nats
        .request::<GoodsRoomList>(&RoomListRequest { room_id })
        .await?;
    let ids: Vec<GoodsId> = room.goods.iter().map(|g| g.goods_id).collect();
    let available = availability(nats, &ids).await?;
    Ok(RoomView {
        room_id: room.room_id,
        current_goods_id: room.current_goods_id,
        goods: with_stock(room.goods, &available),
    })
}

/// A live room: its goods in order, the one presented now, and each one's stock.
#[utoipa::path(get, operation_id = "get_room", path = "/v1/rooms/{room_id}", tag = "storefront",
    params(("room_id" = inline(crate::views::RoomIdInPath), Path)),
    responses((status = 200, body = RoomView), (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn room(
    State(state): State<AppState>,
    Path(room_id): Path<RoomId>,
) -> Result<axum::Json<RoomView>, Problem> {
    room_view(&state.nats, room_id).await.map(Json)
}

/// One goods with its stock.
#[utoipa::path(get, operation_id = "get_goods", path = "/v1/goods/{goods_id}", tag = "storefront",
    params(("goods_id" = inline(crate::views::GoodsIdInPath), Path)),
    responses((status = 200, body = GoodsView), (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn detail(
    State(state): State<AppState>,
    Path(goods_id): Path<GoodsId>,
) -> Result<Json<GoodsView>, Problem> {
    let request = GoodsDetailRequest { goods_id };
    let ids = [goods_id];
    let (goods, available) = tokio::join!(
        state.nats.request::<GoodsDetail>(&request),
        availability(&state.nats, &ids),
    );
    let mut view = with_stock(vec![goods?], &available?);
    Ok(Json(view.remove(0)))
}

/// A page of goods by ascending id, optionally of one category or status.
#[utoipa::path(get, operation_id = "list_goods", path = "/v1/goods", tag = "storefront", params(GoodsQuery),
    responses((status = 200, body = GoodsListReply), (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<GoodsQuery>,
) -> Result<Json<GoodsListReply>, Problem> {
    let request = GoodsListRequest {
        category_id: query.category_id,
        status: query.status,
        after_id: query.after_id,
        limit: query.limit,
    };
    state.nats.request::<GoodsList>(&request).await.map(Json)
}
