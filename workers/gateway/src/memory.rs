//! Giving the memory of departed viewers back to the system. This module owns the one
//! allocator call the gateway makes.
//!
//! Why it is needed: glibc's `malloc` returns freed memory to the system only from the top
//! of each arena. An event stream's memory (its state, the transient buffers of its
//! request and response head, two 8 KiB buffers inside hyper when hyper serves it) is
//! interleaved with memory that stays (NATS buffers, other connections), so after
//! a crowd of viewers leaves their pages stay resident though they are free: measured on the
//! release gateway, 5,000 streams opened and closed left 117 MiB resident with none open,
//! and one `malloc_trim(0)` brought it to 19 MiB. So when many streams have closed since
//! the last look, the gateway trims. With another allocator (or libc) it does nothing.

use std::time::Duration;

use crate::shutdown::Drain;

/// How often the count of open streams is looked at.
const EVERY: Duration = Duration::from_secs(5);

/// Streams that must have closed since the highest count of the last period (about 16 MiB of
/// buffers) before a trim is worth its cost (it walks every arena's free lists under their
/// locks: a few milliseconds for a hundred megabytes).
const CLOSED_STREAMS: usize = 1024;

/// Runs for the life of the gateway: trims after many streams closed.
pub async fn give_back_after_viewers_leave(drain: Drain) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (peak, open) = drain.take_stream_peak();
        if peak.saturating_sub(open) >= CLOSED_STREAMS {
            // Off the runtime's threads: the trim holds arena locks for milliseconds.
            let trimmed = tokio::task::spawn_blocking(trim).await;
            tracing::debug!(
                peak,
                open,
                ?trimmed,
                "returned freed memory after streams closed"
            );
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // one libc call, no pointers
fn trim() {
    // SAFETY: malloc_trim only releases free memory; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
