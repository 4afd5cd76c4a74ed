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
mod order_partitions;
mod partitions;
mod rolling;
mod slot_moves;
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

/// CONTRACT section 6, invariants 1 and 2, from the stock database, by the audit's own
/// checks: no goods below zero; `available + sold` equals its `stock.set` adjustments; the
/// ledger sums to both counts; `sold` equals the quantities of its `deducted` sell records.
/// `Err` says what is wrong.
async fn conservation(stock: &PgPool) -> Result<(), String> {
    let stock = shop_audit::snapshot::stock(std::slice::from_ref(stock))
        .await
        .map_err(|e| e.to_string())?;
    no_findings(shop_audit::check::stock_counts(&stock))
}

/// `Err` naming every finding, if there is any.
fn no_findings(findings: Vec<shop_audit::check::Finding>) -> Result<(), String> {
    if findings.is_empty() {
        return Ok(());
    }
    let found: Vec<String> = findings.iter().map(ToString::to_string).collect();
    Err(found.join("; "))
}
