//! The goods a bench works on, set up through the running workers: on sale, and with more
//! stock than any run can sell, so every create can succeed.

use std::ops::Range;

use anyhow::Context;
use serde_json::{json, Value};
use shop_contracts::endpoint::{GoodsUpsert, StockGet, StockSet};
use shop_kit::client::{call, request_json};

use super::request::TIMEOUT;

/// Stock given to each bench goods.
pub const PLENTY: i64 = 1_000_000_000_000;

/// Upserts `goods` as on-sale goods at one euro.
pub async fn upsert_goods(client: &async_nats::Client, goods: Range<i64>) -> anyhow::Result<()> {
    for goods_id in goods {
        request_json::<GoodsUpsert>(
            client,
            json!({"goods_id": goods_id, "category_id": 1, "title": format!("bench goods {goods_id}"),
                    "price_cents": 100, "status": "on_sale"}),
            TIMEOUT,
        )
        .await
        .with_context(|| format!("goods.upsert of goods {goods_id}: is the stack up?"))?;
    }
    Ok(())
}

/// Sets `available` of each goods to [`PLENTY`].
pub async fn fill_stock(client: &async_nats::Client, goods: Range<i64>) -> anyhow::Result<()> {
    for goods_id in goods {
        request_json::<StockSet>(
            client,
            json!({"goods_id": goods_id, "available": PLENTY}),
            TIMEOUT,
        )
        .await
        .with_context(|| format!("stock.set of goods {goods_id}: is the stack up?"))?;
    }
    Ok(())
}

/// The lock strategy the running stock workers use, from their service metadata
/// (`$SRV.INFO.stock`): the figures of a run depend on it.
pub async fn stock_strategy(client: &async_nats::Client) -> anyhow::Result<String> {
    let info: Value = call(client, "$SRV.INFO.stock", &json!({}), TIMEOUT)
        .await
        .context("no stock worker answered $SRV.INFO.stock: is the stack up?")?;
    Ok(info["metadata"]["strategy"]
        .as_str()
        .unwrap_or("unknown")
        .to_owned())
}

/// The sum of `sold` over `goods`, through `stock.get`.
pub async fn sold(client: &async_nats::Client, goods: Range<i64>) -> anyhow::Result<i64> {
    let ids: Vec<i64> = goods.collect();
    let mut total = 0;
    // stock.get takes at most 100 ids per request (CONTRACT section 1).
    for chunk in ids.chunks(100) {
        let reply = request_json::<StockGet>(client, json!({"goods_ids": chunk}), TIMEOUT)
            .await
            .context("stock.get of the bench goods")?;
        total += reply.items.iter().map(|item| item.sold).sum::<i64>();
    }
    Ok(total)
}
