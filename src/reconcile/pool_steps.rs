//! The warm pool's steps: what [`super::pool::apply`] decided, carried out through the
//! actuator (takes, settles and give-backs within the pass; refills in the background, at low
//! priority), and what the reconciler keeps of each group's pool between passes: refills in
//! flight, their backoff, the memory each member was measured to hold.
//!
//! Nothing here is needed to tell pool members from instances: that is their name
//! (`engine::warm`), so a restarted controller picks up where the last one stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use futures::stream::{self, StreamExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::actuator::{Actuator, GiveBackTo};
use super::memory::GroupMemory;
use super::pass::View;
use super::plan::{CreateReason, Plan, RemoveReason};
use super::pool::{self, Allow, Member, PoolPlan, PoolTarget, Settle, Take};
use super::{container_spec, launch_mark, Reconciler, Resolved};
use crate::config::tenancy::Usage;
use crate::engine::observe::short_id;
use crate::engine::{labels, warm, ContainerState, Observed, Transition};
use crate::manifest::{GroupState, ObjectKey, WarmPoolState};
use crate::status::{InstanceStatus, WarmPoolStatus, WARM};
use crate::util::unpoisoned::LockExt;
use crate::watch::store::Desired;

/// A member still `created` this long after its creation will never be started by anyone.
const STUCK_CREATED: Duration = Duration::from_secs(10);
/// Backoff of failed preparations: doubles from this…
const REFILL_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// …up to this.
const REFILL_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How long a stopped member gets to end its process when it is prepared, when its launch
/// configuration does not say (`stopGracePeriod`).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the reconciler keeps of every group's pool.
#[derive(Default)]
pub(super) struct Pools {
    groups: Mutex<HashMap<ObjectKey, GroupPool>>,
}

#[derive(Default)]
struct GroupPool {
    /// Refills running now, by member name: its zone and what it holds of the namespace's quotas.
    in_flight: BTreeMap<String, (String, Usage)>,
    failures: u32,
    hold_until: Option<Instant>,
    last_error: Option<String>,
    /// Failed takes or settles: until this, creations launch cold and members wait.
    steps_failures: u32,
    steps_hold_until: Option<Instant>,
    /// Memory each member held once prepared, by container id.
    memory: HashMap<String, u64>,
    /// Members whose memory is being measured (or could not be): asked once each.
    measuring: BTreeSet<String>,
    /// Why the last pass prepared fewer members than the pool lacked (a quota).
    limited: Option<String>,
}

impl Pools {
    /// Refills in flight of `key`, per zone, and their member names.
    fn in_flight(&self, key: &ObjectKey) -> (BTreeMap<String, u32>, BTreeSet<String>) {
        let groups = self.groups.locked();
        let mut per_zone = BTreeMap::new();
        let mut names = BTreeSet::new();
        if let Some(g) = groups.get(key) {
            for (name, (zone, _)) in &g.in_flight {
                *per_zone.entry(zone.clone()).or_default() += 1;
                names.insert(name.clone());
            }
        }
        (per_zone, names)
    }

    /// What the refills in flight of namespace `ns` will hold, counted against its quotas
    /// until their containers are in the zones' caches: `seen(group, zone, member)` says
    /// when, and from then on the cache counts them (while they hold resources), not twice.
    pub fn namespace_in_flight(
        &self,
        ns: &str,
        seen: impl Fn(&ObjectKey, &str, &str) -> bool,
    ) -> Usage {
        let entries: Vec<(ObjectKey, String, String, Usage)> = self
            .groups
            .locked()
            .iter()
            .filter(|(key, _)| key.namespace == ns)
            .flat_map(|(key, g)| {
                g.in_flight
                    .iter()
                    .map(|(name, (zone, each))| (key.clone(), zone.clone(), name.clone(), *each))
            })
            .collect();
        let mut u = Usage::default();
        for (key, zone, name, each) in entries {
            if !seen(&key, &zone, &name) {
                u.add(each);
            }
        }
        u
    }

    /// Whether refills, and whether takes and settles, are held back now.
    fn held(&self, key: &ObjectKey) -> (bool, bool) {
        let groups = self.groups.locked();
        let now = Instant::now();
        let g = groups.get(key);
        (
            g.and_then(|g| g.hold_until).is_some_and(|t| t > now),
            g.and_then(|g| g.steps_hold_until).is_some_and(|t| t > now),
        )
    }

