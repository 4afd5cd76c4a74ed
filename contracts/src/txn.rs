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

/// Where one order partition's transaction work lives in JetStream (docs/scaling.md,
/// "JetStream per partition"): its half messages and its pay-deadline schedules.
///
/// Partition 0, and so a shop of one partition, uses the contract's streams and subjects
/// (CONTRACT section 5: `ORDER_TXN` on `order.txn.<order_sn>`, `ORDER_TIMERS` on
/// `order.timer.at|due.<order_sn>`). Partition `p > 0` has streams of its own,
/// `ORDER_TXN_P<p>` and `ORDER_TIMERS_P<p>`, on subjects with a `p<p>` token after the
/// prefix (`order.txn.p<p>.<order_sn>`, `order.timer.p<p>.at.<order_sn>`), which the
/// contract streams' wildcards (`order.txn.*`, `order.timer.at.*`) do not match. Each stream
/// has a leader of its own, so the JetStream work of creates spreads over a cluster's nodes
/// as the partitions do; the consumers keep their names (`order-txn-checker`,
/// `order-timer-closer`) on every partition's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderStreams {
    partition: u16,
}

impl OrderStreams {
    pub fn of(partition: crate::partition::PartitionId) -> OrderStreams {
        OrderStreams {
            partition: partition.get(),
        }
    }

    /// The streams of partitions `0..count`.
    pub fn all(count: u16) -> impl Iterator<Item = OrderStreams> {
        (0..count).map(|partition| OrderStreams { partition })
    }

    /// `""` for partition 0, `_P<p>` after a stream name otherwise.
    fn stream_suffix(self) -> String {
        match self.partition {
            0 => String::new(),
            p => format!("_P{p}"),
        }
    }

    /// `""` for partition 0, `p<p>.` before the rest of a subject otherwise.
    fn token(self) -> String {
        match self.partition {
            0 => String::new(),
            p => format!("p{p}."),
        }
    }

    /// `ORDER_TXN` or `ORDER_TXN_P<p>`.
    pub fn txn_stream(self) -> String {
        format!("{ORDER_TXN_STREAM}{}", self.stream_suffix())
    }

    /// The subjects of [`Self::txn_stream`].
    pub fn txn_subjects(self) -> Vec<String> {
        vec![format!("order.txn.{}*", self.token())]
    }

    /// `order.txn.<order_sn>` or `order.txn.p<p>.<order_sn>`: where this partition's
    /// workers publish a half message.
    pub fn half_message_subject(self, sn: OrderSn) -> String {
        format!("order.txn.{}{sn}", self.token())
    }

    /// `ORDER_TIMERS` or `ORDER_TIMERS_P<p>`.
    pub fn timers_stream(self) -> String {
        format!("{ORDER_TIMERS_STREAM}{}", self.stream_suffix())
    }

    /// The subjects of [`Self::timers_stream`]: the schedules and the deadlines they fire.
    pub fn timers_subjects(self) -> Vec<String> {
        let token = self.token();
        vec![
            format!("order.timer.{token}at.*"),
            format!("order.timer.{token}due.*"),
        ]
    }

    /// The schedule of an unpaid order's deadline (one subject per order, so storing it
    /// again replaces it).
    pub fn deadline_schedule_subject(self, sn: OrderSn) -> String {
        format!("order.timer.{}at.{sn}", self.token())
    }

    /// Where the server puts a deadline when it falls due.
    pub fn deadline_due_subject(self, sn: OrderSn) -> String {
        format!("order.timer.{}due.{sn}", self.token())
    }

    /// Whether `name` is some order partition's half-message stream (`ORDER_TXN` or
    /// `ORDER_TXN_P<p>`): for tools that list the streams instead of counting partitions.
    pub fn is_txn_stream(name: &str) -> bool {
        is_partition_stream(name, ORDER_TXN_STREAM)
    }

    /// Whether `name` is some order partition's deadline stream.
    pub fn is_timers_stream(name: &str) -> bool {
        is_partition_stream(name, ORDER_TIMERS_STREAM)
    }

    /// `ORDER_EVENTS` or `ORDER_EVENTS_P<p>`: where this partition's outbox relay publishes
    /// its events. The contract's `ORDER_EVENTS` is partition 0's, and also sources every
    /// other partition's stream with [`Self::events_transform`], so other systems read every
    /// event under its contract subject in one stream, while no create waits on its leader.
    pub fn events_stream(self) -> String {
        format!("{ORDER_EVENTS_STREAM}{}", self.stream_suffix())
    }

