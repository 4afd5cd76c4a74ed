//! Stopping gracefully: the signal the event streams watch, and the count of what is still
//! running (requests being answered, event streams open), so that a stop that runs out of
//! time can say what it abandoned; the same count of streams is what `gateway.max_event_streams`
//! bounds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

#[derive(Clone, Default)]
pub struct Drain(Arc<Inner>);

#[derive(Default)]
struct Inner {
    stop: CancellationToken,
    requests: AtomicUsize,
    streams: AtomicUsize,
    /// The most streams open at once since [`Drain::take_stream_peak`] last looked.
    streams_peak: AtomicUsize,
}

/// What was still running at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub requests: usize,
    pub streams: usize,
}

impl Drain {
    /// Asks everything that watches [`Drain::stopped`] to end.
    pub fn stop(&self) {
        self.0.stop.cancel();
    }

    /// Resolves once [`Drain::stop`] was called.
    pub fn stopped(&self) -> WaitForCancellationFutureOwned {
        self.0.stop.clone().cancelled_owned()
    }

    /// Counts one request until the guard is dropped.
    pub fn request(&self) -> Running {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        Running {
            drain: self.clone(),
            stream: false,
        }
    }

    /// Counts one open event stream until the guard is dropped, if fewer than `max` are open;
    /// `None` when `max` are (the stream is refused: `gateway.max_event_streams`).
    pub fn stream(&self, max: usize) -> Option<Running> {
        // One atomic step decides, so concurrent openings never admit more than `max`.
        let before = self
            .0
            .streams
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        self.0.streams_peak.fetch_max(before + 1, Ordering::Relaxed);
        Some(Running {
            drain: self.clone(),
            stream: true,
        })
    }

    /// The most streams open at once since the last call, and the streams open now (which
    /// the next period starts from).
    pub fn take_stream_peak(&self) -> (usize, usize) {
        let open = self.0.streams.load(Ordering::Relaxed);
        let peak = self.0.streams_peak.swap(open, Ordering::Relaxed);
        (peak.max(open), open)
    }

    pub fn in_flight(&self) -> InFlight {
        InFlight {
            requests: self.0.requests.load(Ordering::Relaxed),
            streams: self.0.streams.load(Ordering::Relaxed),
        }
    }
}

/// One request or stream being counted.
pub struct Running {
    drain: Drain,
    stream: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        let counter = if self.stream {
            &self.drain.0.streams
        } else {
            &self.drain.0.requests
        };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Middleware: counts each request until its response head is ready (an event stream's
/// body is counted by the stream itself).
pub async fn track(State(drain): State<Drain>, request: Request, next: Next) -> Response {
    let _running = drain.request();
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn guards_count_and_stop_wakes_the_watchers() {
        let drain = Drain::default();
        let request = drain.request();
        let stream = drain.stream(1).expect("below the cap");
        assert!(drain.stream(1).is_none(), "past the cap");
        assert_eq!(
            drain.in_flight(),
            InFlight {
                requests: 1,
                streams: 1
            }
        );
        drop(request);
        assert_eq!(drain.in_flight().requests, 0);
        drop(stream);
        assert_eq!(drain.in_flight().streams, 0);
        assert!(drain.stream(1).is_some(), "a closed stream frees its place");
        assert_eq!(drain.take_stream_peak(), (1, 0));
        assert_eq!(drain.take_stream_peak(), (0, 0));
        let stopped = drain.stopped();
        drain.stop();
        tokio::time::timeout(std::time::Duration::from_secs(1), stopped)
            .await
            .expect("stop wakes a watcher");
    }
}
