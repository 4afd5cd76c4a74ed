//! Goods service through NATS (CONTRACT section 2, and section 1's error rules).

use serde_json::{json, Value};
use shop_tests::{TestApp, Worker};

fn goods(title: &str, category_id: i64, price_cents: i64) -> Value {
    json!({"category_id": category_id, "title": title, "price_cents": price_cents,
           "head_imgs": ["https://img.example.com/a.jpg"]})
}

async fn add(app: &TestApp, title: &str, category_id: i64) -> i64 {
    app.ok("goods.upsert", goods(title, category_id, 1000))
        .await["goods_id"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_assigns_ids_and_replaces_records() {
    let app = TestApp::start(&[Worker::Goods]).await;
    let created = app.ok("goods.upsert", goods("Serum", 3, 12900)).await;
    let id = created["goods_id"].as_i64().unwrap();
    assert_eq!(created["status"], "on_sale");
    assert_eq!(
        created["market_price_cents"], 12900,
        "market price defaults to the price"
    );
    assert!(created["updated_at"].as_str().unwrap().ends_with('Z'));

    let mut changed = goods("Serum v2", 3, 9900);
    changed["goods_id"] = json!(id);
    changed["status"] = json!("off_sale");
    app.ok("goods.upsert", &changed).await;
    let detail = app.ok("goods.detail", json!({"goods_id": id})).await;
    assert_eq!(detail["title"], "Serum v2");
    assert_eq!(detail["price_cents"], 9900);
    assert_eq!(detail["status"], "off_sale");
    assert_eq!(
        detail["head_imgs"],
        json!(["https://img.example.com/a.jpg"])
    );

    // An explicit id far ahead must not be handed out again by the sequence.
    let mut explicit = goods("Explicit", 1, 1);
    explicit["goods_id"] = json!(id + 1);
    app.ok("goods.upsert", &explicit).await;
    let next = add(&app, "After explicit", 1).await;
    assert!(
        next > id + 1,
        "assigned id {next} collides with explicit {}",
        id + 1
    );
}

/// Ids are JSON-safe numbers: once the largest id (2^53-1) is used, a create is a
/// `conflict`, never an id that no reply can carry, and every stored goods still reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goods_ids_end_below_2_pow_53_with_a_conflict() {
    let app = TestApp::start(&[Worker::Goods]).await;
    let max = (1i64 << 53) - 1;
    let mut last = goods("Last id", 1, 1);
    last["goods_id"] = json!(max - 1);
    app.ok("goods.upsert", &last).await;
    assert_eq!(add(&app, "The very last", 1).await, max);
    let e = app
        .err("goods.upsert", goods("One too many", 1, 1), "conflict")
        .await;
    assert!(e.message.contains("exhausted"), "{}", e.message);
    let page = app.ok("goods.list", json!({"after_id": max - 2})).await;
    assert_eq!(page["goods"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detail_of_unknown_goods_is_not_found() {
    let app = TestApp::start(&[Worker::Goods]).await;
    let e = app
        .err("goods.detail", json!({"goods_id": 424242}), "not_found")
        .await;
    assert_eq!(e.status, "404");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_keeps_request_order_and_reports_missing() {
    let app = TestApp::start(&[Worker::Goods]).await;
    let a = add(&app, "A", 1).await;
    let b = add(&app, "B", 1).await;
    let reply = app
        .ok(
            "goods.batch",
            json!({"goods_ids": [b, 999_999, a, 888_888]}),
        )
        .await;
    let ids: Vec<i64> = reply["goods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["goods_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![b, a]);
    assert_eq!(reply["missing"], json!([999_999, 888_888]));
    app.err("goods.batch", json!({"goods_ids": []}), "bad_request")
        .await;
    let too_many: Vec<i64> = (1..=101).collect();
    app.err("goods.batch", json!({"goods_ids": too_many}), "bad_request")
        .await;
}

/// Concurrent `goods.batch` requests are read together (one query for all that wait); each
/// still gets exactly its own goods in its own order, its own missing ids, and a price
/// written just before it asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_each_get_their_own_answer() {
    let app = TestApp::start(&[Worker::Goods]).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(add(&app, &format!("G{i}"), 1).await);
    }
    let asks: Vec<Vec<i64>> = (0..60)
        .map(|n| {
            let mut ask: Vec<i64> = ids.iter().copied().filter(|id| (id + n) % 3 != 0).collect();
            let turn = n as usize % ask.len().max(1);
            ask.rotate_left(turn);
            ask.push(900_000 + n);
            ask
        })
        .collect();
    let replies = futures::future::join_all(
        asks.iter()
            .map(|ask| app.ok("goods.batch", json!({"goods_ids": ask}))),
    )
    .await;
    for (ask, reply) in asks.iter().zip(&replies) {
        let got: Vec<i64> = reply["goods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["goods_id"].as_i64().unwrap())
            .collect();
        assert_eq!(got, ask[..ask.len() - 1], "goods of {ask:?}");
        assert_eq!(
            reply["missing"],
            json!([ask[ask.len() - 1]]),
            "missing of {ask:?}"
        );
    }
    let mut changed = goods("G0", 1, 4321);
    changed["goods_id"] = json!(ids[0]);
    app.ok("goods.upsert", changed).await;
    let reply = app.ok("goods.batch", json!({"goods_ids": [ids[0]]})).await;
    assert_eq!(reply["goods"][0]["price_cents"], 4321);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_everything_once() {
    let app = TestApp::start(&[Worker::Goods]).await;
    let mut expected = Vec::new();
    for i in 0..25 {
        expected.push(add(&app, &format!("G{i}"), 1 + i % 2).await);
    }
    let mut seen = Vec::new();
    let mut after: Value = Value::Null;
    loop {
        let page = app
            .ok("goods.list", json!({"after_id": after, "limit": 10}))
            .await;
        let goods = page["goods"].as_array().unwrap();
        assert!(goods.len() <= 10);
        seen.extend(goods.iter().map(|g| g["goods_id"].as_i64().unwrap()));
        after = page["next_after_id"].clone();
        if after.is_null() {
            break;
        }
    }
    assert_eq!(seen, expected, "every goods once, ascending");

    let default_page = app.ok("goods.list", json!({})).await;
    assert_eq!(
        default_page["goods"].as_array().unwrap().len(),
        20,
        "default limit is 20"
    );

    let category = app
        .ok("goods.list", json!({"category_id": 2, "limit": 100}))
        .await;
    assert!(category["goods"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["category_id"] == 2));
    assert_eq!(category["goods"].as_array().unwrap().len(), 12);
    assert!(category["next_after_id"].is_null());

    let mut off = goods("Off", 1, 5);
    off["goods_id"] = json!(expected[0]);
    off["status"] = json!("off_sale");
    app.ok("goods.upsert", &off).await;
    let off_sale = app.ok("goods.list", json!({"status": "off_sale"})).await;
    assert_eq!(off_sale["goods"].as_array().unwrap().len(), 1);

    for limit in [0, 101, -1] {
        app.err("goods.list", json!({"limit": limit}), "bad_request")
            .await;
    }
    app.err("goods.list", json!({"status": "sold_out"}), "bad_request")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_keeps_its_order_and_validates_the_current_goods() {
    let app = TestApp::start(&[Worker::Goods]).await;
    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for t in ["A", "B", "C"] {
            ids.push(add(&app, t, 1).await);
        }
        ids
    };
    let order = vec![ids[2], ids[0], ids[1]];
    let room = app
        .ok(
            "goods.room.set",
            json!({"room_id": 7, "goods_ids": order, "current_goods_id": ids[0]}),
        )
        .await;
    let listed: Vec<i64> = room["goods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["goods_id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, order);
    assert_eq!(room["current_goods_id"], ids[0]);
    assert_eq!(app.ok("goods.room.list", json!({"room_id": 7})).await, room);

    // current_goods_id must be in the list; nothing changes when it is not.
    app.err(
        "goods.room.set",
        json!({"room_id": 7, "goods_ids": [ids[1]], "current_goods_id": ids[0]}),
        "bad_request",
    )
    .await;
    app.err(
        "goods.room.set",
        json!({"room_id": 7, "goods_ids": [ids[1], ids[1]]}),
        "bad_request",
    )
    .await;
    app.err(
        "goods.room.set",
        json!({"room_id": 7, "goods_ids": [ids[1], 777_777]}),
        "not_found",
    )
    .await;
    assert_eq!(
        app.ok("goods.room.list", json!({"room_id": 7})).await,
        room,
        "failed sets change nothing"
    );

    // Replacing the whole list, with no current goods.
    let replaced = app
        .ok(
            "goods.room.set",
            json!({"room_id": 7, "goods_ids": [ids[1]]}),
        )
        .await;
    assert_eq!(replaced["goods"].as_array().unwrap().len(), 1);
    assert!(replaced["current_goods_id"].is_null());

    app.err("goods.room.list", json!({"room_id": 8}), "not_found")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_class_is_a_bad_request_and_the_worker_keeps_serving() {
    let app = TestApp::start(&[Worker::Goods]).await;
    let huge = format!("{{\"goods_id\":1,\"pad\":\"{}\"}}", "x".repeat(64 * 1024));
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("not json", "goods.detail", b"hello".to_vec()),
        ("empty body", "goods.detail", Vec::new()),
        ("a JSON array", "goods.detail", b"[1]".to_vec()),
        ("a JSON string", "goods.room.list", b"\"room\"".to_vec()),
        ("missing field", "goods.detail", b"{}".to_vec()),
        (
            "wrong type",
            "goods.detail",
            br#"{"goods_id":"1"}"#.to_vec(),
        ),
        ("float id", "goods.detail", br#"{"goods_id":1.5}"#.to_vec()),
        (
            "out of range",
            "goods.detail",
            br#"{"goods_id":0}"#.to_vec(),
        ),
        (
            "above 2^53",
            "goods.room.list",
            br#"{"room_id":9007199254740993}"#.to_vec(),
        ),
        (
            "negative price",
            "goods.upsert",
            br#"{"category_id":1,"title":"x","price_cents":-1}"#.to_vec(),
        ),
        (
            "float price",
            "goods.upsert",
            br#"{"category_id":1,"title":"x","price_cents":9.99}"#.to_vec(),
        ),
        (
            "blank title",
            "goods.upsert",
            br#"{"category_id":1,"title":" ","price_cents":1}"#.to_vec(),
        ),
        ("body over 64 KiB", "goods.detail", huge.into_bytes()),
    ];
    for (what, subject, body) in cases {
        let e = app.request_raw(subject, body).await.expect_err(what);
        assert_eq!(e.code(), "bad_request", "{what}");
        assert_eq!(e.status, "400", "{what}: Nats-Service-Error-Code");
        assert!(!e.message.is_empty(), "{what}: Nats-Service-Error");
        assert_eq!(
            e.message, e.body.error.message,
            "{what}: header and body agree"
        );
    }
    // Unknown fields are ignored, and the worker still answers.
    let id = add(&app, "Still here", 1).await;
    app.ok(
        "goods.detail",
        json!({"goods_id": id, "unknown": {"nested": true}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_ping_and_info_answer_with_the_queue_group() {
    let app = TestApp::start(&[Worker::Goods]).await;
    let ping = app
        .client()
        .request("$SRV.PING.goods", "".into())
        .await
        .unwrap();
    let ping: Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["name"], "goods");
    let info = app
        .client()
        .request("$SRV.INFO.goods", "".into())
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    let endpoints = info["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 6);
    assert!(endpoints.iter().all(|e| e["queue_group"] == "q"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_load() {
    let mut app = TestApp::start(&[Worker::Goods]).await;
    app.spawn(Worker::Goods).await;
    let id = add(&app, "Shared", 1).await;
    for _ in 0..20 {
        app.ok("goods.detail", json!({"goods_id": id})).await;
    }
    let stats = app
        .client()
        .request("$SRV.STATS.goods", "".into())
        .await
        .unwrap();
    let stats: Value = serde_json::from_slice(&stats.payload).unwrap();
    assert_eq!(stats["name"], "goods");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_database_is_unavailable_without_leaking_details() {
    // A goods worker whose database is a port nobody listens on: it still starts (its pool
    // connects lazily) and answers every request with `unavailable`, naming no host or SQL.
    let dead = format!(
        "postgres://shop:s3cret@127.0.0.1:{}/nowhere",
        shop_devstack::free_port().unwrap()
    );
    let app = TestApp::start_with_env(
        &[Worker::Goods],
        &[
            ("SHOP_GOODS__DATABASE_URL", dead.as_str()),
            ("SHOP_GOODS__MIGRATE_ON_START", "false"),
            ("SHOP_GOODS__ACQUIRE_TIMEOUT", "300ms"),
        ],
    )
    .await;
    let e = app
        .err("goods.detail", json!({"goods_id": 1}), "unavailable")
        .await;
    assert_eq!(e.status, "503");
    let text = format!("{} {}", e.message, serde_json::to_string(&e.body).unwrap()).to_lowercase();
    for secret in [
        "s3cret",
        "127.0.0.1",
        "nowhere",
        "select",
        "postgres://",
        "connection refused",
    ] {
        assert!(!text.contains(secret), "error leaks {secret:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_users_have_only_their_own_permissions() {
    // The goods user may serve goods.* but not call other services or touch JetStream.
    let app = TestApp::start(&[Worker::Goods]).await;
    let goods_user = async_nats::ConnectOptions::with_user_and_password(
        format!("a{}-goods", app.account),
        shop_tests::stack::PASSWORD.into(),
    )
    .custom_inbox_prefix("_INBOX.goods")
    .connect(shop_tests::stack::stack().nats_url.as_str())
    .await
    .unwrap();
    // A responder answers stock.deduct and order.create, so only a permission can refuse.
    let mut responder = app.client().subscribe("stock.deduct").await.unwrap();
    let mut responder2 = app.client().subscribe("order.create").await.unwrap();
    let client = app.client().clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                Some(m) = futures::StreamExt::next(&mut responder) => m,
                Some(m) = futures::StreamExt::next(&mut responder2) => m,
                else => break,
            };
            if let Some(reply) = msg.reply {
                let _ = client.publish(reply, "{}".into()).await;
            }
        }
    });
    for subject in ["stock.deduct", "order.create", "$JS.API.INFO"] {
        app.client()
            .request(subject, "{}".into())
            .await
            .unwrap_or_else(|e| panic!("admin: {subject}: {e}"));
        // A denied publish is dropped by the server, so the request times out.
        let quick = async_nats::Request::new()
            .payload("{}".into())
            .timeout(Some(std::time::Duration::from_secs(1)));
        let refused = goods_user.send_request(subject, quick).await;
        assert!(refused.is_err(), "the goods user could request {subject}");
    }
    // And may not listen to another worker's subjects.
    let mut sub = goods_user.subscribe("stock.deduct").await.unwrap();
    app.client()
        .publish("stock.deduct", "{}".into())
        .await
        .unwrap();
    app.client().flush().await.unwrap();
    let got = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        futures::StreamExt::next(&mut sub),
    )
    .await;
    assert!(
        !matches!(got, Ok(Some(_))),
        "the goods user received stock.deduct"
    );
}
