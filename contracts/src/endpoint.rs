//! Every request subject of CONTRACT sections 2 to 4, tied to its request and reply types, as
//! `lsp_types` ties each LSP request to its method and result: one marker type per subject,
//! so a caller names the endpoint once and cannot pair a subject with the wrong bodies.
//!
//! The subjects themselves stay in [`crate::subjects`]; each marker points at its constant.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::goods::{
    Goods, GoodsBatchReply, GoodsBatchRequest, GoodsDetailRequest, GoodsListReply,
    GoodsListRequest, Room, RoomListRequest, RoomSetRequest, UpsertGoods,
};
use crate::order::{
    CancelRequest, CreateOrderRequest, GetOrderRequest, ListOrdersReply, ListOrdersRequest, Order,
    PayRequest,
};
use crate::stock::{
    DeductReply, DeductRequest, ReturnReply, ReturnRequest, SellDetail, SellDetailRequest,
    StockGetReply, StockGetRequest, StockLevel, StockSetRequest,
};
use crate::subjects::{goods, order, stock};

/// One request/reply endpoint: its subject, what it takes and what it answers on success
/// (an error reply is always an [`crate::ErrorBody`]).
pub trait Endpoint {
    const SUBJECT: &'static str;
    type Request: Serialize + DeserializeOwned;
    type Reply: Serialize + DeserializeOwned;
}

macro_rules! endpoints {
    ($($name:ident = $subject:expr, $request:ty => $reply:ty;)*) => {$(
        #[doc = concat!("The endpoint on [`", stringify!($subject), "`].")]
        #[derive(Debug)]
        pub enum $name {}

        impl Endpoint for $name {
            const SUBJECT: &'static str = $subject;
            type Request = $request;
            type Reply = $reply;
        }
    )*};
}

endpoints! {
    GoodsUpsert = goods::UPSERT, UpsertGoods => Goods;
    GoodsDetail = goods::DETAIL, GoodsDetailRequest => Goods;
    GoodsBatch = goods::BATCH, GoodsBatchRequest => GoodsBatchReply;
    GoodsList = goods::LIST, GoodsListRequest => GoodsListReply;
    GoodsRoomSet = goods::ROOM_SET, RoomSetRequest => Room;
    GoodsRoomList = goods::ROOM_LIST, RoomListRequest => Room;

    StockSet = stock::SET, StockSetRequest => StockLevel;
    StockGet = stock::GET, StockGetRequest => StockGetReply;
    StockDeduct = stock::DEDUCT, DeductRequest => DeductReply;
    StockReturn = stock::RETURN, ReturnRequest => ReturnReply;
    StockSellDetail = stock::SELL_DETAIL, SellDetailRequest => SellDetail;

    OrderCreate = order::CREATE, CreateOrderRequest => Order;
    OrderPay = order::PAY, PayRequest => Order;
    OrderCancel = order::CANCEL, CancelRequest => Order;
    OrderGet = order::GET, GetOrderRequest => Order;
    OrderList = order::LIST, ListOrdersRequest => ListOrdersReply;
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::subjects;

    fn subject<E: Endpoint>() -> &'static str {
        E::SUBJECT
    }

    /// Each marker with the constant of CONTRACT sections 2 to 4 it must carry, and its
    /// service.
    fn all() -> Vec<(&'static str, &'static str, &'static str)> {
        vec![
            (subject::<GoodsUpsert>(), subjects::goods::UPSERT, "goods"),
            (subject::<GoodsDetail>(), subjects::goods::DETAIL, "goods"),
            (subject::<GoodsBatch>(), subjects::goods::BATCH, "goods"),
            (subject::<GoodsList>(), subjects::goods::LIST, "goods"),
            (
                subject::<GoodsRoomSet>(),
                subjects::goods::ROOM_SET,
                "goods",
            ),
            (
                subject::<GoodsRoomList>(),
                subjects::goods::ROOM_LIST,
                "goods",
            ),
            (subject::<StockSet>(), subjects::stock::SET, "stock"),
            (subject::<StockGet>(), subjects::stock::GET, "stock"),
            (subject::<StockDeduct>(), subjects::stock::DEDUCT, "stock"),
            (subject::<StockReturn>(), subjects::stock::RETURN, "stock"),
            (
                subject::<StockSellDetail>(),
                subjects::stock::SELL_DETAIL,
                "stock",
            ),
            (subject::<OrderCreate>(), subjects::order::CREATE, "order"),
            (subject::<OrderPay>(), subjects::order::PAY, "order"),
            (subject::<OrderCancel>(), subjects::order::CANCEL, "order"),
            (subject::<OrderGet>(), subjects::order::GET, "order"),
            (subject::<OrderList>(), subjects::order::LIST, "order"),
        ]
    }

    #[test]
    fn every_marker_carries_its_subject() {
        for (marker, constant, service) in all() {
            assert_eq!(marker, constant);
            assert_eq!(marker.split('.').next(), Some(service), "{marker}");
        }
        assert_eq!(subjects::goods::SERVICE, "goods");
        assert_eq!(subjects::stock::SERVICE, "stock");
        assert_eq!(subjects::order::SERVICE, "order");
    }

    #[test]
    fn subjects_are_distinct() {
        let all = all();
        let distinct: HashSet<_> = all.iter().map(|(marker, _, _)| *marker).collect();
        // Sections 2, 3 and 4 of CONTRACT.md list 6, 5 and 5 subjects.
        assert_eq!(all.len(), 16);
        assert_eq!(distinct.len(), all.len());
    }

    #[test]
    fn a_marker_costs_nothing() {
        assert_eq!(std::mem::size_of::<StockDeduct>(), 0);
    }
}
