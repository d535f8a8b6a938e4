//! One pass for one group: read desired and observed state, plan, execute, publish the status,
//! and say when to look again.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::time::Instant;
use tracing::debug;

use super::conditions::{self, InFlight, Inputs};
use super::error::ReconcileError;
use super::execute::CRASH_WINDOW;
use super::laps::Laps;
use super::memory::GroupMemory;
use super::plan::{self, Instance, Plan, Target};
use super::pool::PoolPlan;
use super::quota::Reservation;
use super::runner::Action;
use super::{container_hash_with_limits, launch_mark, now_secs, Reconciler, Resolved};
use crate::autoscale::{Effective, PassView};
use crate::config::tenancy::Usage;
use crate::engine::observe::{short_id, Reach};
use crate::engine::{labels, ContainerState, Observed};
use crate::manifest::{GroupState, IntOrPercent, Object, ObjectKey};
use crate::status::{GroupStatus, InstanceStatus};
use crate::watch::store::Desired;

/// How often a group whose deletion is held is looked at again (a confirmation or a change of
/// the desired state also enqueues it at once).
const ORPHAN_RECHECK: Duration = Duration::from_secs(5);
/// How long a container may stay `created` before it counts as failed.
const STUCK_CREATED: Duration = Duration::from_secs(10);
/// How soon a pass that acted looks at the result.
const AFTER_ACTING: Duration = Duration::from_millis(20);
/// How often a group waiting for readiness (a rollout) or for removals is looked at.
const WHILE_WAITING: Duration = Duration::from_secs(1);
/// The `state` of an instance being drained, stopped and removed (see `status::InstanceStatus`).
pub const DRAINING: &str = "draining";
/// The `state` of a quarantined instance: failed, stopped, kept for inspection.
pub const QUARANTINED: &str = "quarantined";
/// How often a group whose scale-in or rollout waits for a protection is looked at (an expiry
/// ends it without any event).
const WHILE_PROTECTED: Duration = Duration::from_secs(5);
/// How often a deleted group whose containers are still going is looked at.
const WHILE_DELETING: Duration = Duration::from_millis(500);

/// What one group looks like on the engines now.
pub(super) struct View {
    /// Zones whose engine answers.
    pub reachable: BTreeSet<String>,
    /// Zones that do not, with the last error.
    pub unreachable: Vec<(String, String)>,
    /// The group's containers in reachable zones, with their zone.
    pub observed: Vec<(String, Observed)>,
    /// The same, as the planner sees them.
    pub instances: Vec<Instance>,
    /// Quarantined containers of the group (not in `observed`), with their zone.
    pub quarantined: Vec<(String, Observed)>,
    /// Containers of the group being drained, stopped or removed (not in `observed`).
    pub terminating: usize,
    /// The group's warm pool members in reachable zones (not instances: not in `observed`).
    pub pool: Vec<(String, Observed)>,
    /// False while a zone has never been listed (a pass must not act on that view).
    pub complete: bool,
}

