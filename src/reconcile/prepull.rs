//! Images first: before a rollout replaces anything, its image is pulled on every zone of the
//! group (pre-pull), so a registry that refuses or a slow pull stalls the rollout before it
//! starts, never half-way; and while a pass waits on a pull, the group's status shows its
//! progress (`ms describe`), republished at most every [`PULL_REPORT_PERIOD`].
//!
//! # Rules
//! - A plan with a rollout step (a creation or removal for the rollout) runs those steps only
//!   once the new spec's image is on every reachable zone of the group. Until then the rest of
//!   the plan runs (failed instances are replaced, scale-in happens).
//! - A failed pre-pull is the group's failure: `Degraded` with the registry's message, and the
//!   group's backoff; during the backoff no pull is tried and the rollout's steps stay held.
//! - A zone that has the image is remembered for [`PREPARED_FOR`] (by zone and spec), so a
//!   rollout asks each engine once, not every pass.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use super::error::ReconcileError;
use super::memory::GroupMemory;
use super::plan::{CreateReason, Plan, RemoveReason, Target};
use super::{container_spec, Reconciler, Resolved};
use crate::engine::observe::Reach;
use crate::engine::{Engine, EngineError};
use crate::manifest::ObjectKey;
use crate::status::{GroupStatus, PullStatus};
use crate::util::unpoisoned::LockExt;

/// How often a pass waiting on pulls republishes the group's status.
pub(super) const PULL_REPORT_PERIOD: Duration = Duration::from_secs(1);
/// How long a zone that had a spec's image counts as prepared.
pub(super) const PREPARED_FOR: Duration = Duration::from_secs(600);

/// Whether `plan` has a step of a rollout.
pub(super) fn has_rollout(plan: &Plan) -> bool {
    plan.create
        .iter()
        .any(|c| c.reason == CreateReason::Rollout)
        || plan
            .remove
            .iter()
            .any(|r| r.reason == RemoveReason::Rollout)
}

/// `plan` without the rollout's steps (what may run while its image is not everywhere yet).
pub(super) fn without_rollout(plan: &Plan) -> Plan {
    Plan {
        create: plan
            .create
            .iter()
            .filter(|c| c.reason != CreateReason::Rollout)
            .cloned()
            .collect(),
        remove: plan
            .remove
            .iter()
            .filter(|r| r.reason != RemoveReason::Rollout)
            .cloned()
            .collect(),
    }
}

impl Reconciler {
    /// What of `plan` may run now as far as images go, and the failure of a pre-pull (already
    /// recorded in `mem`). `held`: the group is in its backoff (no pull is tried).
    pub(super) async fn prepull(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        plan: Plan,
        held: bool,
        mem: &mut GroupMemory,
    ) -> (Plan, Option<ReconcileError>) {
        if !has_rollout(&plan) {
            return (plan, None);
        }
        let (Some(lc), Some(group)) = (&resolved.lc, &resolved.group) else {
            return (plan, None);
        };
        let hash = &resolved.target.spec_hash;
        let now = Instant::now();
        let todo: Vec<(String, Arc<dyn Engine>)> = resolved
            .target
            .zones
            .iter()
            .filter(|z| {
                self.prepared
                    .locked()
                    .get(&(z.to_string(), hash.clone()))
                    .is_none_or(|t| now.duration_since(*t) >= PREPARED_FOR)
            })
            .filter_map(|z| self.reachable_engine(z).map(|e| (z.clone(), e)))
            .collect();
        if todo.is_empty() {
            return (plan, None);
        }
        if held {
            return (without_rollout(&plan), None);
        }
        let pulls = todo.iter().map(|(zone, engine)| {
            let spec = container_spec(
                key,
                lc,
                group,
                zone,
                hash,
                &self.ctx.controller_name,
                resolved.limits,
            );
            let engine = Arc::clone(engine);
            async move { (zone.clone(), engine.ensure_image(&spec).await) }
        });
        let results = self
            .reporting_pulls(key, &resolved.target, &lc.spec.image, join_all(pulls))
            .await;
        let mut failure = None;
        // Forget what expired (one entry per zone and spec a rollout went to).
        self.prepared
            .locked()
            .retain(|_, t| now.duration_since(*t) < PREPARED_FOR);
        for (zone, r) in results {
            match r {
                Ok(()) => {
                    self.prepared.locked().insert((zone, hash.clone()), now);
                }
                // An engine that stopped answering is the observer's to report (its instances
                // cannot be replaced anyway); the next pass asks it again.
                Err(EngineError::Unreachable(_)) => {}
                Err(e) if failure.is_none() => {
                    failure = Some(ReconcileError::LaunchFailed {
                        zone,
                        image: lc.spec.image.clone(),
                        error: Arc::new(e),
                    });
                }
                Err(_) => {}
            }
        }
        match failure {
            None => (plan, None),
            Some(f) => {
                let msg = f.to_string();
                tracing::warn!(group = %key, error = %msg, "pre-pull of a rollout's image failed; the rollout waits");
                if mem.degraded.as_ref().map(ToString::to_string) != Some(msg.clone()) {
                    mem.record("PrePullFailed", "-", "-", &msg);
                }
                mem.fail(f.clone(), hash);
                (without_rollout(&plan), Some(f))
            }
        }
    }

