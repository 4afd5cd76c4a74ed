//! Order service bodies (CONTRACT section 4).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{Cents, GoodsId, OrderSn, Quantity, UserId};
use crate::list::{ItemList, LongText, PageLimit, ShortText};
use crate::stock::OrderLine;

/// `unpaid` is the only status an order leaves.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Unpaid,
    Paid,
    /// The pay deadline passed.
    Closed,
    /// Cancelled by the user.
    Cancelled,
}

impl OrderStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Unpaid => "unpaid",
            OrderStatus::Paid => "paid",
            OrderStatus::Closed => "closed",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "unpaid" => Some(OrderStatus::Unpaid),
            "paid" => Some(OrderStatus::Paid),
            "closed" => Some(OrderStatus::Closed),
            "cancelled" => Some(OrderStatus::Cancelled),
            _ => None,
        }
    }

    pub const fn is_terminal(self) -> bool {
        !matches!(self, OrderStatus::Unpaid)
    }
}

/// One line of an order, priced at creation time from `goods.batch`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    pub goods_id: GoodsId,
    pub title: String,
    pub price_cents: Cents,
    pub quantity: Quantity,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_sn: OrderSn,
    pub user_id: UserId,
    pub status: OrderStatus,
    pub items: Vec<OrderItem>,
    pub total_cents: Cents,
    pub address: String,
    pub receiver_name: String,
    pub receiver_phone: String,
    pub note: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(with = "crate::time::rfc3339")]
    pub pay_deadline: DateTime<Utc>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    #[serde(with = "crate::time::rfc3339_opt")]
    pub paid_at: Option<DateTime<Utc>>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    #[serde(with = "crate::time::rfc3339_opt")]
    pub closed_at: Option<DateTime<Utc>>,
}

/// `order.create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateOrderRequest {
    pub user_id: UserId,
    pub items: ItemList<OrderLine>,
    pub address: ShortText,
    pub receiver_name: ShortText,
    pub receiver_phone: ShortText,
    #[serde(default)]
    pub note: Option<LongText>,
    /// Per `user_id`: a repeated create with the same key returns the same order.
    #[serde(default)]
    pub idempotency_key: Option<ShortText>,
}

/// `order.pay`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayRequest {
    pub order_sn: OrderSn,
    pub amount_cents: Cents,
    #[serde(default)]
    pub payment_ref: Option<ShortText>,
}

/// `order.cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub order_sn: OrderSn,
}

/// `order.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetOrderRequest {
    pub order_sn: OrderSn,
}

/// `order.list`: newest first, keyset pagination by `order_sn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListOrdersRequest {
    pub user_id: UserId,
    #[serde(default)]
    pub before_sn: Option<OrderSn>,
    #[serde(default)]
    pub limit: Option<PageLimit>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListOrdersReply {
    pub orders: Vec<Order>,
    /// Pass as `before_sn` for the next page; `null` when this was the last page.
    pub next_before_sn: Option<OrderSn>,
}
