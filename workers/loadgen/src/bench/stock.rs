//! `shop bench stock`: concurrent deducts against the running stock workers, over NATS.
//!
//! The lock strategy is a worker setting, so the bench measures whatever the running workers
//! use; it reads their strategy from `$SRV.INFO.stock` (service metadata) and refuses to
//! label results with another one. Each deduct takes one unit of a goods picked round-robin
//! from `goods` goods (1 = one hot goods), under a fresh order_sn.
//!
//! These deducts have no orders, on purpose (they measure stock alone), so `shop audit`
//! reports them as stock without an order: run the stock bench on a stack of its own.

use std::sync::Arc;

use anyhow::bail;
use serde_json::json;
use shop_contracts::endpoint::StockDeduct;
use shop_contracts::stock::{DeductRequest, OrderLine};
use shop_contracts::{GoodsId, ItemList, OrderSn, Quantity};

use super::drive::{self, Mode};
use super::request::NatsRequest;
use super::{fixture, plot, report};
use crate::cli::{LoadArgs, RunArgs};

pub async fn run(
    client: &async_nats::Client,
    strategy: &str,
    goods: i64,
    first_goods_id: i64,
    load: &LoadArgs,
) -> anyhow::Result<()> {
    let running = fixture::stock_strategy(client).await?;
    if running != strategy {
        bail!(
            "the running stock workers use strategy {running:?}, not {strategy:?}: restart them \
             with SHOP_STOCK__STRATEGY={strategy}"
        );
    }
    fixture::fill_stock(client, first_goods_id..first_goods_id + goods).await?;

    // Order numbers unique across runs: milliseconds since the epoch, times a million.
    let base = chrono::Utc::now().timestamp_millis() * 1_000_000;
    let ids = (first_goods_id..first_goods_id + goods)
        .map(GoodsId::new)
        .collect::<Result<Vec<_>, _>>()?;
    let quantity = Quantity::new(1)?;
    let request = Arc::new(NatsRequest::to::<StockDeduct>(client, move |n: u64| {
        let line = OrderLine {
            goods_id: ids[(n % ids.len() as u64) as usize],
            quantity,
        };
        DeductRequest {
            order_sn: OrderSn::new(base + n as i64).expect("a clock-based order_sn"),
            items: ItemList::new(vec![line]).expect("one line"),
        }
    }));
    let mode = super::mode(load);
    let window = std::time::Duration::from_secs(load.run.seconds_or(RunArgs::DEFAULT_SECONDS));
    let label = load.run.label.as_deref();
    let title = format!(
        "stock/{strategy} goods={goods} {mode}{}",
        label.map(|l| format!(" [{l}]")).unwrap_or_default()
    );
    let figures = drive::run(request, mode, window, "deducts", "deducts").await?;
    println!("result {title}: {}", figures.summary("deducts"));
    let document = report::document(
        report::header("stock", label),
        json!({
            "strategy": strategy,
            "goods": goods,
            "load": mode,
            "seconds": load.run.seconds_or(RunArgs::DEFAULT_SECONDS),
            "system": figures,
        }),
    );
    let name = report::file_name(
        &format!("stock-{strategy}-{goods}"),
        matches!(mode, Mode::Closed { .. }).then_some(load.concurrency),
        load.rate,
        label,
    );
    report::save(
        &load.run.out,
        &name,
        &document,
        &title,
        "deducts",
        &[plot::Run {
            name: strategy,
            figures: &figures,
        }],
        &[],
    )
}