    /// A take or settle failed: the next ones wait (creations launch cold meanwhile), so an
    /// engine that refuses them is not asked 50 times a second. Returns when to look again.
    fn steps_failed(&self, key: &ObjectKey) -> Instant {
        let mut groups = self.groups.locked();
        let g = groups.entry(key.clone()).or_default();
        g.steps_failures = g.steps_failures.saturating_add(1);
        let backoff = REFILL_BACKOFF_BASE
            .saturating_mul(1 << g.steps_failures.min(10).saturating_sub(1))
            .min(REFILL_BACKOFF_MAX);
        let until = Instant::now() + backoff;
        g.steps_hold_until = Some(until);
        until
    }

    fn steps_worked(&self, key: &ObjectKey) {
        if let Some(g) = self.groups.locked().get_mut(key) {
            g.steps_failures = 0;
            g.steps_hold_until = None;
        }
    }

    /// Ends the refill of member `name`: its measured memory, or why it failed (then the
    /// pool's refills back off; returns when to look again).
    fn end(
        &self,
        key: &ObjectKey,
        name: &str,
        outcome: Result<(String, Option<u64>), String>,
    ) -> Option<Instant> {
        let mut groups = self.groups.locked();
        let g = groups.entry(key.clone()).or_default();
        g.in_flight.remove(name);
        match outcome {
            Ok((id, memory)) => {
                g.failures = 0;
                g.hold_until = None;
                g.last_error = None;
                if let Some(m) = memory {
                    g.memory.insert(id, m);
                }
                None
            }
            Err(why) => {
                g.failures = g.failures.saturating_add(1);
                let backoff = REFILL_BACKOFF_BASE
                    .saturating_mul(1 << g.failures.min(10).saturating_sub(1))
                    .min(REFILL_BACKOFF_MAX);
                let until = Instant::now() + backoff;
                g.hold_until = Some(until);
                g.last_error = Some(format!(
                    "preparing a spare failed ({why}); next attempt in {}s",
                    backoff.as_secs()
                ));
                Some(until)
            }
        }
    }

    /// Forgets a group that is gone (no members, no refills left).
    fn forget(&self, key: &ObjectKey) {
        let mut groups = self.groups.locked();
        if groups.get(key).is_some_and(|g| g.in_flight.is_empty()) {
            groups.remove(key);
        }
    }
}

/// The group's warm pool settings resolved for one pass (size 0: no pool).
fn target(resolved: &Resolved) -> PoolTarget {
    let group = resolved.group.as_ref();
    let spec = group.and_then(|g| g.spec.warm_pool.as_ref());
    let started = group.is_some_and(|g| g.spec.state == GroupState::Started);
    let t = &resolved.target;
    PoolTarget {
        size: match spec {
            Some(w) if started => w.size(t.max_size, t.desired),
            _ => 0,
        },
        state: spec.map(|w| w.state).unwrap_or_default(),
        reuse_on_scale_in: spec.is_some_and(|w| w.reuse_on_scale_in),
        spec_hash: t.spec_hash.clone(),
        zones: t.zones.clone(),
    }
}

/// The waiting state a fresh (running) member is brought to.
fn waiting_step(state: WarmPoolState, grace: Duration) -> Option<Transition> {
    match state {
        WarmPoolState::Paused => Some(Transition::Pause),
        WarmPoolState::Stopped => Some(Transition::Stop(grace)),
        WarmPoolState::Running => None,
    }
}

/// Where instance `instance` of the group goes back to its pool after a drain (`None` when the
/// group keeps no pool now).
pub(super) fn give_back_to(
    resolved: &Resolved,
    instance: &str,
    grace: Duration,
) -> Option<GiveBackTo> {
    let w = resolved.group.as_ref()?.spec.warm_pool.as_ref()?;
    Some(GiveBackTo {
        member: warm::member_name(instance),
        transition: waiting_step(w.state, grace),
    })
}

