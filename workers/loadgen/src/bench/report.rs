//! Where a bench's results go: `<out>/<name>.json` with every figure, and `<out>/<name>.svg`
//! with the per-second plot.

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

use super::plot;

/// The fields every result file starts with: which bench, on what setup, when, on how many
/// CPUs (a 2-core machine shared with builds is noisy; the figure says what it ran on).
pub fn header(bench: &str, label: Option<&str>) -> Value {
    json!({
        "bench": bench,
        "label": label,
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
    })
}

/// `base`, then `-c<concurrency>` when it is not the default 32 and `-r<rate>` for an open
/// loop, then `-<label>`: the default run keeps the plain name.
pub fn file_name(
    base: &str,
    concurrency: Option<usize>,
    rate: Option<f64>,
    label: Option<&str>,
) -> String {
    let mut name = base.to_owned();
    if let Some(concurrency) = concurrency.filter(|c| *c != 32) {
        name += &format!("-c{concurrency}");
    }
    if let Some(rate) = rate {
        name += &format!("-r{rate}");
    }
    if let Some(label) = label {
        name += &format!("-{label}");
    }
    name
}

/// Writes `document` as JSON and the plot of `runs` as SVG, and says where.
pub fn save(
    out: &Path,
    name: &str,
    document: &Value,
    plot_title: &str,
    unit: &str,
    runs: &[plot::Run<'_>],
    ceilings: &[(&str, f64)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json_path = out.join(format!("{name}.json"));
    std::fs::write(&json_path, serde_json::to_vec_pretty(document)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let svg_path = out.join(format!("{name}.svg"));
    plot::write(&svg_path, plot_title, unit, runs, ceilings)?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}

/// A header with the bench's own fields added.
pub fn document(header: Value, fields: Value) -> Value {
    let mut document = header;
    if let (Some(document), Value::Object(fields)) = (document.as_object_mut(), fields) {
        document.extend(fields);
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_run_keeps_the_plain_file_name() {
        assert_eq!(file_name("order-100", Some(32), None, None), "order-100");
        assert_eq!(
            file_name("order-1", Some(4000), None, Some("production")),
            "order-1-c4000-production"
        );
        assert_eq!(
            file_name("order-1", None, Some(100.0), None),
            "order-1-r100"
        );
    }
}
