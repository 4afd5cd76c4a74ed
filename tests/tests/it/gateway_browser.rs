//! The live-room page (CONTRACT section 7, issue 11 point 8) in a real headless chromium,
//! against a real gateway and real workers: what a viewer sees and can do, read from the
//! page's DOM, with the backend's answer checked next to it.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use shop_tests::gateway::{token, Gateway};
use shop_tests::stack::project_root;
use shop_tests::{Browser, TestApp, Worker};

const ALL: &[Worker] = &[Worker::Goods, Worker::Stock, Worker::Order];
const ROOM: i64 = 3;
const VIEWER: i64 = 7;
/// Long enough for a slow machine, short enough to fail a stuck page quickly.
const WITHIN: Duration = Duration::from_secs(15);

/// What the page shows, read from its DOM in one go.
#[derive(Debug, Clone, Deserialize)]
struct Seen {
    cards: Vec<Card>,
    live: String,
    error: String,
    order: String,
    order_sn: Option<String>,
    status: Option<String>,
    countdown: String,
    buy: bool,
    pay: bool,
    cancel: bool,
    /// Set by the test on the first paint; gone if the page was reloaded.
    marker: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Card {
    id: i64,
    current: bool,
    title: String,
    available: i64,
}

const READ: &str = r##"
const $ = id => document.getElementById(id);
return {
  cards: [...document.querySelectorAll("#goods .card")].map(c => ({
    id: Number(c.dataset.goodsId),
    current: c.classList.contains("current"),
    title: c.querySelector(".title").textContent,
    available: Number(c.querySelector(".available").textContent),
  })),
  live: $("live").textContent,
  error: $("error").textContent,
  order: $("order").textContent,
  order_sn: $("order").dataset.orderSn || null,
  status: $("order").dataset.status || null,
  countdown: $("countdown").textContent,
  buy: !$("buy").disabled,
  pay: !$("pay").disabled,
  cancel: !$("cancel").disabled,
  marker: window.__shopTestMarker === true,
};
"##;

async fn seen(browser: &Browser) -> Seen {
    serde_json::from_value(browser.js(READ, vec![]).await).expect("the page's state")
}

/// Waits until what the page shows satisfies `ok`; the last sight is in the panic.
async fn until(browser: &Browser, what: &str, ok: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let now = seen(browser).await;
        if ok(&now) {
            return now;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out after {WITHIN:?} waiting for the page to show {what}; it shows {now:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(browser: &Browser, id: &str) {
    browser
        .client
        .find(fantoccini::Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking #{id}: {e}"));
}

fn cards(seen: &Seen) -> Vec<(i64, bool, i64)> {
    seen.cards
        .iter()
        .map(|c| (c.id, c.current, c.available))
        .collect()
}

/// The order as its owner reads it over HTTP.
async fn order_status(gw: &Gateway, sn: &str) -> String {
    let response = reqwest::Client::new()
        .get(gw.at(&format!("/v1/orders/{sn}")))
        .bearer_auth(token(VIEWER))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let order: Value = response.json().await.unwrap();
    order["status"].as_str().unwrap().to_owned()
}

async fn goods(app: &TestApp, title: &str, price_cents: i64, available: i64) -> i64 {
    let id = app
        .ok(
            "goods.upsert",
            json!({"category_id": 1, "title": title, "price_cents": price_cents,
                   "head_imgs": ["https://img.example.com/never-loaded.jpg"]}),
        )
        .await["goods_id"]
        .as_i64()
        .unwrap();
    app.ok("stock.set", json!({"goods_id": id, "available": available}))
        .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_browser_live_room_page_buys_pays_cancels_and_follows_the_room() {
    let app = TestApp::start(ALL).await;
    let gw = app.spawn_gateway(&[]).await;
    let serum = goods(&app, "Hydrating serum 30ml", 12900, 40).await;
    let lipstick = goods(&app, "Matte lipstick #07", 8900, 25).await;
    let sunscreen = goods(&app, "Sunscreen SPF50 50ml", 6900, 12).await;
    let balm = goods(&app, "Cleansing balm 100g", 9900, 0).await;
    // The page opens before its room exists: the read and the event stream are refused
    // (404), and the page must still paint the room once another client creates it.
    let browser = Browser::start().await;
    browser
        .client
        .goto(&gw.at(&format!("/rooms/{ROOM}#token={}", token(VIEWER))))
        .await
        .expect("opening the page");
    let empty = until(&browser, "that the room does not exist", |s| {
        s.error.starts_with("not_found")
    })
    .await;
    assert!(empty.cards.is_empty() && empty.live != "LIVE", "{empty:#?}");
    browser
        .js("window.__shopTestMarker = true; return null;", vec![])
        .await;
    // The room's order is not the ids' order, so the page must keep the room's.
    app.ok(
        "goods.room.set",
        json!({"room_id": ROOM, "goods_ids": [lipstick, serum, sunscreen, balm],
               "current_goods_id": serum}),
    )
    .await;

    // The room's goods in the room's order, the presented one marked, the stream live.
    let first = until(&browser, "the room's goods and a live stream", |s| {
        s.cards.len() == 4 && s.live == "LIVE"
    })
    .await;
    assert_eq!(
        cards(&first),
        vec![
            (lipstick, false, 25),
            (serum, true, 40),
            (sunscreen, false, 12),
            (balm, false, 0)
        ],
        "{first:#?}"
    );
    assert_eq!(first.cards[1].title, "Hydrating serum 30ml");
    assert!(first.error.is_empty() && first.marker, "{first:#?}");

    // Buying through the page: an unpaid order with its countdown, and one fewer shown.
    until(&browser, "an enabled buy button", |s| s.buy).await;
    click(&browser, "buy").await;
    let bought = until(&browser, "the unpaid order and its countdown", |s| {
        s.status.as_deref() == Some("unpaid") && s.countdown.starts_with("pay within ")
    })
    .await;
    let countdown = bought.countdown.trim_start_matches("pay within ");
    let (minutes, seconds) = countdown.split_once(':').expect("m:ss");
    assert!(
        minutes.parse::<u32>().is_ok() && seconds.len() == 2 && seconds.parse::<u32>().is_ok(),
        "{bought:#?}"
    );
    assert!(bought.pay && bought.cancel, "{bought:#?}");
    let paid_sn = bought.order_sn.clone().expect("the order's number");
    assert!(
        bought
            .order
            .starts_with(&format!("#{paid_sn} · unpaid · ¥129.00")),
        "{bought:#?}"
    );
    until(&browser, "available 39 on the bought goods", |s| {
        s.cards.iter().any(|c| c.id == serum && c.available == 39)
    })
    .await;

    // Another client presents other goods: the highlight moves, no reload.
    app.ok(
        "goods.room.set",
        json!({"room_id": ROOM, "goods_ids": [lipstick, serum, sunscreen, balm],
               "current_goods_id": sunscreen}),
    )
    .await;
    let moved = until(&browser, "the highlight on the sunscreen", |s| {
        s.cards.iter().any(|c| c.id == sunscreen && c.current)
    })
    .await;
    assert_eq!(
        cards(&moved),
        vec![
            (lipstick, false, 25),
            (serum, false, 39),
            (sunscreen, true, 12),
            (balm, false, 0)
        ]
    );
    assert!(moved.marker, "the page was reloaded");

    if let Some(path) = std::env::var_os("SHOP_TEST_SCREENSHOT") {
        let path = project_root().join(path);
        std::fs::write(&path, browser.screenshot().await)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    // The dev pay button pays the order (the callback, signed with the dev secret).
    click(&browser, "pay").await;
    until(&browser, "the order paid", |s| {
        s.status.as_deref() == Some("paid") && !s.pay && !s.cancel && s.countdown.is_empty()
    })
    .await;
    assert_eq!(order_status(&gw, &paid_sn).await, "paid");

    // A second order, of what is presented now, cancelled from the page: stock comes back.
    click(&browser, "buy").await;
    let second = until(&browser, "a second unpaid order", |s| {
        s.status.as_deref() == Some("unpaid") && s.order_sn.as_deref() != Some(paid_sn.as_str())
    })
    .await;
    let cancelled_sn = second.order_sn.clone().unwrap();
    until(&browser, "available 11 on the sunscreen", |s| {
        s.cards
            .iter()
            .any(|c| c.id == sunscreen && c.available == 11)
    })
    .await;
    click(&browser, "cancel").await;
    let last = until(&browser, "the order cancelled and its stock back", |s| {
        s.status.as_deref() == Some("cancelled")
            && s.cards
                .iter()
                .any(|c| c.id == sunscreen && c.available == 12)
    })
    .await;
    assert_eq!(order_status(&gw, &cancelled_sn).await, "cancelled");
    assert!(last.error.is_empty() && last.marker, "{last:#?}");

    // Everything the page loaded came from the gateway: nothing from the internet.
    let loaded = browser
        .js(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            vec![],
        )
        .await;
    let origin = format!("{}/", gw.url);
    for url in loaded.as_array().unwrap() {
        let url = url.as_str().unwrap();
        assert!(url.starts_with(&origin), "the page loaded {url}");
    }
    browser.client.clone().close().await.ok();
}
