//! Token buckets per caller: one tenant looping writes cannot slow the controller for the others.
//!
//! Each key (a bearer token, or everyone when no tokens are configured) has a bucket of
//! `burst` permits refilled at `rate` per second; a request takes one or is refused with how
//! long to wait. Keys are the configured tokens, so the map never grows beyond them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::util::unpoisoned::LockExt;

/// Buckets of one kind of request (writes, pushed metrics).
#[derive(Debug)]
pub struct RateLimiter {
    /// Permits per second.
    rate: f64,
    /// Permits a caller may use at once.
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    permits: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one permit for `key`.
    ///
    /// # Errors
    /// How long until a permit is free.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.take_n(key, 1)
    }

    /// Takes `n` permits for `key` at once (a large request costs more; at most a full burst).
    ///
    /// # Errors
    /// How long until that many permits are free.
    pub fn take_n(&self, key: &str, n: u32) -> Result<(), Duration> {
        let n = f64::from(n.max(1)).min(self.burst);
        let now = Instant::now();
        let mut buckets = self.buckets.locked();
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            permits: self.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.rate;
        b.permits = (b.permits + refill).min(self.burst);
        b.at = now;
        if b.permits >= n {
            b.permits -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((n - b.permits) / self.rate).min(3600.0),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate_per_key() {
        let l = RateLimiter::new(2.0, 3);
        for _ in 0..3 {
            l.take("a").unwrap();
        }
        let wait = l.take("a").unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        // Another caller is not affected.
        l.take("b").unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
        l.take("a").unwrap();
        assert!(l.take("a").is_err());
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            l.take("a").unwrap();
        }
        assert!(l.take("a").is_err());
        // A large request costs several permits (at most a full burst).
        tokio::time::advance(Duration::from_secs(60)).await;
        l.take_n("a", 100).unwrap();
        assert!(l.take("a").is_err());
    }
}
