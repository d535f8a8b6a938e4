//! The executor: carries out one pass's plan through the actuator, in named steps (find out why
//! failed instances ended, remove, launch with slow start) and records each in the group's
//! memory as an activity.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tracing::{info, warn};

use super::actuator::Actuator;
use super::error::ReconcileError;
use super::memory::GroupMemory;
use super::pass::View;
use super::plan::{self, CreateReason, Instance, Plan, RemoveReason};
use super::{container_spec, Reconciler, Resolved};
use crate::engine::{labels, ContainerState};
use crate::manifest::{GroupState, ObjectKey};
use crate::util::unpoisoned::LockExt;

/// A container that exits by itself within this time of starting counts as a crash (backoff).
pub(super) const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// How long a spec that started a container skips the slow start.
const PROVEN_FOR: Duration = Duration::from_secs(600);

/// One launched instance: its name, zone and why.
type Launched = (String, String, CreateReason);

impl Reconciler {
    /// Carries out `plan` for `key` (observed as `view` before it), recording activities,
    /// crashes and failures in `mem`; `by` is the autoscaler's cause suffix.
    ///
    /// # Errors
    /// `LaunchFailed` when a launch failed (already recorded in `mem`, with its backoff).
    pub(super) async fn execute(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        plan: &Plan,
        view: &View,
        mem: &mut GroupMemory,
        by: &str,
    ) -> Result<(), ReconcileError> {
        let desired = resolved.target.desired;
        let hash = &resolved.target.spec_hash;
        if let Some(crash) = self.crash_of(plan, view).await {
            mem.fail(crash, hash);
            self.proven.locked().remove(hash);
        }
        let grace = mem.grace(resolved.lc.as_ref());
        for r in &plan.remove {
            let mut cause = if r.reason == RemoveReason::Unhealthy {
                // Through the crash backoff: a broken check cannot churn the engine.
                let why = self
                    .ctx
                    .probes
                    .get(&r.id)
                    .map_or_else(|| "liveness failed".to_string(), |v| v.summary);
                mem.fail(
                    ReconcileError::Unhealthy {
                        instance: r.name.clone(),
                        why: why.clone(),
                    },
                    hash,
                );
                format!("{why}; it is replaced")
            } else {
                removal_cause(r, resolved, &view.instances, mem.last_desired, by)
            };
            if let Some(why) = self.post_starts.failed(&r.id) {
                let e = ReconcileError::PostStartFailed {
                    instance: r.name.clone(),
                    why,
                };
                cause = e.to_string();
                mem.fail(e, hash);
            }
            self.post_starts.forget(&r.id);
            if self.quarantine(key, r, resolved, view, &cause, grace, mem) {
                continue;
            }
            mem.record("Terminate", &r.name, &r.zone, &cause);
            self.ctx
                .telemetry
                .terminated(&key.namespace, &key.name, &cause);
            if r.reason == RemoveReason::ScaleIn && resolved.group.is_some() {
                mem.last_scale_in = Some(super::now_secs());
            }
            let drain = mem.drain(resolved.group.as_ref(), resolved.lc.as_ref());
            let t = self.termination(r, view, grace, drain, &cause);
            self.actuator.terminate(key, r, t);
        }
        self.ctx.instances.flush();
        if plan.create.is_empty() {
            mem.last_desired = Some(desired);
            return Ok(());
        }
        if resolved.lc.is_none() || resolved.group.is_none() {
            return Ok(());
        }
        let works = runs_proven(view, hash);
        let (launched, failure) = self.slow_start(key, resolved, &plan.create, works).await;
        let replaced: Vec<&str> = plan
            .remove
            .iter()
            .filter(|r| r.reason == RemoveReason::Failed)
            .map(|r| r.name.as_str())
            .collect();
        // Unhealthy instances, removed in this pass or kept until their replacement is ready.
        let unhealthy: Vec<&str> = view
            .instances
            .iter()
            .filter(|i| i.liveness_failed)
            .map(|i| i.name.as_str())
            .collect();
        for (name, zone, reason) in &launched {
            let cause =
                if *reason == CreateReason::Replace && replaced.is_empty() && !unhealthy.is_empty()
                {
                    format!("replacing unhealthy instance {}", unhealthy.join(", "))
                } else {
                    launch_cause(reason, resolved, mem.last_desired, &replaced, by)
                };
            mem.record("Launch", name, zone, &cause);
            self.ctx
                .telemetry
                .launched(&key.namespace, &key.name, &cause);
            if *reason == CreateReason::ScaleOut {
                mem.last_scale_out = Some(super::now_secs());
            }
        }
        if !launched.is_empty() {
            info!(group = %key, launched = launched.len(), "launched instances");
        }
        mem.last_desired = Some(desired);
        let Some(failure) = failure else {
            return Ok(());
        };
        self.ctx.telemetry.launch_failed(&key.namespace, &key.name);
        let msg = failure.to_string();
        if mem.degraded.as_ref().map(ToString::to_string) != Some(msg.clone()) {
            mem.record("LaunchFailed", "-", "-", &msg);
        }
        mem.fail(failure.clone(), hash);
        Err(failure)
    }

