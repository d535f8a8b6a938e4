//! The level-triggered reconciler: for one group key, re-read desired and observed state, plan,
//! execute the plan against the engines, and publish status.
//!
//! `reconcile` never knows which trigger fired (a manifest change, a Docker event, a cooldown
//! expiry, the periodic resync): it always starts from the current state, so it is idempotent.
//! The queue guarantees one reconcile per key at a time; errors requeue that key with
//! exponential backoff without slowing any other group.
//!
//! # Layout
//! The stage "desired + observed → actions".
//! - This file: [`Context`] (what the reconciler is handed), [`Reconciler`]: the runner, one
//!   pass (`reconcile`), the executor and the status it builds.
//! - [`queue`]: one slot per group, never two reconciles of a group at once.
//! - [`changes`]: the change feed: new snapshots and confirmations → the groups to look at.
//! - [`plan`]: the pure planning function (desired + observed → create/remove), table-tested.
//! - [`quota`]: creations in flight per namespace, against its quotas.
//! - `orphans`: whether a group found only on the engines may be deleted.
//! - `removals`: removals in the background, with backoff.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::autoscale::Autoscaler;
use crate::config::tenancy::Tenancy;
use crate::config::tenancy::{ContainerLimits, Usage};
use crate::engine::observe::{short_id, Reach, Zone};
use crate::engine::{labels, ContainerSpec, ContainerState, EngineError, Observed};
use crate::manifest::{AutoScalingGroup, IntOrPercent, LaunchConfiguration, ObjectKey};
use crate::reconcile::queue::Queue;
use crate::reconcile::quota::QuotaLedger;
use crate::status::sync::StatusSync;
use crate::status::{self, Activity, Condition, GroupStatus, InstanceStatus, MAX_ACTIVITIES};
use crate::util::unpoisoned::{panic_message, LockExt};
use crate::watch::prune::{Confirmations, Report};
use crate::watch::store::DesiredReader;
use plan::{CreateReason, Instance, Plan, RemoveReason, Target};

pub mod changes;
mod orphans;
pub mod plan;
pub mod queue;
pub mod quota;
mod removals;

/// A container that exits by itself within this time of starting counts as a crash (backoff).
const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// Backoff after failures doubles from this...
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// ...up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long a spec that started a container skips the slow start.
const PROVEN_FOR: Duration = Duration::from_secs(600);
/// Failures older than this no longer count towards the backoff.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// How often a group whose deletion is held is looked at again (a confirmation or a change of
/// the desired state also enqueues it at once).
const ORPHAN_RECHECK: Duration = Duration::from_secs(5);
/// How long a clean shutdown waits for removals in flight (the supervisor drains for 10 s).
const SHUTDOWN_REMOVALS: Duration = Duration::from_secs(9);

/// What the reconciler remembers about a group between passes (nothing here is needed for
/// correctness after a restart: it only shapes backoff and status).
#[derive(Debug, Default)]
struct GroupMemory {
    /// Consecutive failures (launch errors, crashes) for the backoff.
    failures: u32,
    last_failure: Option<Instant>,
    /// No creation before this (exponential backoff after failures).
    hold_until: Option<Instant>,
    /// The last failure, for the Degraded condition: (reason, message).
    degraded: Option<(String, String)>,
    activities: VecDeque<Activity>,
    last_scale_out: Option<DateTime<Utc>>,
    last_scale_in: Option<DateTime<Utc>>,
    /// Desired capacity of the previous pass (to tell a scale-out from a replacement).
    last_desired: Option<u32>,
    conditions: Vec<Condition>,
    seeded: bool,
    /// Stop grace of the group's launch configuration when last seen: a deleted group's
    /// containers are stopped with it, not with Docker's default.
    last_grace: Option<Duration>,
    /// The container spec hash the failures were for: a new launch configuration starts with a
    /// clean slate, since the backoff was earned by the old one.
    failed_hash: Option<String>,
    /// Why the last pass could not launch all it wanted: a namespace quota (Degraded).
    quota: Option<String>,
}

impl GroupMemory {
    fn record(&mut self, action: &str, instance: &str, zone: &str, cause: &str) {
        self.activities.push_front(Activity {
            time: now_secs(),
            action: action.to_string(),
            instance: instance.to_string(),
            zone: zone.to_string(),
            cause: cause.to_string(),
        });
        self.activities.truncate(MAX_ACTIVITIES);
    }

    fn fail(&mut self, reason: &str, message: String, spec_hash: &str) {
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
        self.degraded = Some((reason.to_string(), message));
    }

    /// Forgets failures and their backoff: the group is healthy again, or runs a new spec.
    fn forget_failures(&mut self) {
        self.failures = 0;
        self.last_failure = None;
        self.hold_until = None;
        self.degraded = None;
        self.failed_hash = None;
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
        self.activities = prev.activities.into_iter().collect();
        self.last_scale_out = prev.last_scale_out;
        self.last_scale_in = prev.last_scale_in;
        self.conditions = prev.conditions;
        self.last_desired = Some(prev.desired_capacity);
    }
}

