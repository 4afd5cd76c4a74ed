//! The public stock subjects over partitions. Clients see one stock service; each goods
//! lives in the partition that owns its slot ([`shop_kit::partitions`]), and each
//! partition's workers alone serve `stock.part.<partition>.<op>` from its database
//! ([`crate::local`]). Any stock worker takes a public request and answers this
//! partition's share itself; the rest it asks of the owners, so with one partition nothing
//! is forwarded and the path is what it was before partitions.
//!
//! - `stock.get` and `stock.set`: by goods, each share to its owner, answers in request order.
//! - `stock.deduct`: all-or-nothing across partitions. Each owner deducts its share under the
//!   same `order_sn` (so every share keeps its own idempotent, anti-hanging sell record). A
//!   definite refusal in one share (`insufficient_stock`, `order_cancelled`, ...) is
//!   answered only after the shares that may have taken stock are given back *through the
//!   rollback path*: a `stock.rollback.<order_sn>` event naming the goods, durable before the
//!   answer, applied by every owner as a return (a null compensation where nothing was
//!   taken). The router then returns the shares itself too, so that in the normal case the
//!   refusal is answered with the stock already back (the event, applied later, finds it
//!   returned). The order worker fences an order_sn it was refused, and its checker then gives
//!   nothing back, so the refusal must not leave stock taken elsewhere. Without a definite
//!   refusal, a share that did not answer makes the deduct `unavailable`: its outcome is the
//!   caller's checker's to settle, as for a deduct that never answered at all.
//! - `stock.return` and `stock.sell_detail` name only an `order_sn`, so they go to every
//!   partition; the rollback consumer uses the goods its events carry and asks only their
//!   owners.

use std::collections::HashMap;

use futures::future::join_all;
use shop_contracts::endpoint::{StockDeduct, StockGet, StockSellDetail, StockSet};
use shop_contracts::partition::PartitionId;
use shop_contracts::stock::{
    DeductReply, DeductRequest, OrderLine, ReturnReply, ReturnRequest, SellDetail,
    SellDetailRequest, SellStatus, StockGetReply, StockGetRequest, StockLevel, StockSetRequest,
};
use shop_contracts::txn::{rollback_msg_id, rollback_subject, RollbackEvent, RollbackReason};
use shop_contracts::{Endpoint, ErrorCode, GoodsId, ItemList, OrderSn};
use shop_kit::partitions::{group_by_owner, sole_owner, Peers};
use shop_kit::ServiceError;

use crate::error::SELL_RECORD_DETAIL;
use crate::local::{Local, ReturnShare};
use crate::StockError;

/// A stock worker's view of all partitions: its own (served by `local`) and its peers.
#[derive(Clone)]
pub struct Router {
    pub peers: Peers,
    pub local: Local,
    pub js: async_nats::jetstream::Context,
}

impl Router {
    /// `req` to partition `p`: answered here when `p` is this partition, else asked of its
    /// workers on `stock.part.<p>.<op>`.
    async fn on<E, F, Fut>(
        &self,
        p: PartitionId,
        req: E::Request,
        local: F,
    ) -> Result<E::Reply, StockError>
    where
        E: Endpoint,
        F: FnOnce(Local, E::Request) -> Fut,
        Fut: std::future::Future<Output = Result<E::Reply, StockError>>,
    {
        let here = self.local.clone();
        self.peers
            .on::<E, _, _>(p, req, |req| local(here, req))
            .await
    }

    pub async fn set(self, req: StockSetRequest) -> Result<StockLevel, StockError> {
        let owner = self.peers.partitions.now().map.owner_of(req.goods_id.get());
        self.on::<StockSet, _, _>(owner, req, Local::set).await
    }

    pub async fn get(self, req: StockGetRequest) -> Result<StockGetReply, StockError> {
        let map = self.peers.partitions.now();
        if let Some(owner) = sole_owner(&map.map, req.goods_ids.iter().map(|id| id.get())) {
            return self.on::<StockGet, _, _>(owner, req, Local::get).await;
        }
        let order: Vec<GoodsId> = req.goods_ids.as_slice().to_vec();
        let groups = group_by_owner(&map.map, req.goods_ids.into_vec(), |id| id.get());
        let shares = join_all(groups.into_iter().map(|(p, ids)| {
            let share = StockGetRequest {
                goods_ids: ItemList::new(ids).expect("a share is a non-empty part of a valid list"),
            };
            self.on::<StockGet, _, _>(p, share, Local::get)
        }))
        .await;
        let mut levels: HashMap<GoodsId, StockLevel> = HashMap::new();
        for share in shares {
            levels.extend(
                share?
                    .items
                    .into_iter()
                    .map(|level| (level.goods_id, level)),
            );
        }
        Ok(StockGetReply {
            items: order
                .iter()
                .filter_map(|id| levels.get(id).copied())
                .collect(),
        })
    }

