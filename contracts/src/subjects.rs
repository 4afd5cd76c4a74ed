//! Subject names, service names and the queue group (CONTRACT sections 1 to 5).

/// Every endpoint of every service listens in this queue group, so worker processes share load.
pub const QUEUE_GROUP: &str = "q";

pub mod goods {
    pub const SERVICE: &str = "goods";
    pub const UPSERT: &str = "goods.upsert";
    pub const DETAIL: &str = "goods.detail";
    pub const BATCH: &str = "goods.batch";
    pub const LIST: &str = "goods.list";
    pub const ROOM_SET: &str = "goods.room.set";
    pub const ROOM_LIST: &str = "goods.room.list";
    /// Core NATS notification `goods.room.changed.<room_id>` after each `goods.room.set`
    /// (payload: the room as `goods.room.list` returns it).
    pub const ROOM_CHANGED_ALL: &str = "goods.room.changed.*";

    pub fn room_changed(room_id: crate::RoomId) -> String {
        format!("goods.room.changed.{room_id}")
    }
}

pub mod stock {
    pub const SERVICE: &str = "stock";
    pub const SET: &str = "stock.set";
    pub const GET: &str = "stock.get";
    pub const DEDUCT: &str = "stock.deduct";
    pub const RETURN: &str = "stock.return";
    pub const SELL_DETAIL: &str = "stock.sell_detail";
    /// Core NATS notification `stock.changed.<goods_id>` after commits, coalesced per goods
    /// (payload: [`crate::stock::StockChanged`]).
    pub const CHANGED_ALL: &str = "stock.changed.*";

    pub fn changed(goods_id: crate::GoodsId) -> String {
        format!("stock.changed.{goods_id}")
    }

    /// Internal (not for clients): every stock endpoint of one partition,
    /// `stock.part.<partition>.<op>`.
    pub const PARTITION_ALL: &str = "stock.part.*.*";

    /// Internal: the endpoint `public` (one of the subjects above, e.g. [`DEDUCT`]) of
    /// `partition`, served only by that partition's workers: `stock.part.2.deduct`.
    pub fn partition(public: &str, partition: crate::partition::PartitionId) -> String {
        let op = public.strip_prefix("stock.").unwrap_or(public);
        format!("stock.part.{partition}.{op}")
    }
}

pub mod order {
    pub const SERVICE: &str = "order";
    pub const CREATE: &str = "order.create";
    pub const PAY: &str = "order.pay";
    pub const CANCEL: &str = "order.cancel";
    pub const GET: &str = "order.get";
    pub const LIST: &str = "order.list";

    /// Internal (not for clients): every order endpoint of one partition,
    /// `order.part.<partition>.<op>`.
    pub const PARTITION_ALL: &str = "order.part.*.*";

    /// Internal: the endpoint `public` (one of the subjects above, e.g. [`CREATE`]) of
    /// `partition`, served only by that partition's workers: `order.part.2.create`.
    pub fn partition(public: &str, partition: crate::partition::PartitionId) -> String {
        let op = public.strip_prefix("order.").unwrap_or(public);
        format!("order.part.{partition}.{op}")
    }
}
