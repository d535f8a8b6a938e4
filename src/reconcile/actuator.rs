//! The actuator: the one place that acts on the engines, and records each action in the zone's
//! cache as it does it (the expectations), so a lagging view never causes a double creation.
//!
//! Like the ReplicaSet controller's `PodControl` with its expectations folded in: a creation
//! enters the cache the moment the engine answers, before its event; a container being removed
//! is hidden from planning until its removal ends (`engine::observe::Zone` keeps these entries
//! against lists that started earlier). Nothing else in the reconciler calls an engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::error::ReconcileError;
use super::hooks;
use super::instance_state::{Drain, InstanceState};
use super::plan::Remove;
use super::queue::Queue;
use super::removals::Removals;
use crate::engine::observe::{short_id, Zone};
use crate::engine::{
    ContainerSpec, ContainerState, Engine, EngineError, Health, Observed, Transition,
};
use crate::manifest::{Hook, ObjectKey};
use crate::util::unpoisoned::LockExt;

/// How long a warm pool spare may take to pass its health check once started.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);
/// How long a clean shutdown waits for removals in flight (the supervisor drains for 10 s).
const SHUTDOWN_REMOVALS: Duration = Duration::from_secs(9);

/// Acts on the zones' engines for the reconciler.
pub(super) struct Actuator {
    zones: Vec<Arc<Zone>>,
    /// A finished removal enqueues its group; a refused one schedules it after its backoff.
    queue: Arc<Queue<ObjectKey>>,
    /// Backoff of refused removals per group (shared with the removal tasks).
    pub removals: Arc<Removals>,
    /// The removal tasks in flight, waited for at shutdown.
    removing: TaskTracker,
    /// Drains in progress, recorded so a restart resumes them.
    instances: Arc<InstanceState>,
    /// Terminations that ended, per group, until its next pass records them as activities.
    finished: Arc<Mutex<HashMap<ObjectKey, Vec<Finished>>>>,
    /// Bounds the preStop hooks and stops running at once (a drain's waiting takes none).
    permits: Arc<Semaphore>,
}

/// How one instance is terminated.
#[derive(Debug, Clone)]
pub(super) struct Termination {
    /// Left to wait out of service (the whole drain, or what is left of a resumed one).
    pub drain: Duration,
    /// The drain's full length (for the record and the activity).
    pub drain_total: Duration,
    /// When the drain began (now, or before a restart).
    pub since: DateTime<Utc>,
    pub pre_stop: Option<Hook>,
    /// Between the stop signal and the kill.
    pub grace: Duration,
    /// The container's published ports (an HTTP hook goes through them).
    pub ports: Vec<String>,
    /// The activity cause of the decision.
    pub cause: String,
    /// Whether its end is reported as an activity (not for instances that had already failed).
    pub report: bool,
    /// Warm pools: after its drain the instance is not stopped and removed but renamed to its
    /// pool name and brought to the pool's state (no preStop: it is kept warm).
    pub give_back: Option<GiveBackTo>,
}

/// Where a drained instance goes back to the warm pool.
#[derive(Debug, Clone)]
pub(super) struct GiveBackTo {
    /// Its pool name (`<instance>-warm`).
    pub member: String,
    /// How it reaches the pool's state (none for a `Running` pool).
    pub transition: Option<Transition>,
}

/// What the drain record says of a give-back (its `reason`), so a restart resumes it as one.
pub(super) const GIVE_BACK_REASON: &str = "GiveBack";

impl Termination {
    /// Removed at once: no drain, no hook, no grace, no activity (a container that never served
    /// or has served its time: a released quarantine, a warm pool member).
    pub fn immediate(cause: &str) -> Self {
        Self {
            drain: Duration::ZERO,
            drain_total: Duration::ZERO,
            since: chrono::Utc::now(),
            pre_stop: None,
            grace: Duration::ZERO,
            ports: Vec::new(),
            cause: cause.to_string(),
            report: false,
            give_back: None,
        }
    }
}

