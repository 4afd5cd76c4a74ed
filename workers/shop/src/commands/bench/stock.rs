//! `shop bench stock`: concurrent deducts against the running stock workers, over NATS.
//!
//! The lock strategy is a worker setting, so the bench measures whatever the running workers
//! use; it reads their strategy from `$SRV.INFO.stock` (service metadata) and refuses to
//! label results with another one. Each deduct takes one unit of a goods picked round-robin
//! from `goods` goods (1 = one hot goods), under a fresh order_sn.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use shop_contracts::subjects::stock as subject;
use shop_kit::client::call;

use super::load::{self, TIMEOUT};
use crate::cli::LoadArgs;

pub async fn run(
    client: &async_nats::Client,
    strategy: &str,
    goods: i64,
    first_goods_id: i64,
    args: &LoadArgs,
) -> anyhow::Result<()> {
    let info: Value = call(client, "$SRV.INFO.stock", &json!({}), TIMEOUT)
        .await
        .context("no stock worker answered $SRV.INFO.stock: is the stack up?")?;
    let running = info["metadata"]["strategy"].as_str().unwrap_or("unknown");
    if running != strategy {
        bail!(
            "the running stock workers use strategy {running:?}, not {strategy:?}: restart them \
             with SHOP_STOCK__STRATEGY={strategy}"
        );
    }
    load::fill_stock(client, first_goods_id..first_goods_id + goods).await?;

    // Order numbers unique across runs: milliseconds since the epoch, times a million.
    let base = chrono::Utc::now().timestamp_millis() * 1_000_000;
    let measured = load::run(
        client,
        subject::DEDUCT,
        args.concurrency,
        args.seconds,
        "deducts",
        move |n| {
            json!({"order_sn": (base + n).to_string(),
                   "items": [{"goods_id": first_goods_id + n % goods, "quantity": 1}]})
        },
    )
    .await?;
    load::report(
        &measured,
        "deducts",
        &format!(
            "stock/{strategy} goods={goods} concurrency={}",
            args.concurrency
        ),
        json!({"strategy": strategy, "goods": goods, "concurrency": args.concurrency}),
        &args.out,
        &format!("stock-{strategy}-{goods}"),
    )
}
