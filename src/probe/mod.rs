//! The controller's probes of each instance (`healthCheck`): a runner that checks every running
//! instance of every group with a health check, and the verdicts it publishes for the reconciler.
//!
//! This stage sits above the watcher (it reads each group's `healthCheck` from the desired state)
//! and the engines' caches (the instances observed now), and below the reconciler, which reads
//! the verdicts: readiness gates `is_ready`, a failed liveness replaces the instance. A verdict
//! that changes enqueues its group through [`crate::engine::observe::Enqueue`].
//!
//! # Layout
//! - This file: [`Verdict`] and [`Verdicts`], the board the runner writes and the reconciler reads.
//! - [`check`]: one probe (HTTP, TCP, Exec) with its outcome.
//! - [`target`]: where a container port is published, and the address a probe connects to.
//! - [`runner`]: the loop: which instances to probe when, bounded concurrency, thresholds, grace.

pub mod check;
pub mod runner;
pub mod target;

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use crate::util::unpoisoned::RwLockExt;

/// What the probes say about one instance now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// The readiness probe's verdict; `None` when the group has no readiness probe, or before
    /// its first result.
    pub ready: Option<bool>,
    /// Failed liveness `unhealthyThreshold` times in a row, after the grace period: the
    /// instance is to be replaced (final: a container never comes back from it).
    pub liveness_failed: bool,
    /// One short sentence, set when the verdict changes (so the status does not churn with
    /// every probe): "liveness failed 3 times in a row: HTTP 404 from GET /".
    pub summary: String,
}

/// The verdicts of every probed instance, by container id.
#[derive(Debug, Default)]
pub struct Verdicts {
    by_id: RwLock<HashMap<String, Verdict>>,
}

impl Verdicts {
    /// The verdict of container `id`, if it is probed.
    pub fn get(&self, id: &str) -> Option<Verdict> {
        self.by_id.read_locked().get(id).cloned()
    }

    /// Sets the verdict of container `id`.
    pub fn set(&self, id: &str, v: Verdict) {
        self.by_id.write_locked().insert(id.to_string(), v);
    }

    /// Forgets every container not in `ids` (gone, or no longer probed).
    pub fn retain(&self, ids: &HashSet<String>) {
        self.by_id.write_locked().retain(|id, _| ids.contains(id));
    }

    /// How many instances have a verdict.
    pub fn len(&self) -> usize {
        self.by_id.read_locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
