//! The HTTP gateway (CONTRACT section 7) over real HTTP, in front of real workers: every
//! route, auth, ownership, the payment callback, limits, problem+json on every error, the
//! OpenAPI document, the gateway's NATS permissions, and the invariants after an HTTP load.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use shop_tests::gateway::{admin_token, expired_token, signature, token, token_with, Gateway};
use shop_tests::{eventually, TestApp, Worker};

use crate::conservation;

const ALL: &[Worker] = &[Worker::Goods, Worker::Stock, Worker::Order];
const FAST: &[(&str, &str)] = &[
    ("SHOP_ORDER__PAY_TIMEOUT", "3s"),
    ("SHOP_ORDER__CHECK_DELAY", "3s"),
    ("SHOP_ORDER__REQUEST_TIMEOUT", "5s"),
];
const SETTLE: Duration = Duration::from_secs(60);
const ADMIN: i64 = 1;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// One request: method, path, optional bearer token and JSON body.
async fn call(
    gw: &Gateway,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Response {
    let mut request = http().request(method, gw.at(path));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("the gateway answers")
}

/// The JSON of a success with `status`.
async fn ok(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A problem+json error with `status` and `code`; returns its body.
async fn problem(response: Response, status: StatusCode, code: &str) -> Value {
    let got = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let retry_after = response.headers().get("retry-after").is_some();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    assert_eq!(content_type, "application/problem+json", "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], code, "{text}");
    assert_eq!(body["status"], status.as_u16(), "{text}");
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{text}"
    );
    assert!(body["details"].is_object(), "{text}");
    if matches!(code, "unavailable" | "rate_limited") {
        assert!(retry_after, "{code} without Retry-After: {text}");
    }
    body
}

/// Goods on sale at `price_cents` with `available` in stock, created over HTTP.
async fn goods(gw: &Gateway, price_cents: i64, available: i64) -> i64 {
    let admin = admin_token(ADMIN);
    let g = ok(
        call(gw, Method::POST, "/v1/admin/goods", Some(&admin),
            Some(json!({"category_id": 1, "title": format!("goods at {price_cents}"), "price_cents": price_cents}))).await,
        StatusCode::OK,
    ).await;
    let id = g["goods_id"].as_i64().unwrap();
    ok(
        call(
            gw,
            Method::PUT,
            &format!("/v1/admin/stock/{id}"),
            Some(&admin),
            Some(json!({"available": available})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    id
}

fn order_body(items: &[(i64, i64)]) -> Value {
    json!({
        "items": items.iter().map(|(g, q)| json!({"goods_id": g, "quantity": q})).collect::<Vec<_>>(),
        "address": "1 Main St", "receiver_name": "Ann", "receiver_phone": "555-0100",
    })
}

async fn create(gw: &Gateway, user: i64, items: &[(i64, i64)]) -> Value {
    let response = call(
        gw,
        Method::POST,
        "/v1/orders",
        Some(&token(user)),
        Some(order_body(items)),
    )
    .await;
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let order = ok(response, StatusCode::CREATED).await;
    assert_eq!(
        location.as_deref(),
        Some(format!("/v1/orders/{}", order["order_sn"].as_str().unwrap()).as_str())
    );
    order
}

/// The payment provider's callback, signed with `signature` (the real one when `None`).
async fn pay_callback(gw: &Gateway, body: &Value, sig: Option<&str>) -> Response {
    let raw = serde_json::to_vec(body).unwrap();
    let mut request = http()
        .post(gw.at("/v1/payments/callback"))
        .header("content-type", "application/json")
        .body(raw.clone());
    match sig {
        Some("") => {}
        Some(sig) => request = request.header("x-signature", sig),
        None => request = request.header("x-signature", signature(&raw)),
    }
    request.send().await.unwrap()
}

async fn available(gw: &Gateway, goods_id: i64) -> i64 {
    let g = ok(
        call(
            gw,
            Method::GET,
            &format!("/v1/goods/{goods_id}"),
            None,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    g["available"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_storefront_and_admin_routes() {
    let app = TestApp::start(&[Worker::Goods, Worker::Stock]).await;
    let gw = app.spawn_gateway(&[]).await;
    let admin = admin_token(ADMIN);
    let a = goods(&gw, 1000, 7).await;
    let b = goods(&gw, 2000, 3).await;
    // PUT /v1/admin/goods/{id} replaces the record under that id.
    let renamed = ok(
        call(
            &gw,
            Method::PUT,
            &format!("/v1/admin/goods/{b}"),
            Some(&admin),
            Some(json!({"category_id": 2, "title": "renamed", "price_cents": 2500})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (renamed["goods_id"].as_i64(), renamed["title"].as_str()),
        (Some(b), Some("renamed"))
    );
    let room = ok(
        call(
            &gw,
            Method::PUT,
            "/v1/admin/rooms/9",
            Some(&admin),
            Some(json!({"goods_ids": [b, a], "current_goods_id": a})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(room["current_goods_id"], a);

    let room = ok(
        call(&gw, Method::GET, "/v1/rooms/9", None, None).await,
        StatusCode::OK,
    )
    .await;
    let listed: Vec<(i64, i64)> = room["goods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["goods_id"].as_i64().unwrap(),
                g["available"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, vec![(b, 3), (a, 7)]);
    assert_eq!(room["current_goods_id"], a);

    let detail = ok(
        call(&gw, Method::GET, &format!("/v1/goods/{a}"), None, None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (detail["price_cents"].as_i64(), detail["available"].as_i64()),
        (Some(1000), Some(7))
    );
    let page = ok(
        call(
            &gw,
            Method::GET,
            "/v1/goods?category_id=2&limit=5",
            None,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let ids: Vec<i64> = page["goods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["goods_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![b]);
    assert!(page["next_after_id"].is_null());

    problem(
        call(&gw, Method::GET, "/v1/goods/999999", None, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    problem(
        call(&gw, Method::GET, "/v1/rooms/12345", None, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // Bad input is answered by the gateway.
    for path in [
        "/v1/goods/0",
        "/v1/goods/abc",
        "/v1/goods/9007199254740992",
        "/v1/rooms/-1",
        "/v1/goods?limit=0",
        "/v1/goods?status=sold_out",
        "/v1/goods?category_id=x",
    ] {
        problem(
            call(&gw, Method::GET, path, None, None).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
    // The room's current goods must be in its list: the worker's bad_request, passed on.
    problem(
        call(
            &gw,
            Method::PUT,
            "/v1/admin/rooms/9",
            Some(&admin),
            Some(json!({"goods_ids": [a], "current_goods_id": b})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    problem(
        call(
            &gw,
            Method::PUT,
            &format!("/v1/admin/stock/{a}"),
            Some(&admin),
            Some(json!({"available": -1})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    // Unknown routes and methods are problems too.
    problem(
        call(&gw, Method::GET, "/v1/nothing", None, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    problem(
        call(&gw, Method::DELETE, "/v1/goods", None, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "bad_request",
    )
    .await;

    let health = ok(
        call(&gw, Method::GET, "/healthz", None, None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(health["status"], "ok");
    // No order worker: not ready, and it says which.
    let not_ready = problem(
        call(&gw, Method::GET, "/readyz", None, None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
    assert_eq!(
        not_ready["details"]["checks"],
        json!({"goods": true, "nats": true, "order": false, "stock": true})
    );
    // ... and an order route answers unavailable with Retry-After at once.
    problem(
        call(&gw, Method::GET, "/v1/orders", Some(&token(5)), None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_auth_401_and_403_and_shop_token() {
    let app = TestApp::start(&[Worker::Goods]).await;
    let gw = app.spawn_gateway(&[]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let bad_tokens = [
        None,
        Some("not-a-jwt".to_owned()),
        Some(token_with(
            "another-secret",
            json!({"sub": "7", "exp": now + 600}),
        )),
        Some(expired_token(7)),
        Some(token_with(
            shop_tests::gateway::TOKEN_SECRET,
            json!({"sub": "7"}),
        )),
        Some(token_with(
            shop_tests::gateway::TOKEN_SECRET,
            json!({"sub": "seven", "exp": now + 600}),
        )),
    ];
    let user_routes = [
        (Method::GET, "/v1/orders", None),
        (Method::GET, "/v1/orders/1", None),
        (Method::POST, "/v1/orders/1/cancel", None),
        (Method::POST, "/v1/orders", Some(order_body(&[(1, 1)]))),
    ];
    let admin_routes = [
        (
            Method::POST,
            "/v1/admin/goods",
            Some(json!({"category_id": 1, "title": "x", "price_cents": 1})),
        ),
        (
            Method::PUT,
            "/v1/admin/goods/1",
            Some(json!({"category_id": 1, "title": "x", "price_cents": 1})),
        ),
        (
            Method::PUT,
            "/v1/admin/stock/1",
            Some(json!({"available": 1})),
        ),
        (
            Method::PUT,
            "/v1/admin/rooms/1",
            Some(json!({"goods_ids": []})),
        ),
    ];
    for (method, path, body) in user_routes.iter().chain(admin_routes.iter()) {
        for bad in &bad_tokens {
            let body = problem(
                call(&gw, method.clone(), path, bad.as_deref(), body.clone()).await,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            )
            .await;
            assert!(!body["detail"]
                .as_str()
                .unwrap()
                .contains(shop_tests::gateway::TOKEN_SECRET));
        }
    }
    for (method, path, body) in &admin_routes {
        problem(
            call(&gw, method.clone(), path, Some(&token(7)), body.clone()).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
    // `shop token` mints what the gateway accepts, from the configured secret.
    let out = std::process::Command::new(shop_tests::app::shop_binary())
        .args(["token", "--user", "7", "--admin", "--ttl", "10m"])
        .env(
            "SHOP_GATEWAY__AUTH__HS256_SECRET",
            shop_tests::gateway::TOKEN_SECRET,
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    ok(
        call(
            &gw,
            Method::POST,
            "/v1/admin/goods",
            Some(&minted),
            Some(json!({"category_id": 1, "title": "by token", "price_cents": 5})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    // Without a secret it refuses, saying where the secret comes from.
    let none = std::process::Command::new(shop_tests::app::shop_binary())
        .args(["token", "--user", "7"])
        .env("SHOP_DEV__DATA_DIR", app_dir(&app))
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("hs256_secret"));
}

fn app_dir(app: &TestApp) -> String {
    shop_tests::stack::stack()
        .dir
        .join(format!("no-secrets-{}", app.account))
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_order_created_paid_by_callback_and_another_cancelled() {
    let app = TestApp::start_with_env(ALL, FAST).await;
    let gw = app.spawn_gateway(&[]).await;
    let a = goods(&gw, 1250, 10).await;

    // Create, read, list.
    let order = create(&gw, 7, &[(a, 2)]).await;
    let sn = order["order_sn"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            order["status"].as_str(),
            order["user_id"].as_i64(),
            order["total_cents"].as_i64()
        ),
        (Some("unpaid"), Some(7), Some(2500))
    );
    assert_eq!(available(&gw, a).await, 8);
    let got = ok(
        call(
            &gw,
            Method::GET,
            &format!("/v1/orders/{sn}"),
            Some(&token(7)),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["order_sn"], sn.as_str());
    let mine = ok(
        call(
            &gw,
            Method::GET,
            "/v1/orders?limit=10",
            Some(&token(7)),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(mine["orders"][0]["order_sn"], sn.as_str());
    let theirs = ok(
        call(&gw, Method::GET, "/v1/orders", Some(&token(8)), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(theirs["orders"], json!([]));
    // Another user's order does not exist for them, and they cannot cancel it.
    problem(
        call(
            &gw,
            Method::GET,
            &format!("/v1/orders/{sn}"),
            Some(&token(8)),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    problem(
        call(
            &gw,
            Method::POST,
            &format!("/v1/orders/{sn}/cancel"),
            Some(&token(8)),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    problem(
        call(&gw, Method::GET, "/v1/orders/12x", Some(&token(7)), None).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;

    // Pay by callback: a bad or missing signature is 401 and pays nothing.
    let pay = json!({"order_sn": sn, "amount_cents": 2500, "payment_ref": "psp-1"});
    problem(
        pay_callback(&gw, &pay, Some("")).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    problem(
        pay_callback(&gw, &pay, Some(&signature(b"{}"))).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    problem(
        pay_callback(&gw, &pay, Some("sha256=00")).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let still = ok(
        call(
            &gw,
            Method::GET,
            &format!("/v1/orders/{sn}"),
            Some(&token(7)),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(still["status"], "unpaid");
    let wrong_amount = json!({"order_sn": sn, "amount_cents": 1, "payment_ref": "psp-1"});
    problem(
        pay_callback(&gw, &wrong_amount, None).await,
        StatusCode::CONFLICT,
        "amount_mismatch",
    )
    .await;
    let paid = ok(pay_callback(&gw, &pay, None).await, StatusCode::OK).await;
    assert_eq!(paid["status"], "paid");
    // A replay is idempotent.
    let again = ok(pay_callback(&gw, &pay, None).await, StatusCode::OK).await;
    assert_eq!(
        (again["status"].as_str(), again["paid_at"].clone()),
        (Some("paid"), paid["paid_at"].clone())
    );
    // Paid orders cannot be cancelled.
    let conflict = problem(
        call(
            &gw,
            Method::POST,
            &format!("/v1/orders/{sn}/cancel"),
            Some(&token(7)),
            None,
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_eq!(conflict["details"]["status"], "paid");

    // Another order, cancelled: its stock comes back, and a callback for it is not_payable.
    let second = create(&gw, 7, &[(a, 3)]).await;
    let sn2 = second["order_sn"].as_str().unwrap().to_owned();
    assert_eq!(available(&gw, a).await, 5);
    let cancelled = ok(
        call(
            &gw,
            Method::POST,
            &format!("/v1/orders/{sn2}/cancel"),
            Some(&token(7)),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    eventually(
        "the cancelled order's stock to come back",
        SETTLE,
        || async { (available(&gw, a).await == 8).then_some(()) },
    )
    .await;
    let late = json!({"order_sn": sn2, "amount_cents": 3750});
    let refused = problem(
        pay_callback(&gw, &late, None).await,
        StatusCode::CONFLICT,
        "not_payable",
    )
    .await;
    assert_eq!(refused["details"]["status"], "cancelled");

    // Contract errors keep their details: more than there is.
    let short = problem(
        call(
            &gw,
            Method::POST,
            "/v1/orders",
            Some(&token(7)),
            Some(order_body(&[(a, 9)])),
        )
        .await,
        StatusCode::CONFLICT,
        "insufficient_stock",
    )
    .await;
    assert_eq!(
        short["details"],
        json!({"goods_id": a, "requested": 9, "available": 8})
    );
    // The user id of a body is ignored: the token's user owns the order.
    let mut body = order_body(&[(a, 1)]);
    body["user_id"] = json!(99);
    let created = ok(
        call(&gw, Method::POST, "/v1/orders", Some(&token(7)), Some(body)).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["user_id"], 7);
    // Idempotency-Key: the same key returns the same order.
    let keyed = |key: &'static str| {
        http()
            .post(gw.at("/v1/orders"))
            .bearer_auth(token(7))
            .header("idempotency-key", key)
            .json(&order_body(&[(a, 1)]))
            .send()
    };
    let first = ok(keyed("cart-1").await.unwrap(), StatusCode::CREATED).await;
    let repeat = ok(keyed("cart-1").await.unwrap(), StatusCode::CREATED).await;
    assert_eq!(first["order_sn"], repeat["order_sn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_limits_413_415_429_and_bad_bodies() {
    let app = TestApp::start(&[Worker::Goods]).await;
    // One create per 100 s after a burst of two: the third is refused however slow the run.
    let gw = app
        .spawn_gateway(&[
            ("SHOP_GATEWAY__ORDERS_PER_SECOND", "0.01"),
            ("SHOP_GATEWAY__ORDER_BURST", "2"),
        ])
        .await;
    let admin = admin_token(ADMIN);
    let big =
        json!({"category_id": 1, "title": "x", "price_cents": 1, "brief": "x".repeat(70 * 1024)});
    problem(
        call(
            &gw,
            Method::POST,
            "/v1/admin/goods",
            Some(&admin),
            Some(big),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    // A streamed body without Content-Length is cut at the limit too.
    let chunks = futures::stream::iter((0..80).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let streamed = http()
        .post(gw.at("/v1/admin/goods"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    problem(streamed, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let text = http()
        .post(gw.at("/v1/admin/goods"))
        .bearer_auth(&admin)
        .header("content-type", "text/plain")
        .body(r#"{"category_id":1,"title":"x","price_cents":1}"#)
        .send()
        .await
        .unwrap();
    problem(
        text,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let none = http()
        .post(gw.at("/v1/payments/callback"))
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(
        none,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    for bad in [
        r#"{"category_id":1,"#,
        "[1,2]",
        r#"{"category_id":"one","title":"x","price_cents":1}"#,
        r#"{"category_id":1,"title":"","price_cents":1}"#,
        r#"{"category_id":1,"title":"x","price_cents":1.5}"#,
    ] {
        let r = http()
            .post(gw.at("/v1/admin/goods"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        problem(r, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    for bad in [
        json!({}),
        json!({"items": [], "address": "a", "receiver_name": "b", "receiver_phone": "c"}),
    ] {
        problem(
            call(&gw, Method::POST, "/v1/orders", Some(&token(3)), Some(bad)).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
    // The burst is spent (two creates above): the next is 429 with Retry-After, for this user only.
    let limited = call(
        &gw,
        Method::POST,
        "/v1/orders",
        Some(&token(3)),
        Some(order_body(&[(1, 1)])),
    )
    .await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Another user is not limited (no order worker here: unavailable, not rate_limited).
    problem(
        call(
            &gw,
            Method::POST,
            "/v1/orders",
            Some(&token(4)),
            Some(order_body(&[(1, 1)])),
        )
        .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
    let long_key = http()
        .post(gw.at("/v1/orders"))
        .bearer_auth(token(5))
        .header("idempotency-key", "k".repeat(201))
        .json(&order_body(&[(1, 1)]))
        .send()
        .await
        .unwrap();
    problem(long_key, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_request_timeout_is_503_with_retry_after() {
    let mut app = TestApp::start(&[Worker::Goods]).await;
    let gw = app
        .spawn_gateway(&[
            ("SHOP_GATEWAY__REQUEST_TIMEOUT", "1s"),
            ("SHOP_GATEWAY__NATS_TIMEOUT", "60s"),
        ])
        .await;
    ok(
        call(&gw, Method::GET, "/v1/goods", None, None).await,
        StatusCode::OK,
    )
    .await;
    // A goods worker that is stopped (SIGSTOP) never answers: the request times out.
    let pid = app.worker(0).pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let timed_out = call(&gw, Method::GET, "/v1/goods", None, None).await;
    let resumed = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success();
    problem(timed_out, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(resumed);
}

/// The NATS server's permission errors seen by one connection.
async fn violations_of(
    app: &TestApp,
    user: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(
        user.into(),
        shop_tests::stack::PASSWORD.into(),
    )
    .custom_inbox_prefix("_INBOX.gateway")
    .event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(error) = event {
                let _ = tx.send(error.to_string());
            }
        }
    })
    .connect(app.nats_url())
    .await
    .unwrap();
    (client, rx)
}

async fn next_violation(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, subject: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let Ok(Some(error)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            panic!("no permissions violation for {subject}");
        };
        if error.to_lowercase().contains("permissions violation") && error.contains(subject) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_nats_user_cannot_deduct_nor_write_transaction_messages() {
    let app = TestApp::start(&[Worker::Goods, Worker::Stock]).await;
    let user = format!("a{}-gateway", app.account);
    let (client, mut violations) = violations_of(&app, &user).await;
    // What its routes need works.
    let room = async_nats::Request::new()
        .payload(r#"{"room_id":1}"#.into())
        .timeout(Some(Duration::from_secs(10)));
    let reply = client.send_request("goods.room.list", room).await.unwrap();
    assert!(!reply.payload.is_empty());
    // A deduct never reaches the stock worker.
    let deduct = async_nats::Request::new()
        .payload(r#"{"order_sn":"77","items":[{"goods_id":1,"quantity":1}]}"#.into())
        .timeout(Some(Duration::from_secs(2)));
    assert!(client.send_request("stock.deduct", deduct).await.is_err());
    next_violation(&mut violations, "stock.deduct").await;
    client
        .publish(
            "stock.rollback.77",
            r#"{"order_sn":"77","reason":"cancelled"}"#.into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
    next_violation(&mut violations, "stock.rollback.77").await;
    client.publish("order.txn.77", "{}".into()).await.unwrap();
    client.flush().await.unwrap();
    next_violation(&mut violations, "order.txn.77").await;
    let sell = app.ok("stock.sell_detail", json!({"order_sn": "77"})).await;
    assert_eq!(sell["status"], "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_concurrent_http_load_keeps_every_invariant() {
    let app = TestApp::start_with_env(ALL, FAST).await;
    let gw = Arc::new(
        app.spawn_gateway(&[
            ("SHOP_GATEWAY__ORDERS_PER_SECOND", "1000"),
            ("SHOP_GATEWAY__ORDER_BURST", "1000"),
        ])
        .await,
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(goods(&gw, 100 + i, 30).await);
    }
    let ids = Arc::new(ids);
    let tasks = (0..120).map(|i: i64| {
        let gw = gw.clone();
        let ids = ids.clone();
        async move {
            let user = i % 12 + 1;
            let items = order_body(&[(ids[(i % 3) as usize], 1 + i % 2)]);
            let response = call(
                &gw,
                Method::POST,
                "/v1/orders",
                Some(&token(user)),
                Some(items),
            )
            .await;
            if response.status() != StatusCode::CREATED {
                let body = problem(response, StatusCode::CONFLICT, "insufficient_stock").await;
                assert!(body["details"]["available"].is_i64());
                return 0;
            }
            let order: Value = response.json().await.unwrap();
            let sn = order["order_sn"].as_str().unwrap().to_owned();
            match i % 3 {
                0 => {
                    let pay = json!({"order_sn": sn, "amount_cents": order["total_cents"]});
                    let _ = pay_callback(&gw, &pay, None).await;
                }
                1 => {
                    ok(
                        call(
                            &gw,
                            Method::POST,
                            &format!("/v1/orders/{sn}/cancel"),
                            Some(&token(user)),
                            None,
                        )
                        .await,
                        StatusCode::OK,
                    )
                    .await;
                }
                _ => {}
            }
            1
        }
    });
    let created: i32 = join_all(tasks).await.into_iter().sum();
    assert!(created > 0);
    // Every unpaid order closes at its deadline; then stock and orders agree.
    eventually("all unpaid orders to close", SETTLE, || async {
        let unpaid = app
            .order_count("SELECT count(*) FROM orders WHERE status = 'unpaid'")
            .await;
        (unpaid == 0).then_some(())
    })
    .await;
    let stock = app.db(Worker::Stock).await;
    eventually("conservation and a clean audit", SETTLE, || {
        let stock = stock.clone();
        let app = &app;
        async move {
            conservation(&stock).await.ok()?;
            app.run_shop(&["audit", "--grace", "0s"])
                .status
                .success()
                .then_some(())
        }
    })
    .await;
    let paid = app
        .order_count("SELECT count(*) FROM orders WHERE status = 'paid'")
        .await;
    assert!(paid > 0, "no order was paid through the callback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_openapi_is_valid_and_lists_every_route() {
    let app = TestApp::start(&[Worker::Goods]).await;
    let gw = app.spawn_gateway(&[]).await;
    let response = call(&gw, Method::GET, "/openapi.json", None, None).await;
    let doc = ok(response, StatusCode::OK).await;
    assert_eq!(doc["openapi"], "3.1.0");
    // A real validator: openapi-spec-validator (installed into .tools/venv by ./dev).
    let validator = openapi_validator();
    let file = shop_tests::stack::stack()
        .dir
        .join(format!("openapi-{}.json", app.account));
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", validator.display()));
    let report: String = String::from_utf8_lossy(&out.stdout)
        .chars()
        .take(3000)
        .collect();
    assert!(
        out.status.success(),
        "the OpenAPI document is invalid:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every documented route exists in the router (the reverse is the gateway's unit test,
    // which compares the router's own table with the document).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{room_id}", "1")
                .replace("{goods_id}", "1")
                .replace("{order_sn}", "1");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = http()
                .request(method.clone(), gw.at(&concrete))
                .timeout(Duration::from_secs(3))
                .send()
                .await;
            // An event stream answers its head and stays open: that is the route existing.
            let Ok(response) = response else { continue };
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !body.contains("no such route"),
                "{method} {path} is documented but not routed: {status} {body}"
            );
        }
    }
    let page = http().get(gw.at("/docs")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/openapi.json") && !html.contains("https://"),
        "the docs page must load nothing from the internet"
    );
}

fn openapi_validator() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("SHOP_TEST_OPENAPI_VALIDATOR") {
        return path.into();
    }
    let beside_nats =
        shop_tests::stack::nats_server_binary().with_file_name("openapi-spec-validator");
    let in_project =
        shop_tests::stack::project_root().join(".tools/venv/bin/openapi-spec-validator");
    [in_project, beside_nats]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "openapi-spec-validator not found: ./dev test installs it into .tools/venv \
                (or set SHOP_TEST_OPENAPI_VALIDATOR)"
            )
        })
}

/// The events of a Server-Sent Events response, as `(event, data)`.
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Events {
    async fn open(gw: &Gateway, path: &str) -> Events {
        let response = Events::request(gw, path).await;
        assert_eq!(response.status(), StatusCode::OK);
        Events::of(response)
    }

    /// The response to a stream's request, whatever its status.
    async fn request(gw: &Gateway, path: &str) -> Response {
        http()
            .get(gw.at(path))
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .unwrap()
    }

    /// The events of a 200 response.
    fn of(response: Response) -> Events {
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event; `None` when the stream ends.
    async fn next(&mut self) -> Option<(String, Value)> {
        use futures::StreamExt;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if event.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((event, serde_json::from_str(&data).unwrap()));
            }
            let chunk = self.body.next().await?.ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads the rest of the stream until it ends (within `within`): `Ok` when it ended
    /// cleanly (the chunked body's last chunk), `Err` on a reset, a cut body or the deadline.
    async fn end(&mut self, within: Duration) -> Result<(), String> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Err(format!("the stream did not end within {within:?}")),
                Ok(None) => return Ok(()),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(error))) => return Err(format!("the stream broke: {error:?}")),
            }
        }
    }

    /// Waits (with a deadline) for the first event that `pick` accepts.
    async fn until<T>(&mut self, what: &str, mut pick: impl FnMut(&str, &Value) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let next = tokio::time::timeout_at(deadline, self.next()).await;
            let Ok(Some((event, data))) = next else {
                panic!("no event: {what}")
            };
            if let Some(found) = pick(&event, &data) {
                return found;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_room_events_stream_stock_and_room_changes_and_end_on_shutdown() {
    let app = TestApp::start_with_env(ALL, FAST).await;
    let mut gw = app
        .spawn_gateway(&[("SHOP_GATEWAY__KEEP_ALIVE", "1s")])
        .await;
    let admin = admin_token(ADMIN);
    let a = goods(&gw, 100, 10).await;
    let b = goods(&gw, 200, 10).await;
    ok(
        call(
            &gw,
            Method::PUT,
            "/v1/admin/rooms/3",
            Some(&admin),
            Some(json!({"goods_ids": [a, b], "current_goods_id": a})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    problem(
        http()
            .get(gw.at("/v1/rooms/0/events"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;

    let mut events = Events::open(&gw, "/v1/rooms/3/events").await;
    let (event, room) = events.next().await.unwrap();
    assert_eq!(
        (event.as_str(), room["current_goods_id"].as_i64()),
        ("room", Some(a))
    );
    assert_eq!(room["goods"][1]["available"], 10);

    // A purchase (through the gateway) reaches the stream as a stock event.
    create(&gw, 7, &[(b, 2)]).await;
    events
        .until("stock of b to be 8", |event, data| {
            (event == "stock" && data == &json!({"goods_id": b, "available": 8})).then_some(())
        })
        .await;
    // So does an admin restock, and a room change from another client (over NATS here).
    app.ok(
        "goods.room.set",
        json!({"room_id": 3, "goods_ids": [a, b], "current_goods_id": b}),
    )
    .await;
    events
        .until("the room to present b", |event, data| {
            (event == "room" && data["current_goods_id"] == b).then_some(())
        })
        .await;
    // Another room's changes do not reach this stream; this room's stock does.
    app.ok("goods.room.set", json!({"room_id": 4, "goods_ids": [a]}))
        .await;
    ok(
        call(
            &gw,
            Method::PUT,
            &format!("/v1/admin/stock/{a}"),
            Some(&admin),
            Some(json!({"available": 50})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    events
        .until("stock of a to be 50", |event, data| {
            assert!(
                !(event == "room" && data["room_id"] == 4),
                "room 4 leaked into room 3's stream"
            );
            (event == "stock" && data == &json!({"goods_id": a, "available": 50})).then_some(())
        })
        .await;

    // Shutdown ends the stream cleanly and the process exits 0.
    let status = gw
        .stop(Duration::from_secs(20))
        .await
        .expect("the gateway stops while a stream is open");
    assert!(status.success(), "{status:?}\n{}", gw.log_text());
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while events.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end");
}

/// Past `gateway.max_event_streams` a new event stream is refused at once: 503 `unavailable`
/// with `Retry-After`, as a problem; a stream that closes frees its place for the next viewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_event_streams_past_the_cap_are_503_until_one_closes() {
    let app = TestApp::start(&[Worker::Goods, Worker::Stock]).await;
    // A short keep-alive: the gateway notices a viewer that left on a failed write.
    let gw = app
        .spawn_gateway(&[
            ("SHOP_GATEWAY__MAX_EVENT_STREAMS", "2"),
            ("SHOP_GATEWAY__KEEP_ALIVE", "100ms"),
        ])
        .await;
    let a = goods(&gw, 100, 10).await;
    app.ok("goods.room.set", json!({"room_id": 5, "goods_ids": [a]}))
        .await;
    let path = "/v1/rooms/5/events";
    let mut first = Events::open(&gw, path).await;
    let mut second = Events::open(&gw, path).await;
    for events in [&mut first, &mut second] {
        let (event, _) = events.next().await.expect("the room comes first");
        assert_eq!(event, "room");
    }

    let refused = http().get(gw.at(path)).send().await.unwrap();
    let retry_after = refused.headers().get("retry-after").cloned();
    let body = problem(refused, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert_eq!(retry_after.unwrap(), "5", "{body}");
    assert_eq!(body["details"]["retry_after_ms"], 5000, "{body}");
    // The same refusal on a connection's first request (answered on the socket), and the
    // connection goes on with the next request.
    let mut raw = Raw::connect(&gw).await;
    raw.get(path, "").await;
    let head = raw.head().await;
    assert!(head.status.starts_with("HTTP/1.1 503"), "{head:?}");
    assert_eq!(head.get("retry-after"), Some("5"), "{head:?}");
    let body: Value = serde_json::from_str(&raw.body(&head).await).unwrap();
    assert_eq!(body["code"], "unavailable", "{body}");
    raw.get("/healthz", "").await;
    let head = raw.head().await;
    assert!(head.status.starts_with("HTTP/1.1 200"), "{head:?}");

    drop(first);
    let response = eventually("the closed stream's place to be free", SETTLE, || async {
        let response = Events::request(&gw, path).await;
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await;
    let mut third = Events::of(response);
    let (event, room) = third
        .next()
        .await
        .expect("the admitted stream's first event");
    assert_eq!(
        (event.as_str(), room["room_id"].as_i64()),
        ("room", Some(5))
    );
    // The one still open was never cut.
    ok(
        call(
            &gw,
            Method::PUT,
            &format!("/v1/admin/stock/{a}"),
            Some(&admin_token(ADMIN)),
            Some(json!({"available": 4})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    for events in [&mut second, &mut third] {
        events
            .until("stock of a to be 4", |event, data| {
                (event == "stock" && data == &json!({"goods_id": a, "available": 4})).then_some(())
            })
            .await;
    }
}

/// A request whose handler is running: its head sent with `Expect: 100-continue`, and the
/// gateway's `100 Continue` received (hyper sends it when the handler starts reading the
/// body), so the request is in flight until [`InFlight::finish`] sends the body.
struct InFlight {
    tcp: tokio::net::TcpStream,
    body: String,
}

impl InFlight {
    async fn start(gw: &Gateway, path: &str, bearer: &str, body: Value) -> InFlight {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = gw.url.trim_start_matches("http://");
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = body.to_string();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout_at(deadline, tcp.read(&mut buf))
                .await
                .expect("no 100 Continue within 10 s")
                .unwrap();
            assert!(
                n > 0,
                "closed before 100 Continue: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 100 Continue"), "{got}");
        InFlight { tcp, body }
    }

    /// Sends the body and reads the whole response (the server closes the connection).
    async fn finish(mut self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.tcp.write_all(self.body.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), self.tcp.read_to_end(&mut response))
            .await
            .expect("the response did not end within 20 s")
            .unwrap();
        String::from_utf8_lossy(&response).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_stops_gracefully_finishing_requests_and_ending_streams() {
    let app = TestApp::start(ALL).await;
    let mut gw = app.spawn_gateway(&[]).await;
    let admin = admin_token(ADMIN);
    let a = goods(&gw, 100, 10).await;
    ok(
        call(
            &gw,
            Method::PUT,
            "/v1/admin/rooms/5",
            Some(&admin),
            Some(json!({"goods_ids": [a]})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let mut events = Events::open(&gw, "/v1/rooms/5/events").await;
    assert_eq!(events.next().await.unwrap().0, "room");
    let request = InFlight::start(
        &gw,
        &format!("/v1/admin/stock/{a}"),
        &admin,
        json!({"available": 77}),
    )
    .await;

    // SIGTERM: the stream ends cleanly at once (which shows the signal arrived), the request
    // in flight still completes, then the process exits 0.
    let finishing = async {
        let ended = events.end(Duration::from_secs(10)).await;
        (ended, request.finish().await)
    };
    let (status, (ended, response)) = tokio::join!(gw.stop(Duration::from_secs(20)), finishing);
    let log = gw.log_text();
    ended.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}\n{log}");
    assert!(response.contains("\"available\":77"), "{response}");
    let status = status.unwrap_or_else(|| panic!("the gateway did not exit within 20 s\n{log}"));
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("stopping"), "{log}");

    // Past gateway.shutdown_timeout it gives up on what is still in flight, says so, and
    // exits non-zero.
    let mut gw = app
        .spawn_gateway(&[("SHOP_GATEWAY__SHUTDOWN_TIMEOUT", "1s")])
        .await;
    let stuck = InFlight::start(
        &gw,
        &format!("/v1/admin/stock/{a}"),
        &admin,
        json!({"available": 1}),
    )
    .await;
    let status = gw
        .stop(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("the gateway did not give up within 20 s\n{}", gw.log_text()));
    let log = gw.log_text();
    assert!(!status.success(), "{status:?}\n{log}");
    assert!(
        log.contains("abandoned 1 request(s) in flight and 0 event stream(s)"),
        "{log}"
    );
    drop(stuck);
    let stock = app.ok("stock.get", json!({"goods_ids": [a]})).await;
    assert_eq!(
        stock["items"][0]["available"], 77,
        "the abandoned request did nothing"
    );
}

/// One HTTP/1.1 connection driven by hand, so that a test chooses which requests share it
/// (the gateway answers a connection's first request differently when it is an event
/// stream's: on the socket itself, without hyper's connection).
struct Raw {
    tcp: tokio::net::TcpStream,
    read: Vec<u8>,
    addr: String,
}

/// A response head: the status line, and the headers (names lowercased) but `date`, sorted.
#[derive(Debug, PartialEq)]
struct Head {
    status: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Raw {
    async fn connect(gw: &Gateway) -> Raw {
        let addr = gw.url.trim_start_matches("http://").to_owned();
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        Raw {
            tcp,
            read: Vec::new(),
            addr,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// A GET of `path` with `extra` header lines (each ending in CRLF).
    async fn get(&mut self, path: &str, extra: &str) {
        let head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n", self.addr);
        self.send(head.as_bytes()).await;
    }

    /// Reads more of the connection; `false` once the gateway closed it.
    async fn fill(&mut self, deadline: tokio::time::Instant) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "nothing more within the deadline; read so far: {}",
                    String::from_utf8_lossy(&self.read)
                )
            })
            .unwrap_or(0);
        self.read.extend_from_slice(&buf[..n]);
        n > 0
    }

    /// The next response head (taken from what is read).
    async fn head(&mut self) -> Head {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            if let Some(end) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.read.drain(..end + 4).collect();
                let head = String::from_utf8(head).unwrap();
                let mut lines = head.trim_end().split("\r\n");
                let status = lines.next().unwrap().to_owned();
                let mut headers: Vec<(String, String)> = lines
                    .map(|line| {
                        let (name, value) = line.split_once(':').unwrap();
                        (name.to_ascii_lowercase(), value.trim().to_owned())
                    })
                    .filter(|(name, _)| name != "date")
                    .collect();
                headers.sort();
                return Head { status, headers };
            }
            assert!(self.fill(deadline).await, "closed before a response head");
        }
    }

    /// The body of a response with `content-length`.
    async fn body(&mut self, head: &Head) -> String {
        let length: usize = head.get("content-length").unwrap().parse().unwrap();
        let deadline = tokio::time::Instant::now() + SETTLE;
        while self.read.len() < length {
            assert!(self.fill(deadline).await, "closed inside a body");
        }
        String::from_utf8(self.read.drain(..length).collect()).unwrap()
    }

    /// Reads until `text` has come (each event is one chunk, so an event's text is never
    /// split by the chunked framing), and drops what came up to its end.
    async fn until(&mut self, text: &str) {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            if let Some(at) = self
                .read
                .windows(text.len())
                .position(|w| w == text.as_bytes())
            {
                self.read.drain(..at + text.len());
                return;
            }
            assert!(self.fill(deadline).await, "closed before {text:?}");
        }
    }
}

/// An event stream answered on the socket (a connection's first request) is the same
/// response as one answered by hyper (a request after another on its connection): the same
/// status and headers, CORS included, the same events and keep-alives. What that path does
/// not take is hyper's to answer as before: a malformed head is a 400, an invalid room a
/// problem, a head too large for it a stream all the same, and the connection goes on after
/// a response whose body ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_event_streams_answered_on_the_socket_keep_the_contract() {
    let app = TestApp::start(&[Worker::Goods, Worker::Stock]).await;
    let gw = app
        .spawn_gateway(&[("SHOP_GATEWAY__KEEP_ALIVE", "200ms")])
        .await;
    let a = goods(&gw, 100, 10).await;
    app.ok("goods.room.set", json!({"room_id": 6, "goods_ids": [a]}))
        .await;
    let path = "/v1/rooms/6/events";
    let origin = "Origin: http://viewer.example\r\nAccept: text/event-stream\r\n";

    let mut first = Raw::connect(&gw).await;
    first.get(path, origin).await;
    let first_head = first.head().await;
    let mut after = Raw::connect(&gw).await;
    after.get("/healthz", "").await;
    let health = after.head().await;
    assert!(health.status.starts_with("HTTP/1.1 200"), "{health:?}");
    after.body(&health).await;
    after.get(path, origin).await;
    let after_head = after.head().await;
    assert_eq!(
        first_head, after_head,
        "answered on the socket, then by hyper"
    );
    assert_eq!(first_head.status, "HTTP/1.1 200 OK");
    assert_eq!(first_head.get("content-type"), Some("text/event-stream"));
    assert_eq!(first_head.get("transfer-encoding"), Some("chunked"));
    assert_eq!(first_head.get("access-control-allow-origin"), Some("*"));

    for stream in [&mut first, &mut after] {
        stream.until("event: room\ndata: {\"room_id\":6").await;
        stream.until(":\n\n").await; // a keep-alive
    }
    ok(
        call(
            &gw,
            Method::PUT,
            &format!("/v1/admin/stock/{a}"),
            Some(&admin_token(ADMIN)),
            Some(json!({"available": 4})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let stock = format!("event: stock\ndata: {{\"goods_id\":{a},\"available\":4}}\n\n");
    for stream in [&mut first, &mut after] {
        stream.until(&stock).await;
    }

    // A malformed head: hyper's 400, and nothing else breaks.
    let mut malformed = Raw::connect(&gw).await;
    malformed
        .send(b"GET /v1/rooms/6/events HTTP/1.1\r\nBad Header\r\n\r\n")
        .await;
    let head = malformed.head().await;
    assert!(head.status.starts_with("HTTP/1.1 400"), "{head:?}");
    let mut garbage = Raw::connect(&gw).await;
    garbage.send(b"GET /v1/rooms/\x00\x01\xff\r\n\r\n").await;
    let head = garbage.head().await;
    assert!(head.status.starts_with("HTTP/1.1 400"), "{head:?}");
    // A client gone in the middle of its head.
    let mut gone = Raw::connect(&gw).await;
    gone.send(b"GET /v1/rooms/6/ev").await;
    drop(gone);

    // An invalid room on the socket path: the router's problem, then the connection goes on.
    let mut invalid = Raw::connect(&gw).await;
    invalid.get("/v1/rooms/0/events", "").await;
    let head = invalid.head().await;
    assert!(head.status.starts_with("HTTP/1.1 400"), "{head:?}");
    assert_eq!(head.get("content-type"), Some("application/problem+json"));
    let body: Value = serde_json::from_str(&invalid.body(&head).await).unwrap();
    assert_eq!(body["code"], "bad_request", "{body}");
    invalid.get("/healthz", "").await;
    let head = invalid.head().await;
    assert!(head.status.starts_with("HTTP/1.1 200"), "{head:?}");

    // A head larger than the socket path reads is hyper's, and still a stream.
    let mut large = Raw::connect(&gw).await;
    let pad = format!("X-Pad: {}\r\n", "p".repeat(12 * 1024));
    large.get(path, &pad).await;
    let head = large.head().await;
    assert_eq!(head.status, "HTTP/1.1 200 OK");
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    large.until("event: room\ndata: {\"room_id\":6").await;

    // The streams opened first were never cut, and the gateway is whole.
    ok(
        call(
            &gw,
            Method::PUT,
            &format!("/v1/admin/stock/{a}"),
            Some(&admin_token(ADMIN)),
            Some(json!({"available": 3})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let stock = format!("event: stock\ndata: {{\"goods_id\":{a},\"available\":3}}\n\n");
    for stream in [&mut first, &mut after, &mut large] {
        stream.until(&stock).await;
    }
    let log = gw.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