impl Reconciler {
    /// One pass for one group (the `reconcile` of kube-runtime's contract; `self` is its
    /// context): returns when to look again.
    ///
    /// # Errors
    /// The failure of its own actions (`LaunchFailed`), returned after the status that shows it
    /// is published; [`Reconciler::error_policy`] turns it into the group's backoff.
    /// `NotObserved` when called before the first full observation (the runner never does).
    pub async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReconcileError> {
        crate::util::failpoint::reconcile_panic(&format!("{}/{}", key.namespace, key.name));
        let mut laps = Laps::start();
        let desired = self.ctx.desired.borrow().clone();
        let mut before = self.view(key);
        if !desired.loaded || !before.complete {
            return Err(ReconcileError::NotObserved);
        }
        // The autoscaler is asked once per pass: capacity, activity cause and status fields.
        let autoscale = match (&self.ctx.autoscaler, desired.group(key)) {
            (Some(a), Some(g)) => Some(a.for_pass(key, g)),
            _ => None,
        };
        let resolved = self.resolve(key, &desired, autoscale.as_ref().map(|a| &a.effective));
        if resolved.group.is_some() {
            self.orphans.defined(key);
        }
        if resolved.group.is_none()
            && (!before.observed.is_empty() || !before.pool.is_empty())
            && self.orphans.may_prune(key, &desired, &self.zones).is_err()
        {
            // Held (reported): touch nothing; look again when something may have changed.
            return Ok(Action::requeue(ORPHAN_RECHECK));
        }

        let mut mem = self.memory.lease(key);
        let held = mem.begin(
            key,
            || {
                let in_file = desired.objects.get(key).and_then(|e| match &e.object {
                    Object::AutoScalingGroup(g) => g.status.as_ref(),
                    _ => None,
                });
                self.ctx.status.previous(key, in_file)
            },
            resolved
                .group
                .is_some()
                .then_some(resolved.target.spec_hash.as_str()),
        );
        self.judge(&mut before, &resolved, &mem);

        // Terminations that ended are activities; drains begun before a restart go on (their
        // containers hidden from planning again before anything is planned).
        self.record_finished(key, &mut mem);
        if self.resume_drains(key, &resolved, &before, &mut mem) {
            before = self.view(key);
        }
        let quarantine_ends = self.maintain_quarantine(key, &resolved, &before, &mut mem);
        if before.unreachable.is_empty() {
            let names: Vec<&str> = before
                .observed
                .iter()
                .map(|(_, o)| o.name.as_str())
                .collect();
            self.ctx
                .instances
                .prune_protections(key, &names, Utc::now());
        }

        laps.lap("view");
        // What the group still needs, whatever the backoff holds back (status and requeue).
        let mut planned = self.plan(&resolved, &before);
        let removal_hold = self.actuator.removals.held(key).map(|(t, _)| t);
        // The warm pool serves what it can of the creations, and plans its own work.
        let mut pool_plan =
            self.pool_plan(key, &resolved, &mut planned, &before, held, removal_hold);
        let wanted_creations = planned.create.len();
        let (plan, reservation) = self.allowed(
            key,
            &resolved,
            &desired,
            &planned,
            &mut pool_plan,
            held,
            removal_hold,
            &mut mem,
        );
        laps.lap("plan");
        // Watchers learn what this pass does before it does it: launches may take seconds (a
        // pull, a large scale-out), and the status after them would tell the new capacity late.
        if resolved.group.is_some() && (!plan.is_empty() || !pool_plan.is_empty()) {
            let early = self.status(
                key,
                &resolved,
                &before,
                &before.unreachable,
                &planned,
                held,
                &desired,
                &mut mem,
                autoscale.clone(),
                Some(InFlight {
                    launching: plan.create.len() + pool_plan.take.len(),
                    removing: plan.remove.len(),
                }),
            );
            self.ctx.status.publish_early(key, early);
            laps.lap("early status");
        }
        // A rollout's image first, on every zone of the group (prepull.rs).
        let (plan, prepull_failure) = self
            .prepull(key, &resolved, plan, held.is_some(), &mut mem)
            .await;
        let acted = !plan.is_empty() || !pool_plan.is_empty();
        laps.lap("prepull");
        let by = autoscale.as_ref().map_or("", |a| a.cause.as_str());
        let replaced: Vec<&str> = plan
            .remove
            .iter()
            .filter(|r| r.reason == plan::RemoveReason::Failed)
            .map(|r| r.name.as_str())
            .collect();
        self.take_from_pool(key, &resolved, &pool_plan, &before, &replaced, &mut mem, by)
            .await;
        laps.lap("pool takes");
        let image = resolved.lc.as_ref().map(|lc| lc.spec.image.clone());
        let execute = self.execute(key, &resolved, &plan, &before, &mut mem, by);
        let failure = match (&image, plan.create.is_empty()) {
            // Launches may wait on a pull: its progress is shown meanwhile.
            (Some(image), false) => {
                self.reporting_pulls(key, &resolved.target, image, execute)
                    .await
            }
            _ => execute.await,
        }
        .err()
        .or(prepull_failure);
        drop(reservation);
        laps.lap("execute");
        self.tend_pool(key, &resolved, &pool_plan, &before, &desired, &mut mem)
            .await;
        laps.lap("tend pool");

        // Status from what we see now (our own actions are already in the caches). A pass that
        // did nothing (every periodic resync of a converged group) reuses what it read.
        let unreachable = before.unreachable.clone();
        let (after, remaining) = if acted {
            let mut after = self.view(key);
            self.judge(&mut after, &resolved, &mem);
            let remaining = self.plan(&resolved, &after);
            (after, remaining)
        } else {
            (before, planned)
        };
        if resolved.group.is_none() {
            mem.forget();
            return Ok(self.deleted(key, &after, removal_hold));
        }
        let status = self.status(
            key,
            &resolved,
            &after,
            &unreachable,
            &remaining,
            held,
            &desired,
            &mut mem,
            autoscale,
            None,
        );
        self.ctx.status.publish(key, status);
        if acted {
            laps.lap("status");
            laps.log(key);
        }
        let hold = mem.held();
        drop(mem);
        if let Some(e) = failure {
            return Err(e);
        }
        // A young `created` container is looked at again once it would count as stuck.
        let young = after
            .observed
            .iter()
            .any(|(_, o)| o.state == ContainerState::Created);
        let next = next_action(Next {
            acted,
            remaining: &remaining,
            hold,
            wanted_creations,
            young,
            removal_hold,
        });
        let next = match quarantine_ends {
            Some(d) => next.at_most(d),
            None => next,
        };
        Ok(if remaining.held_by_protection > 0 {
            next.at_most(WHILE_PROTECTED)
        } else {
            next
        })
    }

