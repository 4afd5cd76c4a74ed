//! What one partition answers from its own database: the endpoints of CONTRACT section 3 for
//! the goods and sell records this partition holds. The internal subjects
//! `stock.part.<partition>.<op>` are served by these alone; the public subjects go through
//! [`crate::route`], which calls them directly for this partition's share.

use serde::{Deserialize, Serialize};
use shop_contracts::partition::PartitionId;
use shop_contracts::stock::{
    DeductReply, DeductRequest, NormalizedLines, ReturnRequest, SellDetail, SellDetailRequest,
    SellStatus, StockGetReply, StockGetRequest, StockLevel, StockSetRequest,
};
use shop_contracts::{Endpoint, GoodsId};
use sqlx::PgPool;

use crate::changes::Changes;
use crate::strategies::Deducter;
use crate::{repo, StockError};

/// Internal endpoint `stock.part.<p>.return`: partition `p`'s share of a return. (The public
/// `stock.return` answers the contract's `ReturnReply`, built by [`crate::route`].)
#[derive(Debug)]
pub enum ReturnShare {}

impl Endpoint for ReturnShare {
    const SUBJECT: &'static str = shop_contracts::subjects::stock::RETURN;
    type Request = ReturnRequest;
    type Reply = ShareReturned;
}

/// The answer of [`ReturnShare`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareReturned {
    /// This partition gave stock back (`false`: a repeat, or a null compensation).
    pub returned: bool,
    /// Partitions that must return the order as well, because a slot move took a share of
    /// its record there (or, after a null compensation, took slots there at all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_in: Vec<PartitionId>,
}

/// This partition's database, its deduct strategy and its change notifier.
#[derive(Clone)]
pub struct Local {
    pub pool: PgPool,
    pub deducter: Deducter,
    pub changes: Changes,
}

impl Local {
    #[tracing::instrument(skip_all, fields(goods_id = %req.goods_id))]
    pub async fn set(self, req: StockSetRequest) -> Result<StockLevel, StockError> {
        let level = repo::set(&self.pool, req.goods_id, req.available).await?;
        self.changes.goods([req.goods_id]);
        Ok(level)
    }

    pub async fn get(self, req: StockGetRequest) -> Result<StockGetReply, StockError> {
        let items = repo::get(&self.pool, req.goods_ids.as_slice()).await;
        let items = self
            .unless_moved(items, req.goods_ids.iter().copied())
            .await?;
        Ok(StockGetReply { items })
    }

    pub async fn deduct(self, req: DeductRequest) -> Result<DeductReply, StockError> {
        let lines = NormalizedLines::new(req.items.iter());
        let items = self.deducter.deduct(req.order_sn, &lines).await;
        let items = self
            .unless_moved(items, req.items.iter().map(|line| line.goods_id))
            .await?;
        shop_kit::crash::point("stock.deduct.after_commit");
        self.changes.goods(items.iter().map(|line| line.goods_id));
        Ok(DeductReply {
            order_sn: req.order_sn,
            status: SellStatus::Deducted,
            items,
        })
    }

    /// This partition's share of a return, on `stock.part.<p>.return`: whether it gave stock
    /// back, and which partitions must return the order too (a slot move took part of its
    /// record there).
    pub async fn return_share(self, req: ReturnRequest) -> Result<ShareReturned, StockError> {
        let (returned, also_in) = repo::return_order(&self.pool, req.order_sn).await?;
        if returned {
            self.changes.returned(req.order_sn);
        }
        Ok(ShareReturned { returned, also_in })
    }

    /// `answer`, unless it is a `not_found` of a goods whose slot this partition gave away:
    /// then the request was routed by an old map, and its retry is routed by the new one.
    async fn unless_moved<T>(
        &self,
        answer: Result<T, StockError>,
        goods: impl IntoIterator<Item = GoodsId>,
    ) -> Result<T, StockError> {
        match answer {
            Err(StockError::NotFound(message)) => {
                let mut conn = self.pool.acquire().await?;
                Err(match repo::moved_to(&mut conn, goods).await? {
                    Some(to) => StockError::SlotMoved(to),
                    None => StockError::NotFound(message),
                })
            }
            other => other,
        }
    }

    #[tracing::instrument(skip_all, fields(order_sn = %req.order_sn))]
    pub async fn sell_detail(self, req: SellDetailRequest) -> Result<SellDetail, StockError> {
        repo::sell_detail(&self.pool, req.order_sn).await
    }
}
