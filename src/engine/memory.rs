//! In-memory engine: a fake Docker for unit tests and the scale model, with latencies, failure
//! injection, test controls and call counters.
//!
//! It behaves like the real engine where the reconciler can tell the difference: names are
//! unique (409 on reuse), a missing image is a `NotFound` at create, events carry the
//! container's labels, a crashing container emits `start` then `die`. Latencies are
//! `tokio::time::sleep`s, so tests on paused time run instantly.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::broadcast;

use super::{
    ContainerSpec, ContainerState, Engine, EngineError, EngineEvent, EngineIdentity, EventKind,
    ExecOutcome, Health, Observed, Result, StatsSample, Transition,
};

/// Events buffered per subscriber before it counts as lagging.
const EVENT_BUFFER: usize = 4096;

/// First host port handed out for ephemeral bindings, as Docker does.
const FIRST_EPHEMERAL_PORT: u16 = 32768;

/// Simulated time each engine call takes (all zero by default).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latencies {
    pub create: Duration,
    pub start: Duration,
    pub remove: Duration,
    /// Cost of a list call regardless of size.
    pub list_base: Duration,
    /// Added per container on the engine (Docker's list cost grows with all containers, not only
    /// the matching ones).
    pub list_per_container: Duration,
}

/// How many times each engine method was called (for the scale model and for asserting that
/// the reconciler does not hammer the engine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub ping: u64,
    pub list: u64,
    pub inspect: u64,
    /// Create requests (each `create_and_start` is one create and, if the create worked, one start).
    pub create: u64,
    pub start: u64,
    pub remove: u64,
    pub events: u64,
    pub logs: u64,
    pub stats: u64,
    /// Pause, unpause, start and stop calls (warm pools).
    pub transition: u64,
    pub rename: u64,
    /// `ensure_image` calls (rollout pre-pulls).
    pub ensure_image: u64,
}

/// Builds an error of a given kind, e.g. `EngineError::NotFound`.
pub type ErrorKind = fn(String) -> EngineError;

/// One fake container.
#[derive(Debug, Clone)]
struct Container {
    observed: Observed,
    image: String,
    logs: Vec<String>,
    /// Simulated use set by [`MemoryEngine::set_usage`]: (CPU fraction, CPU ns used before
    /// it was set, when it was set, memory bytes).
    usage: Option<(f64, u64, DateTime<Utc>, u64)>,
    /// What a command run in it answers ([`MemoryEngine::set_exec`]); default exit 0, no output.
    exec: Option<ExecOutcome>,
}

/// What happens to containers of a given image.
#[derive(Debug, Clone)]
enum ImageBehaviour {
    /// Create fails with this error.
    Fail { kind: ErrorKind, message: String },
    /// Start works, then the container dies at once with this code, after logging `log`.
    Crash { exit_code: i64, log: String },
}

#[derive(Debug)]
struct State {
    latencies: Latencies,
    /// By id; a `BTreeMap` on counter-based ids keeps creation order.
    containers: BTreeMap<String, Container>,
    images: HashMap<String, ImageBehaviour>,
    unreachable: bool,
    /// Every stop/remove fails with this (an engine that refuses removals).
    failing_removals: Option<String>,
    calls: CallCounts,
    next_id: u64,
    next_port: u16,
    last_created: Option<DateTime<Utc>>,
    /// Replaced (which ends every subscriber's stream) when the engine becomes unreachable.
    events: broadcast::Sender<EngineEvent>,
    /// What `identity` answers: unique per engine (clones share it).
    identity: EngineIdentity,
    /// Images whose first create waits this long, as for a pull ([`MemoryEngine::slow_pull`]).
    slow_pulls: HashMap<String, Duration>,
    /// Those "pulls" in flight, shown by `pulls()`.
    pulling: Vec<String>,
}

/// Distinct identities for engines made in one process.
static ENGINES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fake Docker engine. Clones share the same containers.
#[derive(Debug, Clone)]
pub struct MemoryEngine {
    state: Arc<Mutex<State>>,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        MemoryEngine::new()
    }
}

