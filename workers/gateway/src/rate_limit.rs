//! The per-user limit on order creation (GCRA, `governor`): `orders_per_second` sustained,
//! `order_burst` at once. A refusal says when the next create would be let through.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use shop_contracts::UserId;

pub struct OrderLimiter {
    limiter: DefaultKeyedRateLimiter<UserId>,
    clock: DefaultClock,
}

impl OrderLimiter {
    pub fn new(per_second: f64, burst: u32) -> OrderLimiter {
        // One more create is allowed every `period`; a rate of 0 or less is taken as the
        // slowest one governor can express rather than as "never".
        let period = if per_second.is_finite() && per_second > 0.0 {
            Duration::from_secs_f64((1.0 / per_second).min(1e9))
        } else {
            Duration::from_secs(1_000_000_000)
        };
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let clock = DefaultClock::default();
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("the period is positive")
            .allow_burst(burst);
        OrderLimiter {
            limiter: governor::RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
        }
    }

    /// `Ok` to go ahead, or how long the user must wait.
    pub fn check(&self, user: UserId) -> Result<(), Duration> {
        self.limiter
            .check_key(&user)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets users whose allowance is full again, so the table stays as small as the set
    /// of recent buyers.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