    pub async fn deduct(self, req: DeductRequest) -> Result<DeductReply, StockError> {
        let map = self.peers.partitions.now();
        // One owner (always, with one partition): the request as it came, to that owner.
        if let Some(owner) = sole_owner(&map.map, req.items.iter().map(|l| l.goods_id.get())) {
            return self
                .on::<StockDeduct, _, _>(owner, req, Local::deduct)
                .await;
        }
        let sn = req.order_sn;
        let groups = group_by_owner(&map.map, req.items.into_vec(), |line| line.goods_id.get());
        let this = &self;
        let shares = join_all(groups.into_iter().map(|(p, items)| {
            let goods: Vec<GoodsId> = items.iter().map(|line| line.goods_id).collect();
            let share = DeductRequest {
                order_sn: sn,
                items: ItemList::new(items).expect("a share is a non-empty part of a valid list"),
            };
            async move {
                (
                    goods,
                    this.on::<StockDeduct, _, _>(p, share, Local::deduct).await,
                )
            }
        }))
        .await;
        let (mut deducted, mut refusal, mut unknown): (
            Vec<OrderLine>,
            Option<StockError>,
            Option<StockError>,
        ) = (Vec::new(), None, None);
        // The goods of the shares that may have taken stock: those that answered, and
        // those whose outcome is unknown. A share refused definitely took nothing.
        let mut may_have_taken: Vec<GoodsId> = Vec::new();
        for (goods, share) in shares {
            match share {
                Ok(reply) => {
                    may_have_taken.extend(goods);
                    deducted.extend(reply.items);
                }
                Err(error) if error.is_definite() => {
                    refusal = Some(match refusal {
                        Some(kept) => first_refusal(kept, error),
                        None => error,
                    });
                }
                Err(error) => {
                    may_have_taken.extend(goods);
                    unknown.get_or_insert(error);
                }
            }
        }
        if let Some(refusal) = refusal {
            // A sell record that stands with other items says an earlier deduct of this
            // order_sn exists, and a share that answered may be that deduct's, answered
            // again: a give-back would return stock its order holds. Nothing is given back
            // then; a share this request took anew stays taken (never an oversell).
            if !may_have_taken.is_empty() && record_stands(&refusal).is_none() {
                shop_kit::crash::point("stock.route.before_give_back");
                self.give_back(sn, may_have_taken.clone()).await?;
                shop_kit::crash::point("stock.route.after_give_back");
                // The durable event makes the give-back certain; returning the shares here
                // as well makes it done before the refusal is answered, as with one
                // partition, where a refused deduct takes nothing: no other order is refused
                // meanwhile for stock this one held, and whoever reads the levels after the
                // refusal sees them whole. If this fails, the event still gives back.
                if let Err(error) = self.return_in(sn, Some(&may_have_taken)).await {
                    tracing::warn!(order_sn = %sn, %error,
                        "could not give back at once; the rollback event will");
                }
            }
            return Err(refusal);
        }
        if let Some(unknown) = unknown {
            // A share that took stock makes this no refusal before any work, whatever the
            // other share said: a retry hint (a shed or moving share's) would tell the
            // caller nothing was done (CONTRACT section 1).
            if !deducted.is_empty() {
                return Err(StockError::Unfinished(unknown.to_string()));
            }
            return Err(unknown);
        }
        deducted.sort_by_key(|line| line.goods_id);
        Ok(DeductReply {
            order_sn: sn,
            status: SellStatus::Deducted,
            items: deducted,
        })
    }

    /// Records durably that `sn`'s stock of `goods` must come back: the rollback path, which
    /// every owner applies as an idempotent return (or a null compensation).
    async fn give_back(&self, sn: OrderSn, goods: Vec<GoodsId>) -> Result<(), StockError> {
        let event = RollbackEvent {
            order_sn: sn,
            reason: RollbackReason::Aborted,
            goods_ids: Some(goods),
        };
        let payload = serde_json::to_vec(&event).map_err(|e| StockError::Bug(e.to_string()))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", rollback_msg_id(sn).as_str());
        let unpublished =
            |e: &dyn std::fmt::Display| StockError::RollbackUnpublished(e.to_string());
        self.js
            .publish_with_headers(rollback_subject(sn), headers, payload.into())
            .await
            .map_err(|e| unpublished(&e))?
            .await
            .map_err(|e| unpublished(&e))?;
        tracing::info!(order_sn = %sn, "deduct refused in one partition: the others give back");
        Ok(())
    }

