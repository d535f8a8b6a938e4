//! Lap times of one pass, logged at debug level when the pass acted: where the time between an
//! engine event and the engine call it causes goes (`RUST_LOG=microscaler::reconcile=debug`).

use std::fmt::Write as _;
use std::time::Instant;

use tracing::debug;

use crate::manifest::ObjectKey;

/// The laps of one pass, in order.
pub(super) struct Laps {
    start: Instant,
    last: Instant,
    laps: Vec<(&'static str, Instant)>,
}

impl Laps {
    pub fn start() -> Self {
        let now = Instant::now();
        Laps {
            start: now,
            last: now,
            laps: Vec::new(),
        }
    }

    /// Ends the lap `name` now.
    pub fn lap(&mut self, name: &'static str) {
        self.last = Instant::now();
        self.laps.push((name, self.last));
    }

    /// Logs every lap's length and the total (debug level).
    pub fn log(&self, key: &ObjectKey) {
        let mut text = String::new();
        let mut prev = self.start;
        for (name, at) in &self.laps {
            let _ = write!(text, "{name} {:.1} ms, ", ms(at.duration_since(prev)));
            prev = *at;
        }
        debug!(
            group = %key,
            total_ms = ms(self.last.duration_since(self.start)),
            "pass laps: {}",
            text.trim_end_matches(", ")
        );
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
