//! What the reconciler remembers about each group between passes (backoff, activities, the
//! conditions' transition times), lent to one pass at a time.
//!
//! Nothing here is needed for correctness after a restart: it only shapes backoff and status.
//! A pass takes its group's memory once ([`Memory::lease`]) and gives it back when it ends,
//! even by a panic, so the memory's lock is never held across an engine call.

use std::collections::{HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::error::ReconcileError;
use super::now_secs;
use crate::manifest::{LaunchConfiguration, ObjectKey};
use crate::status::{Activity, Condition, GroupStatus, MAX_ACTIVITIES};
use crate::util::unpoisoned::LockExt;

/// Backoff after failures doubles from this...
pub(super) const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// ...up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Failures older than this no longer count towards the backoff.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Docker's default stop grace, for a group whose launch configuration was never seen.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// One group's memory.
#[derive(Debug, Default)]
pub(super) struct GroupMemory {
    /// Consecutive failures (launch errors, crashes) for the backoff.
    pub failures: u32,
    pub last_failure: Option<Instant>,
    /// No creation before this (exponential backoff after failures).
    pub hold_until: Option<Instant>,
    /// The last failure, for the Degraded condition.
    pub degraded: Option<ReconcileError>,
    pub activities: VecDeque<Activity>,
    pub last_scale_out: Option<DateTime<Utc>>,
    pub last_scale_in: Option<DateTime<Utc>>,
    /// Desired capacity of the previous pass (to tell a scale-out from a replacement).
    pub last_desired: Option<u32>,
    /// The conditions last published (their transition times carry over).
    pub conditions: Vec<Condition>,
    seeded: bool,
    /// Stop grace of the group's launch configuration when last seen: a deleted group's
    /// containers are stopped with it, not with Docker's default.
    last_grace: Option<Duration>,
    /// Drain timeout and preStop hook of the group when last seen, for the same reason.
    last_drain: Option<(Duration, Option<crate::manifest::Hook>)>,
    /// The container spec hash the failures were for: a new launch configuration starts with a
    /// clean slate, since the backoff was earned by the old one.
    pub failed_hash: Option<String>,
    /// Why the last pass could not launch all it wanted: a namespace quota (Degraded).
    pub quota: Option<ReconcileError>,
    /// Each instance's `ready` in the status written before a restart: the readiness of an
    /// instance the probes have not judged yet.
    pub ready_before: std::collections::HashMap<String, bool>,
    /// Each container's `startedAt` in the status written before a restart, by short id: shown
    /// again while the engine's agrees with it (see `pass::shown_start`).
    pub started_before: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>>,
}

impl GroupMemory {
    /// Adds an activity (newest first, at most [`MAX_ACTIVITIES`]).
    pub fn record(&mut self, action: &str, instance: &str, zone: &str, cause: &str) {
        self.activities.push_front(Activity {
            time: now_secs(),
            action: action.to_string(),
            instance: instance.to_string(),
            zone: zone.to_string(),
            cause: cause.to_string(),
        });
        self.activities.truncate(MAX_ACTIVITIES);
    }

    /// Counts a failure of `spec_hash` and holds creations back for the doubled backoff.
    pub fn fail(&mut self, error: ReconcileError, spec_hash: &str) {
        let now = Instant::now();
        if self.failed_hash.as_deref() != Some(spec_hash) {
            self.failures = 0;
        }
        self.failed_hash = Some(spec_hash.to_string());
        if self.last_failure.is_some_and(|t| now - t > FAILURE_MEMORY) {
            self.failures = 0;
        }
        self.failures += 1;
        self.last_failure = Some(now);
        let delay = BACKOFF_BASE
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(BACKOFF_MAX);
        self.hold_until = Some(now + delay);
        self.degraded = Some(error);
    }

    /// Forgets failures and their backoff: the group is healthy again, or runs a new spec.
    pub fn forget_failures(&mut self) {
        self.failures = 0;
        self.last_failure = None;
        self.hold_until = None;
        self.degraded = None;
        self.failed_hash = None;
    }

    /// The start of a pass of group `key` running `spec_hash` (`None`: a deleted group): seeds the
    /// memory from the status written before a restart (`previous`, read only the first time),
    /// lets old failures go, and returns until when creations are held back.
    pub fn begin(
        &mut self,
        key: &ObjectKey,
        previous: impl FnOnce() -> Option<serde_json::Value>,
        spec_hash: Option<&str>,
    ) -> Option<Instant> {
        if !self.seeded {
            self.seed(previous().as_ref());
        }
        let now = Instant::now();
        if self.last_failure.is_some_and(|t| now - t > FAILURE_MEMORY) {
            self.failures = 0;
            self.degraded = None;
        }
        // A fixed launch configuration must not wait out the backoff of the broken one.
        if let Some(hash) = spec_hash {
            if self.failed_hash.as_ref().is_some_and(|h| h != hash) {
                tracing::debug!(group = %key, "new launch configuration: failures and backoff forgotten");
                self.forget_failures();
            }
        }
        self.held()
    }

    /// Until when creations are held back (the backoff), if that is still ahead.
    pub fn held(&self) -> Option<Instant> {
        self.hold_until.filter(|t| *t > Instant::now())
    }

    /// The stop grace for this group's removals: its launch configuration's (remembered for
    /// when it is gone), else Docker's default.
    pub fn grace(&mut self, lc: Option<&LaunchConfiguration>) -> Duration {
        if let Some(lc) = lc {
            self.last_grace = Some(lc.spec.stop_grace_period.map_or(DEFAULT_GRACE, |d| d.0));
        }
        self.last_grace.unwrap_or(DEFAULT_GRACE)
    }

    /// The drain timeout and preStop hook of this group's terminations: its spec's, remembered
    /// for when the group is gone (a deleted group's instances are drained and hooked too).
    pub fn drain(
        &mut self,
        group: Option<&crate::manifest::AutoScalingGroup>,
        lc: Option<&LaunchConfiguration>,
    ) -> (Duration, Option<crate::manifest::Hook>) {
        if let Some(g) = group {
            let drain = g.spec.drain_timeout.map_or(Duration::ZERO, |d| d.0);
            let hook = lc
                .and_then(|l| l.spec.lifecycle.as_ref())
                .and_then(|l| l.pre_stop.clone());
            self.last_drain = Some((drain, hook));
        }
        self.last_drain.clone().unwrap_or((Duration::ZERO, None))
    }

    /// Seeds activities and times from the status written before (survives restarts).
    fn seed(&mut self, previous: Option<&serde_json::Value>) {
        if self.seeded {
            return;
        }
        self.seeded = true;
        let Some(prev) =
            previous.and_then(|v| serde_json::from_value::<GroupStatus>(v.clone()).ok())
        else {
            return;
        };
        self.ready_before = prev
            .instances
            .iter()
            .map(|i| (i.name.clone(), i.ready))
            .collect();
        self.started_before = prev
            .instances
            .iter()
            .filter_map(|i| Some((i.container_id.clone(), i.started_at?)))
            .collect();
        self.activities = prev.activities.into_iter().collect();
        self.last_scale_out = prev.last_scale_out;
        self.last_scale_in = prev.last_scale_in;
        self.conditions = prev.conditions;
        self.last_desired = Some(prev.desired_capacity);
    }
}

/// Every group's memory.
#[derive(Default)]
pub(super) struct Memory(Mutex<HashMap<ObjectKey, GroupMemory>>);

impl Memory {
    /// Lends `key`'s memory to one pass: taken out of the map under one lock, put back when the
    /// lease is dropped (also when the pass panics). The queue never runs two passes of one
    /// group at once, so nobody else needs it meanwhile.
    pub fn lease(&self, key: &ObjectKey) -> Lease<'_> {
        let mem = self.0.locked().remove(key).unwrap_or_default();
        Lease {
            memory: self,
            key: key.clone(),
            mem: Some(mem),
        }
    }
}

