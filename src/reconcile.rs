//! The level-triggered reconciler: for one group key, re-read desired and observed state, plan,
//! execute the plan against the engines, and publish status.
//!
//! `reconcile` never knows which trigger fired (a manifest change, a Docker event, a cooldown
//! expiry, the periodic resync): it always starts from the current state, so it is idempotent.
//! The contract is kube-runtime's: `reconcile(key) -> Result<Action, ReconcileError>` and
//! `error_policy(key, &error) -> Action`. The queue guarantees one reconcile per key at a time;
//! errors requeue that key with exponential backoff without slowing any other group.
//!
//! # Layout
//! The stage "desired + observed → actions".
//! - This file: [`Context`] (what the reconciler is handed) and [`Reconciler`] (what it keeps
//!   between passes).
//! - [`runner`]: waits for the first full observation, runs passes, [`Action`] and
//!   `error_policy`.
//! - `pass`: one pass for one group (`reconcile`): resolve, view, plan, execute, status, next.
//! - [`error`]: [`ReconcileError`], whose variants are the `Degraded` condition's reasons.
//! - [`conditions`]: the pure function from what a pass saw to the status conditions.
//! - `execute`: carries out a plan in named steps (crash check, removals, slow start).
//! - `actuator`: the one place that calls the engines and records expectations in the caches.
//! - `memory`: what is remembered per group between passes, lent to one pass at a time.
//! - [`queue`]: one slot per group, never two reconciles of a group at once.
//! - [`changes`]: the change feed: new snapshots and confirmations → the groups to look at.
//! - [`plan`]: the pure planning function (desired + observed → create/remove), table-tested.
//! - [`pool`]: the warm pool's pure decisions (takes, refills, rotation), applied after `plan`;
//!   `pool_steps` carries them out.
//! - [`quota`]: creations in flight per namespace, against its quotas.
//! - `container`: the container spec of an instance, its hash and launch mark.
//! - `orphans`: whether a group found only on the engines may be deleted.
//! - `removals`: the backoff of refused removals.
//! - `hooks`: running a lifecycle hook (exec or HTTP GET through 127.0.0.1) with its timeout.
//! - [`instance_state`]: protections and drains in progress, kept in a file across restarts.
//! - `terminate`: the one termination path's decisions (drain, preStop, grace) and resuming
//!   drains after a restart; `post_start`: the postStart hooks of new instances.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound, Utc};
use tokio::time::Instant;

use crate::autoscale::Autoscaler;
use crate::config::tenancy::{ContainerLimits, Tenancy};
use crate::engine::observe::Zone;
use crate::manifest::{AutoScalingGroup, LaunchConfiguration, ObjectKey};
use crate::reconcile::queue::Queue;
use crate::reconcile::quota::QuotaLedger;
use crate::status::sync::StatusSync;
use crate::watch::prune::{Confirmations, Report};
use crate::watch::store::DesiredReader;
use plan::Target;

mod actuator;
pub mod changes;
pub mod conditions;
mod container;
pub mod error;
mod execute;
mod hooks;
pub mod instance_state;
mod laps;
mod memory;
mod orphans;
mod pass;
pub mod plan;
pub mod pool;
mod pool_steps;
mod post_start;
mod prepull;
mod quarantine;
pub mod queue;
pub mod quota;
mod removals;
pub mod runner;
mod terminate;

pub use container::{container_hash, container_hash_with_limits, container_spec, launch_mark};
pub use error::ReconcileError;
pub use pass::{DRAINING, QUARANTINED};
pub use runner::Action;

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
    /// Where each pass's duration and error reason are counted (`/metrics`).
    pub telemetry: Arc<crate::health::telemetry::Telemetry>,
    /// The probe runner's verdicts (`healthCheck`): readiness and failed liveness per instance.
    pub probes: Arc<crate::probe::Verdicts>,
    /// Scale-in protections and drains in progress (kept across restarts), and the secret of
    /// the containers' self-protection tokens.
    pub instances: Arc<instance_state::InstanceState>,
    /// The controller's address as containers are told it (`MS_CONTROLLER_URL`).
    pub instance_api_url: Option<String>,
}

/// The reconciler of every group.
pub struct Reconciler {
    ctx: Context,
    zones: Vec<Arc<Zone>>,
    queue: Arc<Queue<ObjectKey>>,
    /// Each group's memory between passes (backoff, activities, conditions).
    memory: memory::Memory,
    /// Container specs (by hash) that recently started a container: slow start protects against
    /// broken images and commands, which a recent success of the very same spec rules out.
    proven: Mutex<HashMap<String, Instant>>,
    /// Zones that have a spec's image (by zone and spec hash): rollouts pre-pull there first.
    prepared: Mutex<HashMap<(String, String), Instant>>,
    /// Creations in flight per group at most (the slow-start window grows up to this).
    concurrency: usize,
    /// Whether a group found only on the engines may be deleted.
    orphans: orphans::OrphanGate,
    /// Acts on the engines and records what it did in the zones' caches.
    actuator: actuator::Actuator,
    /// Creations in flight per namespace, for the namespace quotas.
    quotas: QuotaLedger,
    /// Set once the runner has seen the first full observation and started popping keys.
    observed: AtomicBool,
    /// The `postStart` hooks running or failed.
    post_starts: post_start::PostStarts,
    /// Each group's warm pool between passes: refills in flight, their backoff, memory.
    pools: Arc<pool_steps::Pools>,
}

/// What a group resolves to for one pass.
struct Resolved {
    target: Target,
    lc: Option<LaunchConfiguration>,
    group: Option<AutoScalingGroup>,
    /// Problems of the spec to show in conditions (unknown zones).
    problems: Vec<ReconcileError>,
    waiting_for: Option<String>,
    /// CPU and memory limits of each container (the namespace's defaults filled in).
    limits: ContainerLimits,
    /// The group's probes (its `healthCheck`, else its launch configuration's).
    probes: crate::manifest::health_check::Probes,
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
            actuator: actuator::Actuator::new(zones.clone(), queue.clone(), ctx.instances.clone()),
            ctx,
            zones,
            queue,
            memory: memory::Memory::default(),
            proven: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
            concurrency: concurrency.max(1),
            quotas: QuotaLedger::default(),
            observed: AtomicBool::new(false),
            post_starts: post_start::PostStarts::default(),
            pools: Arc::default(),
        })
    }
}

/// Now, to the second: status times are for people and must not churn the files.
fn now_secs() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod warm_pool_tests;
