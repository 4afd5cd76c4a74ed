//! JetStream streams, subjects, message ids and payloads (CONTRACT section 5).

use serde::{Deserialize, Serialize};

use crate::ids::OrderSn;
use crate::stock::OrderLine;

pub const ORDER_TXN_STREAM: &str = "ORDER_TXN";
pub const STOCK_ROLLBACK_STREAM: &str = "STOCK_ROLLBACK";
pub const ORDER_EVENTS_STREAM: &str = "ORDER_EVENTS";

/// Durable consumer names.
pub const ORDER_TXN_CHECKER: &str = "order-txn-checker";
pub const STOCK_ROLLBACK_CONSUMER: &str = "stock-rollback";

/// `order.txn.<order_sn>`: the half message.
pub fn half_message_subject(sn: OrderSn) -> String {
    format!("order.txn.{sn}")
}

/// `Nats-Msg-Id` of a half message: `<order_sn>`.
pub fn half_message_id(sn: OrderSn) -> String {
    sn.to_string()
}

/// `stock.rollback.<order_sn>`.
pub fn rollback_subject(sn: OrderSn) -> String {
    format!("stock.rollback.{sn}")
}

/// `Nats-Msg-Id` of a rollback: `rollback-<order_sn>`.
pub fn rollback_msg_id(sn: OrderSn) -> String {
    format!("rollback-{sn}")
}

/// `order.events.<order_sn>.<event>`.
pub fn event_subject(sn: OrderSn, event: OrderEventKind) -> String {
    format!("order.events.{sn}.{}", event.as_str())
}

/// `Nats-Msg-Id` of an event: `<order_sn>-<event>`.
pub fn event_msg_id(sn: OrderSn, event: OrderEventKind) -> String {
    format!("{sn}-{}", event.as_str())
}

/// The half message body: what would have to be given back if the order never commits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HalfMessage {
    pub order_sn: OrderSn,
    pub items: Vec<OrderLine>,
}

/// Why stock for an order must be returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackReason {
    /// The order never committed (checker resolved the half message as rollback).
    Aborted,
    /// The pay deadline passed.
    Closed,
    /// The user cancelled.
    Cancelled,
}

/// `stock.rollback.<order_sn>` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackEvent {
    pub order_sn: OrderSn,
    pub reason: RollbackReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderEventKind {
    Created,
    Paid,
    Closed,
    Cancelled,
}

impl OrderEventKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderEventKind::Created => "created",
            OrderEventKind::Paid => "paid",
            OrderEventKind::Closed => "closed",
            OrderEventKind::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "created" => Some(OrderEventKind::Created),
            "paid" => Some(OrderEventKind::Paid),
            "closed" => Some(OrderEventKind::Closed),
            "cancelled" => Some(OrderEventKind::Cancelled),
            _ => None,
        }
    }
}
