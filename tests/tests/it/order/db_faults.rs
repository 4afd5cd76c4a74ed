//! Database faults (issue 12, point 2): a worker's database that refuses connections for a
//! while, and a PostgreSQL server that restarts (a fast and an immediate shutdown) under
//! load. The workers keep running, answer `unavailable` while their database is away,
//! recover by themselves, and the books are exact after settling.

use super::*;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::fault_load::{creates_until, only_unavailable, progress};

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
    settled_and_audited(&app, "postgres restarts").await;
    eprintln!("postgres restarts: {ok} creates, errors {errors:?}");
}
