//! Database faults (issue 12, point 2): a worker's database that refuses connections for a
//! while, and a PostgreSQL server that restarts (a fast and an immediate shutdown) under
//! load. The workers keep running, answer `unavailable` while their database is away,
//! recover by themselves, and the books are exact after settling.

use shop_tests::{ask, Answer};

use super::*;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Runs `order.create`s of one unit of `goods` until `stop` is set, counting successes in
/// `ok`; returns how many succeeded and how many answered each error code (a missing answer
/// counts as "timeout").
fn creates_until(
    app: &TestApp,
    goods: i64,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<(u64, BTreeMap<String, u64>)> {
    let client = app.client().clone();
    tokio::spawn(async move {
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut user = 0;
        while !stop.load(Ordering::Relaxed) {
            user += 1;
            let body = create_body(user, &[(goods, 1)]);
            match ask(&client, "order.create", &body, Duration::from_secs(10)).await {
                Answer::Reply(Ok(_)) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Answer::Reply(Err(e)) => *errors.entry(e.code().to_owned()).or_default() += 1,
                _ => *errors.entry("timeout".to_owned()).or_default() += 1,
            }
        }
        (ok.load(Ordering::Relaxed), errors)
    })
}

/// Waits until `ok` has grown by `more`.
async fn progress(ok: &AtomicU64, more: u64, what: &str) {
    let from = ok.load(Ordering::Relaxed);
    eventually(what, SETTLE, || async move {
        (ok.load(Ordering::Relaxed) >= from + more).then_some(())
    })
    .await;
}

/// Only `unavailable` and no answer are allowed while a database is away.
fn only_unavailable(errors: &BTreeMap<String, u64>) {
    let unexpected: Vec<_> = errors
        .keys()
        .filter(|code| !["unavailable", "timeout"].contains(&code.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "answers other than unavailable: {errors:?}"
    );
}

/// Sets `ALLOW_CONNECTIONS` of the order database and, when refusing, ends its sessions.
async fn order_database_accepts(app: &TestApp, accept: bool) {
    let name = format!("t{}_order", app.account);
    let admin = sqlx::PgPool::connect(&shop_tests::stack::stack().postgres_url("postgres"))
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {accept}"
    ))
    .execute(&admin)
    .await
    .unwrap();
    if !accept {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .execute(&admin)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_database_that_refuses_connections_gives_unavailable_then_recovers() {
    let mut app = TestApp::start_with_env(ALL, FAST).await;
    let a = goods(&app, 100, 100_000).await;
    app.ok("order.create", create_body(9_998, &[(a, 1)])).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = creates_until(&app, a, stop.clone(), Arc::new(AtomicU64::new(0)));

    order_database_accepts(&app, false).await;
    // While it refuses: a create answers unavailable, and nothing else breaks.
    let refused = app
        .request("order.create", create_body(9_999, &[(a, 1)]))
        .await
        .expect_err("a create with its database away");
    assert_eq!(refused.code(), "unavailable", "{refused:?}");
    assert_eq!(
        app.request("order.get", json!({"order_sn": "1"}))
            .await
            .unwrap_err()
            .code(),
        "unavailable"
    );
    assert!(app.ok("goods.list", json!({})).await["goods"].is_array());
    order_database_accepts(&app, true).await;

    // The same processes recover by themselves.
    let created = app.ok("order.create", create_body(10_000, &[(a, 1)])).await;
    assert_eq!(created["status"], "unpaid");
    stop.store(true, Ordering::Relaxed);
    let (ok, errors) = load.await.unwrap();
    assert!(ok > 0, "no create succeeded around the outage");
    only_unavailable(&errors);
    for i in 0..3 {
        assert!(
            !app.worker(i).has_exited(),
            "a worker died with its database"
        );
    }
    check_invariants(&app).await;
    eprintln!("refusing order database: {ok} creates, errors {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ride_out_postgres_restarts_fast_and_immediate_under_load() {
    let mut app = TestApp::start_with_own_postgres(ALL, FAST).await;
    let a = goods(&app, 100, 100_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let load = creates_until(&app, a, stop.clone(), ok.clone());
    progress(&ok, 10, "creates before the first restart").await;
    for fast in [true, false] {
        let kind = if fast { "fast" } else { "immediate" };
        app.restart_postgres(fast, async {
            // While the server is down every database answers unavailable.
            let refused = app
                .request("order.create", create_body(99_999, &[(a, 1)]))
                .await
                .expect_err("a create with the database server down");
            assert_eq!(refused.code(), "unavailable", "{kind}: {refused:?}");
            let stock = app.request("stock.get", json!({"goods_ids": [a]})).await;
            assert_eq!(
                stock.unwrap_err().code(),
                "unavailable",
                "{kind}: stock.get"
            );
        })
        .await;
        // The same processes serve again once it is back.
        progress(&ok, 10, &format!("creates after the {kind} restart")).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, errors) = load.await.unwrap();
    only_unavailable(&errors);
    for i in 0..3 {
        assert!(
            !app.worker(i).has_exited(),
            "a worker died with its database"
        );
    }
    check_invariants(&app).await;
    let audit = eventually("shop audit to pass", SETTLE, || {
        let app = &app;
        async move {
            app.run_shop(&["audit", "--grace", "0s"])
                .status
                .success()
                .then_some(())
        }
    });
    audit.await;
    eprintln!("postgres restarts: {ok} creates, errors {errors:?}");
}