/// What the reconciler is handed by the wiring: each a narrow handle, none the wiring itself.
pub struct Context {
    /// The `controllerName` label value: only containers carrying it are ours.
    pub controller_name: String,
    /// Whether a group found only on the engines may be deleted without a confirmation
    /// (`--allow-empty`).
    pub allow_empty: bool,
    /// The desired state (written by the watcher only).
    pub desired: DesiredReader,
    /// Per-namespace limits: default container resources and quotas.
    pub tenancy: Arc<Tenancy>,
    /// Deletions confirmed by name (`ms delete`): never held.
    pub confirmations: Arc<Confirmations>,
    /// Where held and failing deletions of groups no manifest defines are reported.
    pub prune_report: Arc<Report>,
    /// The status writer: each pass publishes the group's status into it.
    pub status: Arc<StatusSync>,
    /// The effective capacity of groups with scaling policies; without it (scenario tests,
    /// the scale model), every group runs the capacity of its spec.
    pub autoscaler: Option<Arc<Autoscaler>>,
}

/// The reconciler of every group.
pub struct Reconciler {
    ctx: Context,
    zones: Vec<Arc<Zone>>,
    queue: Arc<Queue<ObjectKey>>,
    memory: Mutex<HashMap<ObjectKey, GroupMemory>>,
    /// Container specs (by hash) that recently started a container: slow start protects against
    /// broken images and commands, which a recent success of the very same spec rules out.
    proven: Mutex<HashMap<String, Instant>>,
    /// Creations in flight per group at most (the slow-start window grows up to this).
    concurrency: usize,
    /// Whether a group found only on the engines may be deleted.
    orphans: orphans::OrphanGate,
    /// Backoff of failed removals per group (shared with the removal tasks).
    removals: Arc<removals::Removals>,
    /// The removal tasks in flight, waited for at shutdown.
    removing: tokio_util::task::TaskTracker,
    /// Creations in flight per namespace, for the namespace quotas.
    quotas: QuotaLedger,
}

/// What a group resolves to for one pass.
struct Resolved {
    target: Target,
    lc: Option<LaunchConfiguration>,
    group: Option<AutoScalingGroup>,
    /// Problems to show in conditions: (reason, message).
    problems: Vec<(String, String)>,
    waiting_for: Option<String>,
    /// CPU and memory limits of each container (the namespace's defaults filled in).
    limits: ContainerLimits,
}

impl Reconciler {
    /// The reconciler of the groups of `ctx.desired` on `zones`, taking keys from `queue`, with
    /// at most `concurrency` creations in flight per group.
    pub fn new(
        ctx: Context,
        zones: Vec<Arc<Zone>>,
        queue: Arc<Queue<ObjectKey>>,
        concurrency: usize,
    ) -> Arc<Self> {
        let orphans = orphans::OrphanGate::new(
            ctx.confirmations.clone(),
            ctx.prune_report.clone(),
            ctx.allow_empty,
        );
        Arc::new(Reconciler {
            orphans,
            removals: Arc::default(),
            removing: tokio_util::task::TaskTracker::new(),
            ctx,
            zones,
            queue,
            memory: Mutex::new(HashMap::new()),
            proven: Mutex::new(HashMap::new()),
            concurrency: concurrency.max(1),
            quotas: QuotaLedger::default(),
        })
    }