    /// Returns `sn` in `targets` (every partition when `None`): all must succeed. A partition
    /// that a slot move took part of `sn`'s record from names where it went, and those
    /// return it too (a map a moment old does not name them yet).
    pub async fn return_in(
        &self,
        sn: OrderSn,
        targets: Option<&[GoodsId]>,
    ) -> Result<bool, StockError> {
        let map = self.peers.partitions.now();
        let mut ask: Vec<PartitionId> = match targets {
            Some(goods) => group_by_owner(&map.map, goods.iter(), |id| id.get())
                .into_iter()
                .map(|(owner, _)| owner)
                .collect(),
            None => map.map.partitions(),
        };
        let mut asked: Vec<PartitionId> = Vec::new();
        let mut returned = false;
        while !ask.is_empty() {
            asked.extend(&ask);
            let shares = join_all(ask.drain(..).map(|p| {
                self.on::<ReturnShare, _, _>(p, ReturnRequest { order_sn: sn }, Local::return_share)
            }))
            .await;
            for share in shares {
                let share = share?;
                returned |= share.returned;
                for p in share.also_in {
                    if !asked.contains(&p) && !ask.contains(&p) {
                        ask.push(p);
                    }
                }
            }
        }
        Ok(returned)
    }

    pub async fn return_(self, req: ReturnRequest) -> Result<ReturnReply, StockError> {
        let returned = self.return_in(req.order_sn, None).await?;
        Ok(ReturnReply {
            order_sn: req.order_sn,
            status: SellStatus::Returned,
            returned,
        })
    }

    pub async fn sell_detail(self, req: SellDetailRequest) -> Result<SellDetail, StockError> {
        let map = self.peers.partitions.now();
        let shares = join_all(
            map.map
                .partitions()
                .into_iter()
                .map(|p| self.on::<StockSellDetail, _, _>(p, req.clone(), Local::sell_detail)),
        )
        .await;
        let mut parts = Vec::with_capacity(shares.len());
        for share in shares {
            parts.push(share?);
        }
        Ok(merge_sell_details(req.order_sn, parts))
    }
}

/// Of two definite refusals of one order's shares, the one its client is told: the one one
/// partition would give, which checks the sell record before the stock. So `order_cancelled`
/// (the order_sn was returned: a return covers the whole order), then a `conflict` whose
/// record stands with other items, then between two `insufficient_stock`s the lower
/// goods_id's (CONTRACT section 1: "the first short item"; a partition checks its lines in
/// goods_id order, and the shares answer in partition order); otherwise the one that came
/// first. Refusals are compared by their contract form: a share answered by another
/// partition's workers comes back as their reply ([`StockError::Partition`]).
fn first_refusal(kept: StockError, other: StockError) -> StockError {
    let rank = |error: &StockError| -> (u8, i64) {
        let detail = error.to_contract();
        match detail.code {
            ErrorCode::OrderCancelled => (0, 0),
            ErrorCode::Conflict if record_stands(error).is_some() => (1, 0),
            ErrorCode::InsufficientStock => (2, short_goods(error).unwrap_or(i64::MAX)),
            _ => (3, 0),
        }
    };
    if rank(&other) < rank(&kept) {
        other
    } else {
        kept
    }
}

/// `Some` when `error` is a `conflict` saying the order_sn's sell record stands with other
/// items ([`StockError::OtherItems`], however it reached this worker).
fn record_stands(error: &StockError) -> Option<()> {
    let detail = error.to_contract();
    (detail.code == ErrorCode::Conflict
        && detail
            .details
            .get(SELL_RECORD_DETAIL)
            .and_then(|v| v.as_str())
            == Some("deducted"))
    .then_some(())
}

/// The goods an `insufficient_stock` refusal names, however it reached this worker.
fn short_goods(error: &StockError) -> Option<i64> {
    let detail = error.to_contract();
    if detail.code != ErrorCode::InsufficientStock {
        return None;
    }
    detail.details.get("goods_id")?.as_i64()
}