    /// What of `planned` this pass may do now: no creation during the group's backoff
    /// (`held`), no removal during the backoff of refused removals, and only the creations the
    /// namespace's quotas leave room for (reserved until the returned reservation is dropped;
    /// the rest waits, visibly: `Degraded=True QuotaExceeded`). Takes of stopped warm pool
    /// spares are reserved with the creations, and served first (`pool::cut_to_quota`); takes
    /// of paused or running spares are counted already and reserve nothing.
    #[allow(clippy::too_many_arguments)]
    fn allowed<'q>(
        &'q self,
        key: &ObjectKey,
        resolved: &Resolved,
        desired: &Desired,
        planned: &Plan,
        pool: &mut PoolPlan,
        held: Option<Instant>,
        removal_hold: Option<Instant>,
        mem: &mut GroupMemory,
    ) -> (Plan, Option<Reservation<'q>>) {
        let mut plan = planned.clone();
        if held.is_some() {
            plan.create.clear();
        }
        if removal_hold.is_some() {
            plan.remove.clear();
        }
        let takes = super::pool::takes_to_reserve(pool);
        let wanted = takes.saturating_add(u32::try_from(plan.create.len()).unwrap_or(u32::MAX));
        let reservation = (wanted > 0).then(|| {
            let running = self.namespace_usage(&key.namespace, desired);
            self.quotas.reserve(
                &self.ctx.tenancy,
                &key.namespace,
                running,
                wanted,
                resolved.limits,
            )
        });
        if let Some(r) = &reservation {
            let cut = super::pool::cut_to_quota(pool, &mut plan, r.granted);
            if cut > 0 {
                debug!(group = %key, cut, "quota: stopped warm pool spares not taken");
            }
        }
        let refused = reservation.as_ref().and_then(|r| r.refused.clone());
        if let Some(why) = &refused {
            debug!(group = %key, "quota: {why}");
        }
        mem.quota = refused.map(ReconcileError::QuotaExceeded);
        (plan, reservation)
    }

    /// The group's containers on every zone now, and which zones answer.
    pub(super) fn view(&self, key: &ObjectKey) -> View {
        let mut v = View {
            reachable: BTreeSet::new(),
            unreachable: Vec::new(),
            observed: Vec::new(),
            instances: Vec::new(),
            quarantined: Vec::new(),
            terminating: 0,
            pool: Vec::new(),
            complete: true,
        };
        for z in &self.zones {
            match z.reach() {
                Reach::Reachable => {
                    v.reachable.insert(z.name.clone());
                    v.terminating += z.terminating_of(key);
                    v.observed
                        .extend(z.instances_of(key).into_iter().map(|o| (z.name.clone(), o)));
                }
                Reach::Unreachable(e) => v.unreachable.push((z.name.clone(), e)),
                Reach::Unknown => v.complete = false,
            }
        }
        // Quarantined instances are outside capacity: not planned, not counted, shown apart.
        let (quarantined, observed): (Vec<_>, Vec<_>) = std::mem::take(&mut v.observed)
            .into_iter()
            .partition(|(_, o)| self.ctx.instances.is_quarantined(&o.id));
        v.observed = observed;
        v.quarantined = quarantined;
        let now = Utc::now();
        let (pool, observed) = std::mem::take(&mut v.observed)
            .into_iter()
            .partition(|(_, o)| crate::engine::warm::is_member(o));
        (v.pool, v.observed) = (pool, observed);
        v.instances = v
            .observed
            .iter()
            .map(|(z, o)| {
                let mut i = to_instance(z, o, &self.ctx.controller_name);
                i.protected = self.ctx.instances.protection(&o.name, now).is_some();
                i.post_start_pending = self.post_starts.pending(&o.id);
                if self.post_starts.failed(&o.id).is_some() {
                    i.state = ContainerState::Dead;
                }
                i
            })
            .collect();
        v
    }

    /// Fills in the probes' verdicts: readiness where the group has a readiness probe, failed
    /// liveness where it has a liveness probe. An instance not probed yet is not ready, unless
    /// the status written before a restart said it was: a restarted controller must not take
    /// every instance out of service (and out of its load balancers) until its first probes.
    fn judge(&self, view: &mut View, resolved: &Resolved, mem: &GroupMemory) {
        let (readiness, liveness) = (
            resolved.probes.readiness.is_some(),
            resolved.probes.liveness.is_some(),
        );
        if !readiness && !liveness {
            return;
        }
        for i in &mut view.instances {
            let v = self.ctx.probes.get(&i.id);
            if readiness {
                i.probe_ready = Some(match v.as_ref().and_then(|v| v.ready) {
                    Some(r) => r,
                    None => mem.ready_before.get(&i.name).copied().unwrap_or(false),
                });
            }
            if liveness {
                i.liveness_failed = v.is_some_and(|v| v.liveness_failed);
            }
        }
    }

    /// The plan for `view` (nothing while the launch configuration is missing: then nothing can
    /// be launched, and nothing else is touched either).
    fn plan(&self, resolved: &Resolved, view: &View) -> Plan {
        if resolved.waiting_for.is_some() {
            return Plan::default();
        }
        if resolved.group.is_none() && view.instances.iter().any(|i| i.protected) {
            // A deleted group (a confirmed deletion) removes its protected instances too.
            let all: Vec<Instance> = view
                .instances
                .iter()
                .cloned()
                .map(|mut i| {
                    i.protected = false;
                    i
                })
                .collect();
            return plan::plan(&resolved.target, &all, &view.reachable);
        }
        let mut p = plan::plan(&resolved.target, &view.instances, &view.reachable);
        if view.terminating > 0 {
            // A rebalance launches one and the next pass scales in from the fullest zone: while
            // that victim (or any other) still drains or stops, the zones only look uneven, and
            // launching again would run one more instance per drain in flight.
            p.create
                .retain(|c| c.reason != plan::CreateReason::Rebalance);
        }
        p
    }

    /// The end of a pass of a group no manifest defines: forgotten once its containers are
    /// gone; until then, failing removals are reported as problems (no status to carry them).
    fn deleted(&self, key: &ObjectKey, after: &View, removal_hold: Option<Instant>) -> Action {
        self.ctx.status.forget(key);
        if after.observed.is_empty() && after.pool.is_empty() {
            self.forget_pool(key);
            self.orphans.gone(key);
            self.actuator.removals.forget(key);
            return Action::await_change();
        }
        if let Some((until, why)) = self.actuator.removals.last_error(key) {
            self.ctx.prune_report.set(
                key,
                Some(format!(
                    "deleting autoscaling group {}/{}: {why}; next attempt in {}s",
                    key.namespace,
                    key.name,
                    until
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
                        .ceil()
                )),
            );
        }
        removal_hold.map_or(Action::requeue(WHILE_DELETING), Action::requeue_at)
    }

    /// The group's status as `after` shows it, `remaining` still to do: after the pass, or
    /// (with `in_flight`, the steps it is about to carry out) before it acts. Forgets failures
    /// when the group converged on a healthy spec.
    #[allow(clippy::too_many_arguments)]
    fn status(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        after: &View,
        unreachable: &[(String, String)],
        remaining: &Plan,
        held: Option<Instant>,
        desired: &Desired,
        mem: &mut GroupMemory,
        autoscale: Option<PassView>,
        in_flight: Option<InFlight>,
    ) -> GroupStatus {
        let target = &resolved.target;
        let counts = plan::counts(target, &after.instances);
        // Containers being stopped still run: never Ready while any of them is left.
        let stopping: usize = self.zones.iter().map(|z| z.terminating_of(key)).sum();
        if conditions::is_ready(target.desired, counts, stopping)
            && remaining.is_empty()
            && resolved.waiting_for.is_none()
        {
            heal(key, mem, &target.spec_hash, &after.observed);
        }
        let now = Instant::now();
        let removal = self.actuator.removals.last_error(key).map(|(until, why)| {
            ReconcileError::RemovalFailed {
                why,
                retry_in: until.saturating_duration_since(now),
            }
        });
        let manifest_error = desired.errors_for(key).first().map(ToString::to_string);
        let conditions = conditions::conditions(
            &Inputs {
                desired: target.desired,
                zones: &target.zones,
                counts,
                stopping,
                waiting_for: resolved.waiting_for.as_deref(),
                remaining,
                problems: &resolved.problems,
                quota: mem.quota.as_ref(),
                unreachable,
                removal: removal.as_ref(),
                failure: mem
                    .degraded
                    .as_ref()
                    .map(|e| (e, held.map(|t| t.saturating_duration_since(now)))),
                manifest_error: manifest_error.as_deref(),
                deletion_held: desired.held.get(key).map(String::as_str),
                in_flight,
            },
            &mem.conditions,
            now_secs(),
        );
        mem.conditions = conditions.clone();
        if let Some(e) = &mem.degraded {
            debug!(group = %key, reason = %e.reason(), "degraded");
        }
        let probed = !resolved.probes.is_empty();
        let mut instances: Vec<InstanceStatus> = after
            .observed
            .iter()
            .zip(&after.instances)
            .map(|((zone, o), i)| InstanceStatus {
                ready: i.is_ready(),
                health: if probed {
                    self.ctx.probes.get(&o.id).map(|v| v.summary)
                } else {
                    o.health.map(|h| health_word(h).to_string())
                },
                name: o.name.clone(),
                container_id: short_id(&o.id).to_string(),
                zone: zone.clone(),
                state: o.state.as_str().to_string(),
                started_at: o.started_at.map(|t| t.trunc_subsecs(0)),
                ports: o.ports.clone(),
                up_to_date: o.labels.get(labels::SPEC_HASH) == Some(&target.spec_hash)
                    && target.zones.contains(zone),
                image_id: o.image_id.clone(),
                protected_until: None,
            })
            .collect();
        // Instances being drained or stopped: out of service, shown so a load balancer drains
        // them and a user sees why they still run.
        for z in &self.zones {
            for o in z.terminating_instances_of(key) {
                instances.push(InstanceStatus {
                    // Out of service: a load balancer drains it.
                    ready: false,
                    health: self.ctx.probes.get(&o.id).map(|v| v.summary),
                    name: o.name.clone(),
                    container_id: short_id(&o.id).to_string(),
                    zone: z.name.clone(),
                    state: DRAINING.to_string(),
                    started_at: o.started_at.map(|t| t.trunc_subsecs(0)),
                    ports: o.ports.clone(),
                    up_to_date: o.labels.get(labels::SPEC_HASH) == Some(&target.spec_hash)
                        && target.zones.contains(&z.name),
                    image_id: o.image_id.clone(),
                    protected_until: None,
                });
            }
        }
        for (zone, o) in &after.quarantined {
            instances.push(InstanceStatus {
                ready: false,
                // The probe's last word says why it failed, when a probe judged it.
                health: self.ctx.probes.get(&o.id).map(|v| v.summary),
                name: o.name.clone(),
                container_id: short_id(&o.id).to_string(),
                zone: zone.clone(),
                state: QUARANTINED.to_string(),
                started_at: o.started_at.map(|t| t.trunc_subsecs(0)),
                ports: o.ports.clone(),
                up_to_date: false,
                image_id: o.image_id.clone(),
                protected_until: None,
            });
        }
        let now = Utc::now();
        for i in &mut instances {
            if let Some(p) = self.ctx.instances.protection(&i.name, now) {
                // No expiry: shown as the last second of 9999, so "protected" is never mistaken
                // for not (and every RFC 3339 parser reads it).
                i.protected_until = Some(p.until.unwrap_or_else(never).trunc_subsecs(0));
            }
        }
        let (warm, warm_pool) = self.pool_status(key, resolved, after);
        instances.extend(warm);
        for i in &mut instances {
            if let Some(before) = mem.started_before.get(&i.container_id) {
                i.started_at = i.started_at.map(|now| shown_start(now, *before));
            }
        }
        instances.sort_by(|a, b| a.zone.cmp(&b.zone).then(a.name.cmp(&b.name)));
        let mut status = GroupStatus {
            observed_generation: desired
                .objects
                .get(key)
                .map(|e| e.generation.clone())
                .unwrap_or_default(),
            desired_capacity: target.desired,
            current: counts.current,
            ready: counts.ready,
            updated: counts.updated,
            zones: target.zones.clone(),
            instances,
            conditions,
            unreachable_zones: unreachable
                .iter()
                .filter(|(z, _)| target.zones.contains(z))
                .map(|(z, _)| z.clone())
                .collect(),
            last_scale_out: mem.last_scale_out,
            last_scale_in: mem.last_scale_in,
            activities: mem.activities.iter().cloned().collect(),
            ..GroupStatus::default()
        };
        if let Some(fields) = autoscale.and_then(|a| a.status) {
            fields.fill(&mut status);
        }
        status.warm_pool = warm_pool;
        status
    }

    /// What `key` resolves to for one pass: its target, launch configuration, the problems of
    /// its spec; `effective` is the autoscaler's capacity (without it, the spec's).
    pub(super) fn resolve(
        &self,
        key: &ObjectKey,
        desired: &Desired,
        effective: Option<&Effective>,
    ) -> Resolved {
        let all_zones: Vec<String> = self.zones.iter().map(|z| z.name.clone()).collect();
        let Some(group) = desired.group(key) else {
            // Deleted group: everything labelled with it goes.
            return Resolved {
                target: Target {
                    desired: 0,
                    max_size: 0,
                    zones: all_zones,
                    spec_hash: String::new(),
                    max_surge: 1,
                    max_unavailable: 0,
                    termination_policies: vec![],
                },
                lc: None,
                group: None,
                problems: vec![],
                waiting_for: None,
                limits: (None, None),
                probes: Default::default(),
            };
        };
        let spec = &group.spec;
        let mut problems = Vec::new();
        let zones: Vec<String> = if spec.availability_zones.is_empty() {
            all_zones.iter().take(1).cloned().collect()
        } else {
            let mut zs = Vec::new();
            for z in &spec.availability_zones {
                if all_zones.contains(z) {
                    zs.push(z.clone());
                } else {
                    let hint =
                        crate::manifest::did_you_mean(z, all_zones.iter().map(String::as_str))
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_default();
                    problems.push(ReconcileError::UnknownZone(format!(
                        "zone `{z}` is not in the controller configuration{hint}; configured zones: {}",
                        all_zones.join(", ")
                    )));
                }
            }
            zs
        };
        let lc = desired
            .launch_configuration(&key.namespace, &spec.launch_configuration)
            .cloned();
        let waiting_for = lc.is_none().then(|| {
            let names: Vec<&str> = desired
                .launch_configurations()
                .filter(|(k, _, _)| k.namespace == key.namespace)
                .map(|(k, _, _)| k.name.as_str())
                .collect();
            let hint =
                crate::manifest::did_you_mean(&spec.launch_configuration, names.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
            format!(
                "waiting for launch configuration `{}` in namespace `{}`{hint}",
                spec.launch_configuration, key.namespace
            )
        });
        let desired_count = match spec.state {
            GroupState::Stopped => 0,
            GroupState::Started => effective.map_or_else(|| spec.capacity(), |e| e.desired),
        };
        let limits = lc
            .as_ref()
            .map(|l| self.ctx.tenancy.container_limits(&key.namespace, &l.spec))
            .unwrap_or((None, None));
        let spec_hash = lc
            .as_ref()
            .map(|l| container_hash_with_limits(l, group, limits))
            .unwrap_or_default();
        let health_check = spec
            .health_check
            .as_ref()
            .or_else(|| lc.as_ref().and_then(|l| l.spec.health_check.as_ref()));
        let probes = health_check.map(|h| h.resolve()).unwrap_or_default();
        // A group's own check may name a port its launch configuration does not publish.
        if let (Some(h), Some(l)) = (&spec.health_check, &lc) {
            for (field, why) in
                crate::manifest::health_check::check(h, Some(&l.spec.ports), "spec.healthCheck")
            {
                problems.push(ReconcileError::HealthCheck(format!(
                    "{field}: {why} (launch configuration `{}`)",
                    l.metadata.name
                )));
            }
        }
        let max_surge = resolve_count(spec.max_surge.as_ref(), desired_count, 25, true);
        let max_unavailable = resolve_count(spec.max_unavailable.as_ref(), desired_count, 0, false);
        let max_surge = if max_surge == 0 && max_unavailable == 0 {
            1
        } else {
            max_surge
        };
        Resolved {
            target: Target {
                desired: desired_count,
                max_size: effective.map_or(spec.max_size, |e| e.max_size),
                zones,
                spec_hash,
                max_surge,
                max_unavailable,
                termination_policies: spec.termination_policies.clone(),
            },
            lc,
            group: Some(group.clone()),
            problems,
            waiting_for,
            limits,
            probes,
        }
    }

    /// What the containers of namespace `ns` use now, in the reachable zones: each group's
    /// running containers times its containers' limits (the namespace's defaults for a group
    /// no longer defined), warm pool refills in flight not in the caches yet, and instances
    /// draining on their way back to a warm pool (hidden from the zones' counts like any
    /// termination, but kept).
    pub(super) fn namespace_usage(&self, ns: &str, desired: &Desired) -> Usage {
        let tenancy = &self.ctx.tenancy;
        let defaults = {
            let (c, m) = tenancy.default_resources(ns);
            (Some(c), Some(m))
        };
        let limits_of = |key: &ObjectKey| {
            desired
                .group(key)
                .and_then(|g| desired.launch_configuration(ns, &g.spec.launch_configuration))
                .map(|l| tenancy.container_limits(ns, &l.spec))
                .unwrap_or(defaults)
        };
        let mut usage = Usage::default();
        let reachable = || self.zones.iter().filter(|z| z.reach() == Reach::Reachable);
        for z in reachable() {
            for (key, n) in z.namespace_usage(ns) {
                usage.add(Usage::of(n, limits_of(&key)));
            }
        }
        usage.add(self.pools.namespace_in_flight(ns, |key, zone, name| {
            reachable()
                .any(|z| z.name == zone && z.instances_of(key).iter().any(|o| o.name == name))
        }));
        usage
    }
}