    /// Why the first failed instance of `plan` that crashed (exited by itself within
    /// [`CRASH_WINDOW`] of its start) ended, with its last log lines; killed ones do not count.
    async fn crash_of(&self, plan: &Plan, view: &View) -> Option<ReconcileError> {
        for r in plan
            .remove
            .iter()
            .filter(|r| r.reason == RemoveReason::Failed)
        {
            let Some(o) = view
                .observed
                .iter()
                .find(|(_, o)| o.id == r.id)
                .map(|(_, o)| o)
            else {
                continue;
            };
            let ran_for = o
                .started_at
                .map(|s| Utc::now() - s)
                .and_then(|d| d.to_std().ok());
            let killed = matches!(o.exit_code, Some(137) | Some(143));
            if o.exit_code.is_some() && !killed && ran_for.is_none_or(|d| d < CRASH_WINDOW) {
                let logs = self.actuator.logs(&r.zone, &r.id, 5).await;
                return Some(ReconcileError::CrashLoop {
                    instance: r.name.clone(),
                    code: o.exit_code,
                    ran_for,
                    logs: logs.trim().replace('\n', " | "),
                });
            }
        }
        None
    }

    /// Launches `creates` with slow start: one creation first, then the window grows by one per
    /// success (doubling per round trip) up to the reconciler's concurrency; the first failure
    /// stops further launches, so a broken image costs one failed create per backoff period, not
    /// a hundred. A spec that started a container within [`PROVEN_FOR`] starts at full speed.
    ///
    /// `works`: an instance of the spec runs and outlived the crash window (a self-heal or a
    /// zone made up: the spec is proven, full speed too).
    async fn slow_start(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        creates: &[plan::Create],
        works: bool,
    ) -> (Vec<Launched>, Option<ReconcileError>) {
        let (Some(lc), Some(group)) = (&resolved.lc, &resolved.group) else {
            return (Vec::new(), None);
        };
        let hash = &resolved.target.spec_hash;
        let proven = works
            || self
                .proven
                .locked()
                .get(hash)
                .is_some_and(|t| t.elapsed() < PROVEN_FOR);
        let mut todo: VecDeque<&plan::Create> = creates.iter().collect();
        let mut inflight = FuturesUnordered::new();
        let mut window = if proven { self.concurrency } else { 1 };
        let mut failure: Option<ReconcileError> = None;
        let mut launched: Vec<Launched> = Vec::new();
        loop {
            while failure.is_none() && inflight.len() < window.min(self.concurrency) {
                let Some(c) = todo.pop_front() else { break };
                let Some(target) = self.actuator.target(&c.zone) else {
                    continue;
                };
                let mut spec = container_spec(
                    key,
                    lc,
                    group,
                    &c.zone,
                    hash,
                    &self.ctx.controller_name,
                    resolved.limits,
                );
                spec.env.extend(self.instance_env(key, &spec.name));
                tracing::debug!(group = %key, name = %spec.name, zone = %c.zone, "launching");
                let (zone, reason) = (c.zone.clone(), c.reason.clone());
                inflight.push(async move { (zone, reason, Actuator::launch(target, spec).await) });
            }
            let Some((zone, reason, result)) = inflight.next().await else {
                break;
            };
            match result {
                Ok(o) => {
                    let hook = lc
                        .spec
                        .lifecycle
                        .as_ref()
                        .and_then(|l| l.post_start.clone());
                    if let (Some(hook), Some(engine)) = (hook, self.actuator.engine(&zone)) {
                        self.post_starts
                            .start(key, engine, &o, hook, self.queue.clone());
                    }
                    window += 1;
                    self.proven.locked().insert(hash.clone(), Instant::now());
                    launched.push((o.name, zone, reason));
                }
                Err(e) => {
                    self.proven.locked().remove(hash);
                    warn!(group = %key, error = %e, "launch failed");
                    failure.get_or_insert(e);
                }
            }
        }
        (launched, failure)
    }
}

