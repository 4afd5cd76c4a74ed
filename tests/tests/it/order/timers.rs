//! Pay deadlines as message schedules (`order.timer = "schedule"`, CONTRACT section 5 "Timer
//! at scale"): a waiting order holds no consumer slot, a deadline closes an unpaid order and
//! leaves a paid one alone, and the database clock, not the server's, decides a close.
//!
//! These tests set the mode themselves; every other order test runs in both modes (`./dev
//! test` runs them again with `SHOP_TEST_ORDER_TIMER=nak_delay`).

use super::*;
use shop_contracts::txn::OrderStreams;
use shop_contracts::OrderSn;

/// Half messages stored, in every order partition's `ORDER_TXN` (`ORDER_TXN_P<p>`).
async fn half_messages(app: &TestApp) -> Option<u64> {
    app.messages_in_order_streams(OrderStreams::is_txn_stream)
        .await
}

/// Deadlines stored, in every order partition's `ORDER_TIMERS` (`ORDER_TIMERS_P<p>`).
async fn deadlines(app: &TestApp) -> Option<u64> {
    app.messages_in_order_streams(OrderStreams::is_timers_stream)
        .await
}

/// The streams of `sn`'s order partition.
fn streams_of(app: &TestApp, sn: &str) -> OrderStreams {
    app.order_streams_of(sn.parse().unwrap())
}

/// Waits until every half message is acked and `ORDER_TIMERS` holds `scheduled` deadlines.
async fn wait_scheduled(app: &TestApp, scheduled: u64) {
    eventually(
        &format!("every half message acked and {scheduled} deadlines scheduled"),
        SETTLE,
        || async move {
            let txn = half_messages(app).await?;
            let timers = deadlines(app).await?;
            (txn == 0 && timers == scheduled).then_some(())
        },
    )
    .await;
}

/// Whether the database says order `sn` closed at or after its deadline.
async fn closed_on_time(app: &TestApp, sn: &str) -> bool {
    let orders = app.order_db_of(sn.parse().unwrap()).await;
    sqlx::query_scalar("SELECT closed_at >= pay_deadline FROM orders WHERE order_sn = $1")
        .bind(sn.parse::<i64>().unwrap())
        .fetch_one(&orders)
        .await
        .unwrap()
}