/// The start time a status shows for a container whose status before a restart said `before`:
/// that one, unless the engine's differs by more than a second. The first controller learned it
/// from its own launch or the start event, a restarted one from an inspect; milliseconds apart,
/// they can fall either side of a second, and a restart must not rewrite the manifest for it.
fn shown_start(now: DateTime<Utc>, before: DateTime<Utc>) -> DateTime<Utc> {
    if (now - before).num_milliseconds().abs() <= 1000 {
        before
    } else {
        now
    }
}

/// Failures heal as fast as they broke: converged on a spec that is not failing (a new one, or
/// one whose instances outlived the crash window) clears Degraded and the backoff.
fn heal(key: &ObjectKey, mem: &mut GroupMemory, spec_hash: &str, observed: &[(String, Observed)]) {
    let Some(degraded) = &mem.degraded else {
        return;
    };
    // A replacement for failed liveness keeps its backoff until it is old (`FAILURE_MEMORY`):
    // a check that fails every new instance must not churn at the pace of convergence.
    if matches!(degraded, ReconcileError::Unhealthy { .. }) {
        return;
    }
    let crash_of_this_spec = matches!(
        degraded,
        ReconcileError::CrashLoop { .. } | ReconcileError::PostStartFailed { .. }
    ) && mem.failed_hash.as_deref() == Some(spec_hash);
    let now = Utc::now();
    let outlived = observed.iter().all(|(_, o)| {
        (now - o.started_at.unwrap_or(o.created))
            .to_std()
            .is_ok_and(|up| up >= CRASH_WINDOW)
    });
    if !crash_of_this_spec || outlived {
        debug!(group = %key, "converged on a healthy spec: failures forgotten");
        mem.forget_failures();
    }
}