impl Reconciler {
    /// What a container is told about its controller, for its self-protection (see
    /// `apply::protect`): the controller's address, its own name and namespace, and a token
    /// valid for protecting this one container only.
    fn instance_env(&self, key: &ObjectKey, name: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("MS_INSTANCE".to_string(), name.to_string()),
            ("MS_NAMESPACE".to_string(), key.namespace.clone()),
            (
                "MS_PROTECT_TOKEN".to_string(),
                self.ctx.instances.token(&key.namespace, name),
            ),
        ];
        if let Some(url) = &self.ctx.instance_api_url {
            env.push(("MS_CONTROLLER_URL".to_string(), url.clone()));
        }
        env
    }
}

/// Whether an instance of spec `hash` runs in `view` and has outlived [`CRASH_WINDOW`]: the
/// spec works, whenever it was last launched.
fn runs_proven(view: &View, hash: &str) -> bool {
    let now = Utc::now();
    view.observed.iter().any(|(_, o)| {
        o.state == ContainerState::Running
            && o.labels.get(labels::SPEC_HASH).map(String::as_str) == Some(hash)
            // A list carries no start time (a restarted controller): the creation, as `heal`.
            && (now - o.started_at.unwrap_or(o.created))
                .to_std()
                .is_ok_and(|up| up >= CRASH_WINDOW)
    })
}

/// The activity cause of removing `r`.
fn removal_cause(
    r: &plan::Remove,
    resolved: &Resolved,
    before: &[Instance],
    last_desired: Option<u32>,
    by: &str,
) -> String {
    let desired = resolved.target.desired;
    let stopped = resolved
        .group
        .as_ref()
        .is_some_and(|g| g.spec.state == GroupState::Stopped);
    match r.reason {
        RemoveReason::Failed => match before
            .iter()
            .find(|i| i.id == r.id)
            .and_then(|i| i.exit_code)
        {
            Some(c) => format!("instance exited with code {c}; it is replaced"),
            None => "instance failed; it is replaced".to_string(),
        },
        RemoveReason::ScaleIn if resolved.group.is_none() => "group deleted".to_string(),
        RemoveReason::ScaleIn if stopped => "group stopped".to_string(),
        RemoveReason::ScaleIn => match last_desired {
            Some(l) if l > desired => {
                format!("desired capacity lowered from {l} to {desired}{by}")
            }
            _ => format!(
                "more instances than desired ({desired}): zone with most, then {}",
                policy_words(&resolved.target.termination_policies)
            ),
        },
        RemoveReason::Rollout => {
            if !resolved.target.zones.contains(&r.zone) {
                format!("zone {} is no longer in the group", r.zone)
            } else if before
                .iter()
                .any(|i| i.id == r.id && i.spec_hash.is_empty())
            {
                "container started outside microscaler".to_string()
            } else {
                "rolling update: replaced by an instance of the new launch configuration"
                    .to_string()
            }
        }
        RemoveReason::Rebalance => "rebalancing zones".to_string(),
        RemoveReason::Unhealthy => "liveness failed; it is replaced".to_string(),
    }
}

/// The group's termination order in words ("oldest first", "newest first", ...).
fn policy_words(policies: &[crate::manifest::TerminationPolicy]) -> String {
    use crate::manifest::TerminationPolicy::*;
    if policies.is_empty() {
        return "oldest first".to_string();
    }
    policies
        .iter()
        .map(|p| match p {
            Default => "outdated then oldest first",
            OldestInstance => "oldest first",
            NewestInstance => "newest first",
            OldestLaunchConfiguration => "outdated first",
        })
        .collect::<Vec<_>>()
        .join(", then ")
}

/// The activity cause of a launch for `reason`; `replaced` are the failed instances removed in
/// the same pass.
pub(super) fn launch_cause(
    reason: &CreateReason,
    resolved: &Resolved,
    last_desired: Option<u32>,
    replaced: &[&str],
    by: &str,
) -> String {
    let desired = resolved.target.desired;
    match reason {
        CreateReason::ScaleOut => match last_desired {
            Some(l) if l < desired => {
                format!("desired capacity raised from {l} to {desired}{by}")
            }
            None => format!("group started with desired capacity {desired}"),
            _ => format!("fewer instances than desired ({desired})"),
        },
        CreateReason::Replace if !replaced.is_empty() => {
            format!("replacing failed instance {}", replaced.join(", "))
        }
        CreateReason::Replace => "replacing a failed instance".to_string(),
        CreateReason::Rollout => format!(
            "rolling update to launch configuration {} ({})",
            resolved
                .lc
                .as_ref()
                .map_or("", |l| l.metadata.name.as_str()),
            resolved.target.spec_hash
        ),
        CreateReason::Rebalance => {
            "rebalancing zones: launching into the zone with fewest".to_string()
        }
    }
}