    /// The subjects of [`Self::events_stream`].
    pub fn events_subjects(self) -> Vec<String> {
        vec![format!("order.events.{}*.*", self.token())]
    }

    /// `order.events.<order_sn>.<event>` or `order.events.p<p>.<order_sn>.<event>`.
    pub fn event_subject(self, sn: OrderSn, event: OrderEventKind) -> String {
        format!("order.events.{}{sn}.{}", self.token(), event.as_str())
    }

    /// `(from, to)`: the subject transform under which `ORDER_EVENTS` sources this
    /// partition's event stream, back to the contract's `order.events.<order_sn>.<event>`;
    /// `None` for partition 0, whose events are published there directly.
    pub fn events_transform(self) -> Option<(String, String)> {
        (self.partition > 0).then(|| {
            (
                format!("order.events.{}*.*", self.token()),
                "order.events.{{wildcard(1)}}.{{wildcard(2)}}".to_owned(),
            )
        })
    }

    /// The closer's filter: every due deadline of this partition's stream.
    pub fn due_filter(self) -> String {
        format!("order.timer.{}due.*", self.token())
    }
}

/// `order.txn.<order_sn>`: the half message (partition 0's subject, [`OrderStreams`]).
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

/// `base` itself or `base_P<digits>`.
fn is_partition_stream(name: &str, base: &str) -> bool {
    match name.strip_prefix(base) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix("_P")
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::PartitionId;

    #[test]
    fn partition_zero_keeps_the_contracts_streams_and_the_others_do_not_overlap_them() {
        let sn = OrderSn::new(42).unwrap();
        let zero = OrderStreams::of(PartitionId::default());
        assert_eq!(zero.txn_stream(), "ORDER_TXN");
        assert_eq!(zero.txn_subjects(), ["order.txn.*"]);
        assert_eq!(zero.half_message_subject(sn), half_message_subject(sn));
        assert_eq!(zero.timers_stream(), "ORDER_TIMERS");
        assert_eq!(
            zero.deadline_schedule_subject(sn),
            deadline_schedule_subject(sn)
        );
        assert_eq!(zero.deadline_due_subject(sn), deadline_due_subject(sn));
        assert_eq!(zero.due_filter(), "order.timer.due.*");

        let two = OrderStreams::of(PartitionId::new(2).unwrap());
        assert_eq!(two.txn_stream(), "ORDER_TXN_P2");
        assert_eq!(two.half_message_subject(sn), "order.txn.p2.42");
        assert_eq!(
            two.timers_subjects(),
            ["order.timer.p2.at.*", "order.timer.p2.due.*"]
        );
        assert_eq!(two.deadline_due_subject(sn), "order.timer.p2.due.42");
        // One more token than the contract's `*` wildcards match: no message of partition 2
        // lands in partition 0's streams.
        for subject in [
            two.half_message_subject(sn),
            two.deadline_schedule_subject(sn),
        ] {
            assert_eq!(
                subject.split('.').count(),
                4 + usize::from(subject.contains("timer"))
            );
        }
        assert_eq!(OrderStreams::all(3).count(), 3);
        let created = OrderEventKind::Created;
        assert_eq!(zero.event_subject(sn, created), event_subject(sn, created));
        assert_eq!(zero.events_stream(), "ORDER_EVENTS");
        assert_eq!(zero.events_transform(), None);
        assert_eq!(two.events_stream(), "ORDER_EVENTS_P2");
        assert_eq!(two.event_subject(sn, created), "order.events.p2.42.created");
        assert_eq!(
            two.events_transform(),
            Some((
                "order.events.p2.*.*".to_owned(),
                "order.events.{{wildcard(1)}}.{{wildcard(2)}}".to_owned()
            ))
        );
        assert!(OrderStreams::is_txn_stream("ORDER_TXN"));
        assert!(OrderStreams::is_txn_stream("ORDER_TXN_P12"));
        assert!(!OrderStreams::is_txn_stream("ORDER_TXN_P"));
        assert!(!OrderStreams::is_txn_stream("ORDER_TIMERS"));
        assert!(OrderStreams::is_timers_stream("ORDER_TIMERS_P1"));
    }
}
