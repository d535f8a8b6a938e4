//! The one termination path's decisions: how an instance chosen for removal is drained, hooked
//! and stopped; resuming drains recorded before a restart; the activities of terminations that
//! ended.

use std::time::Duration;

use chrono::Utc;
use tracing::info;

use super::actuator::{Termination, GIVE_BACK_REASON};
use super::memory::GroupMemory;
use super::pass::View;
use super::plan::{Remove, RemoveReason};
use super::{Reconciler, Resolved};
use crate::engine::observe::Reach;
use crate::manifest::{Hook, ObjectKey};

impl Reconciler {
    /// How `r` is terminated: an instance that already failed is only removed (nothing runs in
    /// it to drain or hook); any other is drained for the group's `drainTimeout`, gets its
    /// `preStop` hook, and is stopped with the launch configuration's `stopGracePeriod`.
    pub(super) fn termination(
        &self,
        r: &Remove,
        view: &View,
        grace: Duration,
        (drain, pre_stop): (Duration, Option<Hook>),
        cause: &str,
    ) -> Termination {
        let failed = r.reason == RemoveReason::Failed;
        let drain = if failed { Duration::ZERO } else { drain };
        let pre_stop = if failed { None } else { pre_stop };
        let ports = view
            .observed
            .iter()
            .find(|(_, o)| o.id == r.id)
            .map(|(_, o)| o.ports.clone())
            .unwrap_or_default();
        Termination {
            drain,
            drain_total: drain,
            since: Utc::now(),
            pre_stop,
            grace: if failed { Duration::ZERO } else { grace },
            ports,
            cause: cause.to_string(),
            report: !failed,
            give_back: None,
        }
    }

    /// Resumes the drains of `key` recorded before a restart: a recorded container that is
    /// still there is hidden from planning again and drained for what is left of its drain (so
    /// the planner never picks a second victim); a record whose container is gone is dropped.
    /// Returns whether any drain was resumed (the caller looks at the group again).
    pub(super) fn resume_drains(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        view: &View,
        mem: &mut GroupMemory,
    ) -> bool {
        let mut resumed = false;
        for (id, d) in self.ctx.instances.drains_of(key) {
            let Some(zone) = self.zones.iter().find(|z| z.name == d.zone) else {
                self.ctx.instances.drain_ended(&id);
                continue;
            };
            if zone.reach() != Reach::Reachable || zone.is_terminating(&id) {
                continue; // unknown for now, or its drain runs
            }
            let Some((_, o)) = view.observed.iter().find(|(_, o)| o.id == id) else {
                self.ctx.instances.drain_ended(&id);
                continue;
            };
            let total = Duration::from_secs(d.drain_secs);
            let passed = (Utc::now() - d.since).to_std().unwrap_or_default();
            let r = Remove {
                id: id.clone(),
                name: o.name.clone(),
                zone: d.zone.clone(),
                reason: RemoveReason::ScaleIn,
            };
            let grace = mem.grace(resolved.lc.as_ref());
            let drain = mem.drain(resolved.group.as_ref(), resolved.lc.as_ref());
            let mut t = self.termination(&r, view, grace, drain, &d.cause);
            if d.reason == GIVE_BACK_REASON {
                // Still a give-back while the group keeps a pool; else a plain scale-in.
                t.give_back = super::pool_steps::give_back_to(resolved, &o.name, grace);
                if t.give_back.is_some() {
                    t.pre_stop = None;
                    t.report = false;
                }
            }
            t.drain = total.saturating_sub(passed);
            t.drain_total = total;
            t.since = d.since;
            info!(group = %key, instance = %o.name, left_s = t.drain.as_secs(), "resuming a drain begun before the restart");
            mem.record(
                "Drain",
                &o.name,
                &d.zone,
                &format!(
                    "resumed after a controller restart ({} of {} s left): {}",
                    t.drain.as_secs(),
                    total.as_secs(),
                    d.cause
                ),
            );
            self.actuator.terminate(key, &r, t);
            resumed = true;
        }
        resumed
    }

    /// Records the terminations of `key` that ended since its last pass as activities.
    pub(super) fn record_finished(&self, key: &ObjectKey, mem: &mut GroupMemory) {
        for f in self.actuator.take_finished(key) {
            mem.record("Stopped", &f.name, &f.zone, &f.cause);
        }
    }
}