/// What decides when a pass that succeeded looks again.
struct Next<'a> {
    acted: bool,
    remaining: &'a Plan,
    /// The group's backoff, if still ahead.
    hold: Option<Instant>,
    /// Creations the plan wanted before the backoff held them back.
    wanted_creations: usize,
    /// A container of the group is still `created`.
    young: bool,
    /// The backoff of refused removals, if any.
    removal_hold: Option<Instant>,
}

fn next_action(n: Next<'_>) -> Action {
    if let Some(t) = n.removal_hold {
        if n.remaining.create.is_empty() && !n.remaining.remove.is_empty() {
            return Action::requeue_at(t);
        }
    }
    match (n.acted, n.remaining.is_empty(), n.hold) {
        (_, false, Some(t)) if n.wanted_creations > 0 || !n.remaining.create.is_empty() => {
            Action::requeue_at(t)
        }
        (false, true, _) if n.young => Action::requeue(STUCK_CREATED),
        (true, _, _) => Action::requeue(AFTER_ACTING),
        // Waiting for readiness (rollout) or for removals in the background.
        (false, false, _) => Action::requeue(WHILE_WAITING),
        (false, true, _) => Action::await_change(),
    }
}

/// The `protectedUntil` of a protection without expiry.
fn never() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_default()
}

