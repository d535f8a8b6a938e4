//! Elastic autoscaling: metrics collection, policy decisions, the simulator.
//!
//! # Layout
//! - [`metrics`]: per-container CPU/memory samples from each zone's engine, group averages.
//! - Values pushed to the controller for a group arrive through the API
//!   ([`crate::apply::metrics`], `POST /v1/metrics/NS/GROUP`) and are kept by [`Autoscaler::push`].
//! - [`policy`]: the pure decision code (step, target tracking, scheduled, guards).
//! - [`simulate`]: replays a CSV trace through [`policy`] (`ms simulate`).
//!
//! # Who owns the capacity
//! The controller never rewrites the user's spec. The [`Autoscaler`] keeps, per group, the
//! capacity its policies last decided; the reconciler asks it for the *effective* capacity
//! ([`Autoscaler::effective`]). When the user changes `spec.desiredCapacity` (an edit, `git
//! checkout`, `ms scale`), the user's value takes over until a policy next acts.

pub mod metrics;
pub mod policy;
pub mod simulate;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::tenancy::Tenancy;
use crate::engine::observe::Enqueue;
use crate::engine::observe::Zone;
use crate::health::liveness::Beat;
use crate::manifest::{
    AutoScalingGroup, AutoScalingGroupSpec, Kind, Object, ObjectKey, ScalingPolicySpec,
};
use crate::status::{GroupMetrics, GroupStatus};
use crate::util::unpoisoned::{LockExt, RwLockExt};
use crate::watch::store::{Desired, DesiredReader};

use metrics::{Collector, GroupInfo, InstanceMetrics};
use policy::{Decision, GroupInput, GroupState, History, SetBy};

/// Default warm-up of new instances (the group's `healthCheckGracePeriod` overrides it).
pub const DEFAULT_WARM_UP: Duration = Duration::from_secs(60);

/// Settings of the autoscaler (from the controller configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sampling and evaluation period.
    pub period: Duration,
    /// Pushed values older than this are missing.
    pub pushed_max_age: Duration,
    /// Stats calls in flight per zone.
    pub concurrency: usize,
}

impl Settings {
    pub fn from_config(c: &crate::config::Config) -> Settings {
        Settings {
            period: c.metrics_period.0.max(Duration::from_millis(100)),
            pushed_max_age: c.pushed_metric_max_age.0,
            concurrency: c.metrics_concurrency,
        }
    }
}

/// A capacity decided by a policy, and the user's value it took over from.
#[derive(Debug, Clone, PartialEq)]
struct Override {
    capacity: u32,
    set_by: SetBy,
    /// `spec.desiredCapacity` when the policy acted: a different value means the user has
    /// changed it since, and the user's value wins.
    spec_desired: Option<u32>,
}

/// Who owns a group's capacity: the user's spec, or the policy that acted last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapacityOwner {
    over: Option<Override>,
    /// Bounds in force after the last evaluation (a scheduled action may change them); `None`
    /// for groups without policies.
    bounds: Option<(u32, u32)>,
}

impl CapacityOwner {
    /// The spec owns the capacity.
    pub fn from_spec(_spec: &AutoScalingGroupSpec) -> CapacityOwner {
        CapacityOwner::default()
    }

    /// The capacity in force. A changed `spec.desiredCapacity` takes over from a policy.
    pub fn effective(&mut self, spec: &AutoScalingGroupSpec) -> Effective {
        if self
            .over
            .as_ref()
            .is_some_and(|o| o.spec_desired != spec.desired_capacity)
        {
            self.over = None;
        }
        let (min, max) = self
            .bounds
            .unwrap_or((spec.min_size, spec.max_size.max(spec.min_size)));
        let (desired, set_by) = match &self.over {
            Some(o) => (o.capacity, o.set_by.clone()),
            None => (spec.desired_capacity.unwrap_or(spec.min_size), SetBy::User),
        };
        Effective {
            desired: desired.clamp(min, max),
            min_size: min,
            max_size: max,
            set_by,
        }
    }
}

