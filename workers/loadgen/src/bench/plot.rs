//! The SVG plot of a bench: throughput per second on top (with the ceilings as flat lines,
//! when measured), p50 and p99 latency per second below, one colour per run.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use super::record::Figures;

const SIZE: (u32, u32) = (1000, 720);
const COLOURS: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];

/// One run to draw.
pub struct Run<'a> {
    pub name: &'a str,
    pub figures: &'a Figures,
}

/// Writes the plot of `runs` to `path`; `ceilings` are `(name, per second)` lines drawn
/// across the throughput chart; `unit` names a success ("creates").
pub fn write(
    path: &Path,
    title: &str,
    unit: &str,
    runs: &[Run<'_>],
    ceilings: &[(&str, f64)],
) -> anyhow::Result<()> {
    draw(path, title, unit, runs, ceilings).map_err(|e| anyhow!("drawing {}: {e}", path.display()))
}

fn draw(
    path: &Path,
    title: &str,
    unit: &str,
    runs: &[Run<'_>],
    ceilings: &[(&str, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2 - 10);
    let seconds = runs
        .iter()
        .map(|r| r.figures.series.len() as u64)
        .max()
        .unwrap_or(0)
        .max(2);

    // Throughput: successes per second, and refusals per second when there are any.
    let highest_rate = runs
        .iter()
        .flat_map(|r| r.figures.series.iter().map(|s| s.ok.max(s.refused)))
        .map(|v| v as f64)
        .chain(ceilings.iter().map(|(_, v)| *v))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(1u64..seconds, 0f64..highest_rate * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("second of the run")
        .y_desc(format!("{unit}/s"))
        .draw()?;
    for (i, run) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let ok = run.figures.series.iter().map(|s| (s.second, s.ok as f64));
        chart
            .draw_series(LineSeries::new(ok, colour.stroke_width(2)))?
            .label(format!("{} {unit}/s", run.name))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        if run.figures.refused > 0 {
            let refused = run
                .figures
                .series
                .iter()
                .map(|s| (s.second, s.refused as f64));
            chart
                .draw_series(LineSeries::new(refused, colour.mix(0.4).stroke_width(1)))?
                .label(format!("{} refused/s", run.name))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.mix(0.4)));
        }
    }
    for (i, (name, rate)) in ceilings.iter().enumerate() {
        let grey = 90u8.saturating_add(50u8.saturating_mul(i.min(3) as u8));
        let shade = RGBColor(grey, grey, grey);
        let (rate, name) = (*rate, (*name).to_owned());
        chart
            .draw_series(LineSeries::new(
                [(1, rate), (seconds, rate)],
                shade.stroke_width(1),
            ))?
            .label(format!("{name}: {rate:.0}/s"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], shade));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // Latency of the successes: p50 solid, p99 lighter.
    let highest_latency = runs
        .iter()
        .flat_map(|r| r.figures.series.iter().filter_map(|s| s.p99_ms))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(1u64..seconds, 0f64..highest_latency * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("second of the run")
        .y_desc("latency ms")
        .draw()?;
    for (i, run) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let p50 = run
            .figures
            .series
            .iter()
            .filter_map(|s| Some((s.second, s.p50_ms?)));
        chart
            .draw_series(LineSeries::new(p50, colour.stroke_width(2)))?
            .label(format!("{} p50", run.name))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        let p99 = run
            .figures
            .series
            .iter()
            .filter_map(|s| Some((s.second, s.p99_ms?)));
        chart
            .draw_series(LineSeries::new(p99, colour.mix(0.5).stroke_width(2)))?
            .label(format!("{} p99", run.name))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.mix(0.5)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