fn is_stuck(o: &Observed) -> bool {
    (Utc::now() - o.created)
        .to_std()
        .is_ok_and(|age| age >= STUCK_CREATED)
}

fn to_instance(zone: &str, o: &Observed, controller: &str) -> Instance {
    Instance {
        foreign: o.labels.get(labels::INSTANCE) != Some(&launch_mark(controller, &o.name)),
        id: o.id.clone(),
        name: o.name.clone(),
        zone: zone.to_string(),
        // A container still `created` long after its creation will never be started by anyone
        // (a controller killed between create and start): it counts as failed and is replaced.
        // A young one may be a `docker run` in progress, or an engine that is slow to start.
        state: if o.state == ContainerState::Created && is_stuck(o) {
            ContainerState::Dead
        } else {
            o.state
        },
        health: o.health,
        created: o.created,
        spec_hash: o.labels.get(labels::SPEC_HASH).cloned().unwrap_or_default(),
        exit_code: o.exit_code,
        // Filled in by `judge`, which knows the group's probes.
        probe_ready: None,
        liveness_failed: false,
        protected: false,
        post_start_pending: false,
    }
}

/// Docker's word for a HEALTHCHECK status.
fn health_word(h: crate::engine::Health) -> &'static str {
    match h {
        crate::engine::Health::Starting => "starting",
        crate::engine::Health::Healthy => "healthy",
        crate::engine::Health::Unhealthy => "unhealthy",
    }
}