/// One evaluation of a group's policies at `now`: the code path shared by the live autoscaler
/// and the simulator. Updates `owner` when a policy sets the capacity or bounds change.
pub fn evaluate_group(
    owner: &mut CapacityOwner,
    spec: &AutoScalingGroupSpec,
    policies: &[(String, ScalingPolicySpec)],
    history: &History,
    state: &mut GroupState,
    now: DateTime<Utc>,
    max_pushed_age: Duration,
) -> Decision {
    let eff = owner.effective(spec);
    let input = GroupInput {
        capacity: eff.desired,
        min_size: spec.min_size,
        max_size: spec.max_size.max(spec.min_size),
        scale_out_cooldown: spec
            .scale_out_cooldown
            .map(|d| d.0)
            .unwrap_or(policy::DEFAULT_COOLDOWN),
        scale_in_cooldown: spec
            .scale_in_cooldown
            .map(|d| d.0)
            .unwrap_or(policy::DEFAULT_COOLDOWN),
        max_pushed_age,
    };
    let out = policy::evaluate(now, &input, policies, history, state);
    owner.bounds = Some((out.min_size, out.max_size));
    if out.decision.desired != eff.desired {
        owner.over = Some(Override {
            capacity: out.decision.desired,
            set_by: out.set_by.clone().unwrap_or(SetBy::User),
            spec_desired: spec.desired_capacity,
        });
    }
    out.decision
}

/// What the autoscaler keeps per group.
#[derive(Debug, Default)]
struct GroupAuto {
    history: History,
    state: GroupState,
    owner: CapacityOwner,
    last_decision: Option<Decision>,
    seeded: bool,
}

/// The capacity a group should run, and its bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub desired: u32,
    pub min_size: u32,
    pub max_size: u32,
    pub set_by: SetBy,
}

/// What one reconcile pass reads from the autoscaler ([`Autoscaler::for_pass`]).
#[derive(Debug, Clone)]
pub struct PassView {
    /// The capacity to converge to, and its bounds.
    pub effective: Effective,
    /// `" by policy NAME"` when a policy set the capacity (empty when the user did).
    pub cause: String,
    /// The autoscaling fields of the status; `None` for groups without policies.
    pub status: Option<StatusFields>,
}

/// The autoscaling fields of a group's status.
#[derive(Debug, Clone)]
pub struct StatusFields {
    set_by: String,
    last_decision: Option<Decision>,
    metrics: GroupMetrics,
}

impl StatusFields {
    /// Writes these fields into `status`.
    pub fn fill(self, status: &mut GroupStatus) {
        status.desired_capacity_set_by = Some(self.set_by);
        status.last_decision = self.last_decision;
        status.metrics = Some(self.metrics);
    }
}

/// The cause suffix of a group's scaling activities: who set its capacity.
fn cause_of(g: &GroupAuto) -> String {
    match g.owner.over.as_ref().map(|o| &o.set_by) {
        Some(SetBy::Policy(n)) => format!(" by policy {n}"),
        Some(SetBy::Pushed(n)) => format!(" by policy {n} (pushed metric)"),
        Some(SetBy::Schedule(n)) => format!(" by a scheduled action of policy {n}"),
        Some(SetBy::User) | None => String::new(),
    }
}

/// The policies attached to a group (sorted by name), from a snapshot.
pub fn policies_of(desired: &Desired, key: &ObjectKey) -> Vec<(String, ScalingPolicySpec)> {
    desired
        .policies()
        .filter(|(k, p, _)| k.namespace == key.namespace && p.spec.auto_scaling_group == key.name)
        .map(|(k, p, _)| (k.name.clone(), p.spec.clone()))
        .collect()
}

