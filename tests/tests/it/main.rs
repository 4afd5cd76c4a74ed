//! Black-box tests over a real nats-server and PostgreSQL. One binary, so the servers start
//! once per run; each test has its own NATS account and databases (see `shop_tests`).

mod bench;
mod cli;
mod cluster;
mod fuzz;
mod gateway;
mod gateway_browser;
mod gateway_schemathesis;
mod goods;
mod mixed;
mod order;
mod soak;
mod stock;
mod stock_model;
mod telemetry;
mod tls;
mod workers;

use serde_json::json;
use shop_tests::TestApp;
use sqlx::PgPool;

/// `(available, sold)` of one goods, through `stock.get`.
async fn level(app: &TestApp, goods_id: i64) -> (i64, i64) {
    let reply = app.ok("stock.get", json!({"goods_ids": [goods_id]})).await;
    let item = &reply["items"][0];
    (
        item["available"].as_i64().unwrap(),
        item["sold"].as_i64().unwrap(),
    )
}

/// CONTRACT section 6, invariants 1 and 2, from the stock database: no goods below zero;
/// `available + sold` equals its `stock.set` adjustments; the ledger sums to both counts;
/// `sold` equals the quantities of its `deducted` sell records. `Err` says what is wrong.
async fn conservation(stock: &PgPool) -> Result<(), String> {
    let rows: Vec<(i64, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT s.goods_id, s.available, s.sold,
           COALESCE((SELECT SUM(delta_available + delta_sold) FROM stock_ledger l
                     WHERE l.goods_id = s.goods_id AND kind = 'adjustment'), 0)::BIGINT,
           COALESCE((SELECT SUM(delta_available) FROM stock_ledger l
                     WHERE l.goods_id = s.goods_id), 0)::BIGINT,
           COALESCE((SELECT SUM(delta_sold) FROM stock_ledger l
                     WHERE l.goods_id = s.goods_id), 0)::BIGINT,
           COALESCE((SELECT SUM((i->>'quantity')::BIGINT)
                     FROM sell_records r, jsonb_array_elements(r.items) i
                     WHERE r.status = 'deducted' AND (i->>'goods_id')::BIGINT = s.goods_id),
                    0)::BIGINT
         FROM stock s",
    )
    .fetch_all(stock)
    .await
    .map_err(|e| e.to_string())?;
    for (goods, available, sold, adjusted, ledger_available, ledger_sold, deducted) in rows {
        let wrong = if available < 0 {
            format!("available {available} (oversold)")
        } else if available + sold != adjusted {
            format!("available {available} + sold {sold} != adjustments {adjusted}")
        } else if available != ledger_available || sold != ledger_sold {
            format!(
                "counts {available}/{sold} but the ledger sums to {ledger_available}/{ledger_sold}"
            )
        } else if sold != deducted {
            format!("sold {sold} but deducted sell records hold {deducted}")
        } else {
            continue;
        };
        return Err(format!("goods {goods}: {wrong}"));
    }
    Ok(())
}
