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
    pub address: ShortText,
    pub receiver_name: ShortText,
    pub receiver_phone: ShortText,
    #[serde(default)]
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
    #[schema(schema_with = room_goods_ids)]
    pub goods_ids: Vec<GoodsId>,
    #[serde(default)]
    pub current_goods_id: Option<GoodsId>,
}

/// At most [`shop_contracts::MAX_ITEMS`] goods ids, each once (the goods worker refuses a
/// repeat).
fn room_goods_ids() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(<GoodsId as utoipa::PartialSchema>::schema())
        .max_items(Some(shop_contracts::MAX_ITEMS))
        .unique_items(true)
        .build()
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

/// The `Idempotency-Key` header of `POST /v1/orders`: the contract's `idempotency_key` (1 to
/// 200 characters, not blank) in what a header carries, visible ASCII and spaces (HTTP
/// drops spaces around a value, so a key neither starts nor ends with one).
pub struct IdempotencyKey;

impl IdempotencyKey {
    /// The key of a header value, or why it is refused.
    pub fn parse(value: &axum::http::HeaderValue) -> Result<ShortText, &'static str> {
        let text = value
            .to_str()
            .ok()
            .filter(|t| t.bytes().all(|b| (0x20..=0x7e).contains(&b)))
            .ok_or("Idempotency-Key must be visible ASCII")?;
        ShortText::new(text.to_owned()).map_err(|_| "Idempotency-Key must be 1 to 200 characters")
    }
}

impl utoipa::PartialSchema for IdempotencyKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(200))
            .pattern(Some("^[!-~](?:[ -~]*[!-~])?$"))
            .into()
    }
}

impl ToSchema for IdempotencyKey {}

/// An id in a path, as the path carries it: decimal digits of `1..=MAX` of the id's type
/// (JSON Schema's `integer` would also allow `290.0`, which is not how an id is written).
pub struct IdInPath<const MAX: i64>;

/// `{goods_id}` in a path.
pub type GoodsIdInPath = IdInPath<{ GoodsId::MAX }>;
/// `{room_id}` in a path.
pub type RoomIdInPath = IdInPath<{ RoomId::MAX }>;
const _: () = assert!(GoodsId::MIN == 1 && RoomId::MIN == 1);

impl<const MAX: i64> utoipa::PartialSchema for IdInPath<MAX> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(shop_contracts::ids::openapi::decimal_up_to(
                MAX as u64,
            )))
            .description(Some(format!("a positive integer up to {MAX}")))
            .into()
    }
}

impl<const MAX: i64> ToSchema for IdInPath<MAX> {}
