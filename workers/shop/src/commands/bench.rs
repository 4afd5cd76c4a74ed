//! `shop bench stock`: concurrent deducts against the running stock workers, over NATS.
//!
//! The lock strategy is a worker setting, so the bench measures whatever the running workers
//! use; it reads their strategy from `$SRV.INFO.stock` (service metadata) and refuses to
//! label results with another one. Each deduct takes one unit of a goods picked round-robin
//! from `goods` goods (1 = one hot goods), under a fresh order_sn.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use shop_contracts::subjects::stock as subject;
use shop_kit::client::{call, CallError};

use crate::cli::BenchTarget;
use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(config: &Config, target: BenchTarget) -> anyhow::Result<()> {
    let BenchTarget::Stock {
        strategy,
        goods,
        concurrency,
        seconds,
        first_goods_id,
        out,
    } = target;
    if goods < 1 || concurrency < 1 || seconds < 1 {
        bail!("--goods, --concurrency and --seconds must be at least 1");
    }
    let client = shop_kit::server::connect(&config.nats_target("shop-bench", None))
        .await
        .context("connecting to NATS")?;

    let info: Value = call(&client, "$SRV.INFO.stock", &json!({}), TIMEOUT)
        .await
        .context("no stock worker answered $SRV.INFO.stock: is the stack up?")?;
    let running = info["metadata"]["strategy"].as_str().unwrap_or("unknown");
    if running != strategy {
        bail!(
            "the running stock workers use strategy {running:?}, not {strategy:?}: restart them \
             with SHOP_STOCK__STRATEGY={strategy}"
        );
    }

    // Enough stock that no deduct runs short during the run.
    for goods_id in first_goods_id..first_goods_id + goods {
        let _: Value = call(
            &client,
            subject::SET,
            &json!({"goods_id": goods_id, "available": 1_000_000_000_000i64}),
            TIMEOUT,
        )
        .await
        .with_context(|| format!("stock.set for goods {goods_id}"))?;
    }

    // Order numbers unique across runs: milliseconds since the epoch, times a million.
    let base = chrono::Utc::now().timestamp_millis() * 1_000_000;
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let bar = indicatif::ProgressBar::new(seconds);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len}s {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );

    let started = Instant::now();
    let loops: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, stop, errors) =
                (client.clone(), next.clone(), stop.clone(), errors.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed) as i64;
                    let goods_id = first_goods_id + n % goods;
                    let body = json!({"order_sn": (base + n).to_string(),
                                      "items": [{"goods_id": goods_id, "quantity": 1}]});
                    let sent = Instant::now();
                    match call::<_, Value>(&client, subject::DEDUCT, &body, TIMEOUT).await {
                        Ok(_) => latencies.push(sent.elapsed().as_micros() as u64),
                        Err(CallError::Refused(e)) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(error = %e, "deduct refused");
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(error = %e, "deduct failed");
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    for second in 1..=seconds {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        let done = next.load(Ordering::Relaxed);
        bar.set_position(second);
        bar.set_message(format!(
            "{:.0} deducts/s",
            done as f64 / started.elapsed().as_secs_f64()
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in loops {
        latencies.extend(task.await.context("a deduct loop panicked")?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    let ok = latencies.len() as u64;
    let result = json!({
        "strategy": strategy,
        "goods": goods,
        "concurrency": concurrency,
        "seconds": elapsed,
        "deducts": ok,
        "errors": errors.load(Ordering::Relaxed),
        "deducts_per_second": ok as f64 / elapsed,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "max_ms": percentile(1.0),
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    println!(
        "stock/{strategy} goods={goods} concurrency={concurrency}: {:.0} deducts/s, \
         p50 {:.2} ms, p99 {:.2} ms, {} errors",
        ok as f64 / elapsed,
        percentile(0.50),
        percentile(0.99),
        errors.load(Ordering::Relaxed)
    );
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(format!("stock-{strategy}-{goods}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
