//! The narrow engine seam: what the reconciler needs from a Docker engine, in our own terms.
//!
//! Only `docker.rs` talks to bollard; `memory.rs` is the in-memory engine used by unit tests and
//! the scale model. Keeping the trait this small is what lets the planning code be tested
//! without Docker.
//!
//! # Layout
//! - This file: the [`Engine`] trait and its types; [`labels`], the labels that make a container
//!   ours.
//! - [`docker`]: the Docker engine (bollard); [`memory`]: the in-memory engine (latencies,
//!   failure injection).
//! - [`observe`]: one observer per zone keeps a cache of our containers ([`observe::Zone`]) from
//!   lists and events, and tells the reconciler which group changed ([`observe::Enqueue`]).
//! - [`lease`]: one controller per `controllerName` per engine (a lease container, fencing).
//! - [`timed`]: an engine that times every call into `/metrics` (by operation and zone).

pub mod docker;
pub mod lease;
pub mod memory;
pub mod observe;
pub mod timed;
pub mod warm;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::manifest::PortSpec;

/// Label keys every managed container carries (reverse-DNS, as Compose and Swarm do).
pub mod labels {
    pub const MANAGED_BY: &str = "io.microscaler.managed-by";
    /// Value of `MANAGED_BY`.
    pub const MANAGER: &str = "microscaler";
    pub const NAMESPACE: &str = "io.microscaler.namespace";
    pub const GROUP: &str = "io.microscaler.group";
    pub const LAUNCH_CONFIGURATION: &str = "io.microscaler.launch-configuration";
    pub const SPEC_HASH: &str = "io.microscaler.spec-hash";
    pub const ZONE: &str = "io.microscaler.zone";
    /// Which controller owns the container (several controllers may share an engine).
    /// Absent means the controller named `default`.
    pub const CONTROLLER: &str = "io.microscaler.controller";
    /// The launch mark: which container this controller launched (see `reconcile::launch_mark`).
    pub const INSTANCE: &str = "io.microscaler.instance";
    /// Controller name assumed for containers without a `CONTROLLER` label.
    pub const DEFAULT_CONTROLLER: &str = "default";
    /// Set on a container created for the group's warm pool (`true`). Informational: labels
    /// cannot change, so whether it is a pool member *now* is its name (see [`super::warm`]).
    pub const WARM_POOL: &str = "io.microscaler.warm-pool";
}

/// Everything needed to create one container.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    /// CPU limit in units of 1e-9 CPUs (Docker's `NanoCpus`).
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub ports: Vec<PortSpec>,
    pub network: Option<String>,
    /// Seconds between SIGTERM and SIGKILL on stop.
    pub stop_timeout: Option<i64>,
    /// When to pull the image from its registry.
    pub pull_policy: crate::manifest::ImagePullPolicy,
}

/// Container state as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl ContainerState {
    pub fn parse(s: &str) -> ContainerState {
        match s {
            "created" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "removing" => ContainerState::Removing,
            "dead" => ContainerState::Dead,
            _ => ContainerState::Exited,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
        }
    }

    /// Dead for our purposes: it will not come back by itself and must be replaced.
    pub fn is_failed(self) -> bool {
        matches!(
            self,
            ContainerState::Exited | ContainerState::Dead | ContainerState::Removing
        )
    }
}

/// Health as reported by a Docker HEALTHCHECK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// One container as observed on an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Full container ID.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    pub health: Option<Health>,
    pub created: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    /// Published ports as `127.0.0.1:32768->80/tcp`.
    pub ports: Vec<String>,
    pub exit_code: Option<i64>,
    /// The image it runs, by content (`sha256:...`, Docker's image ID): the tag it was launched
    /// from may have moved since. `None` when the engine did not say.
    pub image_id: Option<String>,
}

/// What happened to a container, from the engine's event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Start,
    Die,
    Kill,
    Oom,
    Stop,
    Destroy,
    Health(Health),
    /// Paused, unpaused, renamed (warm pools); a rename event carries the new name.
    Pause,
    Unpause,
    Rename,
    Other,
}

/// A change of a container's run state, for warm pools (a pool member is prepared, kept and
/// taken with these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Freeze its processes (they keep their memory).
    Pause,
    Unpause,
    /// Start a created or stopped container.
    Start,
    /// SIGTERM, then SIGKILL after the grace; the container stays (unlike `remove`).
    Stop(Duration),
}

/// One container event.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineEvent {
    pub kind: EventKind,
    pub id: String,
    /// The container's name, when the engine says it.
    pub name: Option<String>,
    /// The container's labels (Docker puts them into the event's attributes).
    pub labels: BTreeMap<String, String>,
    pub exit_code: Option<i64>,
    /// Engine time of the event.
    pub time: DateTime<Utc>,
}