/// A termination that ended.
#[derive(Debug, Clone)]
pub(super) struct Finished {
    pub name: String,
    pub zone: String,
    /// What happened, e.g. "drained 5 s, preStop ok (exit 0), stopped in 0.3 s (grace 10 s)".
    pub cause: String,
}

/// Renames drained instance `id` to its pool name and brings it to the pool's state.
async fn give_back(target: &Target, id: &str, to: &GiveBackTo) -> Result<(), EngineError> {
    let o = target.engine.inspect(id).await?;
    // Rename first: interrupted, a running member is paused by the next pass, while a paused
    // instance would stay out of service.
    let o = Actuator::rename(target, o, &to.member).await?;
    if let Some(t) = to.transition {
        Actuator::transition(target, o, t).await?;
    }
    Ok(())
}

/// Stops and preStop hooks in flight at once, over every group.
const PERMITS: usize = 32;

fn round_tenths(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().div_ceil(100) as u64 * 100)
}

/// A zone to launch into, with its connected engine.
#[derive(Clone)]
pub(super) struct Target {
    pub zone: Arc<Zone>,
    engine: Arc<dyn Engine>,
}

impl Actuator {
    pub fn new(
        zones: Vec<Arc<Zone>>,
        queue: Arc<Queue<ObjectKey>>,
        instances: Arc<InstanceState>,
    ) -> Self {
        Actuator {
            zones,
            queue,
            removals: Arc::default(),
            removing: TaskTracker::new(),
            instances,
            finished: Arc::default(),
            permits: Arc::new(Semaphore::new(PERMITS)),
        }
    }

    /// The zone named `name` if its engine is connected.
    pub fn target(&self, name: &str) -> Option<Target> {
        let zone = self.zones.iter().find(|z| z.name == name)?.clone();
        let engine = zone.engine()?;
        Some(Target { zone, engine })
    }

    /// The connected engine of zone `name`.
    pub fn engine(&self, name: &str) -> Option<Arc<dyn Engine>> {
        self.target(name).map(|t| t.engine)
    }

