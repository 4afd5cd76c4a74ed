//! `shop soak`, short (issue 12, point 7): a stack of its own under a mixed load while a
//! worker is SIGKILLed and replaced every few seconds and nats-server restarts; every audit
//! along the way and the final one after settling must be clean.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_short_soak_with_kills_and_a_nats_restart_stays_exact() {
    let root = shop_tests::stack::project_root();
    let dir = tempdir();
    let port =
        |what| shop_devstack::free_port().unwrap_or_else(|e| panic!("a port for {what}: {e}"));
    let out = Command::new(shop_tests::app::shop_binary())
        .args([
            "soak",
            "--minutes",
            "0.4",
            "--kill-every",
            "3s",
            "--nats-restart-every",
            "10s",
            "--audit-every",
            "10s",
            "--out",
        ])
        .arg(dir.join("out"))
        .arg("--root")
        .arg(&root)
        .env("SHOP_DEV__DATA_DIR", dir.join("data"))
        .env(
            "SHOP_DEV__NATS_SERVER_BIN",
            shop_tests::stack::nats_server_binary(),
        )
        .env("SHOP_DEV__NATS_PORT", port("nats").to_string())
        .env("SHOP_DEV__POSTGRES_PORT", port("postgres").to_string())
        .env("NO_COLOR", "1")
        .output()
        .expect("running shop soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the soak failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/soak.json")).unwrap()).unwrap();
    let kills: u64 = summary["faults"]["worker_kills"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(kills >= 3, "too few kills: {summary}");
    assert!(
        summary["faults"]["nats_restarts"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    assert!(
        summary["answers"]["created"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        !summary["audits"].as_array().unwrap().is_empty(),
        "{summary}"
    );
    assert_eq!(summary["audits_failed"], 0, "{summary}");
    assert_eq!(summary["final_audit_passed"], true, "{summary}");
    eprintln!("{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shop-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
