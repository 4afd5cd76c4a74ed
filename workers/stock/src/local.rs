//! What one partition answers from its own database: the endpoints of CONTRACT section 3 for
//! the goods and sell records this partition holds. The internal subjects
//! `stock.part.<partition>.<op>` are served by these alone; the public subjects go through
//! [`crate::route`], which calls them directly for this partition's share.

use shop_contracts::stock::{
    DeductReply, DeductRequest, NormalizedLines, ReturnReply, ReturnRequest, SellDetail,
    SellDetailRequest, SellStatus, StockGetReply, StockGetRequest, StockLevel, StockSetRequest,
};
use sqlx::PgPool;

use crate::changes::Changes;
use crate::strategies::Deducter;
use crate::{repo, StockError};

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
        Ok(StockGetReply {
            items: repo::get(&self.pool, req.goods_ids.as_slice()).await?,
        })
    }

    pub async fn deduct(self, req: DeductRequest) -> Result<DeductReply, StockError> {
        let lines = NormalizedLines::new(req.items.iter());
        let items = self.deducter.deduct(req.order_sn, &lines).await?;
        shop_kit::crash::point("stock.deduct.after_commit");
        self.changes.goods(items.iter().map(|line| line.goods_id));
        Ok(DeductReply {
            order_sn: req.order_sn,
            status: SellStatus::Deducted,
            items,
        })
    }

    pub async fn return_(self, req: ReturnRequest) -> Result<ReturnReply, StockError> {
        let returned = repo::return_order(&self.pool, req.order_sn).await?;
        if returned {
            self.changes.returned(req.order_sn);
        }
        Ok(ReturnReply {
            order_sn: req.order_sn,
            status: SellStatus::Returned,
            returned,
        })
    }

    #[tracing::instrument(skip_all, fields(order_sn = %req.order_sn))]
    pub async fn sell_detail(self, req: SellDetailRequest) -> Result<SellDetail, StockError> {
        repo::sell_detail(&self.pool, req.order_sn).await
    }
}