    /// Pops keys from the queue and reconciles them, up to `workers` groups at once.
    pub async fn run(self: Arc<Self>, workers: usize, shutdown: CancellationToken) {
        let limit = Arc::new(tokio::sync::Semaphore::new(workers.max(1)));
        loop {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => p.expect("semaphore open"),
                _ = shutdown.cancelled() => break,
            };
            let key = tokio::select! {
                k = self.queue.next() => k,
                _ = shutdown.cancelled() => break,
            };
            let this = self.clone();
            tokio::spawn(async move {
                // A panic must neither leave the key "running" forever (never reconciled again)
                // nor reach other groups: it becomes a condition and a retry with backoff.
                let requeue = match AssertUnwindSafe(this.reconcile(&key)).catch_unwind().await {
                    Ok(requeue) => requeue,
                    Err(panic) => this.panicked(&key, &panic_message(panic.as_ref())),
                };
                this.queue.done(&key, requeue);
                drop(permit);
            });
        }
        // Removals already asked for are finished (a stop takes at most its grace), so a
        // confirmed deletion is not left half done by a clean shutdown.
        self.removing.close();
        if !self.removing.is_empty() {
            info!(
                removals = self.removing.len(),
                "finishing the removals in flight before stopping"
            );
            let _ = tokio::time::timeout(SHUTDOWN_REMOVALS, self.removing.wait()).await;
        }
    }

    /// Records a panic of one pass of `key`: logged, shown as `Degraded=True
    /// ReconcilePanicked`, retried after the group's backoff.
    fn panicked(&self, key: &ObjectKey, what: &str) -> Option<Instant> {
        let msg = format!(
            "internal error while reconciling (please report it): {what}; retrying with backoff"
        );
        error!(group = %key, "{msg}");
        let hash = {
            let desired = self.ctx.desired.borrow().clone();
            desired
                .group(key)
                .map(|_| self.resolve(key, &desired).target.spec_hash)
        };
        let hold = {
            let mut mem = self.memory.locked();
            let mem = mem.entry(key.clone()).or_default();
            mem.fail(
                "ReconcilePanicked",
                msg.clone(),
                hash.as_deref().unwrap_or(""),
            );
            mem.hold_until
        };
        if hash.is_some() {
            // The pass that panicked published nothing: say it now.
            let mut st = self.ctx.status.get(key).unwrap_or_default();
            st.conditions.retain(|c| c.type_ != status::DEGRADED);
            st.conditions.push(Condition {
                type_: status::DEGRADED.to_string(),
                status: "True".into(),
                reason: "ReconcilePanicked".into(),
                message: msg,
                last_transition_time: now_secs(),
            });
            self.ctx.status.publish(key, st);
        }
        hold.or_else(|| Some(Instant::now() + BACKOFF_BASE))
    }

    /// One pass for one group. Returns when to run again (None: wait for a change or the resync).
    pub async fn reconcile(&self, key: &ObjectKey) -> Option<Instant> {
        crate::util::failpoint::reconcile_panic(&format!("{}/{}", key.namespace, key.name));
        let desired = self.ctx.desired.borrow().clone();
        // Never act on a partial view: an empty store or an unlisted zone looks like "nothing".
        if !desired.loaded || self.zones.iter().any(|z| z.reach() == Reach::Unknown) {
            return Some(Instant::now() + Duration::from_millis(100));
        }
        let resolved = self.resolve(key, &desired);
        let entry = desired.objects.get(key);
        if resolved.group.is_some() {
            self.orphans.defined(key);
        }

        // Observed state of reachable zones; unreachable ones are unknown.
        let mut reachable = BTreeSet::new();
        let mut unreachable = Vec::new();
        let mut observed: Vec<(String, Observed)> = Vec::new();
        for z in &self.zones {
            match z.reach() {
                Reach::Reachable => {
                    reachable.insert(z.name.clone());
                    observed.extend(z.instances_of(key).into_iter().map(|o| (z.name.clone(), o)));
                }
                Reach::Unreachable(e) => unreachable.push((z.name.clone(), e)),
                Reach::Unknown => {}
            }
        }
        let instances: Vec<Instance> = observed
            .iter()
            .map(|(z, o)| to_instance(z, o, &self.ctx.controller_name))
            .collect();
        if resolved.group.is_none()
            && !observed.is_empty()
            && self.orphans.may_prune(key, &desired, &self.zones).is_err()
        {
            // Held (reported): touch nothing; look again when something may have changed.
            return Some(Instant::now() + ORPHAN_RECHECK);
        }

        let held = {
            let mut mem_guard = self.memory.locked();
            let mem = mem_guard.entry(key.clone()).or_default();
            if !mem.seeded {
                let in_file = entry.and_then(|e| match &e.object {
                    crate::manifest::Object::AutoScalingGroup(g) => g.status.as_ref(),
                    _ => None,
                });
                mem.seed(self.ctx.status.previous(key, in_file).as_ref());
            }
            let now = Instant::now();
            if mem.last_failure.is_some_and(|t| now - t > FAILURE_MEMORY) {
                mem.failures = 0;
                mem.degraded = None;
            }
            // A fixed launch configuration must not wait out the backoff of the broken one.
            if resolved.group.is_some()
                && mem
                    .failed_hash
                    .as_ref()
                    .is_some_and(|h| *h != resolved.target.spec_hash)
            {
                debug!(group = %key, "new launch configuration: failures and backoff forgotten");
                mem.forget_failures();
            }
            mem.hold_until.filter(|t| *t > now)
        };

        let mut plan = if resolved.waiting_for.is_some() {
            // Without a launch configuration nothing can be launched; touch nothing else either.
            Plan::default()
        } else {
            plan::plan(&resolved.target, &instances, &reachable)
        };
        let wanted_creations = plan.create.len();
        // What the group still needs, whatever the backoff holds back (status and requeue).
        let planned = plan.clone();
        if held.is_some() {
            plan.create.clear();
        }
        // Removals the engine refused wait out their own backoff.
        let removal_hold = self.removals.held(key);
        if removal_hold.is_some() {
            plan.remove.clear();
        }

        // Namespace quotas: launch only what fits; the rest waits, visibly (Degraded).
        let reservation = (!plan.create.is_empty()).then(|| {
            let running = self.namespace_usage(&key.namespace, &desired);
            self.quotas.reserve(
                &self.ctx.tenancy,
                &key.namespace,
                running,
                u32::try_from(plan.create.len()).unwrap_or(u32::MAX),
                resolved.limits,
            )
        });
        if let Some(r) = &reservation {
            plan.create.truncate(r.granted as usize);
        }
        let refused = reservation.as_ref().and_then(|r| r.refused.clone());
        if let Some(why) = &refused {
            debug!(group = %key, "quota: {why}");
        }
        self.memory.locked().entry(key.clone()).or_default().quota = refused;

        let acted = !plan.is_empty();
        self.execute(key, &resolved, &plan, &instances, &observed)
            .await;
        drop(reservation);

        // Status from what we see now (our own actions are already in the caches). A pass that
        // did nothing (every periodic resync of a converged group) reuses what it read.
        let (after, after_instances, remaining) = if acted {
            let mut reachable_now = BTreeSet::new();
            let mut after: Vec<(String, Observed)> = Vec::new();
            for z in &self.zones {
                if z.reach() == Reach::Reachable {
                    reachable_now.insert(z.name.clone());
                    after.extend(z.instances_of(key).into_iter().map(|o| (z.name.clone(), o)));
                }
            }
            let after_instances: Vec<Instance> = after
                .iter()
                .map(|(z, o)| to_instance(z, o, &self.ctx.controller_name))
                .collect();
            let remaining = if resolved.waiting_for.is_some() {
                Plan::default()
            } else {
                plan::plan(&resolved.target, &after_instances, &reachable_now)
            };
            (after, after_instances, remaining)
        } else {
            (observed, instances, planned)
        };
        if resolved.group.is_none() {
            self.ctx.status.forget(key);
            self.memory.locked().remove(key);
            if after.is_empty() {
                self.orphans.gone(key);
                self.removals.forget(key);
                return None;
            }
            // No status to carry a condition: failing removals of a deleted group are problems.
            if let Some((until, why)) = self.removals.last_error(key) {
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
            return Some(
                removal_hold.map_or(Instant::now() + Duration::from_millis(500), |(t, _)| t),
            );
        }
        let status = self.build_status(
            key,
            &resolved,
            &after,
            &after_instances,
            &unreachable,
            &remaining,
            held,
            &desired,
        );
        self.ctx.status.publish(key, status);

        let hold = self
            .memory
            .locked()
            .get(key)
            .and_then(|m| m.hold_until)
            .filter(|t| *t > Instant::now());
        // A young `created` container is looked at again once it would count as stuck.
        let stuck_check = after
            .iter()
            .any(|(_, o)| o.state == ContainerState::Created)
            .then(|| Instant::now() + STUCK_CREATED);
        if let Some((t, _)) = removal_hold {
            if remaining.create.is_empty() && !remaining.remove.is_empty() {
                return Some(t);
            }
        }
        match (acted, remaining.is_empty(), hold) {
            (_, false, Some(t)) if wanted_creations > 0 || !remaining.create.is_empty() => Some(t),
            (false, true, _) if stuck_check.is_some() => stuck_check,
            (true, _, _) => Some(Instant::now() + Duration::from_millis(20)),
            // Waiting for readiness (rollout) or for removals in the background.
            (false, false, _) => Some(Instant::now() + Duration::from_secs(1)),
            (false, true, _) => None,
        }
    }

    fn resolve(&self, key: &ObjectKey, desired: &crate::watch::store::Desired) -> Resolved {
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
                },
                lc: None,
                group: None,
                problems: vec![],
                waiting_for: None,
                limits: (None, None),
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
                    problems.push((
                        "UnknownZone".to_string(),
                        format!("zone `{z}` is not in the controller configuration{hint}; configured zones: {}", all_zones.join(", ")),
                    ));
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
        // The autoscaler's effective capacity (a policy's decision, or the spec's).
        let effective = self
            .ctx
            .autoscaler
            .as_ref()
            .map(|a| a.effective(key, group));
        let desired_count = match spec.state {
            crate::manifest::GroupState::Stopped => 0,
            crate::manifest::GroupState::Started => match &effective {
                Some(e) => e.desired,
                None => spec.capacity(),
            },
        };
        let limits = lc
            .as_ref()
            .map(|l| self.ctx.tenancy.container_limits(&key.namespace, &l.spec))
            .unwrap_or((None, None));
        let spec_hash = lc
            .as_ref()
            .map(|l| container_hash_with_limits(l, group, limits))
            .unwrap_or_default();
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
                max_size: effective.as_ref().map_or(spec.max_size, |e| e.max_size),
                zones,
                spec_hash,
                max_surge,
                max_unavailable,
            },
            lc,
            group: Some(group.clone()),
            problems,
            waiting_for,
            limits,
        }
    }

    /// What the containers of namespace `ns` use now, in the reachable zones: each group's
    /// running containers times its containers' limits (the namespace's defaults for a group
    /// no longer defined).
    fn namespace_usage(&self, ns: &str, desired: &crate::watch::store::Desired) -> Usage {
        let tenancy = &self.ctx.tenancy;
        let defaults = {
            let (c, m) = tenancy.default_resources(ns);
            (Some(c), Some(m))
        };
        let mut usage = Usage::default();
        for z in self.zones.iter().filter(|z| z.reach() == Reach::Reachable) {
            for (key, n) in z.namespace_usage(ns) {
                let limits = desired
                    .group(&key)
                    .and_then(|g| desired.launch_configuration(ns, &g.spec.launch_configuration))
                    .map(|l| tenancy.container_limits(ns, &l.spec))
                    .unwrap_or(defaults);
                usage.add(Usage::of(n, limits));
            }
        }
        usage
    }

    async fn execute(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        plan: &Plan,
        before: &[Instance],
        observed: &[(String, Observed)],
    ) {
        let zone_of = |name: &str| self.zones.iter().find(|z| z.name == name).cloned();
        let desired = resolved.target.desired;
        // " by policy NAME" when a policy set the capacity (for the activity causes).
        let by = self
            .ctx
            .autoscaler
            .as_ref()
            .map(|a| a.cause_suffix(key))
            .unwrap_or_default();
        let (last_desired, group_stopped) = {
            let mem = self.memory.locked();
            let last = mem.get(key).and_then(|m| m.last_desired);
            (
                last,
                resolved
                    .group
                    .as_ref()
                    .is_some_and(|g| g.spec.state == crate::manifest::GroupState::Stopped),
            )
        };

        // Failed instances: find out why (crash or killed) before they are removed.
        let mut crash: Option<String> = None;
        for r in plan
            .remove
            .iter()
            .filter(|r| r.reason == RemoveReason::Failed)
        {
            let Some(o) = observed.iter().find(|(_, o)| o.id == r.id).map(|(_, o)| o) else {
                continue;
            };
            let code = o.exit_code;
            let ran_for = o
                .started_at
                .map(|s| Utc::now() - s)
                .and_then(|d| d.to_std().ok());
            let killed = matches!(code, Some(137) | Some(143));
            if crash.is_none()
                && code.is_some()
                && !killed
                && ran_for.is_none_or(|d| d < CRASH_WINDOW)
            {
                let logs = match zone_of(&r.zone).and_then(|z| z.engine()) {
                    Some(e) => e.logs_tail(&r.id, 5).await.unwrap_or_default(),
                    None => String::new(),
                };
                let logs = logs.trim();
                crash = Some(format!(
                    "instance {} exited with code {} {}after start{}",
                    r.name,
                    code.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                    ran_for
                        .map(|d| format!("{:.1}s ", d.as_secs_f64()))
                        .unwrap_or_default(),
                    if logs.is_empty() {
                        String::new()
                    } else {
                        format!("; last log lines: {}", logs.replace('\n', " | "))
                    }
                ));
            }
        }

        // Removals run in the background: a stop may wait for the grace period, and that must
        // not hold up the rest of this group's convergence (or a rollout's next batch).
        let lc_grace = resolved.lc.as_ref().map(|l| {
            l.spec
                .stop_grace_period
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(10))
        });
        let grace;
        {
            let mut mem_guard = self.memory.locked();
            let mem = mem_guard.entry(key.clone()).or_default();
            if lc_grace.is_some() {
                mem.last_grace = lc_grace;
            }
            grace = mem.last_grace.unwrap_or(Duration::from_secs(10));
            if let Some(msg) = &crash {
                mem.fail("CrashLoop", msg.clone(), &resolved.target.spec_hash);
                self.proven.locked().remove(&resolved.target.spec_hash);
            }
            for r in &plan.remove {
                let cause = match r.reason {
                    RemoveReason::Failed => {
                        let o = before.iter().find(|i| i.id == r.id);
                        match o.and_then(|i| i.exit_code) {
                            Some(c) => format!("instance exited with code {c}; it is replaced"),
                            None => "instance failed; it is replaced".to_string(),
                        }
                    }
                    RemoveReason::ScaleIn if resolved.group.is_none() => {
                        "group deleted".to_string()
                    }
                    RemoveReason::ScaleIn if group_stopped => "group stopped".to_string(),
                    RemoveReason::ScaleIn => match last_desired {
                        Some(l) if l > desired => {
                            format!("desired capacity lowered from {l} to {desired}{by}")
                        }
                        _ => format!(
                            "more instances than desired ({desired}): zone with most, oldest first"
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
                            "rolling update: replaced by an instance of the new launch configuration".to_string()
                        }
                    }
                    RemoveReason::Rebalance => "rebalancing zones".to_string(),
                };
                mem.record("Terminate", &r.name, &r.zone, &cause);
                if r.reason == RemoveReason::ScaleIn && resolved.group.is_some() {
                    mem.last_scale_in = Some(now_secs());
                }
            }
        }
        for r in &plan.remove {
            let Some(zone) = zone_of(&r.zone) else {
                continue;
            };
            let Some(engine) = zone.engine() else {
                continue;
            };
            zone.terminating(&r.id);
            let g = if r.reason == RemoveReason::Failed {
                Duration::ZERO
            } else {
                grace
            };
            let (id, name, queue, k) = (
                r.id.clone(),
                r.name.clone(),
                self.queue.clone(),
                key.clone(),
            );
            let removals = self.removals.clone();
            self.removing.spawn(async move {
                let res = if crate::util::failpoint::remove_error(&format!("{}/{}", k.namespace, k.name))
                {
                    Err(EngineError::Other(
                        "the engine refused (failpoint remove-error)".into(),
                    ))
                } else {
                    engine.remove(&id, g).await
                };
                zone.removed(&id, res.is_ok());
                match res {
                    Ok(()) => {
                        removals.succeeded(&k);
                        queue.now(k);
                    }
                    Err(e) => {
                        let retry = removals.failed(&k, &name, &e.to_string());
                        let secs = retry
                            .saturating_duration_since(Instant::now())
                            .as_secs_f64();
                        warn!(group = %k, container = short_id(&id), error = %e, "removal failed; retrying in {secs:.0}s");
                        queue.schedule(k, retry);
                    }
                }
            });
        }

        if plan.create.is_empty() {
            self.note_desired(key, desired);
            return;
        }
        let (Some(lc), Some(group)) = (&resolved.lc, &resolved.group) else {
            return;
        };

        // Slow start: one creation first, then the window grows by one per success (doubling
        // per round trip) up to `concurrency`; the first failure stops further launches, so a
        // broken image costs one failed create per backoff period, not a hundred. A spec that
        // started a container within `PROVEN_FOR` starts at full speed.
        let hash = &resolved.target.spec_hash;
        let proven = self
            .proven
            .locked()
            .get(hash)
            .is_some_and(|t| t.elapsed() < PROVEN_FOR);
        let mut todo: VecDeque<&plan::Create> = plan.create.iter().collect();
        let mut inflight = FuturesUnordered::new();
        let mut window = if proven { self.concurrency } else { 1 };
        let mut failure: Option<(String, String)> = None;
        let mut launched: Vec<(String, String, CreateReason)> = Vec::new();
        loop {
            while failure.is_none() && inflight.len() < window.min(self.concurrency) {
                let Some(c) = todo.pop_front() else { break };
                let Some(zone) = zone_of(&c.zone) else {
                    continue;
                };
                let Some(engine) = zone.engine() else {
                    continue;
                };
                let spec = container_spec(
                    key,
                    lc,
                    group,
                    &zone.name,
                    &resolved.target.spec_hash,
                    &self.ctx.controller_name,
                    resolved.limits,
                );
                let reason = c.reason.clone();
                inflight.push(async move {
                    let r = engine.create_and_start(&spec).await;
                    (zone, spec, reason, r)
                });
            }
            let Some((zone, spec, reason, result)) = inflight.next().await else {
                break;
            };
            match result {
                Ok(o) => {
                    window += 1;
                    self.proven.locked().insert(hash.clone(), Instant::now());
                    launched.push((o.name.clone(), zone.name.clone(), reason));
                    zone.created(o);
                }
                Err(e) => {
                    self.proven.locked().remove(hash);
                    let why = match &e {
                        EngineError::NotFound(m) => format!(
                            "cannot launch in zone {}: {m} (image `{}`; microscaler never pulls: load or build the image on that engine)",
                            zone.name, spec.image
                        ),
                        other => format!("cannot launch in zone {}: {other}", zone.name),
                    };
                    warn!(group = %key, error = %why, "launch failed");
                    if failure.is_none() {
                        failure = Some(("LaunchFailed".to_string(), why));
                    }
                }
            }
        }

        let mut mem_guard = self.memory.locked();
        let mem = mem_guard.entry(key.clone()).or_default();
        let replaced: Vec<&str> = plan
            .remove
            .iter()
            .filter(|r| r.reason == RemoveReason::Failed)
            .map(|r| r.name.as_str())
            .collect();
        for (name, zone, reason) in &launched {
            let cause = match reason {
                CreateReason::ScaleOut => match mem.last_desired {
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
                    lc.metadata.name, resolved.target.spec_hash
                ),
                CreateReason::Rebalance => {
                    "rebalancing zones: launching into the zone with fewest".to_string()
                }
            };
            mem.record("Launch", name, zone, &cause);
            if *reason == CreateReason::ScaleOut {
                mem.last_scale_out = Some(now_secs());
            }
        }
        if !launched.is_empty() {
            info!(group = %key, launched = launched.len(), "launched instances");
        }
        if let Some((reason, msg)) = failure {
            if mem.degraded.as_ref().map(|(_, m)| m) != Some(&msg) {
                mem.record("LaunchFailed", "-", "-", &msg);
            }
            mem.fail(&reason, msg, &resolved.target.spec_hash);
        }
        mem.last_desired = Some(desired);
    }

    fn note_desired(&self, key: &ObjectKey, desired: u32) {
        let mut mem = self.memory.locked();
        mem.entry(key.clone()).or_default().last_desired = Some(desired);
    }

    #[allow(clippy::too_many_arguments)]
    fn build_status(
        &self,
        key: &ObjectKey,
        resolved: &Resolved,
        observed: &[(String, Observed)],
        instances: &[Instance],
        unreachable: &[(String, String)],
        remaining: &Plan,
        held: Option<Instant>,
        desired: &crate::watch::store::Desired,
    ) -> GroupStatus {
        let target = &resolved.target;
        let counts = plan::counts(target, instances);
        let mut mem_guard = self.memory.locked();
        let mem = mem_guard.entry(key.clone()).or_default();

        let mut list: Vec<InstanceStatus> = observed
            .iter()
            .map(|(zone, o)| InstanceStatus {
                name: o.name.clone(),
                container_id: short_id(&o.id).to_string(),
                zone: zone.clone(),
                state: o.state.as_str().to_string(),
                started_at: o.started_at.map(|t| t.trunc_subsecs(0)),
                ports: o.ports.clone(),
                up_to_date: o.labels.get(labels::SPEC_HASH) == Some(&target.spec_hash)
                    && target.zones.contains(zone),
            })
            .collect();
        list.sort_by(|a, b| a.zone.cmp(&b.zone).then(a.name.cmp(&b.name)));

        // Containers being stopped still run: never Ready while any of them is left.
        let stopping: usize = self.zones.iter().map(|z| z.terminating_of(key)).sum();
        let ready = counts.ready >= target.desired
            && counts.updated >= target.desired
            && counts.current == target.desired
            && stopping == 0;
        // Failures heal as fast as they broke: converged on a spec that is not failing (a new
        // one, or one whose instances outlived the crash window) clears Degraded and backoff.
        if ready && remaining.is_empty() && resolved.waiting_for.is_none() && mem.degraded.is_some()
        {
            let crash_of_this_spec = mem.degraded.as_ref().is_some_and(|(r, _)| r == "CrashLoop")
                && mem.failed_hash.as_deref() == Some(target.spec_hash.as_str());
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
        let mut conds: Vec<(&str, bool, String, String)> = Vec::new();
        if let Some(w) = &resolved.waiting_for {
            conds.push((
                status::READY,
                false,
                "WaitingForLaunchConfiguration".into(),
                w.clone(),
            ));
        } else if ready {
            conds.push((
                status::READY,
                true,
                "AllInstancesReady".into(),
                format!("{} of {} instances ready", counts.ready, target.desired),
            ));
        } else {
            conds.push((
                status::READY,
                false,
                "NotAllInstancesReady".into(),
                format!("{} of {} instances ready", counts.ready, target.desired),
            ));
        }
        let progressing = if resolved.waiting_for.is_some() {
            None
        } else if remaining
            .create
            .iter()
            .any(|c| c.reason == CreateReason::Rollout)
            || remaining
                .remove
                .iter()
                .any(|r| r.reason == RemoveReason::Rollout)
            || counts.updated < counts.current
        {
            Some((
                "RollingUpdate",
                format!(
                    "rolling update: {} of {} instances updated",
                    counts.updated, target.desired
                ),
            ))
        } else if counts.current < target.desired {
            Some((
                "ScalingOut",
                format!("{} of {} instances running", counts.current, target.desired),
            ))
        } else if counts.current > target.desired {
            Some((
                "ScalingIn",
                format!("{} instances, {} desired", counts.current, target.desired),
            ))
        } else if stopping > 0 {
            Some((
                "ScalingIn",
                format!("{stopping} instance(s) still stopping"),
            ))
        } else if !remaining.is_empty() {
            Some(("Rebalancing", "moving instances between zones".to_string()))
        } else if counts.ready < counts.current {
            Some((
                "WaitingForReadiness",
                format!("{} of {} instances ready", counts.ready, counts.current),
            ))
        } else {
            None
        };
        match progressing {
            Some((reason, msg)) => conds.push((status::PROGRESSING, true, reason.into(), msg)),
            None => conds.push((
                status::PROGRESSING,
                false,
                "Converged".into(),
                "the group matches its spec".into(),
            )),
        }
        let mut degraded: Vec<(String, String)> = resolved.problems.clone();
        if let Some(q) = &mem.quota {
            degraded.push(("QuotaExceeded".into(), q.clone()));
        }
        for (z, e) in unreachable {
            if target.zones.contains(z) {
                degraded.push((
                    "ZoneUnreachable".into(),
                    format!(
                        "zone {z} is unreachable ({e}); its capacity is made up in the other zones"
                    ),
                ));
            }
        }
        if let Some((until, why)) = self.removals.last_error(key) {
            let secs = until
                .saturating_duration_since(Instant::now())
                .as_secs_f64()
                .ceil();
            degraded.push((
                "RemovalFailed".into(),
                format!("{why}; next attempt in {secs:.0}s"),
            ));
        }
        if let Some((r, m)) = &mem.degraded {
            let mut m = m.clone();
            if let Some(t) = held {
                let secs = t
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64()
                    .ceil();
                m.push_str(&format!("; next launch attempt in {secs:.0}s"));
            }
            degraded.push((r.clone(), m));
        }
        if degraded.is_empty() {
            conds.push((
                status::DEGRADED,
                false,
                "AsExpected".into(),
                "no failures".into(),
            ));
        } else {
            let reason = degraded[0].0.clone();
            let msg = degraded
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            conds.push((status::DEGRADED, true, reason, msg));
        }
        let errors = desired.errors_for(key);
        if errors.is_empty() {
            conds.push((
                status::INVALID,
                false,
                "Valid".into(),
                "the manifest is valid".into(),
            ));
        } else {
            conds.push((
                status::INVALID,
                true,
                "ManifestError".into(),
                format!(
                    "the manifest has errors, the last valid version keeps running: {}",
                    errors[0]
                ),
            ));
        }
        if let Some(held) = desired.held.get(key) {
            conds.push((
                status::DELETION_HELD,
                true,
                "ManifestGone".into(),
                held.clone(),
            ));
        }
        let now = now_secs();
        let conditions: Vec<Condition> = conds
            .into_iter()
            .map(|(t, s, reason, message)| {
                let status_str = if s { "True" } else { "False" };
                let since = mem
                    .conditions
                    .iter()
                    .find(|c| c.type_ == t && c.status == status_str)
                    .map(|c| c.last_transition_time)
                    .unwrap_or(now);
                Condition {
                    type_: t.to_string(),
                    status: status_str.to_string(),
                    reason,
                    message,
                    last_transition_time: since,
                }
            })
            .collect();
        mem.conditions = conditions.clone();
        if let Some((r, _)) = &mem.degraded {
            debug!(group = %key, reason = %r, "degraded");
        }

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
            instances: list,
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
        drop(mem_guard);
        if let Some(a) = self.ctx.autoscaler.as_ref() {
            a.fill_status(key, &mut status);
        }
        status
    }
}