/// One order's sell record from its shares: `none` when no partition has one; `returned`
/// when any share is returned (a return covers the whole order); else `deducted`. The items
/// are those of the shares in that status, ascending `goods_id`.
pub fn merge_sell_details(sn: OrderSn, parts: Vec<SellDetail>) -> SellDetail {
    let status = if parts.iter().any(|p| p.status == SellStatus::Returned) {
        SellStatus::Returned
    } else if parts.iter().any(|p| p.status == SellStatus::Deducted) {
        SellStatus::Deducted
    } else {
        SellStatus::None
    };
    let mut items: Vec<OrderLine> = Vec::new();
    let mut updated_at = None;
    for part in parts.into_iter().filter(|p| p.status == status) {
        items.extend(part.items);
        updated_at = updated_at.max(part.updated_at);
    }
    items.sort_by_key(|line| line.goods_id);
    SellDetail {
        order_sn: sn,
        status,
        items,
        updated_at,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use shop_contracts::Quantity;

    use super::*;

    fn part(status: SellStatus, goods: &[i64], second: u32) -> SellDetail {
        SellDetail {
            order_sn: OrderSn::new(7).unwrap(),
            status,
            items: goods
                .iter()
                .map(|&g| OrderLine {
                    goods_id: GoodsId::new(g).unwrap(),
                    quantity: Quantity::new(1).unwrap(),
                })
                .collect(),
            updated_at: (status != SellStatus::None)
                .then(|| Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, second).unwrap()),
        }
    }

    fn short(goods: i64) -> StockError {
        StockError::InsufficientStock {
            goods_id: GoodsId::new(goods).unwrap(),
            requested: 2,
            available: 1,
        }
    }

    fn named(error: &StockError) -> Option<i64> {
        match error {
            StockError::InsufficientStock { goods_id, .. } => Some(goods_id.get()),
            _ => None,
        }
    }

    #[test]
    fn of_two_short_shares_the_lower_goods_id_is_named_whichever_answered_first() {
        assert_eq!(named(&first_refusal(short(141), short(140))), Some(140));
        assert_eq!(named(&first_refusal(short(140), short(141))), Some(140));
        let cancelled = StockError::OrderCancelled("7".into());
        assert_eq!(named(&first_refusal(cancelled, short(140))), None);
        // The sell record is checked before the stock, as one partition does.
        let stands = StockError::OtherItems(OrderSn::new(7).unwrap());
        assert_eq!(named(&first_refusal(short(140), stands)), None);
        let contention = StockError::Conflict("try again".into());
        assert_eq!(named(&first_refusal(contention, short(140))), Some(140));
        // A share refused by another partition's workers arrives as their reply.
        let remote = |goods| {
            StockError::from(shop_kit::client::CallError::Refused(
                short(goods).to_contract(),
            ))
        };
        assert_eq!(short_goods(&first_refusal(short(32), remote(30))), Some(30));
        assert_eq!(short_goods(&first_refusal(remote(30), short(32))), Some(30));
        assert_eq!(
            short_goods(&first_refusal(remote(32), remote(30))),
            Some(30)
        );
    }

    #[track_caller]
    fn check(parts: Vec<SellDetail>, status: SellStatus, goods: &[i64], second: Option<u32>) {
        let merged = merge_sell_details(OrderSn::new(7).unwrap(), parts);
        assert_eq!(merged.status, status);
        let ids: Vec<i64> = merged.items.iter().map(|l| l.goods_id.get()).collect();
        assert_eq!(ids, goods);
        assert_eq!(
            merged.updated_at,
            second.map(|s| Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, s).unwrap())
        );
    }

    #[test]
    fn shares_of_a_sell_record_merge_into_one() {
        use SellStatus::*;
        check(
            vec![part(None, &[], 0), part(None, &[], 0)],
            None,
            &[],
            Option::None,
        );
        check(
            vec![
                part(Deducted, &[9, 3], 2),
                part(None, &[], 0),
                part(Deducted, &[5], 4),
            ],
            Deducted,
            &[3, 5, 9],
            Some(4),
        );
        // A return (or a tombstone) in any share makes the order returned.
        check(
            vec![part(Deducted, &[3], 2), part(Returned, &[], 5)],
            Returned,
            &[],
            Some(5),
        );
        check(
            vec![part(Returned, &[3], 6), part(Returned, &[8], 5)],
            Returned,
            &[3, 8],
            Some(6),
        );
    }
}