    /// Runs `work` and, while it runs, republishes `key`'s status with the pulls of `image` in
    /// flight on the group's zones (at most every [`PULL_REPORT_PERIOD`], only when they
    /// changed).
    pub(super) async fn reporting_pulls<F: Future>(
        &self,
        key: &ObjectKey,
        target: &Target,
        image: &str,
        work: F,
    ) -> F::Output {
        tokio::pin!(work);
        let mut tick =
            tokio::time::interval_at(Instant::now() + PULL_REPORT_PERIOD, PULL_REPORT_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => {
                    let pulls = self.pulls_of(&target.zones, image);
                    // A group's first pass has published nothing yet: its status starts here
                    // (nothing runs yet; what it converges to is known).
                    let mut status = self.ctx.status.get(key).unwrap_or_else(|| GroupStatus {
                        desired_capacity: target.desired,
                        zones: target.zones.clone(),
                        ..GroupStatus::default()
                    });
                    if status.pulls != pulls {
                        status.pulls = pulls;
                        self.ctx.status.publish(key, status);
                    }
                }
            }
        }
    }

    /// The engine of zone `name` while it answers.
    fn reachable_engine(&self, name: &str) -> Option<Arc<dyn Engine>> {
        let zone = self.zones.iter().find(|z| z.name == name)?;
        matches!(zone.reach(), Reach::Reachable)
            .then(|| zone.engine())
            .flatten()
    }

    /// The pulls of `image` in flight on `zones`.
    fn pulls_of(&self, zones: &[String], image: &str) -> Vec<PullStatus> {
        let mut out: Vec<PullStatus> = zones
            .iter()
            .filter_map(|z| self.reachable_engine(z).map(|e| (z, e)))
            .flat_map(|(zone, engine)| {
                engine
                    .pulls()
                    .into_iter()
                    .filter(|p| p.image == image)
                    .map(move |p| PullStatus {
                        zone: zone.clone(),
                        image: p.image,
                        layers_done: p.layers_done,
                        layers_total: p.layers_total,
                        bytes_done: p.bytes_done,
                        bytes_total: p.bytes_total,
                        seconds: p.started.elapsed().as_secs(),
                    })
            })
            .collect();
        out.sort_by(|a, b| a.zone.cmp(&b.zone));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::plan::{Create, Remove};

    fn create(zone: &str, reason: CreateReason) -> Create {
        Create {
            zone: zone.into(),
            reason,
        }
    }

    #[test]
    fn only_the_rollouts_steps_wait_for_the_image() {
        let mut plan = Plan {
            create: vec![
                create("a", CreateReason::Rollout),
                create("b", CreateReason::Replace),
            ],
            remove: Vec::new(),
        };
        assert!(has_rollout(&plan));
        let held = without_rollout(&plan);
        assert_eq!(held.create, vec![create("b", CreateReason::Replace)]);
        assert!(!has_rollout(&held));
        plan.create.clear();
        assert!(
            !has_rollout(&plan),
            "a plan without rollout steps pulls nothing"
        );
    }

    #[test]
    fn removals_of_a_rollout_wait_too() {
        let remove = |reason| Remove {
            id: "c1".into(),
            name: "web-a-1".into(),
            zone: "a".into(),
            reason,
        };
        let plan = Plan {
            create: Vec::new(),
            remove: vec![remove(RemoveReason::Rollout), remove(RemoveReason::Failed)],
        };
        assert!(has_rollout(&plan));
        let held = without_rollout(&plan);
        assert_eq!(held.remove.len(), 1);
        assert_eq!(held.remove[0].reason, RemoveReason::Failed);
    }
}