/// Now, to the second: status times are for people and must not churn the files.
fn now_secs() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// How long a container may stay `created` before it counts as failed.
const STUCK_CREATED: Duration = Duration::from_secs(10);

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
    }
}

/// Resolves `maxSurge`/`maxUnavailable` (count or percent of `desired`) to a count.
fn resolve_count(
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

/// Hash of what a container runs: the launch configuration's spec and the group's domain.
/// A change of either rolls out; sizes and zones do not.
pub fn container_hash(lc: &LaunchConfiguration, group: &AutoScalingGroup) -> String {
    let text = serde_json::to_string(&(&lc.spec, &group.spec.domain)).expect("serializable");
    crate::manifest::short_hash(text.as_bytes())
}

/// The mark this controller puts on a container it launches: bound to the container's name,
/// so a copy started by hand with the same labels (necessarily under another name) carries a
/// mark that does not match. A safety net against mistakes, not a security feature.
pub fn launch_mark(controller: &str, container_name: &str) -> String {
    crate::manifest::short_hash(format!("{controller}\n{container_name}").as_bytes())
}

/// [`container_hash`] when the containers run with `limits`: limits the namespace's defaults
/// filled in count too (new defaults roll out), while a launch configuration that sets its own
/// hashes as before.
pub fn container_hash_with_limits(
    lc: &LaunchConfiguration,
    group: &AutoScalingGroup,
    limits: ContainerLimits,
) -> String {
    if limits == lc.spec.limits() {
        return container_hash(lc, group);
    }
    let text = serde_json::to_string(&(&lc.spec, &group.spec.domain, limits.0, limits.1))
        .expect("serializable");
    crate::manifest::short_hash(text.as_bytes())
}

/// The container for one instance of `group` in `zone`.
pub fn container_spec(
    key: &ObjectKey,
    lc: &LaunchConfiguration,
    group: &AutoScalingGroup,
    zone: &str,
    hash: &str,
    controller: &str,
    limits: ContainerLimits,
) -> ContainerSpec {
    let suffix: String = {
        let mut rng = rand::rng();
        (0..5)
            .map(|_| {
                let n = rng.random_range(0..36u8);
                (if n < 10 { b'0' + n } else { b'a' + n - 10 }) as char
            })
            .collect()
    };
    let base: String = key.name.chars().take(56).collect();
    let hostname = format!("{base}-{suffix}");
    let name = if key.namespace == "default" {
        hostname.clone()
    } else {
        format!("{}-{hostname}", key.namespace)
    };
    let spec = &lc.spec;
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(ud) = &spec.user_data {
        env.push((
            "USER_DATA".to_string(),
            serde_json::to_string(ud).expect("json"),
        ));
    }
    let mut all_labels = spec.labels.clone();
    for (k, v) in [
        (labels::MANAGED_BY, labels::MANAGER),
        (labels::NAMESPACE, key.namespace.as_str()),
        (labels::GROUP, key.name.as_str()),
        (labels::LAUNCH_CONFIGURATION, lc.metadata.name.as_str()),
        (labels::SPEC_HASH, hash),
        (labels::ZONE, zone),
        (labels::CONTROLLER, controller),
        (labels::INSTANCE, &launch_mark(controller, &name)),
    ] {
        all_labels.insert(k.to_string(), v.to_string());
    }
    let (cpus, memory_mib) = limits;
    ContainerSpec {
        name,
        image: spec.image.clone(),
        command: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env,
        labels: all_labels,
        hostname: Some(hostname),
        domainname: group.spec.domain.clone(),
        // Float-to-int casts saturate, and memory is bounded in validation; checked anyway, so
        // no input can wrap into a tiny or negative limit.
        nano_cpus: cpus.map(|c| (c * 1e9) as i64),
        memory_bytes: memory_mib
            .map(|m| i64::try_from(m.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)),
        ports: spec.ports.clone(),
        network: spec.network.clone(),
        stop_timeout: spec
            .stop_grace_period
            .map(|d| i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX)),
    }
}

#[cfg(test)]
mod tests;