impl Reconciler {
    /// The pool's part of a pass: turns creations of `plan` into takes of pool members and
    /// decides the pool's own work. `held` is the group's launch backoff.
    pub(super) fn pool_plan(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        plan: &mut Plan,
        view: &View,
        held: Option<Instant>,
        removal_hold: Option<Instant>,
    ) -> PoolPlan {
        if resolved.waiting_for.is_some() {
            return PoolPlan::default();
        }
        let target = target(resolved);
        if target.size == 0 && view.pool.is_empty() {
            return PoolPlan::default();
        }
        let (mut in_flight, preparing) = self.pools.in_flight(key);
        // Instances draining on their way back hold a place in the pool already.
        for (_, d) in self.ctx.instances.drains_of(key) {
            if d.reason == super::actuator::GIVE_BACK_REASON {
                *in_flight.entry(d.zone).or_default() += 1;
            }
        }
        let members: Vec<Member> = view
            .pool
            .iter()
            .map(|(zone, o)| self.member(zone, o, &preparing))
            .collect();
        let (refill_held, steps_held) = self.pools.held(key);
        let allow = Allow {
            take: held.is_none() && !steps_held,
            refill: held.is_none() && !refill_held && resolved.lc.is_some(),
        };
        let mut pp = pool::apply(
            &target,
            plan,
            &view.instances,
            &members,
            &view.reachable,
            &in_flight,
            allow,
        );
        if steps_held {
            pp.settle.clear();
            pp.give_back.clear();
        }
        if removal_hold.is_some() {
            pp.remove.clear();
        }
        pp
    }

    fn member(&self, zone: &str, o: &Observed, preparing: &BTreeSet<String>) -> Member {
        let instance = warm::instance_name(&o.name).unwrap_or_default().to_string();
        Member {
            marked: o.labels.get(labels::INSTANCE)
                == Some(&launch_mark(&self.ctx.controller_name, &instance)),
            instance,
            id: o.id.clone(),
            name: o.name.clone(),
            zone: zone.to_string(),
            state: o.state,
            spec_hash: o.labels.get(labels::SPEC_HASH).cloned().unwrap_or_default(),
            created: o.created,
            stuck: o.state == ContainerState::Created
                && (Utc::now() - o.created)
                    .to_std()
                    .is_ok_and(|age| age >= STUCK_CREATED),
            unhealthy: o.health == Some(crate::engine::Health::Unhealthy),
            preparing: preparing.contains(&o.name),
        }
    }