/// Collects metrics, evaluates policies and holds each group's effective capacity.
pub struct Autoscaler {
    /// The groups and their policies.
    desired: DesiredReader,
    /// The containers' real CPU limits (a namespace's default when the spec sets none).
    tenancy: Arc<Tenancy>,
    zones: Vec<Arc<Zone>>,
    /// Groups whose capacity changed are reconciled at once.
    queue: Arc<dyn Enqueue>,
    settings: Settings,
    groups: Mutex<HashMap<ObjectKey, GroupAuto>>,
    collector: tokio::sync::Mutex<Collector>,
    /// Latest per-container metrics (`ms top`), refreshed each period.
    instances: RwLock<Vec<InstanceMetrics>>,
    /// Where the status written before this start comes from (the sidecar tree with
    /// `statusMode: sidecar`); unset, the manifest's own `status:` block.
    previous: std::sync::OnceLock<PreviousStatus>,
    /// See [`Autoscaler::set_readiness`].
    readiness: std::sync::OnceLock<Arc<crate::probe::Verdicts>>,
}

/// The status a group had before this controller started, given the one in its manifest:
/// [`crate::status::sync::StatusSync::previous`].
pub type PreviousStatus =
    Arc<dyn Fn(&ObjectKey, Option<&serde_json::Value>) -> Option<serde_json::Value> + Send + Sync>;

impl Autoscaler {
    pub fn new(
        desired: DesiredReader,
        tenancy: Arc<Tenancy>,
        zones: Vec<Arc<Zone>>,
        queue: Arc<dyn Enqueue>,
        settings: Settings,
    ) -> Arc<Self> {
        Arc::new(Autoscaler {
            desired,
            tenancy,
            zones,
            queue,
            settings,
            groups: Mutex::new(HashMap::new()),
            collector: tokio::sync::Mutex::new(Collector::default()),
            instances: RwLock::new(Vec::new()),
            previous: std::sync::OnceLock::new(),
            readiness: std::sync::OnceLock::new(),
        })
    }

    /// The probes' verdicts: instances not ready by their readiness probe are left out of the
    /// metrics (set once).
    pub fn set_readiness(&self, verdicts: Arc<crate::probe::Verdicts>) {
        let _ = self.readiness.set(verdicts);
    }

    /// Seeds capacities set by policies before a restart from `previous` (set once).
    pub fn set_previous_status(&self, previous: PreviousStatus) {
        let _ = self.previous.set(previous);
    }

    /// The capacity the reconciler should converge `group` to (before `state: Stopped`).
    pub fn effective(&self, key: &ObjectKey, group: &AutoScalingGroup) -> Effective {
        let mut groups = self.groups.locked();
        self.seeded(&mut groups, key, group)
            .owner
            .effective(&group.spec)
    }

    /// Everything one reconcile pass needs from the autoscaler, under one lock: the effective
    /// capacity, the cause suffix of scaling activities and the status fields.
    pub fn for_pass(&self, key: &ObjectKey, group: &AutoScalingGroup) -> PassView {
        let mut groups = self.groups.locked();
        let g = self.seeded(&mut groups, key, group);
        PassView {
            effective: g.owner.effective(&group.spec),
            cause: cause_of(g),
            status: self.status_of(g),
        }
    }

