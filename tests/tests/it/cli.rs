//! The `shop` binary's own commands: seed data, one-shot requests, the audit, help.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use shop_tests::app::shop_binary;
use shop_tests::{eventually, TestApp, Worker};

use crate::level;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_fills_a_room_and_never_resets_sold_stock() {
    let app = TestApp::start(&[Worker::Goods, Worker::Stock]).await;
    let out = app.run_shop(&["seed", "--room-id", "5", "--stock", "40"]);
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
    let again = app.run_shop(&["seed", "--room-id", "5", "--stock", "40"]);
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
    let ok = app.run_shop(&["req", "goods.list", "{}"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(reply["goods"].is_array());

    // Without a body the request goes out empty, as `nats req` sends it: what the micro
    // service's own subjects take.
    for (subject, body) in [
        ("$SRV.PING.goods", None),
        ("$SRV.STATS.goods", None),
        ("$SRV.INFO.goods", Some("")),
    ] {
        let mut args = vec!["req", subject];
        args.extend(body);
        let out = app.run_shop(&args);
        assert!(
            out.status.success(),
            "{subject}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply["name"], "goods", "{subject}");
    }

    let refused = app.run_shop(&["req", "goods.detail", r#"{"goods_id":0}"#]);
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
        &["audit", "--help"],
        &["gateway", "--help"],
        &["token", "--help"],
        &["bench", "--help"],
        &["bench", "stock", "--help"],
        &["bench", "order", "--help"],
        &["bench", "overload", "--help"],
    ] {
        let out = Command::new(shop_binary()).args(args).output().unwrap();
        assert!(out.status.success(), "shop {args:?} --help failed");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "shop {args:?}"
        );
    }
}

async fn settle(app: &TestApp, goods: i64, want: (i64, i64)) {
    eventually("stock to settle", Duration::from_secs(60), || async move {
        (level(app, goods).await == want).then_some(())
    })
    .await;
}

/// The kinds of the findings of `shop audit --json`, and whether it exited successfully.
fn audit(app: &TestApp) -> (bool, BTreeSet<String>, Value) {
    let out = app.run_shop(&["audit", "--grace", "0s", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "audit printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let kinds = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect();
    (out.status.success(), kinds, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_passes_a_settled_shop_and_names_what_is_broken() {
    let app = TestApp::start_with_env(
        &[Worker::Goods, Worker::Stock, Worker::Order],
        &[
            ("SHOP_ORDER__PAY_TIMEOUT", "2s"),
            ("SHOP_ORDER__CHECK_DELAY", "3s"),
        ],
    )
    .await;
    let goods = app
        .ok(
            "goods.upsert",
            json!({"category_id": 1, "title": "audited", "price_cents": 100}),
        )
        .await["goods_id"]
        .as_i64()
        .unwrap();
    app.ok("stock.set", json!({"goods_id": goods, "available": 10}))
        .await;
    let create = |quantity: i64| {
        app.ok(
            "order.create",
            json!({"user_id": 1, "items": [{"goods_id": goods, "quantity": quantity}],
                   "address": "a", "receiver_name": "r", "receiver_phone": "p"}),
        )
    };
    let paid = create(1).await["order_sn"].as_str().unwrap().to_owned();
    let cancelled = create(2).await["order_sn"].as_str().unwrap().to_owned();
    create(3).await; // left to close at its deadline
    app.ok("order.pay", json!({"order_sn": paid, "amount_cents": 100}))
        .await;
    app.ok("order.cancel", json!({"order_sn": cancelled})).await;
    settle(&app, goods, (9, 1)).await;

    let (ok, kinds, report) = audit(&app);
    assert!(ok && kinds.is_empty(), "a settled shop: {report}");
    assert_eq!(report["rollback_events"], 2, "{report}");
    assert_eq!(report["orders"]["closed"], 1, "{report}");

    // Break it twice: a rollback published by hand for the paid order (the stock worker
    // applies it), and a count changed behind the ledger's back.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "tampered");
    app.jetstream()
        .publish_with_headers(
            format!("stock.rollback.{paid}"),
            headers,
            serde_json::to_vec(&json!({"order_sn": paid, "reason": "closed"}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    settle(&app, goods, (10, 0)).await;
    sqlx::query("UPDATE stock SET available = available + 1 WHERE goods_id = $1")
        .bind(goods)
        .execute(&app.db(Worker::Stock).await)
        .await
        .unwrap();

    let (ok, kinds, report) = audit(&app);
    assert!(!ok, "the audit passed a broken shop: {report}");
    let expected: BTreeSet<String> = [
        "ledger_disagrees",
        "order_without_stock",
        "rollback_disagrees",
        "unbalanced",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds, expected, "{report}");
    assert!(report.to_string().contains(&paid), "{report}");

    // An order whose half message is purged by hand has lost its timer: it is named at once,
    // and again as overdue once its deadline has passed.
    let timeless = create(1).await["order_sn"].as_str().unwrap().to_owned();
    // The checker looks at a half message half a second after it arrives and schedules
    // the deadline of a committed order then: wait for that schedule, then lose it (and
    // the half message, should it still be there), as a lost timer would.
    let timers = app.jetstream().get_stream("ORDER_TIMERS").await.unwrap();
    let schedule = format!("order.timer.at.{timeless}");
    eventually(
        "the timeless order's schedule",
        Duration::from_secs(60),
        || {
            let (timers, schedule) = (&timers, &schedule);
            async move {
                timers
                    .get_last_raw_message_by_subject(schedule)
                    .await
                    .ok()
                    .map(|_| ())
            }
        },
    )
    .await;
    timers.purge().filter(schedule.as_str()).await.unwrap();
    let txn = app.jetstream().get_stream("ORDER_TXN").await.unwrap();
    txn.purge()
        .filter(format!("order.txn.{timeless}"))
        .await
        .unwrap();
    let mut expected = expected;
    expected.extend(["unpaid_without_timer", "overdue_unpaid"].map(String::from));
    let report = eventually(
        "the audit to find the overdue order",
        Duration::from_secs(60),
        || {
            let (app, expected) = (&app, &expected);
            async move {
                let (_, kinds, report) = audit(app);
                (kinds == *expected).then_some(report)
            }
        },
    )
    .await;
    assert!(report.to_string().contains(&timeless), "{report}");
}

#[test]
fn every_server_config_in_nats_config_is_valid() {
    // `nats-server -t` parses a config (includes, variables, permissions) and exits. The
    // production config takes its names, passwords and TLS files from the environment.
    let dir = shop_tests::stack::project_root().join("nats-config");
    let tls = crate::tls::pki(&shop_tests::stack::stack().dir.join("pki-config-check"));
    for config in ["dev.conf", "production.conf"] {
        let out = Command::new(shop_tests::stack::nats_server_binary())
            .args(["-t", "-c", config])
            .current_dir(&dir)
            .env("SHOP_NATS_SERVER_NAME", "n1")
            .env("SHOP_GOODS_NATS_PASSWORD", "g")
            .env("SHOP_STOCK_NATS_PASSWORD", "s")
            .env("SHOP_ORDER_NATS_PASSWORD", "o")
            .env("SHOP_GATEWAY_NATS_PASSWORD", "w")
            .env("SHOP_ADMIN_NATS_PASSWORD", "a")
            .env("SHOP_NATS_TLS_CERT", &tls.server_cert)
            .env("SHOP_NATS_TLS_KEY", &tls.server_key)
            .env("SHOP_NATS_TLS_CA", &tls.ca)
            .output()
            .expect("running nats-server -t");
        assert!(
            out.status.success(),
            "nats-server rejects {config}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
