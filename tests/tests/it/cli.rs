//! The `shop` binary's own commands: seed data, one-shot requests, help.

use std::process::{Command, Output};

use serde_json::json;
use shop_tests::app::shop_binary;
use shop_tests::stack::{stack, PASSWORD};
use shop_tests::{TestApp, Worker};

/// Runs `shop <args>` as the test account's admin user.
fn shop(app: &TestApp, args: &[&str]) -> Output {
    Command::new(shop_binary())
        .args(args)
        .env("SHOP_NATS__URL", &stack().nats_url)
        .env("SHOP_NATS__USER", format!("a{}-admin", app.account))
        .env("SHOP_NATS__PASSWORD", PASSWORD)
        .env("NO_COLOR", "1")
        .output()
        .expect("running shop")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_fills_a_room_and_never_resets_sold_stock() {
    let app = TestApp::start(&[Worker::Goods, Worker::Stock]).await;
    let out = shop(&app, &["seed", "--room-id", "5", "--stock", "40"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let room = app.ok("goods.room.list", json!({"room_id": 5})).await;
    let goods = room["goods"].as_array().unwrap();
    assert_eq!(goods.len(), 10);
    assert_eq!(room["current_goods_id"], goods[0]["goods_id"]);
    let levels = app.ok("stock.get", json!({"goods_ids": [1, 10]})).await;
    assert_eq!(levels["items"][0]["available"], 40);

    app.ok(
        "stock.deduct",
        json!({"order_sn": "42", "items": [{"goods_id": 1, "quantity": 3}]}),
    )
    .await;
    let again = shop(&app, &["seed", "--room-id", "5", "--stock", "40"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let levels = app.ok("stock.get", json!({"goods_ids": [1]})).await;
    assert_eq!(
        levels["items"][0]["available"], 37,
        "a second seed must not reset stock"
    );
    assert_eq!(levels["items"][0]["sold"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_prints_the_reply_or_the_contract_error() {
    let app = TestApp::start(&[Worker::Goods]).await;
    let ok = shop(&app, &["req", "goods.list", "{}"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(reply["goods"].is_array());

    let refused = shop(&app, &["req", "goods.detail", r#"{"goods_id":0}"#]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("bad_request") && stderr.contains("400"),
        "{stderr}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["goods", "--help"],
        &["stock", "--help"],
        &["order", "--help"],
        &["migrate", "--help"],
        &["seed", "--help"],
        &["up", "--help"],
        &["req", "--help"],
        &["bench", "--help"],
        &["bench", "stock", "--help"],
    ] {
        let out = Command::new(shop_binary()).args(args).output().unwrap();
        assert!(out.status.success(), "shop {args:?} --help failed");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "shop {args:?}"
        );
    }
}