/// True when `labels` carry every `key=value` of `filter`.
fn matches(labels: &BTreeMap<String, String>, filter: &[(String, String)]) -> bool {
    filter.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn unreachable() -> EngineError {
    EngineError::Unreachable("memory engine set unreachable".into())
}

fn no_such_container(id: &str) -> EngineError {
    EngineError::NotFound(format!("No such container: {id}"))
}

/// Nanoseconds since the container started.
fn up_ns(c: &Container, now: DateTime<Utc>) -> u64 {
    c.observed
        .started_at
        .map(|t| (now - t).num_nanoseconds().unwrap_or(0).max(0) as u64)
        .unwrap_or(0)
}

/// CPU time used so far: 10% of a CPU, or the rate given to `set_usage` since it was set.
fn cpu_used_ns(c: &Container, now: DateTime<Utc>) -> u64 {
    match c.usage {
        None => up_ns(c, now) / 10,
        Some((fraction, before, since, _)) => {
            let d = (now - since).num_nanoseconds().unwrap_or(0).max(0) as f64;
            before + (d * fraction) as u64
        }
    }
}

async fn delay(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

impl State {
    fn emit(&self, kind: EventKind, c: &Observed) {
        // No subscriber is not an error: events are a hint, lists are the truth.
        let _ = self.events.send(EngineEvent {
            kind,
            id: c.id.clone(),
            name: Some(c.name.clone()),
            labels: c.labels.clone(),
            exit_code: if kind == EventKind::Die {
                c.exit_code
            } else {
                None
            },
            time: Utc::now(),
        });
    }

    /// Strictly increasing creation times close to the wall clock, so "oldest first" is
    /// well defined even for containers created within the same microsecond.
    fn next_created(&mut self) -> DateTime<Utc> {
        let now = Utc::now();
        let t = match self.last_created {
            Some(last) if now <= last => last + TimeDelta::microseconds(1),
            _ => now,
        };
        self.last_created = Some(t);
        t
    }

    fn next_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:064x}", self.next_id)
    }

    fn find(&self, id_or_name: &str) -> Option<String> {
        if self.containers.contains_key(id_or_name) {
            return Some(id_or_name.to_string());
        }
        self.containers
            .values()
            .find(|c| {
                c.observed.name == id_or_name
                    || (id_or_name.len() >= 12 && c.observed.id.starts_with(id_or_name))
            })
            .map(|c| c.observed.id.clone())
    }

    /// Stops a container as a signal would, emitting `kill` and `die`.
    fn terminate(&mut self, id: &str, exit_code: i64) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        if !matches!(
            c.observed.state,
            ContainerState::Running | ContainerState::Paused
        ) {
            return;
        }
        c.observed.state = ContainerState::Exited;
        c.observed.health = None;
        c.observed.exit_code = Some(exit_code);
        let observed = c.observed.clone();
        self.emit(EventKind::Kill, &observed);
        self.emit(EventKind::Die, &observed);
    }

    fn destroy(&mut self, id: &str) -> bool {
        match self.containers.remove(id) {
            Some(c) => {
                self.emit(EventKind::Destroy, &c.observed);
                true
            }
            None => false,
        }
    }
}

impl MemoryEngine {
    /// An empty, reachable engine with zero latencies.
    pub fn new() -> MemoryEngine {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        MemoryEngine {
            state: Arc::new(Mutex::new(State {
                latencies: Latencies::default(),
                containers: BTreeMap::new(),
                images: HashMap::new(),
                unreachable: false,
                failing_removals: None,
                calls: CallCounts::default(),
                next_id: 0,
                next_port: FIRST_EPHEMERAL_PORT,
                last_created: None,
                events,
                identity: EngineIdentity {
                    id: format!(
                        "MEMORY:{}",
                        ENGINES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    ),
                    name: "memory".into(),
                    root_dir: "/memory".into(),
                },
                slow_pulls: HashMap::new(),
                pulling: Vec::new(),
            })),
        }
    }

