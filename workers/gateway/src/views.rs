//! The HTTP bodies that are not contract types as they are: goods and rooms with their
//! `available` stock, and the request bodies whose user or id comes from elsewhere (the
//! token, the path). Fields use the contract's types, so decoding is validation.

use serde::{Deserialize, Serialize};
use shop_contracts::goods::Goods;
use shop_contracts::goods::GoodsStatus;
use shop_contracts::ids::CategoryId;
use shop_contracts::stock::{OrderLine, Units};
use shop_contracts::{GoodsId, ItemList, LongText, OrderSn, PageLimit, RoomId, ShortText};
use utoipa::{IntoParams, ToSchema};

/// A goods record with its `available` stock (0 when stock was never set).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GoodsView {
    #[serde(flatten)]
    pub goods: Goods,
    pub available: i64,
}

/// A live room: its goods in the room's order, each with `available`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoomView {
    pub room_id: RoomId,
    /// The goods being presented now (one of `goods`), or null.
    pub current_goods_id: Option<GoodsId>,
    pub goods: Vec<GoodsView>,
}

/// `POST /v1/orders`: the user comes from the token, the idempotency key from the
/// `Idempotency-Key` header; a `user_id` in the body is ignored.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateOrderBody {
    #[schema(value_type = Vec<OrderLine>, min_items = 1, max_items = 100)]
    pub items: ItemList<OrderLine>,
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub address: ShortText,
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub receiver_name: ShortText,
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub receiver_phone: ShortText,
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 2000)]
    pub note: Option<LongText>,
}

/// `PUT /v1/admin/stock/{goods_id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct StockBody {
    pub available: Units,
}

/// `PUT /v1/admin/rooms/{room_id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RoomBody {
    /// 0..=100 distinct goods ids, in the order the room shows them.
    pub goods_ids: Vec<GoodsId>,
    #[serde(default)]
    pub current_goods_id: Option<GoodsId>,
}

/// `GET /v1/goods` filters and page.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GoodsQuery {
    pub category_id: Option<CategoryId>,
    pub status: Option<GoodsStatus>,
    /// The `next_after_id` of the previous page.
    pub after_id: Option<GoodsId>,
    /// 1..=100, default 20.
    pub limit: Option<PageLimit>,
}

/// `GET /v1/orders` page.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrdersQuery {
    /// The `next_before_sn` of the previous page.
    #[param(value_type = Option<String>)]
    pub before_sn: Option<OrderSn>,
    /// 1..=100, default 20.
    pub limit: Option<PageLimit>,
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when a dependency does not answer.
    pub status: String,
    /// Per dependency (`nats`, `goods`, `stock`, `order`): whether it answered.
    pub checks: std::collections::BTreeMap<String, bool>,
}
