//! Goods service bodies (CONTRACT section 2).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CategoryId, Cents, GoodsId, RoomId};
use crate::list::{ItemList, LongText, PageLimit, ShortText};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GoodsStatus {
    #[default]
    OnSale,
    OffSale,
}

impl GoodsStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            GoodsStatus::OnSale => "on_sale",
            GoodsStatus::OffSale => "off_sale",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "on_sale" => Some(GoodsStatus::OnSale),
            "off_sale" => Some(GoodsStatus::OffSale),
            _ => None,
        }
    }
}

/// A URL of an image or video; at most 2000 characters.
pub type Url = LongText;

/// A stored goods record.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goods {
    pub goods_id: GoodsId,
    pub category_id: CategoryId,
    pub title: String,
    pub brief: String,
    pub brand_name: String,
    pub code: String,
    pub price_cents: Cents,
    pub market_price_cents: Cents,
    pub status: GoodsStatus,
    pub head_imgs: Vec<String>,
    pub videos: Vec<String>,
    pub detail: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(with = "crate::time::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// `goods.upsert`: a goods record without `updated_at`; `goods_id` assigned when absent.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpsertGoods {
    #[serde(default)]
    pub goods_id: Option<GoodsId>,
    pub category_id: CategoryId,
    pub title: ShortText,
    #[serde(default)]
    pub brief: LongText,
    #[serde(default)]
    pub brand_name: LongText,
    #[serde(default)]
    pub code: LongText,
    pub price_cents: Cents,
    /// The crossed-out "was" price; defaults to `price_cents`.
    #[serde(default)]
    pub market_price_cents: Option<Cents>,
    #[serde(default)]
    pub status: GoodsStatus,
    #[serde(default)]
    pub head_imgs: Vec<Url>,
    #[serde(default)]
    pub videos: Vec<Url>,
    #[serde(default)]
    pub detail: Vec<Url>,
}

/// `goods.detail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoodsDetailRequest {
    pub goods_id: GoodsId,
}

/// `goods.batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoodsBatchRequest {
    pub goods_ids: ItemList<GoodsId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoodsBatchReply {
    /// Found records, in request order.
    pub goods: Vec<Goods>,
    /// Requested ids that do not exist, in request order.
    pub missing: Vec<GoodsId>,
}

/// `goods.list`: keyset pagination by ascending `goods_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GoodsListRequest {
    #[serde(default)]
    pub category_id: Option<CategoryId>,
    #[serde(default)]
    pub status: Option<GoodsStatus>,
    #[serde(default)]
    pub after_id: Option<GoodsId>,
    #[serde(default)]
    pub limit: Option<PageLimit>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoodsListReply {
    pub goods: Vec<Goods>,
    /// Pass as `after_id` for the next page; `null` when this was the last page.
    pub next_after_id: Option<GoodsId>,
}

/// `goods.room.set`: replaces the room's whole list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomSetRequest {
    pub room_id: RoomId,
    /// 0..=100 distinct goods ids, in the order the room shows them.
    pub goods_ids: Vec<GoodsId>,
    #[serde(default)]
    pub current_goods_id: Option<GoodsId>,
}

/// `goods.room.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomListRequest {
    pub room_id: RoomId,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    pub room_id: RoomId,
    pub current_goods_id: Option<GoodsId>,
    pub goods: Vec<Goods>,
}