    /// The last `n` log lines of container `id` in zone `zone` (empty when unavailable).
    pub async fn logs(&self, zone: &str, id: &str, n: usize) -> String {
        match self.target(zone) {
            Some(t) => t.engine.logs_tail(id, n).await.unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Creates and starts `spec` in `target`'s zone and writes the container into the zone's
    /// cache at once (the expectation).
    ///
    /// # Errors
    /// `LaunchFailed` with the engine's answer.
    pub async fn launch(target: Target, spec: ContainerSpec) -> Result<Observed, ReconcileError> {
        match target.engine.create_and_start(&spec).await {
            Ok(o) => {
                target.zone.created(o.clone());
                Ok(o)
            }
            Err(e) => Err(ReconcileError::launch_failed(
                &target.zone.name,
                &spec.image,
                e,
            )),
        }
    }

    /// Terminates `r` of group `key` in the background, the one termination path of every
    /// removal (scale-in, rollout, rebalance, failed or unhealthy replacement, a deleted group):
    /// hidden from planning at once and shown as `draining` (out of service), then it waits out
    /// `t.drain`, runs `t.pre_stop`, stops with `t.grace` and removes the container. A refused
    /// removal shows the instance again, retried after the group's removal backoff. The drain
    /// is recorded in the instance state, so a restart resumes it (see `instance_state`).
    pub fn terminate(&self, key: &ObjectKey, r: &Remove, t: Termination) {
        let Some(Target { zone, engine }) = self.target(&r.zone) else {
            return;
        };
        zone.terminating(&r.id);
        if !t.drain.is_zero() || t.pre_stop.is_some() {
            self.instances.drain_started(
                &r.id,
                Drain {
                    namespace: key.namespace.clone(),
                    group: key.name.clone(),
                    name: r.name.clone(),
                    zone: r.zone.clone(),
                    cause: t.cause.clone(),
                    reason: if t.give_back.is_some() {
                        GIVE_BACK_REASON.to_string()
                    } else {
                        format!("{:?}", r.reason)
                    },
                    since: t.since,
                    drain_secs: t.drain_total.as_secs(),
                },
            );
        }
        let (id, name, queue, key) = (
            r.id.clone(),
            r.name.clone(),
            self.queue.clone(),
            key.clone(),
        );
        let removals = self.removals.clone();
        let instances = self.instances.clone();
        let finished = self.finished.clone();
        let permits = self.permits.clone();
        let zone_name = r.zone.clone();
        self.removing.spawn(async move {
            // Out of service first: the drain is only waiting (no engine call, no permit).
            tokio::time::sleep(t.drain).await;
            let _permit = permits.acquire_owned().await;
            if let Some(to) = &t.give_back {
                let res = give_back(&Target { zone: zone.clone(), engine }, &id, to).await;
                // Kept, renamed (the cache has it already): shown again, as a pool member.
                zone.removed(&id, false);
                instances.drain_ended(&id);
                match res {
                    Ok(()) => {
                        removals.succeeded(&key);
                        queue.now(key);
                    }
                    Err(e) => {
                        let retry = removals.failed(&key, &name, &e.to_string());
                        warn!(group = %key, container = short_id(&id), error = %e, "returning an instance to the warm pool failed");
                        queue.schedule(key, retry);
                    }
                }
                return;
            }
            let mut steps: Vec<String> = Vec::new();
            if !t.drain_total.is_zero() {
                steps.push(format!("drained {}", hooks::secs(t.drain_total)));
            }
            if let Some(hook) = &t.pre_stop {
                match hooks::run(&engine, &id, &t.ports, hook).await {
                    Ok(note) => steps.push(format!("preStop ok ({note})")),
                    Err(why) => {
                        warn!(group = %key, container = short_id(&id), "preStop failed: {why}");
                        steps.push(format!("preStop failed: {why}"));
                    }
                }
            }
            let group = format!("{}/{}", key.namespace, key.name);
            let stop_began = Instant::now();
            let res = if crate::util::failpoint::remove_error(&group) {
                Err(EngineError::Other(
                    "the engine refused (failpoint remove-error)".into(),
                ))
            } else {
                engine.remove(&id, t.grace).await
            };
            zone.removed(&id, res.is_ok());
            instances.drain_ended(&id);
            match res {
                Ok(()) => {
                    if t.report {
                        steps.push(format!(
                            "stopped in {} (grace {})",
                            hooks::secs(round_tenths(stop_began.elapsed())),
                            hooks::secs(t.grace)
                        ));
                        finished.locked().entry(key.clone()).or_default().push(Finished {
                            name,
                            zone: zone_name,
                            cause: steps.join(", "),
                        });
                    }
                    removals.succeeded(&key);
                    queue.now(key);
                }
                Err(e) => {
                    let retry = removals.failed(&key, &name, &e.to_string());
                    let secs = retry
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64();
                    warn!(group = %key, container = short_id(&id), error = %e, "removal failed; retrying in {secs:.0}s");
                    queue.schedule(key, retry);
                }
            }
        });
    }

    /// Stops `r` of group `key` in the background and keeps it (a quarantined instance).
    pub fn stop(&self, key: &ObjectKey, r: &Remove, grace: Duration) {
        let Some(Target { engine, .. }) = self.target(&r.zone) else {
            return;
        };
        let (id, key, permits) = (r.id.clone(), key.clone(), self.permits.clone());
        self.removing.spawn(async move {
            let _permit = permits.acquire_owned().await;
            if let Err(e) = engine.transition(&id, Transition::Stop(grace)).await {
                warn!(group = %key, container = short_id(&id), error = %e, "stopping a quarantined instance failed");
            }
        });
    }

    /// The terminations of `key` that ended since the last call (for its activities).
    pub fn take_finished(&self, key: &ObjectKey) -> Vec<Finished> {
        self.finished.locked().remove(key).unwrap_or_default()
    }

    /// Warm pools: changes the run state of container `o` in `target`'s zone and records the
    /// result in the zone's cache (the expectation); returns the container as it is now.
    ///
    /// # Errors
    /// The engine's answer.
    pub async fn transition(
        target: &Target,
        mut o: Observed,
        t: Transition,
    ) -> Result<Observed, EngineError> {
        target.engine.transition(&o.id, t).await?;
        o.state = match t {
            Transition::Pause => ContainerState::Paused,
            Transition::Unpause | Transition::Start => ContainerState::Running,
            Transition::Stop(_) => ContainerState::Exited,
        };
        if t == Transition::Start {
            o.started_at = Some(chrono::Utc::now());
            o.exit_code = None;
        }
        target.zone.changed(o.clone());
        Ok(o)
    }

    /// Warm pools: renames container `o` (a pool member becomes an instance, or the other way)
    /// and records it in the zone's cache.
    ///
    /// # Errors
    /// The engine's answer (`Conflict` when the name is taken).
    pub async fn rename(
        target: &Target,
        mut o: Observed,
        name: &str,
    ) -> Result<Observed, EngineError> {
        target.engine.rename(&o.id, name).await?;
        o.name = name.to_string();
        target.zone.changed(o.clone());
        Ok(o)
    }

    /// Warm pools: creates and starts a pool member, then brings it to its waiting state
    /// (`then`), and only then records it in the zone's cache.
    ///
    /// # Errors
    /// The engine's answer; a member left half prepared is found by the next pass.
    pub async fn prepare(
        target: &Target,
        spec: ContainerSpec,
        warm_up: Duration,
        then: Option<Transition>,
    ) -> Result<Observed, ReconcileError> {
        let failed = |e| ReconcileError::launch_failed(&target.zone.name, &spec.image, e);
        let o = target
            .engine
            .create_and_start(&spec)
            .await
            .map_err(failed)?;
        // Its process initializes before it waits: `warm_up`, and a health check's verdict.
        tokio::time::sleep(warm_up).await;
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            let now = target.engine.inspect(&o.id).await.map_err(failed)?;
            match now.health {
                _ if now.state != ContainerState::Running => {
                    return Err(failed(EngineError::Other(format!(
                        "the spare {} stopped while it was prepared (exit code {})",
                        o.name,
                        now.exit_code.map_or("unknown".into(), |c| c.to_string())
                    ))))
                }
                Some(Health::Starting) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Some(Health::Starting | Health::Unhealthy) => {
                    // It would be paused as it is and taken later: removed (best effort; an
                    // `unhealthy` one left behind is removed by the next pass all the same).
                    if let Err(e) = target.engine.remove(&o.id, Duration::ZERO).await {
                        tracing::debug!(spare = %o.name, error = %e, "removing a spare that did not become healthy failed");
                    }
                    return Err(failed(EngineError::Other(format!(
                        "the spare {} did not become healthy",
                        o.name
                    ))));
                }
                _ => break,
            }
        }
        match then {
            Some(t) => Self::transition(target, o, t)
                .await
                .map_err(|e| ReconcileError::launch_failed(&target.zone.name, &spec.image, e)),
            None => {
                target.zone.changed(o.clone());
                Ok(o)
            }
        }
    }

    /// The memory container `id` holds now, in bytes (`None` when the engine does not say).
    pub async fn memory(target: &Target, id: &str) -> Option<u64> {
        target
            .engine
            .stats(id)
            .await
            .ok()
            .map(|s| s.memory_used_bytes)
    }

    /// Waits (bounded) for the removals already asked for, so a confirmed deletion is not left
    /// half done by a clean shutdown.
    pub async fn finish_removals(&self) {
        self.removing.close();
        if !self.removing.is_empty() {
            info!(
                removals = self.removing.len(),
                "finishing the removals in flight before stopping"
            );
            let _ = tokio::time::timeout(SHUTDOWN_REMOVALS, self.removing.wait()).await;
        }
    }
}