/// Resolves `maxSurge`/`maxUnavailable` (count or percent of `desired`) to a count.
pub(super) fn resolve_count(
    v: Option<&IntOrPercent>,
    desired: u32,
    default_percent: u32,
    round_up: bool,
) -> u32 {
    let percent = match v {
        Some(IntOrPercent::Int(n)) => return *n,
        Some(IntOrPercent::Percent(p)) => p
            .trim_end_matches('%')
            .trim()
            .parse::<u32>()
            .unwrap_or(default_percent),
        None => default_percent,
    };
    let scaled = desired as u64 * percent as u64;
    let n = if round_up {
        scaled.div_ceil(100)
    } else {
        scaled / 100
    } as u32;
    if round_up && v.is_none() {
        n.max(1)
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::shown_start;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_start_time_written_before_a_restart_is_kept_within_a_second() {
        let before = Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap();
        // Milliseconds apart, either side of the second: what was written stays.
        let just_after = before + chrono::Duration::milliseconds(1000);
        assert_eq!(shown_start(just_after, before), before);
        assert_eq!(
            shown_start(before - chrono::Duration::milliseconds(999), before),
            before
        );
        // Started again since: the engine's time.
        let restarted = before + chrono::Duration::seconds(30);
        assert_eq!(shown_start(restarted, before), restarted);
    }
}