/// Stores a schedule for `sn` by hand, as the worker does, to fire `in_ms` from now.
async fn schedule_by_hand(app: &TestApp, sn: &str, in_ms: i64) {
    let orders = app.order_db_of(sn.parse().unwrap()).await;
    let at: String = sqlx::query_scalar(
        "SELECT to_char((now() + $1 * interval '1 millisecond') AT TIME ZONE 'UTC', \
                        'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
    )
    .bind(in_ms as f64)
    .fetch_one(&orders)
    .await
    .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Schedule", format!("@at {at}").as_str());
    let streams = streams_of(app, sn);
    let sn_typed = OrderSn::parse(sn).unwrap();
    headers.insert(
        "Nats-Schedule-Target",
        streams.deadline_due_subject(sn_typed).as_str(),
    );
    app.jetstream()
        .publish_with_headers(
            streams.deadline_schedule_subject(sn_typed),
            headers,
            serde_json::to_vec(&json!({"order_sn": sn})).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// A create whose worker died after its deduct: its half message and its deduct of
/// `quantity` of `goods`, and no order.
async fn died_after_its_deduct(app: &TestApp, sn: &str, goods: i64, quantity: i64) {
    let items = json!([{"goods_id": goods, "quantity": quantity}]);
    let half = json!({"order_sn": sn, "items": items});
    let subject = streams_of(app, sn).half_message_subject(OrderSn::parse(sn).unwrap());
    store(app, subject, &half).await;
    app.ok("stock.deduct", json!({"order_sn": sn, "items": items}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_orders_hold_no_consumer_slot_so_a_failed_create_is_still_rolled_back() {
    // Three times more orders wait for payment than the checker has slots. In nak_delay mode
    // they would fill every slot, and the half message of a create whose worker died after
    // its deduct would wait in the stream until a deadline freed one (CONTRACT section 5).
    let app = TestApp::start_with_env(
        ALL,
        &[
            ("SHOP_ORDER__TIMER", "schedule"),
            ("SHOP_ORDER__PAY_TIMEOUT", "10m"),
            ("SHOP_ORDER__CHECK_DELAY", "1s"),
            ("SHOP_ORDER__MAX_ACK_PENDING", "10"),
        ],
    )
    .await;
    let a = goods(&app, 100, 100).await;
    for user in 1..=30 {
        app.ok("order.create", create_body(user, &[(a, 1)])).await;
    }
    wait_scheduled(&app, 30).await;
    eventually(
        "30 scheduled timers in $SRV.STATS.order",
        SETTLE,
        || async {
            let data = timer_stats(&app).await?;
            (data["scheduled_timers"] == 30 && data["checker_pending_timers"] == 0).then_some(())
        },
    )
    .await;

    // `shop audit` finds each waiting order's timer in ORDER_TIMERS, and names the one whose
    // schedule is purged by hand.
    let audit = |app: &TestApp| {
        let out = app.run_shop(&["audit", "--grace", "0s", "--json"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.success(), report)
    };
    let (ok, report) = audit(&app);
    assert!(ok, "30 scheduled orders: {report}");
    assert_eq!(report["unpaid_checked"], 30, "{report}");
    let mut timeless = i64::MAX;
    for orders in app.order_dbs().await {
        let first: Option<i64> = sqlx::query_scalar("SELECT min(order_sn) FROM orders")
            .fetch_one(&orders)
            .await
            .unwrap();
        timeless = timeless.min(first.unwrap_or(i64::MAX));
    }
    let streams = app.order_streams_of(timeless);
    let timers = app
        .jetstream()
        .get_stream(streams.timers_stream())
        .await
        .unwrap();
    timers
        .purge()
        .filter(streams.deadline_schedule_subject(OrderSn::new(timeless).unwrap()))
        .await
        .unwrap();
    let (ok, report) = audit(&app);
    assert!(!ok, "an order without its schedule passed: {report}");
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["kind"], "unpaid_without_timer", "{report}");
    assert_eq!(findings[0]["order_sn"], timeless.to_string(), "{report}");

    // A create that died after its deduct: a half message and a deduct, and no order.
    died_after_its_deduct(&app, "7000000000000001", a, 5).await;
    assert_eq!(level(&app, a).await, (65, 35));
    wait_level(&app, a, (70, 30)).await;
    check_invariants(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_orders_half_message_is_done_with_at_its_first_look_and_a_missing_one_waits() {
    // The checker looks at a half message's first delivery a moment after it arrives: an
    // order already committed is decided there (its deadline scheduled, its half message
    // acked), long before the check delay; a missing order is never fenced at that look,
    // whatever its age: only a later delivery, which the server holds for the check delay,
    // may say "never committed".
    let app = TestApp::start_with_env(
        ALL,
        &[
            ("SHOP_ORDER__TIMER", "schedule"),
            ("SHOP_ORDER__PAY_TIMEOUT", "10m"),
            ("SHOP_ORDER__CHECK_DELAY", "1h"),
        ],
    )
    .await;
    let a = goods(&app, 100, 100).await;
    // A create that died after its deduct, stored first: its first look comes before the
    // others' (the consumer delivers in stream order).
    died_after_its_deduct(&app, "7000000000000002", a, 5).await;
    for user in 1..=10 {
        app.ok("order.create", create_body(user, &[(a, 1)])).await;
    }
    eventually(
        "the ten orders' deadlines scheduled and their half messages acked, the orphan's kept",
        SETTLE,
        || async {
            let txn = half_messages(&app).await?;
            let timers = deadlines(&app).await?;
            (txn == 1 && timers == 10).then_some(())
        },
    )
    .await;
    let fenced = app.order_count("SELECT count(*) FROM aborted_orders").await;
    assert_eq!(fenced, 0, "a first look fenced an order");
    assert_eq!(
        level(&app, a).await,
        (85, 15),
        "the orphan's stock came back early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fired_deadline_closes_an_unpaid_order_and_leaves_a_paid_one() {
    let app = TestApp::start_with_env(
        ALL,
        &[
            ("SHOP_ORDER__TIMER", "schedule"),
            ("SHOP_ORDER__PAY_TIMEOUT", "4s"),
            ("SHOP_ORDER__CHECK_DELAY", "1s"),
        ],
    )
    .await;
    let a = goods(&app, 100, 10).await;
    let unpaid = sn_of(&app.ok("order.create", create_body(1, &[(a, 2)])).await);
    let paid = sn_of(&app.ok("order.create", create_body(2, &[(a, 3)])).await);
    wait_scheduled(&app, 2).await;
    app.ok("order.pay", json!({"order_sn": paid, "amount_cents": 300}))
        .await;

    wait_status(&app, &unpaid, "closed").await;
    assert!(
        closed_on_time(&app, &unpaid).await,
        "closed before its deadline"
    );
    // Both deadlines fired and were acked: the work queue keeps nothing.
    eventually("ORDER_TIMERS to empty", SETTLE, || async {
        (deadlines(&app).await? == 0).then_some(())
    })
    .await;
    wait_level(&app, a, (7, 3)).await;
    assert_eq!(
        app.ok("order.get", json!({"order_sn": paid})).await["status"],
        "paid"
    );
    check_invariants(&app).await;
    wait_outbox_drained(&app).await;
    assert_eq!(events_of(&app, &unpaid).await, ["created", "closed"]);
    assert_eq!(events_of(&app, &paid).await, ["created", "paid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_fired_early_or_twice_closes_once_and_not_before_the_database_says() {
    // The server's clock fires a deadline; the database's clock decides it. A schedule that
    // fires early (a server clock ahead, say) is nakked until pay_deadline; a due message
    // fired again (a leader change can re-fire one) finds the order closed and does nothing.
    let app = TestApp::start_with_env(
        ALL,
        &[
            ("SHOP_ORDER__TIMER", "schedule"),
            ("SHOP_ORDER__PAY_TIMEOUT", "8s"),
            ("SHOP_ORDER__CHECK_DELAY", "1s"),
        ],
    )
    .await;
    let a = goods(&app, 100, 10).await;
    let sn = sn_of(&app.ok("order.create", create_body(1, &[(a, 4)])).await);
    wait_scheduled(&app, 1).await;
    // Replace the schedule with one that fires at once, far before the deadline.
    schedule_by_hand(&app, &sn, 100).await;
    let closer = app
        .jetstream()
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            "order-timer-closer",
            streams_of(&app, &sn).timers_stream(),
        )
        .await
        .unwrap();
    eventually("the early deadline to reach the closer", SETTLE, || {
        let mut closer = closer.clone();
        async move { (closer.info().await.ok()?.delivered.stream_sequence > 0).then_some(()) }
    })
    .await;
    let orders = app.order_db_of(sn.parse().unwrap()).await;
    let before_deadline: bool =
        sqlx::query_scalar("SELECT now() < pay_deadline FROM orders WHERE order_sn = $1")
            .bind(sn.parse::<i64>().unwrap())
            .fetch_one(&orders)
            .await
            .unwrap();
    assert!(
        before_deadline,
        "the machine was too slow for this test's 8 s pay window"
    );
    let order = app.ok("order.get", json!({"order_sn": sn})).await;
    assert_eq!(order["status"], "unpaid", "an early fire closed the order");

    wait_status(&app, &sn, "closed").await;
    assert!(
        closed_on_time(&app, &sn).await,
        "closed before its deadline"
    );
    wait_level(&app, a, (10, 0)).await;
    // Fired again, after the close.
    store(
        &app,
        streams_of(&app, &sn).deadline_due_subject(OrderSn::parse(&sn).unwrap()),
        &json!({"order_sn": sn}),
    )
    .await;
    eventually("ORDER_TIMERS to empty", SETTLE, || async {
        (deadlines(&app).await? == 0).then_some(())
    })
    .await;
    assert_eq!(level(&app, a).await, (10, 0));
    check_invariants(&app).await;
    wait_outbox_drained(&app).await;
    assert_eq!(events_of(&app, &sn).await, ["created", "closed"]);
}