/// One group's memory, lent to one pass.
pub(super) struct Lease<'m> {
    memory: &'m Memory,
    key: ObjectKey,
    /// `None` once forgotten.
    mem: Option<GroupMemory>,
}

impl Lease<'_> {
    /// Drops the group's memory for good (the group is deleted).
    pub fn forget(mut self) {
        self.mem = None;
    }
}

impl Deref for Lease<'_> {
    type Target = GroupMemory;
    fn deref(&self) -> &GroupMemory {
        self.mem
            .as_ref()
            .expect("a lease holds its memory until dropped")
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut GroupMemory {
        self.mem
            .as_mut()
            .expect("a lease holds its memory until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(mem) = self.mem.take() {
            self.memory.0.locked().insert(self.key.clone(), mem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::AutoScalingGroup, "default", "web")
    }

    #[test]
    fn a_lease_gives_the_memory_back_even_when_the_pass_panics() {
        let memory = Memory::default();
        memory.lease(&key()).failures = 2;
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut lease = memory.lease(&key());
            lease.failures += 1;
            panic!("a pass panics");
        }));
        assert!(caught.is_err());
        assert_eq!(memory.lease(&key()).failures, 3);
        memory.lease(&key()).forget();
        assert_eq!(
            memory.lease(&key()).failures,
            0,
            "a forgotten memory starts over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_double_the_backoff_and_a_new_spec_forgets_them() {
        let mut m = GroupMemory::default();
        let err = || ReconcileError::Panicked("x".into());
        m.fail(err(), "h1");
        m.fail(err(), "h1");
        let hold = m.held().expect("held");
        assert_eq!(hold - Instant::now(), Duration::from_secs(2));
        assert_eq!(m.begin(&key(), || None, Some("h1")), Some(hold));
        assert_eq!(m.begin(&key(), || None, Some("h2")), None);
        assert!(m.degraded.is_none());
    }
}
