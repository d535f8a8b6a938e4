//! Backoff for failed removals, per group: an engine that refuses every stop or remove is asked
//! again after 1 s, 2 s, 4 s ... up to a minute, not in a hot loop, and the group says so.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::manifest::ObjectKey;
use crate::util::unpoisoned::LockExt;

/// First delay after a failed removal...
const BASE: Duration = Duration::from_secs(1);
/// ...doubling up to this.
const MAX: Duration = Duration::from_secs(60);

/// One group's failing removals.
#[derive(Debug, Clone)]
struct Failing {
    count: u32,
    until: Instant,
    message: String,
}

/// Failed removals of every group.
#[derive(Debug, Default)]
pub(super) struct Removals {
    failing: Mutex<HashMap<ObjectKey, Failing>>,
}

impl Removals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Failing>> {
        self.failing.locked()
    }

    /// Records a failed removal of `container` of `key`; returns when to try again.
    pub(super) fn failed(&self, key: &ObjectKey, container: &str, error: &str) -> Instant {
        let mut failing = self.lock();
        let count = failing.get(key).map_or(0, |f| f.count) + 1;
        let delay = BASE.saturating_mul(1 << (count - 1).min(16)).min(MAX);
        let until = Instant::now() + delay;
        failing.insert(
            key.clone(),
            Failing {
                count,
                until,
                message: format!("cannot remove container {container}: {error}"),
            },
        );
        until
    }

    /// Records a removal of `key` that worked: the backoff starts over.
    pub(super) fn succeeded(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }

    /// Until when removals of `key` wait, and the last error, while they do.
    pub(super) fn held(&self, key: &ObjectKey) -> Option<(Instant, String)> {
        self.lock()
            .get(key)
            .filter(|f| f.until > Instant::now())
            .map(|f| (f.until, f.message.clone()))
    }

    /// The last error of `key` while its removals keep failing (held or due again).
    pub(super) fn last_error(&self, key: &ObjectKey) -> Option<(Instant, String)> {
        self.lock().get(key).map(|f| (f.until, f.message.clone()))
    }

    /// Forgets `key` (nothing of it is left).
    pub(super) fn forget(&self, key: &ObjectKey) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_a_success_resets() {
        let r = Removals::default();
        let k = ObjectKey::new(Kind::AutoScalingGroup, "default", "web");
        let t0 = Instant::now();
        assert_eq!(r.failed(&k, "web-1", "boom") - t0, Duration::from_secs(1));
        assert_eq!(r.failed(&k, "web-1", "boom") - t0, Duration::from_secs(2));
        assert_eq!(r.failed(&k, "web-1", "boom") - t0, Duration::from_secs(4));
        assert!(r.held(&k).unwrap().1.contains("web-1: boom"));
        for _ in 0..10 {
            r.failed(&k, "web-1", "boom");
        }
        assert_eq!(r.held(&k).unwrap().0 - t0, MAX);
        r.succeeded(&k);
        assert!(r.held(&k).is_none());
        assert_eq!(r.failed(&k, "web-1", "boom") - t0, Duration::from_secs(1));
    }
}
