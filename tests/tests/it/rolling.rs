//! Stopping a worker loses no request (issue 18, point 1): a rolling restart of every worker
//! kind and of the gateway under a mixed load over NATS and over HTTP (start a replacement,
//! SIGTERM the old process) gives callers nothing but successes, every stopped process exits 0, and the shop settles to a clean audit. And the frame's two
//! ways to end badly: a task that dies stops the worker naming it, and a stop that outlasts
//! `shutdown_timeout` says what it abandoned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use shop_contracts::{ErrorCode, ErrorDetail};
use shop_kit::{ServiceConfig, Worker, WorkerError};
use shop_tests::{ask, Answer, TestApp, Worker as Kind};

use crate::mixed::{audit_passes, check_acknowledged, wait_unpaid_closed, Front, MixedLoad, Via};
use crate::order::{check_invariants, goods};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_worker_kind_and_the_gateway_loses_no_request() {
    let mut app = TestApp::start_with_env(
        &[Kind::Goods, Kind::Stock, Kind::Order],
        &[
            ("SHOP_ORDER__PAY_TIMEOUT", "3s"),
            ("SHOP_ORDER__CHECK_DELAY", "3s"),
        ],
    )
    .await;
    // No create may be turned away by the per-user limit: every answer must be a success.
    let unlimited = [
        ("SHOP_GATEWAY__ORDERS_PER_SECOND", "100000"),
        ("SHOP_GATEWAY__ORDER_BURST", "100000"),
    ];
    let mut gateway = app.spawn_gateway(&unlimited).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(goods(&app, 100 + i, 1_000_000).await);
    }
    // A request a worker or the gateway lost would never be answered: the loads wait 10 s
    // for each. One load over NATS, one over HTTP through the gateway.
    let load = MixedLoad::start(
        app.client().clone(),
        ids.clone(),
        24,
        Duration::from_secs(10),
    );
    let front = Front::new(&gateway.url);
    let http = MixedLoad::start_via(Via::Http(front.clone()), ids, 8, Duration::from_secs(10));
    let more = |what: String| {
        let (load, http) = (&load, &http);
        async move {
            tokio::join!(load.wait_for_more(30, &what), http.wait_for_more(10, &what));
        }
    };
    more("before the restarts".to_owned()).await;

    // As a deploy rolls: for each kind, a new process first, then SIGTERM to the old one,
    // while requests keep coming.
    for (old, kind) in [(0, Kind::Goods), (1, Kind::Stock), (2, Kind::Order)] {
        app.spawn(kind).await;
        let status = app
            .worker(old)
            .terminate(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("the old {} worker did not stop within 15 s", kind.name()));
        let log = app.worker(old).log_text();
        assert!(
            status.success(),
            "the old {} worker exited with {status}:\n{log}",
            kind.name()
        );
        assert!(
            log.contains("stopped: every admitted request answered"),
            "the old {} worker's log does not say it stopped cleanly:\n{log}",
            kind.name()
        );
        more(format!("after the {} restart", kind.name())).await;
    }

    // The gateway, as behind a load balancer: the replacement takes new requests first, then
    // the old one gets SIGTERM with requests still in flight to it and its keep-alive
    // connections open.
    let replacement = app.spawn_gateway(&unlimited).await;
    front.switch_to(&replacement.url);
    let status = gateway
        .stop(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("the old gateway did not stop within 15 s"));
    let log = gateway.log_text();
    assert!(
        status.success(),
        "the old gateway exited with {status}:\n{log}"
    );
    gateway = replacement;
    more("after the gateway restart".to_owned()).await;

    let (tally, http) = tokio::join!(load.stop(), http.stop());
    eprintln!("rolling: answers over NATS {:?}", tally.answers);
    eprintln!("rolling: answers over HTTP {:?}", http.answers);

    // Stock is plentiful, no create carries an idempotency key and every process that
    // stopped was asked to: nothing but success is allowed, no timeout, no `unavailable`,
    // no 5xx, no connection error.
    for tally in [&tally, &http] {
        let outside = tally.answers_outside(&["ok"]);
        assert!(
            outside.is_empty(),
            "callers saw {outside:?}\n{}",
            gateway.log_text()
        );
    }

    wait_unpaid_closed(&app).await;
    check_invariants(&app).await;
    check_acknowledged(&app, &tally).await;
    check_acknowledged(&app, &http).await;
    audit_passes(&app);
}

