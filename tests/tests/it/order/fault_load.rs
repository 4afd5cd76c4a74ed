//! The load the fault tests run while they break things: creates, counted by how each
//! ended, and the checks that only the answers a fault may cause came back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shop_tests::{ask, eventually, Answer, TestApp};

use super::{create_body, SETTLE};

/// Runs `order.create`s of one unit of `goods` until `stop` is set, counting successes in
/// `ok`; returns how many succeeded and how many answered each error code (a missing answer
/// counts as "no answer").
pub(crate) fn creates_until(
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
                _ => *errors.entry("no answer".to_owned()).or_default() += 1,
            }
        }
        (ok.load(Ordering::Relaxed), errors)
    })
}

/// Waits until `ok` has grown by `more`.
pub(crate) async fn progress(ok: &AtomicU64, more: u64, what: &str) {
    let from = ok.load(Ordering::Relaxed);
    eventually(what, SETTLE, || async move {
        (ok.load(Ordering::Relaxed) >= from + more).then_some(())
    })
    .await;
}

/// Only `unavailable` and no answer are allowed while a database is away.
pub(crate) fn only_unavailable(errors: &BTreeMap<String, u64>) {
    let unexpected: Vec<_> = errors
        .keys()
        .filter(|code| !["unavailable", "no answer"].contains(&code.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "answers other than unavailable: {errors:?}"
    );
}
