//! The public order subjects over partitions. Clients see one order service; each order
//! lives in the partition that owns its user's slot ([`shop_kit::partitions`], key
//! [`ORDER_MAP_KEY`](shop_contracts::partition::ORDER_MAP_KEY)), and each partition's
//! workers alone serve `order.part.<partition>.<op>` from its database. Any order worker
//! takes a public request and sends it whole to its owner: a create or a list by its
//! `user_id`, a pay, cancel or get by the slot its `order_sn` carries. The owner's answer,
//! refusals included, is passed on as it came. With one partition every request is this
//! worker's own and nothing is forwarded: the path is what it was before partitions.
//!
//! An order never spans partitions (all of a user's orders live in one), so unlike stock's
//! router nothing here is split, merged or given back; what a create does across databases
//! is the half-message transaction with stock, unchanged.

use shop_contracts::endpoint::{OrderCancel, OrderCreate, OrderGet, OrderList, OrderPay};
use shop_contracts::order::{
    CancelRequest, CreateOrderRequest, GetOrderRequest, ListOrdersReply, ListOrdersRequest, Order,
    PayRequest,
};
use shop_contracts::partition::{PartitionId, Slot};
use shop_contracts::{OrderSn, UserId};
use shop_kit::partitions::Peers;

use crate::domain::{self, Ctx};
use crate::OrderError;

/// An order worker's view of all partitions: its own (served by `local`) and its peers.
#[derive(Clone)]
pub struct Router {
    pub peers: Peers,
    pub local: Ctx,
}

impl Router {
    fn owner_of_user(&self, user: UserId) -> PartitionId {
        self.peers.partitions.now().map.owner_of(user.get())
    }

    fn owner_of_order(&self, sn: OrderSn) -> PartitionId {
        self.peers.partitions.now().map.owner(Slot::of_order(sn))
    }

    pub async fn create(self, req: CreateOrderRequest) -> Result<Order, OrderError> {
        let owner = self.owner_of_user(req.user_id);
        let ctx = self.local;
        self.peers
            .on::<OrderCreate, _, _>(
                owner,
                req,
                |req| async move { domain::create(&ctx, req).await },
            )
            .await
    }

    pub async fn pay(self, req: PayRequest) -> Result<Order, OrderError> {
        let owner = self.owner_of_order(req.order_sn);
        let ctx = self.local;
        self.peers
            .on::<OrderPay, _, _>(
                owner,
                req,
                |req| async move { domain::pay(&ctx, req).await },
            )
            .await
    }

    pub async fn cancel(self, req: CancelRequest) -> Result<Order, OrderError> {
        let owner = self.owner_of_order(req.order_sn);
        let ctx = self.local;
        self.peers
            .on::<OrderCancel, _, _>(
                owner,
                req,
                |req| async move { domain::cancel(&ctx, req).await },
            )
            .await
    }

    pub async fn get(self, req: GetOrderRequest) -> Result<Order, OrderError> {
        let owner = self.owner_of_order(req.order_sn);
        let ctx = self.local;
        self.peers
            .on::<OrderGet, _, _>(
                owner,
                req,
                |req| async move { domain::get(&ctx, req).await },
            )
            .await
    }

    pub async fn list(self, req: ListOrdersRequest) -> Result<ListOrdersReply, OrderError> {
        let owner = self.owner_of_user(req.user_id);
        let ctx = self.local;
        self.peers
            .on::<OrderList, _, _>(
                owner,
                req,
                |req| async move { domain::list(&ctx, req).await },
            )
            .await
    }
}
