//! The closed-loop load both benchmarks share: `concurrency` loops each send one request,
//! wait for its reply, and send the next, for `seconds` seconds, with a progress bar; then
//! the figures, printed and written as JSON.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use shop_contracts::subjects::stock as stock_subject;
use shop_kit::client::call;

/// How long one request may take before it counts as an error.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What a run measured.
pub struct Measured {
    /// Latencies of the successful requests, in microseconds, sorted.
    latencies: Vec<u64>,
    errors: u64,
    seconds: f64,
}

impl Measured {
    pub fn ok(&self) -> u64 {
        self.latencies.len() as u64
    }

    pub fn per_second(&self) -> f64 {
        self.ok() as f64 / self.seconds
    }

    /// The `p` quantile of the latencies in milliseconds (0 when nothing succeeded).
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let n = self.latencies.len();
        if n == 0 {
            return 0.0;
        }
        let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        self.latencies[i] as f64 / 1000.0
    }

    /// The common figures, to which each benchmark adds its own labels.
    pub fn figures(&self, unit: &str) -> Value {
        json!({
            "seconds": self.seconds,
            unit: self.ok(),
            "errors": self.errors,
            format!("{unit}_per_second"): self.per_second(),
            "p50_ms": self.percentile_ms(0.50),
            "p99_ms": self.percentile_ms(0.99),
            "max_ms": self.percentile_ms(1.0),
            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }

    /// One line for the terminal.
    pub fn summary(&self, unit: &str) -> String {
        format!(
            "{:.0} {unit}/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            self.per_second(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.errors
        )
    }
}

/// Runs the load: loop `i` of `concurrency` sends request number `n` (counted across all
/// loops) as `body(n)` to `subject`. `unit` names a request in the progress display.
pub async fn run(
    client: &async_nats::Client,
    subject: &'static str,
    concurrency: usize,
    seconds: u64,
    unit: &'static str,
    body: impl Fn(i64) -> Value + Send + Sync + 'static,
) -> anyhow::Result<Measured> {
    let body = Arc::new(body);
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
            let (client, next, stop, errors, body) = (
                client.clone(),
                next.clone(),
                stop.clone(),
                errors.clone(),
                body.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed) as i64;
                    let sent = Instant::now();
                    match call::<_, Value>(&client, subject, &body(n), TIMEOUT).await {
                        Ok(_) => latencies.push(sent.elapsed().as_micros() as u64),
                        Err(error) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%error, "{subject} failed");
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
            "{:.0} {unit}/s",
            done as f64 / started.elapsed().as_secs_f64()
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in loops {
        latencies.extend(task.await.context("a load loop panicked")?);
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    latencies.sort_unstable();
    Ok(Measured {
        latencies,
        errors: errors.load(Ordering::Relaxed),
        seconds,
    })
}

/// Gives each goods in `goods_ids` more stock than any run can sell.
pub async fn fill_stock(
    client: &async_nats::Client,
    goods_ids: std::ops::Range<i64>,
) -> anyhow::Result<()> {
    for goods_id in goods_ids {
        let _: Value = call(
            client,
            stock_subject::SET,
            &json!({"goods_id": goods_id, "available": 1_000_000_000_000i64}),
            TIMEOUT,
        )
        .await
        .with_context(|| format!("stock.set of goods {goods_id}: is the stack up?"))?;
    }
    Ok(())
}

/// Prints `<title>: <figures>` and writes the figures, with `labels` (a JSON object) added,
/// as `<out>/<file>.json`.
pub fn report(
    measured: &Measured,
    unit: &str,
    title: &str,
    labels: Value,
    out: &Path,
    file: &str,
) -> anyhow::Result<()> {
    println!("{title}: {}", measured.summary(unit));
    let mut result = measured.figures(unit);
    if let (Some(result), Value::Object(labels)) = (result.as_object_mut(), labels) {
        result.extend(labels);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(format!("{file}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