    /// The group's entry, seeded from the status written before a restart on first use.
    fn seeded<'g>(
        &self,
        groups: &'g mut HashMap<ObjectKey, GroupAuto>,
        key: &ObjectKey,
        group: &AutoScalingGroup,
    ) -> &'g mut GroupAuto {
        let g = groups.entry(key.clone()).or_default();
        if !g.seeded {
            g.seeded = true;
            let previous = match self.previous.get() {
                Some(p) => p(key, group.status.as_ref()),
                None => group.status.clone(),
            };
            g.owner.over = seed(group, previous, &self.desired.borrow(), key);
        }
        g
    }

    /// Adds the autoscaling fields to a group's status (nothing for groups without policies,
    /// so their status stays as quiet as before).
    pub fn fill_status(&self, key: &ObjectKey, status: &mut GroupStatus) {
        let fields = self
            .groups
            .locked()
            .get(key)
            .and_then(|g| self.status_of(g));
        if let Some(f) = fields {
            f.fill(status);
        }
    }

    fn status_of(&self, g: &GroupAuto) -> Option<StatusFields> {
        g.owner.bounds?;
        let latest = g.history.latest();
        let now = Utc::now();
        let fresh = chrono::Duration::from_std(self.settings.pushed_max_age).unwrap_or_default();
        Some(StatusFields {
            set_by: g
                .owner
                .over
                .as_ref()
                .map(|o| o.set_by.to_string())
                .unwrap_or_else(|| "user".into()),
            last_decision: g.last_decision.clone(),
            metrics: GroupMetrics {
                cpu_percent: latest.and_then(|s| s.cpu).map(|v| v.round() as u32),
                memory_percent: latest.and_then(|s| s.memory).map(|v| v.round() as u32),
                instances: latest.map(|s| s.instances).unwrap_or(0),
                pushed: g
                    .history
                    .latest_pushed()
                    .into_iter()
                    .filter(|(_, (t, _))| now - *t <= fresh)
                    .map(|(k, (_, v))| (k, v))
                    .collect(),
            },
        })
    }

    /// Records a pushed value for a group (validated by the caller).
    ///
    /// # Errors
    /// When `name` is new for the group and the namespace already holds `max_series` pushed
    /// metrics (each group's counted apart): the number it holds.
    pub fn push(
        &self,
        key: &ObjectKey,
        name: &str,
        value: f64,
        time: DateTime<Utc>,
        max_series: u32,
    ) -> Result<(), usize> {
        let mut groups = self.groups.locked();
        let known = groups
            .get(key)
            .is_some_and(|g| g.history.pushed_names().any(|n| n == name));
        if !known {
            let held: usize = groups
                .iter()
                .filter(|(k, _)| k.namespace == key.namespace)
                .map(|(_, g)| g.history.pushed_names().count())
                .sum();
            if held >= max_series as usize {
                return Err(held);
            }
        }
        groups
            .entry(key.clone())
            .or_default()
            .history
            .push(name, time, value);
        Ok(())
    }

    /// Latest per-container metrics.
    pub fn instances(&self) -> Vec<InstanceMetrics> {
        self.instances.read_locked().clone()
    }

    /// Samples and evaluates every period until `shutdown`, touching `beat` each time.
    pub async fn run(self: Arc<Self>, beat: Beat, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            self.tick(Utc::now()).await;
            beat.touch();
        }
    }

    /// One period: collect, then evaluate every group's policies at `now`.
    pub async fn tick(&self, now: DateTime<Utc>) {
        let desired = self.desired.borrow().clone();
        if !desired.loaded {
            return;
        }
        let mut infos = BTreeMap::new();
        for (key, group, _) in desired.groups() {
            let lc = desired.launch_configuration(&key.namespace, &group.spec.launch_configuration);
            // The limit containers really run with (the namespace's default when unset).
            let cpus = lc.and_then(|l| self.tenancy.container_limits(&key.namespace, &l.spec).0);
            let warm_up = group
                .spec
                .health_check_grace_period
                .map(|d| d.0)
                .unwrap_or(DEFAULT_WARM_UP);
            infos.insert(key.clone(), GroupInfo { cpus, warm_up });
        }
        let samples = {
            let mut c = self.collector.lock().await;
            if c.readiness.is_none() {
                c.readiness = self.readiness.get().cloned();
            }
            let s = c
                .collect(&self.zones, &infos, self.settings.concurrency, now)
                .await;
            *self.instances.write_locked() = c.instances();
            s
        };
        {
            let mut groups = self.groups.locked();
            groups.retain(|k, _| infos.contains_key(k));
            // Pushed names nobody pushes any more go (a minute after they turned stale).
            let cutoff = policy::minus(
                now,
                self.settings
                    .pushed_max_age
                    .saturating_add(Duration::from_secs(60)),
            );
            for g in groups.values_mut() {
                g.history.forget_pushed_before(cutoff);
            }
            for (key, sample) in samples {
                groups.entry(key).or_default().history.record(sample);
            }
        }
        self.evaluate_all(now);
    }

    /// Evaluates one group; true when its capacity, bounds or decision changed.
    fn evaluate(
        &self,
        key: &ObjectKey,
        group: &AutoScalingGroup,
        policies: &[(String, ScalingPolicySpec)],
        now: DateTime<Utc>,
    ) -> bool {
        self.effective(key, group); // seeds after a restart
        let mut groups = self.groups.locked();
        let g = groups.entry(key.clone()).or_default();
        if policies.is_empty() {
            // No policy (any more): the spec rules again.
            let changed = g.owner != CapacityOwner::default();
            g.owner = CapacityOwner::default();
            g.last_decision = None;
            g.state = GroupState::default();
            return changed;
        }
        let before = g.owner.clone();
        let decision = evaluate_group(
            &mut g.owner,
            &group.spec,
            policies,
            &g.history,
            &mut g.state,
            now,
            self.settings.pushed_max_age,
        );
        if decision.desired != decision.capacity {
            info!(group = %key, from = decision.capacity, to = decision.desired, "{}", decision.message);
        }
        let mut changed = g.owner != before;
        if g.last_decision
            .as_ref()
            .is_none_or(|d| !d.same_outcome(&decision))
        {
            g.last_decision = Some(decision);
            changed = true;
        }
        changed
    }

    /// Records a collected sample for a group (what [`Autoscaler::tick`] does after sampling).
    pub fn record(&self, key: &ObjectKey, sample: policy::GroupSample) {
        let mut groups = self.groups.locked();
        groups
            .entry(key.clone())
            .or_default()
            .history
            .record(sample);
    }

    /// Evaluates every group of the current snapshot at `now` (no sampling); enqueues the
    /// groups whose capacity changed. Returns each group's latest decision.
    pub fn evaluate_all(&self, now: DateTime<Utc>) -> BTreeMap<ObjectKey, Decision> {
        let desired = self.desired.borrow().clone();
        let mut out = BTreeMap::new();
        for (key, group, _) in desired.groups() {
            let policies = policies_of(&desired, key);
            // One group's policies can never stop the evaluation of the others.
            let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.evaluate(key, group, &policies, now)
            }));
            match evaluated {
                Ok(true) => self.queue.enqueue(key.clone()),
                Ok(false) => {}
                Err(panic) => tracing::error!(
                    group = %key,
                    "evaluating the scaling policies failed unexpectedly (please report it): {}",
                    crate::util::unpoisoned::panic_message(panic.as_ref())
                ),
            }
            if let Some(d) = self
                .groups
                .locked()
                .get(key)
                .and_then(|g| g.last_decision.clone())
            {
                out.insert(key.clone(), d);
            }
        }
        out
    }
}

/// After a restart: a capacity a policy had set survives when the spec has not changed since
/// the status was written (same generation).
fn seed(
    group: &AutoScalingGroup,
    previous: Option<serde_json::Value>,
    desired: &Desired,
    key: &ObjectKey,
) -> Option<Override> {
    let entry = desired.objects.get(key)?;
    let status: GroupStatus = serde_json::from_value(previous?).ok()?;
    let set_by = SetBy::parse(status.desired_capacity_set_by.as_deref()?)?;
    if set_by == SetBy::User || status.observed_generation != entry.generation {
        return None;
    }
    Some(Override {
        capacity: status.desired_capacity,
        set_by,
        spec_desired: group.spec.desired_capacity,
    })
}

/// True when `key` names a group of the snapshot.
pub fn group_exists(desired: &Desired, key: &ObjectKey) -> bool {
    matches!(
        desired.objects.get(key).map(|e| &e.object),
        Some(Object::AutoScalingGroup(_))
    ) && key.kind == Kind::AutoScalingGroup
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;
