//! `shop bench retention`: what retained orders cost nats-server, in memory and on disk.
//!
//! For each of `--orders` synthetic orders it publishes what a created-then-closed order
//! leaves in the streams, as the outbox relay does: `order.events.<sn>.created` and
//! `.closed` on `ORDER_EVENTS` (the order as payload) and `stock.rollback.<sn>` on
//! `STOCK_ROLLBACK`, each with its `Nats-Msg-Id`. Then it reads nats-server's RSS at once and
//! again after `--idle` (caches expire; what stays is the per-subject index and the Go heap),
//! and the streams' bytes on disk, and divides by the orders.
//!
//! With `--shared-subjects` the same messages go to a scratch stream `BENCH_RETENTION` on 256
//! subjects instead of one per order: the difference is what one subject per order costs.
//! Needs a fresh stack of its own: the orders are not in the databases.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use serde_json::json;
use shop_contracts::txn::{
    event_msg_id, event_subject, rollback_msg_id, rollback_subject, OrderEventKind,
};
use shop_contracts::OrderSn;

use super::procs::Stack;
use super::{progress, publish_all, report, rss};
use crate::cli::RetentionArgs;
use crate::BenchConfig;

const SCRATCH: &str = "BENCH_RETENTION";

pub async fn run(
    config: &BenchConfig,
    client: &async_nats::Client,
    args: &RetentionArgs,
) -> anyhow::Result<()> {
    let stack = Stack::of(config);
    let js = jetstream::new(client.clone());
    if args.shared_subjects {
        js.create_or_update_stream(stream::Config {
            name: SCRATCH.to_owned(),
            subjects: vec!["bench.retention.>".to_owned()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .context("creating the scratch stream")?;
    }
    let rss_before = rss::nats_server_kib(&stack);
    let base = chrono::Utc::now().timestamp_millis() << 22;
    let bar = progress("publishing retained orders", args.orders);
    let started = std::time::Instant::now();
    publish_all(args.orders, &bar, |i| {
        retain_one(&js, base + i as i64, args.shared_subjects)
    })
    .await?;
    bar.finish_and_clear();
    let published = started.elapsed();
    let rss_after = rss::nats_server_kib(&stack);
    tokio::time::sleep(args.idle).await;
    let rss_idle = rss::nats_server_kib(&stack);
    let mut disk = 0;
    let names: &[&str] = if args.shared_subjects {
        &[SCRATCH]
    } else {
        &["ORDER_EVENTS", "STOCK_ROLLBACK"]
    };
    for name in names {
        disk += js.get_stream(*name).await?.info().await?.state.bytes;
    }
    let per_order = |kib: u64| (kib.saturating_sub(rss_before) * 1024) as f64 / args.orders as f64;
    let layout = if args.shared_subjects {
        "256 shared subjects"
    } else {
        "one subject per order"
    };
    println!(
        "retention, {layout}: {} orders (3 messages each) published in {:.1} s; nats-server RSS {:.0} MiB before, {:.0} MiB right after, {:.0} MiB after {} s idle: {:.0} B per order retained; {:.0} B per order on disk",
        args.orders,
        published.as_secs_f64(),
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        args.idle.as_secs(),
        per_order(rss_idle),
        disk as f64 / args.orders as f64,
    );
    let document = report::document(
        report::header("retention", args.label.as_deref()),
        json!({
            "orders": args.orders,
            "messages_per_order": 3,
            "shared_subjects": args.shared_subjects,
            "publish_s": published.as_secs_f64(),
            "nats_rss_kib_before": rss_before,
            "nats_rss_kib_after": rss_after,
            "nats_rss_kib_idle": rss_idle,
            "idle_s": args.idle.as_secs_f64(),
            "rss_bytes_per_order": per_order(rss_idle),
            "disk_bytes": disk,
            "disk_bytes_per_order": disk as f64 / args.orders as f64,
        }),
    );
    let name = format!(
        "retention-{}-{}{}",
        if args.shared_subjects {
            "shared"
        } else {
            "per-order"
        },
        args.orders,
        args.label
            .as_deref()
            .map(|l| format!("-{l}"))
            .unwrap_or_default()
    );
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&document)?)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// What one created-then-closed order leaves in the streams.
async fn retain_one(js: &jetstream::Context, sn: i64, shared: bool) -> anyhow::Result<()> {
    let sn = OrderSn::new(sn).map_err(|_| anyhow::anyhow!("order_sn {sn} out of range"))?;
    // An order as ORDER_EVENTS carries it: about the size of a real one-line order.
    let order = |status: &str| {
        json!({"order_sn": sn, "user_id": 7, "status": status, "total_cents": 1250,
               "items": [{"goods_id": 2000001, "title": "bench goods 2000001", "price_cents": 1250, "quantity": 1}],
               "address": "1 Main St", "receiver_name": "Ann", "receiver_phone": "555-0100", "note": "",
               "created_at": "2026-11-23T18:00:00.000Z", "pay_deadline": "2026-11-23T18:30:00.000Z",
               "paid_at": null, "closed_at": if status == "closed" { json!("2026-11-23T18:30:00.050Z") } else { json!(null) }})
    };
    let messages = [
        (
            event_subject(sn, OrderEventKind::Created),
            event_msg_id(sn, OrderEventKind::Created),
            serde_json::to_vec(&order("unpaid"))?,
        ),
        (
            event_subject(sn, OrderEventKind::Closed),
            event_msg_id(sn, OrderEventKind::Closed),
            serde_json::to_vec(&order("closed"))?,
        ),
        (
            rollback_subject(sn),
            rollback_msg_id(sn),
            serde_json::to_vec(&json!({"order_sn": sn, "reason": "closed"}))?,
        ),
    ];
    for (i, (subject, msg_id, payload)) in messages.into_iter().enumerate() {
        let subject = if shared {
            format!("bench.retention.{}.{i}", sn.get() % 256)
        } else {
            subject
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
        js.publish_with_headers(subject, headers, payload.into())
            .await?
            .await?;
    }
    Ok(())
}
