//! Black-box tests over a real nats-server and PostgreSQL. One binary, so the servers start
//! once per run; each test has its own NATS account and databases (see `shop_tests`).

mod cli;
mod goods;
mod order;
mod stock;

use serde_json::json;
use shop_tests::TestApp;

/// `(available, sold)` of one goods, through `stock.get`.
async fn level(app: &TestApp, goods_id: i64) -> (i64, i64) {
    let reply = app.ok("stock.get", json!({"goods_ids": [goods_id]})).await;
    let item = &reply["items"][0];
    (
        item["available"].as_i64().unwrap(),
        item["sold"].as_i64().unwrap(),
    )
}
