//! Liveness: `/healthz` says ok only while the controller's loops make progress.
//!
//! Each long-running loop (the directory watcher, one observer per zone, the autoscaler) holds a
//! [`Beat`] and touches it every time round; pull checks ask a component directly (the work
//! queue: is any group overdue or stuck in a reconcile?). A component silent for longer than
//! its own bound is reported by name, with how long it has been silent.
//!
//! # Why
//! Issue 9: with every reconcile panicking and the API's descriptors exhausted, `/healthz`
//! still said "ok": a constant tells an orchestrator nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::util::unpoisoned::LockExt;

/// A pull check: `Err(why)` when the component is not making progress.
type Check = Box<dyn Fn() -> Result<String, String> + Send + Sync>;

/// How long a loop that wakes at least every `period` may stay silent before `/healthz` fails.
pub fn silence_bound(period: Duration) -> Duration {
    period
        .saturating_mul(3)
        .saturating_add(Duration::from_secs(30))
}

/// The registry of every component's liveness.
pub struct Liveness {
    started: Instant,
    beats: Mutex<BTreeMap<String, Beat>>,
    checks: Mutex<BTreeMap<String, Check>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            started: Instant::now(),
            beats: Mutex::new(BTreeMap::new()),
            checks: Mutex::new(BTreeMap::new()),
        }
    }
}

/// A component's heartbeat: touched by its loop, read by `/healthz`.
#[derive(Clone)]
pub struct Beat {
    inner: Arc<BeatInner>,
}

impl std::fmt::Debug for Beat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Beat(silent for {:?})", self.silent_for())
    }
}

struct BeatInner {
    origin: Instant,
    /// Milliseconds after `origin` of the last touch (0: never).
    last: AtomicU64,
    /// Longer than this without a touch is not live.
    max_silence: Duration,
}

impl Beat {
    /// A beat registered nowhere (for loops run without a controller, e.g. in tests).
    pub fn detached() -> Beat {
        Beat::new(Instant::now(), Duration::MAX)
    }

    fn new(origin: Instant, max_silence: Duration) -> Beat {
        Beat {
            inner: Arc::new(BeatInner {
                origin,
                last: AtomicU64::new(0),
                max_silence,
            }),
        }
    }

    /// The loop made progress now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.last.store(ms.max(1), Ordering::Relaxed);
    }

    /// Time since the last touch (since the controller started when never touched).
    pub fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.inner.last.load(Ordering::Relaxed));
        self.inner.origin.elapsed().saturating_sub(last)
    }
}

/// What `/healthz` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub live: bool,
    /// One line per component: `name: ok (detail)` or `name: NOT LIVE (why)`.
    pub lines: Vec<String>,
}

impl Liveness {
    /// Registers a heartbeat named `name` that must be touched at least every `max_silence`.
    pub fn beat(&self, name: &str, max_silence: Duration) -> Beat {
        let b = Beat::new(self.started, max_silence);
        self.beats.locked().insert(name.to_string(), b.clone());
        b
    }

    /// Registers a pull check named `name`.
    pub fn check(
        &self,
        name: &str,
        check: impl Fn() -> Result<String, String> + Send + Sync + 'static,
    ) {
        self.checks
            .locked()
            .insert(name.to_string(), Box::new(check));
    }

    /// Every component's state now.
    pub fn report(&self) -> Report {
        let mut live = true;
        let mut lines = Vec::new();
        for (name, b) in self.beats.locked().iter() {
            let silent = b.silent_for();
            if silent > b.inner.max_silence {
                live = false;
                lines.push(format!(
                    "{name}: NOT LIVE (no progress for {:.0}s, the bound is {:.0}s)",
                    silent.as_secs_f64(),
                    b.inner.max_silence.as_secs_f64()
                ));
            } else {
                lines.push(format!(
                    "{name}: ok (progress {:.1}s ago)",
                    silent.as_secs_f64()
                ));
            }
        }
        for (name, check) in self.checks.locked().iter() {
            match check() {
                Ok(detail) => lines.push(format!("{name}: ok ({detail})")),
                Err(why) => {
                    live = false;
                    lines.push(format!("{name}: NOT LIVE ({why})"));
                }
            }
        }
        Report { live, lines }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_loop_or_a_failing_check_is_named() {
        let l = Liveness::default();
        let watcher = l.beat("watcher", Duration::from_secs(10));
        l.check("reconciler", || Ok("nothing overdue".into()));
        watcher.touch();
        assert!(l.report().live, "{:?}", l.report());
        tokio::time::advance(Duration::from_secs(11)).await;
        let r = l.report();
        assert!(!r.live);
        assert!(
            r.lines[0].starts_with("watcher: NOT LIVE (no progress for 11s"),
            "{r:?}"
        );
        watcher.touch();
        assert!(l.report().live);
        l.check("queue", || Err("group default/web due for 120s".into()));
        let r = l.report();
        assert!(!r.live);
        assert!(r
            .lines
            .iter()
            .any(|x| x == "queue: NOT LIVE (group default/web due for 120s)"));
    }
}
