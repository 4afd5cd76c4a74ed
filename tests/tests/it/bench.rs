//! `shop bench` against the test's own stack: a short run must complete, write its JSON and
//! SVG, find the workers' memory and pass its own audit. Figures are never asserted: they
//! depend on the machine, and the suite shares it.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use shop_tests::app::shop_binary;
use shop_tests::gateway::TOKEN_SECRET;
use shop_tests::{TestApp, Worker};

/// Runs `shop <args>` for `app` and returns its JSON result `<out>/<name>.json`, after
/// checking that it succeeded and wrote the SVG beside it.
fn bench(app: &TestApp, args: &[&str], name: &str) -> Value {
    bench_with(app, args, name, &[])
}

/// [`bench`] with more `SHOP_*` settings for the bench process.
fn bench_with(app: &TestApp, args: &[&str], name: &str, env: &[(&str, &str)]) -> Value {
    let out = std::env::temp_dir().join(format!(
        "shop-it-bench-{}-{}",
        std::process::id(),
        app.account
    ));
    let out_arg = out.to_str().expect("a UTF-8 temp dir");
    let mut all = args.to_vec();
    all.extend(["--out", out_arg]);
    let run = app.run_shop_with(&all, env);
    assert!(
        run.status.success(),
        "shop {all:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let svg = std::fs::read_to_string(out.join(format!("{name}.svg"))).expect("the SVG plot");
    assert!(svg.contains("<svg"), "not an SVG: {svg:.200}");
    let json = std::fs::read(out.join(format!("{name}.json"))).expect("the JSON result");
    serde_json::from_slice(&json).expect("valid JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_order_bench_measures_its_ceilings_and_passes_the_audit() {
    // A short check delay for the workers, and the same one for the bench's settle wait.
    let app = TestApp::start_with_env(
        &[Worker::Goods, Worker::Stock, Worker::Order],
        &[("SHOP_ORDER__CHECK_DELAY", "2s")],
    )
    .await;
    let result = bench(
        &app,
        &[
            "bench",
            "order",
            "--goods",
            "3",
            "--concurrency",
            "4",
            "--seconds",
            "2",
            "--check-delay",
            "2s",
        ],
        "order-3-c4",
    );
    assert_eq!(result["audit"], "passed", "{result}");
    for figures in [
        &result["system"],
        &result["ceilings"]["nats_request_reply"],
        &result["ceilings"]["database_split"],
        &result["ceilings"]["database_monolith"],
    ] {
        assert!(figures["sent"].as_u64().is_some(), "{result}");
        assert_eq!(
            figures["series"].as_array().map(Vec::len),
            Some(2),
            "{result}"
        );
    }
    assert!(
        result["ratios"]["to_database_split"].is_number(),
        "{result}"
    );
    let kinds: BTreeSet<&str> = result["workers_rss"]
        .as_array()
        .expect("workers_rss")
        .iter()
        .map(|w| w["kind"].as_str().expect("a kind"))
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["goods", "order", "stock"]),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_bench_via_http_runs_the_same_creates_through_the_gateway() {
    let app = TestApp::start_with_env(
        &[Worker::Goods, Worker::Stock, Worker::Order],
        &[("SHOP_ORDER__CHECK_DELAY", "2s")],
    )
    .await;
    let gateway = app.spawn_gateway(&[]).await;
    let listen = gateway.url.trim_start_matches("http://");
    // A short order bench through the gateway at `listen`, `via` http or alternate.
    let bench_via = |via: &str, seconds: &str| {
        bench_with(
            &app,
            &[
                "bench",
                "order",
                "--via",
                via,
                "--goods",
                "3",
                "--concurrency",
                "4",
                "--seconds",
                seconds,
                "--no-ceilings",
                "--check-delay",
                "2s",
            ],
            "order-3-c4",
            &[
                ("SHOP_GATEWAY__LISTEN", listen),
                ("SHOP_GATEWAY__AUTH__HS256_SECRET", TOKEN_SECRET),
            ],
        )
    };
    let result = bench_via("http", "2");
    assert_eq!(result["audit"], "passed", "{result}");
    let http = &result["via_http"];
    // Every create through the gateway succeeded: the bench's tokens were accepted, its
    // bodies valid, and no user went over the gateway's rate limit.
    let system = &http["system"];
    assert!(system["ok"].as_u64().is_some_and(|ok| ok > 0), "{http}");
    assert_eq!(system["sent"], system["ok"], "{http}");
    assert_eq!(http["sold_check"]["verdict"], "exact", "{http}");
    assert!(http["ratio_to_nats"].is_number(), "{http}");
    assert!(http["cpu_ms_per_create"]["gateway"].is_number(), "{http}");
    let kinds: BTreeSet<&str> = http["workers_rss"]
        .as_array()
        .expect("workers_rss")
        .iter()
        .map(|w| w["kind"].as_str().expect("a kind"))
        .collect();
    assert!(kinds.contains("gateway"), "{http}");

    // The same comparison inside one run, a second over NATS, a second through the gateway.
    let result = bench_via("alternate", "3");
    assert_eq!(result["audit"], "passed", "{result}");
    let alternate = &result["alternate"];
    let split = &alternate["split"];
    assert!(
        split["first_ok"].as_u64().is_some_and(|ok| ok > 0),
        "{alternate}"
    );
    assert!(
        split["second_ok"].as_u64().is_some_and(|ok| ok > 0),
        "{alternate}"
    );
    assert_eq!(split["first_seconds"], 2.0, "{alternate}");
    assert_eq!(split["second_seconds"], 1.0, "{alternate}");
    assert!(
        split["ratio"].as_f64().is_some_and(|r| r > 0.0),
        "{alternate}"
    );
    let system = &alternate["system"];
    assert_eq!(system["sent"], system["ok"], "{alternate}");
    assert_eq!(alternate["sold_check"]["verdict"], "exact", "{alternate}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_open_loop_and_overload_complete() {
    let app = TestApp::start_with_env(
        &[Worker::Goods, Worker::Stock, Worker::Order],
        &[("SHOP_ORDER__CHECK_DELAY", "2s")],
    )
    .await;
    let open = bench(
        &app,
        &[
            "bench",
            "order",
            "--goods",
            "2",
            "--rate",
            "20",
            "--seconds",
            "2",
            "--no-ceilings",
            "--check-delay",
            "2s",
        ],
        "order-2-r20",
    );
    assert_eq!(open["audit"], "passed", "{open}");
    assert_eq!(open["load"]["mode"], "open", "{open}");
    assert!(
        open["system"]["latency_ms"].is_object() || open["system"]["ok"] == 0,
        "{open}"
    );

    let overload = bench(
        &app,
        &[
            "bench",
            "overload",
            "--goods",
            "2",
            "--peak-concurrency",
            "2",
            "--concurrency",
            "64",
            "--seconds",
            "2",
            "--check-delay",
            "2s",
        ],
        "overload-2-c64",
    );
    assert_eq!(overload["audit"], "passed", "{overload}");
    assert_ne!(
        overload["overload"]["sold_check"]["verdict"], "refusals_deducted",
        "{overload}"
    );
}

#[test]
fn bad_bench_flags_are_refused_with_the_flag_named() {
    for (args, flag) in [
        (
            &["bench", "order", "--concurrency", "0"][..],
            "--concurrency",
        ),
        (&["bench", "order", "--rate", "0"], "--rate"),
        (&["bench", "order", "--seconds", "0"], "--seconds"),
        (
            &["bench", "stock", "--goods", "0", "--strategy", "atomic"],
            "--goods",
        ),
        (&["bench", "overload", "--label", "a/b"], "--label"),
        (&["bench", "overload", "--ramp=-1"], "--ramp"),
        (&["bench", "order", "--rate", "10", "--ramp", "1"], "--ramp"),
    ] {
        let out = Command::new(shop_binary())
            .args(args)
            .output()
            .expect("running shop");
        assert_eq!(out.status.code(), Some(2), "shop {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "shop {args:?}: {stderr}");
    }
}
