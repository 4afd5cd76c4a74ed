//! JetStream streams, subjects, message ids and payloads (CONTRACT section 5).

use serde::{Deserialize, Serialize};

use crate::ids::{GoodsId, OrderSn};
use crate::stock::OrderLine;

pub const ORDER_TXN_STREAM: &str = "ORDER_TXN";
pub const STOCK_ROLLBACK_STREAM: &str = "STOCK_ROLLBACK";
pub const ORDER_EVENTS_STREAM: &str = "ORDER_EVENTS";
/// Pay-deadline timers kept as message schedules (`order.timer = "schedule"`).
pub const ORDER_TIMERS_STREAM: &str = "ORDER_TIMERS";

/// Durable consumer names.
pub const ORDER_TXN_CHECKER: &str = "order-txn-checker";
pub const STOCK_ROLLBACK_CONSUMER: &str = "stock-rollback";
pub const ORDER_TIMER_CLOSER: &str = "order-timer-closer";

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

/// `order.timer.at.<order_sn>`: the schedule (`Nats-Schedule: @at <pay_deadline>`) of an
/// unpaid order's deadline. One subject per order, so storing it again replaces it.
pub fn deadline_schedule_subject(sn: OrderSn) -> String {
    format!("order.timer.at.{sn}")
}

/// `order.timer.due.<order_sn>`: where the server puts a deadline when it falls due.
pub fn deadline_due_subject(sn: OrderSn) -> String {
    format!("order.timer.due.{sn}")
}

/// `Nats-Msg-Id` of a deadline schedule: `deadline-<order_sn>`.
pub fn deadline_msg_id(sn: OrderSn) -> String {
    format!("deadline-{sn}")
}

/// The body of a deadline schedule, and of the message it produces when it falls due.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayDeadline {
    pub order_sn: OrderSn,
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
    /// The order's goods (an addition to the contract's payload): the stock partitions that
    /// must give back are the owners of these goods. Absent (events written before it, or by
    /// other publishers), every partition applies the return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_ids: Option<Vec<GoodsId>>,
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
