//! The live progress line of a run: elapsed seconds against the window, the success rate so
//! far and how many requests did not succeed; then, past the window, the wait for the
//! requests still in flight. Drawn on stderr only when it is a terminal (indicatif's rule),
//! so logs and CI output stay clean.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::lock;
use crate::bench::record::Recorder;

const TICK: Duration = Duration::from_millis(250);

pub struct Display {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Display {
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

pub fn show(
    title: &str,
    unit: &'static str,
    recorder: Arc<Mutex<Recorder>>,
    started: Instant,
    window: Duration,
) -> Display {
    let bar = ProgressBar::new(window.as_secs().max(1)).with_style(
        ProgressStyle::with_template("{prefix} {spinner} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(title.to_owned());
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                let elapsed = started.elapsed();
                let (ok, other) = lock(&recorder).live();
                bar.set_position(elapsed.as_secs().min(window.as_secs()));
                let rate = ok as f64 / elapsed.min(window).as_secs_f64().max(0.001);
                let tail = if elapsed >= window {
                    ", waiting for the requests in flight"
                } else {
                    ""
                };
                bar.set_message(format!("{rate:.0} {unit}/s, {other} not ok{tail}"));
            }
        })
    };
    Display { bar, ticker }
}
