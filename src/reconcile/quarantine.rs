//! Quarantine: a failed instance (crashed, or its postStart failed) of a group with
//! `quarantine` is stopped and kept instead of removed, outside capacity (its replacement is
//! launched as usual), so an operator can `docker logs` / `docker inspect` it; the newest
//! `maxCount` are kept, each for `keepFor`.
//!
//! Docker cannot add a label to an existing container, so the mark is the controller's instance
//! state (kept across restarts) and the status (`state: quarantined`, `ms get instances
//! --quarantined`), not a label.

use std::time::Duration;

use chrono::Utc;
use tracing::info;

use super::actuator::Termination;
use super::instance_state::Quarantined;
use super::memory::GroupMemory;
use super::pass::View;
use super::plan::{Remove, RemoveReason};
use super::{Reconciler, Resolved};
use crate::engine::observe::Reach;
use crate::engine::ContainerState;
use crate::manifest::lifecycle::Quarantine;
use crate::manifest::ObjectKey;

impl Reconciler {
    /// Quarantines the failed instance `r` instead of removing it, when the group keeps failed
    /// instances and `r` is one of its own that ran; returns whether it did.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn quarantine(
        &self,
        key: &ObjectKey,
        r: &Remove,
        resolved: &Resolved,
        view: &View,
        cause: &str,
        grace: Duration,
        mem: &mut GroupMemory,
    ) -> bool {
        let Some(q) = resolved
            .group
            .as_ref()
            .and_then(|g| g.spec.quarantine.as_ref())
        else {
            return false;
        };
        // Crashed or failed liveness: the instances an operator wants to look into.
        if !matches!(r.reason, RemoveReason::Failed | RemoveReason::Unhealthy) {
            return false;
        }
        let ours = view.instances.iter().any(|i| i.id == r.id && !i.foreign);
        let Some((_, o)) = view.observed.iter().find(|(_, o)| o.id == r.id) else {
            return false;
        };
        let running = o.state == ContainerState::Running;
        if !ours || !(running || matches!(o.state, ContainerState::Exited | ContainerState::Dead)) {
            return false;
        }
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(q.keep_for()).unwrap_or_default();
        self.ctx.instances.quarantine(
            &r.id,
            Quarantined {
                namespace: key.namespace.clone(),
                group: key.name.clone(),
                name: r.name.clone(),
                zone: r.zone.clone(),
                why: cause.to_string(),
                since: now,
                until,
            },
        );
        if running {
            self.actuator.stop(key, r, grace);
        }
        mem.record(
            "Quarantine",
            &r.name,
            &r.zone,
            &format!(
                "{cause}; kept stopped for inspection until {} (docker logs {})",
                until.format("%Y-%m-%dT%H:%M:%SZ"),
                r.name
            ),
        );
        info!(group = %key, instance = %r.name, "instance quarantined");
        // The newest `maxCount` stay.
        let all = self.ctx.instances.quarantined_of(key);
        let extra = all.len().saturating_sub(q.max_count() as usize);
        for (id, old) in all.into_iter().take(extra) {
            self.release(key, &id, &old, "quarantine full (maxCount)", mem);
        }
        true
    }

    /// Ends quarantines that are due: expired, over `maxCount`, of a group gone or no longer
    /// keeping failed instances; forgets those whose container is gone. Returns how soon the
    /// next one ends.
    pub(super) fn maintain_quarantine(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        view: &View,
        mem: &mut GroupMemory,
    ) -> Option<Duration> {
        let records = self.ctx.instances.quarantined_of(key);
        if records.is_empty() {
            return None;
        }
        let q: Option<&Quarantine> = resolved
            .group
            .as_ref()
            .and_then(|g| g.spec.quarantine.as_ref());
        let now = Utc::now();
        let mut next: Option<Duration> = None;
        let kept = records.len();
        for (n, (id, rec)) in records.into_iter().enumerate() {
            let Some(zone) = self.zones.iter().find(|z| z.name == rec.zone) else {
                self.ctx.instances.release(&id);
                continue;
            };
            if zone.reach() != Reach::Reachable {
                continue;
            }
            if !view.quarantined.iter().any(|(_, o)| o.id == id) {
                if !zone.is_terminating(&id) {
                    self.ctx.instances.release(&id); // removed by someone
                }
                continue;
            }
            let why = match q {
                None if resolved.group.is_none() => Some("group deleted"),
                None => Some("quarantine no longer configured"),
                Some(_) if rec.until <= now => Some("quarantine time over (keepFor)"),
                Some(q) if kept - n > q.max_count() as usize => Some("quarantine full (maxCount)"),
                Some(_) => None,
            };
            match why {
                Some(why) => self.release(key, &id, &rec, why, mem),
                None => {
                    let left = (rec.until - now).to_std().unwrap_or_default();
                    next = Some(next.map_or(left, |d| d.min(left)));
                }
            }
        }
        next.map(|d| d.max(Duration::from_secs(1)))
    }

    /// Removes quarantined container `id` and forgets its quarantine.
    fn release(
        &self,
        key: &ObjectKey,
        id: &str,
        rec: &Quarantined,
        why: &str,
        mem: &mut GroupMemory,
    ) {
        let r = Remove {
            id: id.to_string(),
            name: rec.name.clone(),
            zone: rec.zone.clone(),
            reason: RemoveReason::Failed,
        };
        mem.record("Terminate", &rec.name, &rec.zone, why);
        self.actuator
            .terminate(key, &r, Termination::immediate(why));
        self.ctx.instances.release(id);
    }
}