/// A worker frame of this test's own on `app`'s NATS account, as a worker process builds it.
async fn frame(app: &TestApp, name: &'static str) -> Worker {
    Worker::start(
        app.client().clone(),
        ServiceConfig {
            name,
            version: "0.1.0",
            description: "a test worker",
            metadata: Default::default(),
            stats: None,
        },
    )
    .await
    .expect("starting a worker frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_fails_stops_the_worker_and_names_it() {
    let app = TestApp::start(&[]).await;
    let mut worker = frame(&app, "failing").await;
    let (fail, failed) = tokio::sync::oneshot::channel::<()>();
    worker.background("the flaky writer", async move {
        let _ = failed.await;
        Err::<(), _>("the database said no")
    });
    let running = tokio::spawn(worker.run(std::future::pending(), Duration::from_secs(5)));
    fail.send(()).unwrap();
    let outcome = running.await.expect("the frame does not panic");
    match outcome {
        Err(WorkerError::TaskFailed { task, reason, .. }) => {
            assert_eq!(task, "the flaky writer");
            assert!(reason.contains("the database said no"), "{reason}");
        }
        other => panic!("a failed task must stop the worker with an error, got {other:?}"),
    }

    // A panic is a failure too.
    let mut worker = frame(&app, "panicking").await;
    worker.background("the buggy relay", async {
        panic!("a bug");
        #[allow(unreachable_code)]
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    });
    match worker
        .run(std::future::pending(), Duration::from_secs(5))
        .await
    {
        Err(WorkerError::TaskFailed { task, reason, .. }) => {
            assert_eq!(task, "the buggy relay");
            assert!(reason.contains("panicked"), "{reason}");
        }
        other => panic!("a panicked task must stop the worker with an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answers_what_was_admitted_and_past_the_timeout_names_what_it_abandoned() {
    let app = TestApp::start(&[]).await;
    // Requests that take 1 s: a stop waits for them...
    let (asked, stopped) = stop_during_a_request(
        &app,
        "slow",
        "test.slow",
        Duration::from_secs(1),
        Duration::from_secs(10),
    )
    .await;
    stopped.expect("a stop within the timeout is clean");
    match asked.await.unwrap() {
        Answer::Reply(Ok(reply)) => assert_eq!(reply, json!({"n": 1})),
        other => panic!("the request admitted before the stop was not answered: {other:?}"),
    }

    // ...but not past shutdown_timeout: then it says what it gave up.
    let (_asked, stopped) = stop_during_a_request(
        &app,
        "stuck",
        "test.stuck",
        Duration::from_secs(30),
        Duration::from_millis(500),
    )
    .await;
    match stopped {
        Err(WorkerError::Abandoned { requests, .. }) => assert_eq!(requests, 1),
        other => panic!("a stop past its timeout must say what it abandoned, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_under_a_trickle_of_requests_ends_in_time_and_answers_them_all() {
    let app = TestApp::start(&[]).await;
    let echo = |(), body: Value| async move { Ok::<Value, Refused>(body) };
    let mut old = frame(&app, "trickle").await;
    old.serve("test.trickle", (), echo).await.unwrap();
    let mut replacement = frame(&app, "trickle").await;
    replacement.serve("test.trickle", (), echo).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let old = tokio::spawn(old.run(
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(10),
    ));
    let replacement =
        tokio::spawn(replacement.run(std::future::pending(), Duration::from_secs(10)));

    // Ten requests a second over the two: too many for the stopping one's fence to go quiet,
    // far too few to use up its room within the stop's 10 s.
    let trickling = Arc::new(AtomicBool::new(true));
    let sender = {
        let (client, trickling) = (app.client().clone(), trickling.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while trickling.load(Ordering::Relaxed) {
                let n = answers.len();
                answers.push(
                    ask(
                        &client,
                        "test.trickle",
                        &json!({"n": n}),
                        Duration::from_secs(10),
                    )
                    .await,
                );
                // The load's pace, not a wait for anything.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answers
        })
    };
    wait_until_answered("test.trickle", 10).await;
    stop.send(()).unwrap();
    let stopped = old.await.expect("the frame does not panic");
    trickling.store(false, Ordering::Relaxed);
    let answers = sender.await.unwrap();
    replacement.abort();
    stopped.expect("a stop under a trickle of requests ends cleanly within its timeout");
    for (n, answer) in answers.iter().enumerate() {
        match answer {
            Answer::Reply(Ok(reply)) => assert_eq!(reply, &json!({"n": n})),
            other => panic!("request {n} of the trickle was not answered: {other:?}"),
        }
    }
}

/// Waits until this process's endpoints on `subject` have answered `count` requests (from
/// its own metrics).
async fn wait_until_answered(subject: &str, count: u64) {
    shop_tests::eventually(
        &format!("{count} {subject} requests answered"),
        Duration::from_secs(10),
        || async move {
            let text = shop_kit::metrics::global().encode();
            let answered: u64 = text
                .lines()
                .filter(|line| {
                    line.starts_with("shop_requests_total{")
                        && line.contains(&format!("endpoint=\"{subject}\""))
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
                .sum();
            (answered >= count).then_some(())
        },
    )
    .await;
}

/// A worker `name` serving `subject` with requests that take `handling`: one request is sent,
/// and once it is in flight the worker is stopped with `timeout`. Returns the request's
/// answer (to await) and how the stop ended.
async fn stop_during_a_request(
    app: &TestApp,
    name: &'static str,
    subject: &'static str,
    handling: Duration,
    timeout: Duration,
) -> (tokio::task::JoinHandle<Answer>, Result<(), WorkerError>) {
    let mut worker = frame(app, name).await;
    worker
        .serve(subject, (), move |(), body: Value| async move {
            tokio::time::sleep(handling).await;
            Ok::<Value, Refused>(body)
        })
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(
        async {
            let _ = stopped.await;
        },
        timeout,
    ));
    let client = app.client().clone();
    let asked = tokio::spawn(async move {
        ask(&client, subject, &json!({"n": 1}), Duration::from_secs(30)).await
    });
    wait_until_in_flight(name).await;
    stop.send(()).unwrap();
    (asked, running.await.expect("the frame does not panic"))
}

/// Waits until the endpoint `test.<name>` of this process has a request in flight (from the
/// process's own metrics: `$SRV.STATS` counts only answered requests).
async fn wait_until_in_flight(name: &str) {
    let subject = format!("test.{name}");
    shop_tests::eventually(
        &format!("a {subject} request in flight"),
        Duration::from_secs(10),
        || {
            let subject = subject.clone();
            async move {
                let text = shop_kit::metrics::global().encode();
                let line = format!("shop_requests_in_flight{{endpoint=\"{subject}\"}} 1");
                text.contains(&line).then_some(())
            }
        },
    )
    .await;
}

/// The test endpoints never refuse; the frame wants an error type all the same.
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl std::error::Error for Refused {}

impl shop_kit::ServiceError for Refused {
    fn to_contract(&self) -> ErrorDetail {
        ErrorDetail::new(ErrorCode::Conflict, "refused")
    }
}
