//! The actuator: the one place that acts on the engines, and records each action in the zone's
//! cache as it does it (the expectations), so a lagging view never causes a double creation.
//!
//! Like the ReplicaSet controller's `PodControl` with its expectations folded in: a creation
//! enters the cache the moment the engine answers, before its event; a container being removed
//! is hidden from planning until its removal ends (`engine::observe::Zone` keeps these entries
//! against lists that started earlier). Nothing else in the reconciler calls an engine.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::error::ReconcileError;
use super::plan::Remove;
use super::queue::Queue;
use super::removals::Removals;
use crate::engine::observe::{short_id, Zone};
use crate::engine::{
    ContainerSpec, ContainerState, Engine, EngineError, Health, Observed, Transition,
};
use crate::manifest::ObjectKey;

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
}

/// A zone to launch into, with its connected engine.
#[derive(Clone)]
pub(super) struct Target {
    pub zone: Arc<Zone>,
    engine: Arc<dyn Engine>,
}

impl Actuator {
    pub fn new(zones: Vec<Arc<Zone>>, queue: Arc<Queue<ObjectKey>>) -> Self {
        Actuator {
            zones,
            queue,
            removals: Arc::default(),
            removing: TaskTracker::new(),
        }
    }

    /// The zone named `name` if its engine is connected.
    pub fn target(&self, name: &str) -> Option<Target> {
        let zone = self.zones.iter().find(|z| z.name == name)?.clone();
        let engine = zone.engine()?;
        Some(Target { zone, engine })
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

    /// Removes `r` of group `key` in the background (a stop may wait for `grace`, which must
    /// not hold up the group's convergence): hidden from planning at once, shown again if the
    /// engine refuses, which is retried after the group's removal backoff.
    pub fn remove(&self, key: &ObjectKey, r: &Remove, grace: Duration) {
        let Some(Target { zone, engine }) = self.target(&r.zone) else {
            return;
        };
        zone.terminating(&r.id);
        let (id, name, queue, key) = (
            r.id.clone(),
            r.name.clone(),
            self.queue.clone(),
            key.clone(),
        );
        let removals = self.removals.clone();
        self.removing.spawn(async move {
            let group = format!("{}/{}", key.namespace, key.name);
            let res = if crate::util::failpoint::remove_error(&group) {
                Err(EngineError::Other(
                    "the engine refused (failpoint remove-error)".into(),
                ))
            } else {
                engine.remove(&id, grace).await
            };
            zone.removed(&id, res.is_ok());
            match res {
                Ok(()) => {
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
                    return Err(failed(EngineError::Other(format!(
                        "the spare {} did not become healthy",
                        o.name
                    ))))
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