    /// Takes pool members as instances (wake, then rename: a controller killed in between
    /// leaves a running member, which the next pass pauses again), recording each as a launch.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn take_from_pool(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        pp: &PoolPlan,
        view: &View,
        replaced: &[&str],
        mem: &mut GroupMemory,
        by: &str,
    ) {
        if pp.take.is_empty() {
            return;
        }
        let takes: Vec<_> = pp.take.iter().map(|t| self.take_one(t, view)).collect();
        let results: Vec<_> = stream::iter(takes)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut taken = 0usize;
        let mut failed = false;
        for (t, res) in results {
            match res {
                Ok(_) => {
                    taken += 1;
                    let cause = take_cause(&t.reason, resolved, mem.last_desired, replaced, by);
                    mem.record("Launch", &t.instance, &t.zone, &cause);
                    self.ctx
                        .telemetry
                        .launched(&key.namespace, &key.name, &cause);
                    if t.reason == CreateReason::ScaleOut {
                        mem.last_scale_out = Some(super::now_secs());
                    }
                }
                // The member stays (or is found failed) and the next pass plans again.
                Err(e) => {
                    failed = true;
                    warn!(group = %key, member = %t.member, error = %e, "taking a warm pool member failed");
                }
            }
        }
        self.steps_outcome(key, failed);
        if taken > 0 {
            info!(group = %key, taken, "instances taken from the warm pool");
        }
    }

    /// The rest of the pool's work: removals, settles and give-backs (in the pass, each a
    /// quick engine call), refills (in the background, within the namespace's quotas).
    pub(super) async fn tend_pool(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        pp: &PoolPlan,
        view: &View,
        desired: &Desired,
        mem: &mut GroupMemory,
    ) {
        for r in &pp.remove {
            let why = match r.reason {
                RemoveReason::Failed => "failed or never started",
                RemoveReason::Rollout => "launch configuration or zone changed",
                _ => "more spares than the pool keeps",
            };
            debug!(group = %key, member = %r.name, "removing warm pool member: {why}");
            self.actuator
                .terminate(key, r, super::actuator::Termination::immediate(why));
        }
        let settles: Vec<_> = pp
            .settle
            .iter()
            .map(|s| self.settle_one(key, s, view))
            .collect();
        let failed = stream::iter(settles)
            .buffer_unordered(self.concurrency)
            .collect::<Vec<bool>>()
            .await
            .into_iter()
            .any(|f| f);
        if !pp.settle.is_empty() {
            self.steps_outcome(key, failed);
        }
        let (drain, _) = mem.drain(resolved.group.as_ref(), resolved.lc.as_ref());
        let grace = mem.grace(resolved.lc.as_ref());
        for g in &pp.give_back {
            if !drain.is_zero() {
                self.give_back_drained(key, resolved, g, view, (drain, grace), mem);
                continue;
            }
            let (Some(target), Some(o)) =
                (self.actuator.target(&g.zone), view_instance(view, &g.id))
            else {
                continue;
            };
            let member = warm::member_name(&g.instance);
            // Rename first: interrupted, a running member is paused by the next pass, while a
            // paused instance would stay out of service.
            let res = match Actuator::rename(&target, o, &member).await {
                Ok(o) => match g.transition {
                    Some(t) => Actuator::transition(&target, o, t).await.map(|_| ()),
                    None => Ok(()),
                },
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => {
                    mem.record(
                        "Terminate",
                        &g.instance,
                        &g.zone,
                        &format!(
                            "desired capacity lowered to {}: returned to the warm pool as {member}",
                            resolved.target.desired
                        ),
                    );
                    mem.last_scale_in = Some(super::now_secs());
                }
                Err(e) => {
                    warn!(group = %key, instance = %g.instance, error = %e, "returning an instance to the warm pool failed");
                }
            }
        }
        self.refill(key, resolved, &pp.refill, desired);
        self.measure(key, view);
    }

    /// Gives `g` back through the one termination path: out of service (`draining`) at once,
    /// for the group's `drainTimeout`, then renamed and brought to the pool's state. No
    /// preStop hook runs: the instance is kept warm, not stopped, and a hook that shuts the
    /// application down would leave a spare that cannot serve when taken.
    fn give_back_drained(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        g: &pool::GiveBack,
        view: &View,
        (drain, grace): (Duration, Duration),
        mem: &mut GroupMemory,
    ) {
        let member = warm::member_name(&g.instance);
        let r = super::plan::Remove {
            id: g.id.clone(),
            name: g.instance.clone(),
            zone: g.zone.clone(),
            reason: RemoveReason::ScaleIn,
        };
        let cause = format!(
            "desired capacity lowered to {}: returned to the warm pool as {member} after a drain of {} s",
            resolved.target.desired,
            drain.as_secs()
        );
        let mut t = self.termination(&r, view, grace, (drain, None), &cause);
        t.grace = Duration::ZERO;
        t.report = false;
        t.give_back = Some(GiveBackTo {
            member,
            // The pool's waiting state, as the decision said (none for a running pool).
            transition: g.transition.map(|s| match s {
                Transition::Stop(_) => Transition::Stop(grace),
                other => other,
            }),
        });
        self.actuator.terminate(key, &r, t);
        mem.record("Terminate", &g.instance, &g.zone, &cause);
        mem.last_scale_in = Some(super::now_secs());
    }

    /// Measures, once, the memory of members prepared before this controller started (or given
    /// back), so `ms describe` shows what the whole pool holds.
    fn measure(&self, key: &ObjectKey, view: &View) {
        let todo: Vec<(String, String)> = {
            let mut groups = self.pools.groups.locked();
            // After a restart the group has no entry yet: its members are measured at once all
            // the same, not at the next resync.
            let g = groups.entry(key.clone()).or_default();
            let todo: Vec<(String, String)> = view
                .pool
                .iter()
                .filter(|(_, o)| {
                    matches!(o.state, ContainerState::Paused | ContainerState::Running)
                })
                .filter(|(_, o)| !g.memory.contains_key(&o.id) && !g.measuring.contains(&o.id))
                .filter(|(_, o)| !g.in_flight.contains_key(&o.name))
                .map(|(z, o)| (z.clone(), o.id.clone()))
                .collect();
            g.measuring.extend(todo.iter().map(|(_, id)| id.clone()));
            todo
        };
        for (zone, id) in todo {
            let Some(target) = self.actuator.target(&zone) else {
                continue;
            };
            let (pools, queue, key) = (self.pools.clone(), self.queue.clone(), key.clone());
            tokio::spawn(async move {
                let m = Actuator::memory(&target, &id).await;
                if let Some(g) = pools.groups.locked().get_mut(&key) {
                    // Not measured (the engine did not say): asked again by a later pass.
                    g.measuring.remove(&id);
                    if let Some(m) = m {
                        g.memory.insert(id, m);
                    }
                }
                if m.is_some() {
                    queue.now(key);
                }
            });
        }
    }

    /// Starts the preparation of one member per zone in `zones`, in the background, as far as
    /// the namespace's quotas allow.
    fn refill(&self, key: &ObjectKey, resolved: &Resolved, zones: &[String], desired: &Desired) {
        let (Some(lc), Some(group)) = (&resolved.lc, &resolved.group) else {
            return;
        };
        let limited = if zones.is_empty() {
            None
        } else {
            let running = self.namespace_usage(&key.namespace, desired);
            let reservation = self.quotas.reserve(
                &self.ctx.tenancy,
                &key.namespace,
                running,
                u32::try_from(zones.len()).unwrap_or(u32::MAX),
                resolved.limits,
            );
            let spec_of_pool = group.spec.warm_pool.clone().unwrap_or_default();
            // Stopped with the launch configuration's grace, as an instance would be.
            let grace = lc.spec.stop_grace_period.map_or(STOP_GRACE, |d| d.0);
            let then = waiting_step(spec_of_pool.state, grace);
            let warm_up = spec_of_pool.prepare_time();
            for zone in zones.iter().take(reservation.granted as usize) {
                let Some(target) = self.actuator.target(zone) else {
                    continue;
                };
                let mut spec = container_spec(
                    key,
                    lc,
                    group,
                    zone,
                    &resolved.target.spec_hash,
                    &self.ctx.controller_name,
                    resolved.limits,
                );
                // The launch mark stays the instance's: renamed to it, the member is an instance.
                let name = warm::member_name(&spec.name);
                spec.name.clone_from(&name);
                spec.labels
                    .insert(labels::WARM_POOL.to_string(), "true".to_string());
                self.pools
                    .groups
                    .locked()
                    .entry(key.clone())
                    .or_default()
                    .in_flight
                    .insert(name.clone(), (zone.clone(), Usage::of(1, resolved.limits)));
                let (pools, queue, key) = (self.pools.clone(), self.queue.clone(), key.clone());
                tokio::spawn(async move {
                    let res = Actuator::prepare(&target, spec, warm_up, then).await;
                    let outcome = match res {
                        Ok(o) => Ok((o.id.clone(), Actuator::memory(&target, &o.id).await)),
                        Err(e) => {
                            warn!(group = %key, member = %name, error = %e, "preparing a warm pool member failed");
                            Err(e.to_string())
                        }
                    };
                    match pools.end(&key, &name, outcome) {
                        Some(retry) => queue.schedule(key, retry),
                        None => queue.now(key),
                    }
                });
            }
            reservation.refused.clone()
        };
        if let Some(g) = self.pools.groups.locked().get_mut(key) {
            g.limited = limited;
        }
    }

    /// The pool members as the status lists them (state `warm`), and the pool's summary.
    pub(super) fn pool_status(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        view: &View,
    ) -> (Vec<InstanceStatus>, Option<WarmPoolStatus>) {
        let target = target(resolved);
        let members: Vec<InstanceStatus> = view
            .pool
            .iter()
            .map(|(zone, o)| InstanceStatus {
                // Not in service: a spare is never ready, load balanced or protected.
                ready: false,
                health: None,
                protected_until: None,
                name: o.name.clone(),
                container_id: short_id(&o.id).to_string(),
                zone: zone.clone(),
                state: WARM.to_string(),
                started_at: o.started_at.map(|t| t.trunc_subsecs(0)),
                ports: o.ports.clone(),
                up_to_date: o.labels.get(labels::SPEC_HASH) == Some(&target.spec_hash)
                    && target.zones.contains(zone),
                image_id: o.image_id.clone(),
            })
            .collect();
        let Some(spec) = resolved
            .group
            .as_ref()
            .and_then(|g| g.spec.warm_pool.as_ref())
        else {
            return (members, None);
        };
        let (_, in_flight) = self.pools.in_flight(key);
        let ready = view
            .pool
            .iter()
            .filter(|(zone, o)| {
                o.labels.get(labels::SPEC_HASH) == Some(&target.spec_hash)
                    && target.zones.contains(zone)
                    && match target.state {
                        WarmPoolState::Paused => o.state == ContainerState::Paused,
                        WarmPoolState::Running => o.state == ContainerState::Running,
                        WarmPoolState::Stopped => o.state == ContainerState::Exited,
                    }
            })
            .count() as u32;
        let mut groups = self.pools.groups.locked();
        let g = groups.entry(key.clone()).or_default();
        // Members gone are forgotten; the memory of the others is summed.
        let ids: BTreeSet<&str> = view.pool.iter().map(|(_, o)| o.id.as_str()).collect();
        g.memory.retain(|id, _| ids.contains(id.as_str()));
        g.measuring.retain(|id| ids.contains(id.as_str()));
        let memory_bytes = (!g.memory.is_empty() && spec.state != WarmPoolState::Stopped)
            .then(|| g.memory.values().sum());
        // A refill's container is in the view once created: counted there, not twice.
        let unseen = in_flight
            .iter()
            .filter(|name| !view.pool.iter().any(|(_, o)| &o.name == *name))
            .count() as u32;
        let status = WarmPoolStatus {
            size: target.size,
            ready,
            preparing: (view.pool.len() as u32).saturating_sub(ready) + unseen,
            state: spec.state.as_str().to_string(),
            memory_bytes,
            message: g.limited.clone().or_else(|| g.last_error.clone()),
        };
        (members, Some(status))
    }

    /// Wakes member `t` and renames it to its instance name.
    async fn take_one<'t>(&self, t: &'t Take, view: &View) -> (&'t Take, Result<(), String>) {
        let (Some(target), Some(o)) = (self.actuator.target(&t.zone), observed(view, &t.id)) else {
            return (t, Err("zone or member gone".to_string()));
        };
        let woken = match t.wake {
            Some(w) => Actuator::transition(&target, o, w).await,
            None => Ok(o),
        };
        let res = match woken {
            Ok(o) => Actuator::rename(&target, o, &t.instance).await.map(|_| ()),
            Err(e) => Err(e),
        };
        (t, res.map_err(|e| e.to_string()))
    }

    /// Brings member `s` to the pool's state; true when that failed.
    async fn settle_one(&self, key: &ObjectKey, s: &Settle, view: &View) -> bool {
        let (Some(target), Some(o)) = (self.actuator.target(&s.zone), observed(view, &s.id)) else {
            return false;
        };
        let res = Actuator::transition(&target, o, s.transition).await;
        if let Err(e) = &res {
            warn!(group = %key, member = %s.name, error = %e, "bringing a warm pool member to its state failed");
        }
        res.is_err()
    }

    /// Holds takes and settles back after a failure (and looks again when the hold ends).
    fn steps_outcome(&self, key: &ObjectKey, failed: bool) {
        if failed {
            let retry = self.pools.steps_failed(key);
            self.queue.schedule(key.clone(), retry);
        } else {
            self.pools.steps_worked(key);
        }
    }

    /// Forgets the pool of a group that is gone.
    pub(super) fn forget_pool(&self, key: &ObjectKey) {
        self.pools.forget(key);
    }
}

fn observed(view: &View, id: &str) -> Option<Observed> {
    view.pool
        .iter()
        .find(|(_, o)| o.id == id)
        .map(|(_, o)| o.clone())
}

fn view_instance(view: &View, id: &str) -> Option<Observed> {
    view.observed
        .iter()
        .find(|(_, o)| o.id == id)
        .map(|(_, o)| o.clone())
}

/// The activity cause of a take: the launch's cause, said to come from the pool.
fn take_cause(
    reason: &CreateReason,
    resolved: &Resolved,
    last_desired: Option<u32>,
    replaced: &[&str],
    by: &str,
) -> String {
    match reason {
        CreateReason::Replace if !replaced.is_empty() => format!(
            "failed instance {} replaced from warm pool",
            replaced.join(", ")
        ),
        CreateReason::Replace => "failed instance replaced from warm pool".to_string(),
        r => format!(
            "{}: taken from warm pool",
            super::execute::launch_cause(r, resolved, last_desired, &[], by)
        ),
    }
}