/// One CPU/memory sample of a container (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StatsSample {
    /// Total CPU time used by the container, nanoseconds.
    pub cpu_total_ns: u64,
    /// System CPU time, nanoseconds (Docker's `system_cpu_usage`).
    pub system_cpu_ns: u64,
    pub online_cpus: u32,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
}

/// What identifies an engine: two zones with the same identity are the same engine.
///
/// Docker's own `ID` alone is not enough: it derives from `/etc/docker/key.json`, which every
/// engine on one machine shares (and cloned machines too); no two engines share a data root
/// on one machine, so the identity is the three together.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EngineIdentity {
    /// The engine's `ID` from `docker info`.
    pub id: String,
    /// Its host name.
    pub name: String,
    /// Its data root (`/var/lib/docker`).
    pub root_dir: String,
}

impl std::fmt::Display for EngineIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "engine {} on {} ({})", self.id, self.name, self.root_dir)
    }
}

/// Engine errors, classified once (404 / 409 / unreachable) so callers can decide on them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("no such container or image: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// A Docker engine (one per availability zone), shaped for our domain.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Checks the engine answers.
    async fn ping(&self) -> Result<()>;
    /// Lists all containers (running or not) carrying every label in `filter` (`key=value`).
    async fn list(&self, filter: &[(String, String)]) -> Result<Vec<Observed>>;
    /// One container with its start time and exit code (list does not carry them).
    async fn inspect(&self, id: &str) -> Result<Observed>;
    /// Creates and starts a container; returns what was created.
    async fn create_and_start(&self, spec: &ContainerSpec) -> Result<Observed>;
    /// Stops (SIGTERM, then SIGKILL after `grace`) and removes a container. Missing is not an error.
    async fn remove(&self, id: &str, grace: Duration) -> Result<()>;
    /// Container events for containers carrying every label in `filter`. The stream ends or
    /// yields an error when the connection drops; the caller resubscribes.
    async fn events(
        &self,
        filter: &[(String, String)],
    ) -> Result<BoxStream<'static, Result<EngineEvent>>>;
    /// Last `lines` lines of a container's log (stdout and stderr).
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String>;
    /// One CPU/memory sample.
    async fn stats(&self, id: &str) -> Result<StatsSample>;
    /// Creates a container named `name` with `labels` that is never started: the engine's
    /// atomic name registry used as a lock (see `crate::engine::lease`). `Conflict` when the name is
    /// taken. `inspect(name)` finds it, `remove(id, 0)` removes it.
    async fn create_marker(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Observed>;
    /// Who this engine is (to refuse two zones on one engine).
    async fn identity(&self) -> Result<EngineIdentity>;
    /// Runs `cmd` in container `id` and waits for it to end (a lifecycle hook): its exit code
    /// and the end of its output (at most [`HOOK_OUTPUT`] bytes). The caller bounds the time;
    /// a command still running then keeps running in the container (Docker cannot kill an exec).
    /// A hook is an [`Engine::exec_wait`] that must end with an exit code; the lease's wrapper
    /// overrides it to act only while the lease is ours.
    async fn run_hook(&self, id: &str, cmd: &[String]) -> Result<(i64, String)> {
        let out = self.exec_wait(id, cmd, HOOK_OUTPUT).await?;
        match out.exit_code {
            Some(code) => Ok((code, out.output)),
            None => Err(EngineError::Other(
                "the command's output ended but it still runs".into(),
            )),
        }
    }
    /// Changes the run state of a container (warm pools). Already in the wanted state is not
    /// an error.
    async fn transition(&self, id: &str, t: Transition) -> Result<()>;
    /// Renames a container (a warm pool member becomes an instance by its name). `Conflict`
    /// when the name is taken.
    async fn rename(&self, id: &str, name: &str) -> Result<()>;
    /// Makes sure `spec`'s image is on the engine as its pull policy says a launch would need
    /// it (`IfNotPresent`: pulled when missing; `Always`: pulled; `Never`: nothing), so a
    /// rollout pulls before it replaces anything. Engines without images have nothing to do.
    async fn ensure_image(&self, _spec: &ContainerSpec) -> Result<()> {
        Ok(())
    }
    /// The image pulls in flight on this engine, with their progress.
    fn pulls(&self) -> Vec<docker::pull::PullProgress> {
        Vec::new()
    }
    /// Runs `cmd` in container `id` (no terminal, no input) and waits for it to end: its exit
    /// code and the last `keep` bytes of its output (stdout and stderr together). The caller
    /// bounds the time it waits. (No default: a wrapper must forward it.)
    async fn exec_wait(&self, id: &str, cmd: &[String], keep: usize) -> Result<ExecOutcome>;
}

/// How a command run in a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// `None` when the engine did not report one.
    pub exit_code: Option<i64>,
    /// The end of its output (lossy UTF-8).
    pub output: String,
}

/// The most output of a hook kept (its end).
pub const HOOK_OUTPUT: usize = 4096;