    /// An empty engine whose container ids start after `offset`, so two engines (two zones) in
    /// one test do not hand out the same ids.
    pub fn with_id_offset(offset: u64) -> MemoryEngine {
        let e = MemoryEngine::new();
        e.lock().next_id = offset;
        e
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a test failure already; keep the state usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a call and fails it when the engine is unreachable.
    fn call(&self, count: impl FnOnce(&mut CallCounts)) -> Result<()> {
        let mut s = self.lock();
        count(&mut s.calls);
        if s.unreachable {
            Err(unreachable())
        } else {
            Ok(())
        }
    }

    /// Sets the simulated latencies.
    pub fn set_latencies(&self, latencies: Latencies) {
        self.lock().latencies = latencies;
    }

    /// Makes every create of `image` fail with `kind(message)`, e.g.
    /// `fail_image("web:2", EngineError::Other, "boom")`.
    pub fn fail_image(&self, image: &str, kind: ErrorKind, message: impl Into<String>) {
        self.lock().images.insert(
            image.to_string(),
            ImageBehaviour::Fail {
                kind,
                message: message.into(),
            },
        );
    }

    /// Makes the first create (or pre-pull) of `image` wait `took`, shown meanwhile by
    /// `pulls()` as a pull in flight (one layer, not done).
    pub fn slow_pull(&self, image: &str, took: Duration) {
        self.lock().slow_pulls.insert(image.to_string(), took);
    }

    /// The "pull" of a [`MemoryEngine::slow_pull`] image, once.
    async fn pull_if_slow(&self, image: &str) {
        let took = {
            let mut s = self.lock();
            let Some(took) = s.slow_pulls.remove(image) else {
                return;
            };
            s.pulling.push(image.to_string());
            took
        };
        delay(took).await;
        self.lock().pulling.retain(|i| i != image);
    }

    /// Makes `image` missing, as Docker says it: `NotFound("No such image: <image>")`.
    pub fn missing_image(&self, image: &str) {
        self.fail_image(
            image,
            EngineError::NotFound,
            format!("No such image: {image}"),
        );
    }

    /// Containers of `image` start, then die at once with `exit_code`, having logged
    /// `"fatal: <image> failed to start"` (see [`MemoryEngine::crash_on_start_with_log`]).
    pub fn crash_on_start(&self, image: &str, exit_code: i64) {
        self.crash_on_start_with_log(image, exit_code, &format!("fatal: {image} failed to start"));
    }

    /// Like [`MemoryEngine::crash_on_start`], with the log line the container leaves.
    pub fn crash_on_start_with_log(&self, image: &str, exit_code: i64, log: &str) {
        self.lock().images.insert(
            image.to_string(),
            ImageBehaviour::Crash {
                exit_code,
                log: log.to_string(),
            },
        );
    }

    /// Forgets what [`fail_image`](Self::fail_image) or [`crash_on_start`](Self::crash_on_start)
    /// said about `image`: it works again.
    pub fn heal_image(&self, image: &str) {
        self.lock().images.remove(image);
    }

    /// Makes every call fail with `Unreachable` (and ends every event stream), or lifts that.
    pub fn set_unreachable(&self, unreachable: bool) {
        let mut s = self.lock();
        if unreachable && !s.unreachable {
            // Dropping the sender closes every receiver: open streams end, as a dropped
            // connection ends Docker's event stream.
            s.events = broadcast::channel(EVENT_BUFFER).0;
        }
        s.unreachable = unreachable;
    }

    /// Makes every removal fail with `EngineError::Other(message)` (`None`: they work again).
    pub fn fail_removals(&self, message: Option<&str>) {
        self.lock().failing_removals = message.map(str::to_string);
    }

    /// Kills a container as `docker kill` would: state exited with code 137, `kill` and `die`
    /// events.
    ///
    /// # Errors
    /// `NotFound` for an unknown container.
    pub fn kill(&self, id: &str) -> Result<()> {
        let mut s = self.lock();
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        s.terminate(&id, 137);
        Ok(())
    }

    /// Removes a container behind the controller's back (`docker rm -f`): `kill`/`die` when it
    /// was running, then `destroy`.
    ///
    /// # Errors
    /// `NotFound` for an unknown container.
    pub fn remove_by_hand(&self, id: &str) -> Result<()> {
        let mut s = self.lock();
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        s.terminate(&id, 137);
        s.destroy(&id);
        Ok(())
    }

    /// Adds a running container created "by hand" (not through the trait, not counted), with
    /// these labels; returns its id.
    pub fn add_foreign(&self, labels: &[(&str, &str)]) -> String {
        let mut s = self.lock();
        let id = s.next_id();
        let created = s.next_created();
        let observed = Observed {
            name: format!("foreign-{}", &id[id.len() - 8..]),
            id: id.clone(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: ContainerState::Running,
            health: None,
            created,
            started_at: Some(created),
            ports: Vec::new(),
            exit_code: None,
            image_id: None,
        };
        s.containers.insert(
            id.clone(),
            Container {
                observed: observed.clone(),
                image: "foreign".into(),
                logs: Vec::new(),
                usage: None,
                exec: None,
            },
        );
        s.emit(EventKind::Create, &observed);
        s.emit(EventKind::Start, &observed);
        id
    }

    /// Sets a container's health as its HEALTHCHECK would, emitting `health_status`.
    ///
    /// # Errors
    /// `NotFound` for an unknown container.
    pub fn set_health(&self, id: &str, health: Health) -> Result<()> {
        let mut s = self.lock();
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        let c = s.containers.get_mut(&id).expect("found above");
        c.observed.health = Some(health);
        let observed = c.observed.clone();
        s.emit(EventKind::Health(health), &observed);
        Ok(())
    }

    /// Sets what any command run in container `id` answers from now on.
    ///
    /// # Errors
    /// `NotFound` for an unknown container.
    pub fn set_exec(&self, id: &str, exit_code: i64, output: &str) -> Result<()> {
        let mut s = self.lock();
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        s.containers.get_mut(&id).expect("found above").exec = Some(ExecOutcome {
            exit_code: Some(exit_code),
            output: output.to_string(),
        });
        Ok(())
    }

    /// Sets a container's simulated CPU use (fraction of one CPU, e.g. `0.5`) and memory from
    /// now on, for metrics tests.
    ///
    /// # Errors
    /// `NotFound` for an unknown container.
    pub fn set_usage(&self, id: &str, cpu_fraction: f64, memory_bytes: u64) -> Result<()> {
        let mut s = self.lock();
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        let c = s.containers.get_mut(&id).expect("found above");
        let now = Utc::now();
        let used = cpu_used_ns(c, now);
        c.usage = Some((cpu_fraction, used, now, memory_bytes));
        Ok(())
    }

    /// Appends a line to a container's log.
    ///
    /// # Errors
    /// `NotFound` for an unknown container.
    pub fn push_log(&self, id: &str, line: &str) -> Result<()> {
        let mut s = self.lock();
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        s.containers
            .get_mut(&id)
            .expect("found above")
            .logs
            .push(line.to_string());
        Ok(())
    }

    /// Every container, oldest first.
    pub fn containers(&self) -> Vec<Observed> {
        let s = self.lock();
        let mut all: Vec<Observed> = s.containers.values().map(|c| c.observed.clone()).collect();
        all.sort_by_key(|c| c.created);
        all
    }

    /// Moves every container's creation and start back by `by` (wall-clock ages, which paused
    /// test time does not advance).
    pub fn backdate(&self, by: Duration) {
        let by = TimeDelta::from_std(by).unwrap_or_default();
        let mut s = self.lock();
        for c in s.containers.values_mut() {
            c.observed.created -= by;
            c.observed.started_at = c.observed.started_at.map(|t| t - by);
        }
    }

    /// The image a container was created from.
    pub fn image_of(&self, id: &str) -> Option<String> {
        let s = self.lock();
        s.find(id).map(|id| s.containers[&id].image.clone())
    }

    /// Calls made so far.
    pub fn calls(&self) -> CallCounts {
        self.lock().calls
    }

    /// Sets every call counter back to zero.
    pub fn reset_calls(&self) {
        self.lock().calls = CallCounts::default();
    }
}

#[async_trait]
impl Engine for MemoryEngine {
    async fn ping(&self) -> Result<()> {
        self.call(|c| c.ping += 1)
    }

    async fn list(&self, filter: &[(String, String)]) -> Result<Vec<Observed>> {
        self.call(|c| c.list += 1)?;
        let (lat, n) = {
            let s = self.lock();
            (s.latencies, s.containers.len() as u32)
        };
        delay(lat.list_base + lat.list_per_container * n).await;
        let s = self.lock();
        if s.unreachable {
            return Err(unreachable());
        }
        let mut out: Vec<Observed> = s
            .containers
            .values()
            .filter(|c| matches(&c.observed.labels, filter))
            .map(|c| Observed {
                // The list endpoint does not carry these.
                started_at: None,
                exit_code: None,
                ..c.observed.clone()
            })
            .collect();
        // Docker lists newest first.
        out.sort_by_key(|c| std::cmp::Reverse(c.created));
        Ok(out)
    }

    async fn inspect(&self, id: &str) -> Result<Observed> {
        self.call(|c| c.inspect += 1)?;
        let s = self.lock();
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        Ok(s.containers[&id].observed.clone())
    }

    async fn create_and_start(&self, spec: &ContainerSpec) -> Result<Observed> {
        self.call(|c| c.create += 1)?;
        self.pull_if_slow(&spec.image).await;
        let lat = self.lock().latencies;
        delay(lat.create).await;
        let id = {
            let mut s = self.lock();
            if s.unreachable {
                return Err(unreachable());
            }
            if let Some(ImageBehaviour::Fail { kind, message }) = s.images.get(&spec.image) {
                return Err(kind(message.clone()));
            }
            let id = s.next_id();
            let name = if spec.name.is_empty() {
                format!("container-{}", &id[id.len() - 8..])
            } else {
                spec.name.clone()
            };
            if s.containers.values().any(|c| c.observed.name == name) {
                return Err(EngineError::Conflict(format!(
                    "Conflict. The container name \"/{name}\" is already in use"
                )));
            }
            let mut ports = Vec::new();
            for p in &spec.ports {
                let host_port = p.host_port.unwrap_or_else(|| {
                    let port = s.next_port;
                    s.next_port = s.next_port.checked_add(1).unwrap_or(FIRST_EPHEMERAL_PORT);
                    port
                });
                ports.push(format!(
                    "{}:{host_port}->{}/{}",
                    p.host_ip.as_deref().unwrap_or("127.0.0.1"),
                    p.container_port,
                    p.protocol.as_deref().unwrap_or("tcp")
                ));
            }
            let created = s.next_created();
            let observed = Observed {
                id: id.clone(),
                name,
                labels: spec.labels.clone(),
                state: ContainerState::Created,
                health: None,
                created,
                started_at: None,
                ports,
                exit_code: None,
                image_id: None,
            };
            s.emit(EventKind::Create, &observed);
            s.containers.insert(
                id.clone(),
                Container {
                    observed,
                    image: spec.image.clone(),
                    logs: Vec::new(),
                    usage: None,
                    exec: None,
                },
            );
            s.calls.start += 1;
            id
        };
        delay(lat.start).await;
        let mut s = self.lock();
        if s.unreachable {
            // The container exists but we cannot tell: like a connection dropped mid-call.
            return Err(unreachable());
        }
        let behaviour = s.images.get(&spec.image).cloned();
        let Some(c) = s.containers.get_mut(&id) else {
            // Removed by hand between create and start, as Docker would say.
            return Err(no_such_container(&id));
        };
        c.observed.state = ContainerState::Running;
        c.observed.started_at = Some(Utc::now());
        let started = c.observed.clone();
        s.emit(EventKind::Start, &started);
        if let Some(ImageBehaviour::Crash { exit_code, log }) = behaviour {
            let c = s.containers.get_mut(&id).expect("present above");
            c.logs.push(log);
            c.observed.state = ContainerState::Exited;
            c.observed.exit_code = Some(exit_code);
            let died = c.observed.clone();
            s.emit(EventKind::Die, &died);
        }
        // As Docker answers the start: running, whatever happens a moment later.
        Ok(started)
    }

    async fn remove(&self, id: &str, _grace: Duration) -> Result<()> {
        self.call(|c| c.remove += 1)?;
        let lat = self.lock().latencies;
        delay(lat.remove).await;
        let mut s = self.lock();
        if s.unreachable {
            return Err(unreachable());
        }
        if let Some(m) = &s.failing_removals {
            return Err(EngineError::Other(m.clone()));
        }
        let Some(id) = s.find(id) else {
            return Ok(());
        };
        // Our fake processes honour SIGTERM at once: 143 is 128 + SIGTERM.
        s.terminate(&id, 143);
        s.destroy(&id);
        Ok(())
    }

    async fn events(
        &self,
        filter: &[(String, String)],
    ) -> Result<BoxStream<'static, Result<EngineEvent>>> {
        self.call(|c| c.events += 1)?;
        let rx = self.lock().events.subscribe();
        let filter = filter.to_vec();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(ev) => Some((Ok(ev), rx)),
                Err(broadcast::error::RecvError::Closed) => None,
                // The consumer fell behind: say so, so it relists instead of trusting a gap.
                Err(broadcast::error::RecvError::Lagged(n)) => Some((
                    Err(EngineError::Other(format!(
                        "event stream lagged, {n} events lost"
                    ))),
                    rx,
                )),
            }
        })
        .filter(move |ev| {
            let keep = match ev {
                Ok(ev) => matches(&ev.labels, &filter),
                Err(_) => true,
            };
            futures::future::ready(keep)
        });
        Ok(stream.boxed())
    }

    /// Appends `hook: <command>` to the container's logs (so tests see hooks in order with
    /// its life); a command starting with `false` fails with exit code 1.
    async fn run_hook(&self, id: &str, cmd: &[String]) -> Result<(i64, String)> {
        let mut s = self.lock();
        if s.unreachable {
            return Err(unreachable());
        }
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        let c = s.containers.get_mut(&id).expect("found");
        c.logs.push(format!("hook: {}", cmd.join(" ")));
        Ok(if cmd.first().map(String::as_str) == Some("false") {
            (1, "false".into())
        } else {
            (0, String::new())
        })
    }

    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String> {
        self.call(|c| c.logs += 1)?;
        let s = self.lock();
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        let logs = &s.containers[&id].logs;
        let tail = &logs[logs.len().saturating_sub(lines)..];
        Ok(tail.iter().map(|l| format!("{l}\n")).collect())
    }

    async fn create_marker(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Observed> {
        self.call(|c| c.create += 1)?;
        let mut s = self.lock();
        if s.containers.values().any(|c| c.observed.name == name) {
            return Err(EngineError::Conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use"
            )));
        }
        let id = s.next_id();
        let created = s.next_created();
        let observed = Observed {
            id: id.clone(),
            name: name.to_string(),
            labels: labels.clone(),
            state: ContainerState::Created,
            health: None,
            created,
            started_at: None,
            ports: Vec::new(),
            exit_code: None,
            image_id: None,
        };
        s.containers.insert(
            id,
            Container {
                observed: observed.clone(),
                image: "microscaler/lease".into(),
                logs: Vec::new(),
                usage: None,
                exec: None,
            },
        );
        Ok(observed)
    }

    async fn transition(&self, id: &str, t: Transition) -> Result<()> {
        self.call(|c| c.transition += 1)?;
        if t == Transition::Start {
            let lat = self.lock().latencies;
            delay(lat.start).await;
        }
        let mut s = self.lock();
        if s.unreachable {
            return Err(unreachable());
        }
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        let c = s.containers.get_mut(&id).expect("found above");
        let state = c.observed.state;
        let conflict = |what: &str| Err(EngineError::Conflict(format!("Container {id} is {what}")));
        let kind = match (t, state) {
            (Transition::Pause, ContainerState::Paused)
            | (Transition::Unpause, ContainerState::Running)
            | (Transition::Start, ContainerState::Running)
            | (Transition::Stop(_), ContainerState::Exited | ContainerState::Created) => {
                return Ok(())
            }
            (Transition::Pause, ContainerState::Running) => {
                c.observed.state = ContainerState::Paused;
                EventKind::Pause
            }
            (Transition::Pause, _) => return conflict("not running"),
            (Transition::Unpause, ContainerState::Paused) => {
                c.observed.state = ContainerState::Running;
                EventKind::Unpause
            }
            (Transition::Unpause, _) => return conflict("not paused"),
            (Transition::Start, ContainerState::Created | ContainerState::Exited) => {
                c.observed.state = ContainerState::Running;
                c.observed.started_at = Some(Utc::now());
                c.observed.exit_code = None;
                EventKind::Start
            }
            (Transition::Start, _) => return conflict("paused or being removed"),
            (Transition::Stop(_), _) => {
                c.observed.state = ContainerState::Exited;
                c.observed.health = None;
                c.observed.exit_code = Some(143);
                EventKind::Die
            }
        };
        let observed = c.observed.clone();
        s.emit(kind, &observed);
        Ok(())
    }

    async fn rename(&self, id: &str, name: &str) -> Result<()> {
        self.call(|c| c.rename += 1)?;
        let mut s = self.lock();
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        if s.containers
            .values()
            .any(|c| c.observed.name == name && c.observed.id != id)
        {
            return Err(EngineError::Conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use"
            )));
        }
        let c = s.containers.get_mut(&id).expect("found above");
        c.observed.name = name.to_string();
        let observed = c.observed.clone();
        s.emit(EventKind::Rename, &observed);
        Ok(())
    }

    async fn identity(&self) -> Result<EngineIdentity> {
        self.call(|c| c.ping += 1)?;
        Ok(self.lock().identity.clone())
    }

    async fn exec_wait(&self, id: &str, _cmd: &[String], _keep: usize) -> Result<ExecOutcome> {
        self.call(|_| {})?;
        let s = self.lock();
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        let c = &s.containers[&id];
        if c.observed.state != ContainerState::Running {
            return Err(EngineError::Conflict(format!(
                "container {id} is not running"
            )));
        }
        Ok(c.exec.clone().unwrap_or(ExecOutcome {
            exit_code: Some(0),
            output: String::new(),
        }))
    }

    /// An image made to fail creates ([`MemoryEngine::fail_image`]) fails its pull the same
    /// way: the registry refuses it.
    async fn ensure_image(&self, spec: &ContainerSpec) -> Result<()> {
        self.call(|c| c.ensure_image += 1)?;
        self.pull_if_slow(&spec.image).await;
        match self.lock().images.get(&spec.image) {
            Some(ImageBehaviour::Fail { kind, message }) => Err(kind(message.clone())),
            _ => Ok(()),
        }
    }

    fn pulls(&self) -> Vec<crate::engine::docker::pull::PullProgress> {
        self.lock()
            .pulling
            .iter()
            .map(|image| crate::engine::docker::pull::PullProgress {
                image: image.clone(),
                layers_total: 1,
                layers_done: 0,
                bytes_done: 0,
                bytes_total: 0,
                started: std::time::Instant::now(),
            })
            .collect()
    }

    async fn stats(&self, id: &str) -> Result<StatsSample> {
        self.call(|c| c.stats += 1)?;
        let s = self.lock();
        let id = s.find(id).ok_or_else(|| no_such_container(id))?;
        let c = &s.containers[&id];
        // A paused container holds its memory (what a warm pool costs).
        if !matches!(
            c.observed.state,
            ContainerState::Running | ContainerState::Paused
        ) {
            return Ok(StatsSample::default());
        }
        // A plausible, steady sample (10% of a CPU, 8 MiB of 256 MiB) unless set_usage said
        // otherwise.
        let now = Utc::now();
        Ok(StatsSample {
            cpu_total_ns: cpu_used_ns(c, now),
            system_cpu_ns: up_ns(c, now),
            online_cpus: 1,
            memory_used_bytes: c.usage.map_or(8 << 20, |u| u.3),
            memory_limit_bytes: 256 << 20,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::labels;
    use crate::manifest::PortSpec;

    fn spec(name: &str, image: &str, group: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: image.into(),
            labels: [
                (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
                (labels::GROUP.to_string(), group.to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    fn group(g: &str) -> Vec<(String, String)> {
        vec![(labels::GROUP.to_string(), g.to_string())]
    }

    #[tokio::test]
    async fn created_containers_are_listed_by_label_newest_first() {
        let e = MemoryEngine::new();
        let a = e.create_and_start(&spec("a", "img", "web")).await.unwrap();
        let b = e.create_and_start(&spec("b", "img", "web")).await.unwrap();
        e.create_and_start(&spec("c", "img", "db")).await.unwrap();
        let web = e.list(&group("web")).await.unwrap();
        assert_eq!(
            web.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
            vec!["b", "a"]
        );
        assert!(a.created < b.created);
        assert!(web.iter().all(|o| o.state == ContainerState::Running));
        assert_eq!(e.containers().len(), 3);
        assert_eq!(
            e.calls(),
            CallCounts {
                create: 3,
                start: 3,
                list: 1,
                ..Default::default()
            }
        );
    }

    #[tokio::test]
    async fn ids_are_deterministic_hex_and_offsets_keep_engines_apart() {
        let a = MemoryEngine::new();
        let b = MemoryEngine::with_id_offset(1 << 32);
        let x = a.create_and_start(&spec("x", "img", "g")).await.unwrap();
        let y = b.create_and_start(&spec("x", "img", "g")).await.unwrap();
        assert_eq!(x.id, format!("{:064x}", 1));
        assert_ne!(x.id, y.id);
        assert!(x.id.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[tokio::test]
    async fn a_reused_name_is_a_conflict() {
        let e = MemoryEngine::new();
        e.create_and_start(&spec("a", "img", "web")).await.unwrap();
        let err = e
            .create_and_start(&spec("a", "img", "web"))
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::Conflict(m) if m.contains("already in use")));
    }

    #[tokio::test]
    async fn a_missing_image_fails_create_like_docker() {
        let e = MemoryEngine::new();
        e.missing_image("nope:1");
        let err = e
            .create_and_start(&spec("a", "nope:1", "web"))
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::NotFound(ref m) if m == "No such image: nope:1"));
        assert!(e.containers().is_empty());
        assert_eq!(e.calls().start, 0);
        e.heal_image("nope:1");
        e.create_and_start(&spec("a", "nope:1", "web"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_crashing_image_emits_start_then_die_and_leaves_a_log() {
        let e = MemoryEngine::new();
        e.crash_on_start("bad", 3);
        let mut events = e.events(&group("web")).await.unwrap();
        let c = e.create_and_start(&spec("a", "bad", "web")).await.unwrap();
        let kinds: Vec<EventKind> = vec![
            events.next().await.unwrap().unwrap().kind,
            events.next().await.unwrap().unwrap().kind,
        ];
        assert_eq!(kinds, vec![EventKind::Create, EventKind::Start]);
        let die = events.next().await.unwrap().unwrap();
        assert_eq!((die.kind, die.exit_code), (EventKind::Die, Some(3)));
        let seen = e.inspect(&c.id).await.unwrap();
        assert_eq!(seen.state, ContainerState::Exited);
        assert_eq!(seen.exit_code, Some(3));
        assert!(e.logs_tail(&c.id, 10).await.unwrap().contains("bad"));
    }

    #[tokio::test]
    async fn events_are_filtered_by_label() {
        let e = MemoryEngine::new();
        let mut web = e.events(&group("web")).await.unwrap();
        let db = e.create_and_start(&spec("d", "img", "db")).await.unwrap();
        let w = e.create_and_start(&spec("w", "img", "web")).await.unwrap();
        e.kill(&db.id).unwrap();
        e.kill(&w.id).unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            let ev = web.next().await.unwrap().unwrap();
            assert_eq!(ev.id, w.id);
            got.push(ev.kind);
        }
        assert_eq!(
            got,
            vec![
                EventKind::Create,
                EventKind::Start,
                EventKind::Kill,
                EventKind::Die
            ]
        );
    }

    #[tokio::test]
    async fn kill_and_removal_by_hand_are_seen_in_state_and_events() {
        let e = MemoryEngine::new();
        let c = e.create_and_start(&spec("a", "img", "web")).await.unwrap();
        let mut events = e.events(&[]).await.unwrap();
        e.kill(&c.id).unwrap();
        let listed = e.list(&group("web")).await.unwrap();
        assert_eq!(listed[0].state, ContainerState::Exited);
        assert_eq!(e.inspect(&c.id).await.unwrap().exit_code, Some(137));
        e.remove_by_hand(&c.id).unwrap();
        let kinds: Vec<EventKind> = events
            .by_ref()
            .take(3)
            .map(|e| e.unwrap().kind)
            .collect()
            .await;
        assert_eq!(
            kinds,
            vec![EventKind::Kill, EventKind::Die, EventKind::Destroy]
        );
        assert!(e.list(&[]).await.unwrap().is_empty());
        assert!(matches!(e.kill(&c.id), Err(EngineError::NotFound(_))));
    }

    #[tokio::test]
    async fn removing_a_missing_container_is_not_an_error() {
        let e = MemoryEngine::new();
        e.remove("0123", Duration::ZERO).await.unwrap();
        let c = e.create_and_start(&spec("a", "img", "web")).await.unwrap();
        e.remove(&c.id, Duration::from_secs(10)).await.unwrap();
        assert!(e.containers().is_empty());
        assert!(matches!(
            e.inspect(&c.id).await,
            Err(EngineError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn foreign_containers_are_listed_with_their_labels() {
        let e = MemoryEngine::new();
        let id = e.add_foreign(&[(labels::GROUP, "web"), ("owner", "alice")]);
        let listed = e.list(&group("web")).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
        assert_eq!(listed[0].labels["owner"], "alice");
        assert_eq!(e.calls().create, 0);
    }

    #[tokio::test]
    async fn an_unreachable_engine_fails_every_call_and_ends_event_streams() {
        let e = MemoryEngine::new();
        let c = e.create_and_start(&spec("a", "img", "web")).await.unwrap();
        let mut events = e.events(&[]).await.unwrap();
        e.set_unreachable(true);
        assert!(events.next().await.is_none());
        assert!(matches!(e.ping().await, Err(EngineError::Unreachable(_))));
        assert!(matches!(
            e.list(&[]).await,
            Err(EngineError::Unreachable(_))
        ));
        assert!(matches!(
            e.remove(&c.id, Duration::ZERO).await,
            Err(EngineError::Unreachable(_))
        ));
        assert!(matches!(
            e.events(&[]).await,
            Err(EngineError::Unreachable(_))
        ));
        e.set_unreachable(false);
        assert_eq!(e.list(&[]).await.unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn latencies_are_simulated_on_tokio_time() {
        let e = MemoryEngine::new();
        e.set_latencies(Latencies {
            create: Duration::from_millis(100),
            start: Duration::from_millis(50),
            list_base: Duration::from_millis(10),
            list_per_container: Duration::from_millis(1),
            ..Default::default()
        });
        let t0 = tokio::time::Instant::now();
        e.create_and_start(&spec("a", "img", "web")).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(150));
        let t1 = tokio::time::Instant::now();
        e.list(&[]).await.unwrap();
        assert_eq!(t1.elapsed(), Duration::from_millis(11));
    }

    #[tokio::test]
    async fn published_ports_get_ephemeral_loopback_host_ports() {
        let e = MemoryEngine::new();
        let mut s = spec("a", "img", "web");
        s.ports = vec![
            PortSpec {
                container_port: 80,
                host_port: None,
                host_ip: None,
                protocol: None,
            },
            PortSpec {
                container_port: 53,
                host_port: Some(5353),
                host_ip: Some("127.0.0.2".into()),
                protocol: Some("udp".into()),
            },
        ];
        let c = e.create_and_start(&s).await.unwrap();
        assert_eq!(
            c.ports,
            vec!["127.0.0.1:32768->80/tcp", "127.0.0.2:5353->53/udp"]
        );
    }

    #[tokio::test]
    async fn health_changes_are_stored_and_emitted() {
        let e = MemoryEngine::new();
        let c = e.create_and_start(&spec("a", "img", "web")).await.unwrap();
        let mut events = e.events(&group("web")).await.unwrap();
        e.set_health(&c.id, Health::Unhealthy).unwrap();
        assert_eq!(
            events.next().await.unwrap().unwrap().kind,
            EventKind::Health(Health::Unhealthy)
        );
        assert_eq!(
            e.list(&[]).await.unwrap()[0].health,
            Some(Health::Unhealthy)
        );
        e.push_log(&c.id, "one").unwrap();
        e.push_log(&c.id, "two").unwrap();
        assert_eq!(e.logs_tail(&c.id, 1).await.unwrap(), "two\n");
        assert!(e.stats(&c.id).await.unwrap().memory_used_bytes > 0);
    }
}
