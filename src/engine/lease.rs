//! One controller per `controllerName` per engine: a lease on each engine, held as a container.
//!
//! Two controllers with the same name on one engine would each see the other's containers as
//! their own, and delete them as "groups with no manifest". The lease makes that impossible.
//!
//! # Acquire
//! Docker registers container names atomically. Creating the never-started container
//! `microscaler-lease-<controllerName>` ([`lease_name`]) either succeeds (the lease is ours) or
//! fails with a conflict (someone holds it). Its labels carry the holder's identity
//! ([`Identity`]): a random holder id, the pid and its start time, host name, boot id and pid
//! namespace, the API address, the manifest directory, the zone and since when. On a conflict
//! the holder is judged ([`judge`]):
//! - our own holder id under another zone name: two zones are one engine, refused;
//! - alive, or impossible to judge: refused, naming it (a standby would wait and retry here);
//! - gone: its container is removed by id (never a newer holder's) and the name created again.
//!
//! # Liveness, and a bounded takeover
//! No heartbeat is written: the holder itself is looked at. On the same machine (same boot id
//! and pid namespace) the holder is alive while its pid runs with the recorded start time, so
//! a killed holder is taken over at once. On another machine, `GET http://<address>/lease` must
//! answer with its holder id; unanswered for [`TAKEOVER_AFTER`] it is gone. A loopback or
//! unspecified address on another machine cannot be probed: refused, with the command that
//! removes the lease by hand.
//!
//! # Fencing
//! Every creation and removal goes through [`Fenced`], which first checks that our lease
//! container (by id) still exists. A holder whose lease was taken over stops before its next
//! engine call and the controller exits non-zero ([`Leases::lost`]). Our lease container found
//! missing (pruned by `docker container prune`) is simply created again: nobody held it.
//!
//! # Release
//! A clean shutdown removes our lease containers ([`Leases::release`]); a killed controller's
//! lease is taken over by the next one.
//!
//! # A standby (running beyond one machine)
//! A standby is [`ZoneLease::acquire`] in a loop: on [`LeaseError::HeldByOther`] wait a second
//! and try again. It takes over within [`TAKEOVER_AFTER`] plus that second of the holder dying
//! (at once on the same machine), and the old holder, if it was only cut off, fences itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::observe::Connector;
use crate::engine::{
    ContainerSpec, Engine, EngineError, EngineEvent, EngineIdentity, Observed, StatsSample,
};
use crate::util::unpoisoned::LockExt;

/// A holder on another machine that does not answer for this long is gone.
pub const TAKEOVER_AFTER: Duration = Duration::from_secs(6);

/// How often the keeper checks every lease even when nothing acts.
const KEEP_EVERY: Duration = Duration::from_secs(5);

/// Label keys of a lease container.
pub mod labels {
    /// The controller name the lease is for.
    pub const LEASE: &str = "io.microscaler.lease";
    pub const HOLDER: &str = "io.microscaler.lease.holder";
    pub const ZONE: &str = "io.microscaler.lease.zone";
    pub const PID: &str = "io.microscaler.lease.pid";
    pub const PID_START: &str = "io.microscaler.lease.pid-start";
    pub const HOST: &str = "io.microscaler.lease.host";
    pub const BOOT_ID: &str = "io.microscaler.lease.boot-id";
    pub const PID_NS: &str = "io.microscaler.lease.pid-ns";
    pub const ADDRESS: &str = "io.microscaler.lease.address";
    pub const DIR: &str = "io.microscaler.lease.dir";
    pub const SINCE: &str = "io.microscaler.lease.since";
}

/// The lease container's name for `controller` (a hash when the name is no valid container name).
pub fn lease_name(controller: &str) -> String {
    let valid = !controller.is_empty()
        && controller.len() <= 200
        && controller
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        format!("microscaler-lease-{controller}")
    } else {
        format!(
            "microscaler-lease-{}",
            crate::manifest::short_hash(controller.as_bytes())
        )
    }
}

/// Who this controller process is, as written on its leases.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub controller: String,
    /// Random per process: tells this process from any other, even with the same pid.
    pub holder: String,
    pub pid: u32,
    /// Start time of the pid (clock ticks since boot), against pid reuse.
    pub pid_start: Option<u64>,
    pub host: String,
    pub boot_id: Option<String>,
    pub pid_ns: Option<String>,
    /// The API address (where `GET /lease` answers).
    pub address: String,
    pub dir: String,
}

impl Identity {
    /// This process, serving its API on `address` and watching `dir`.
    pub fn of_this_process(controller: &str, address: SocketAddr, dir: &Path) -> Identity {
        let pid = std::process::id();
        Identity {
            controller: controller.to_string(),
            holder: format!("{:016x}", rand::random::<u64>()),
            pid,
            pid_start: process_start(pid),
            host: read_trimmed("/proc/sys/kernel/hostname")
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_default(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            address: address.to_string(),
            dir: dir.display().to_string(),
        }
    }

    /// The labels of this identity's lease on zone `zone`.
    fn labels(&self, zone: &str) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            l.insert(k.to_string(), v.to_string());
        };
        put(labels::LEASE, &self.controller);
        put(labels::HOLDER, &self.holder);
        put(labels::ZONE, zone);
        put(labels::PID, &self.pid.to_string());
        put(labels::HOST, &self.host);
        put(labels::ADDRESS, &self.address);
        put(labels::DIR, &self.dir);
        put(
            labels::SINCE,
            &Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        if let Some(s) = self.pid_start {
            put(labels::PID_START, &s.to_string());
        }
        if let Some(b) = &self.boot_id {
            put(labels::BOOT_ID, b);
        }
        if let Some(n) = &self.pid_ns {
            put(labels::PID_NS, n);
        }
        l
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Start time of process `pid` (field 22 of `/proc/<pid>/stat`), `None` when it does not run
/// (a zombie, killed but not yet reaped, does not run).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The holder of a lease, as a sentence for messages.
pub fn describe(l: &BTreeMap<String, String>) -> String {
    let get = |k: &str| l.get(k).map(String::as_str).unwrap_or("?");
    format!(
        "pid {} on host {}, listening on {}, watching {}, since {}",
        get(labels::PID),
        get(labels::HOST),
        get(labels::ADDRESS),
        get(labels::DIR),
        get(labels::SINCE)
    )
}

/// What [`judge`] concludes about a lease's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This very process.
    Ours,
    Alive,
    Gone,
    /// Cannot be judged from here (why).
    CannotTell(String),
}

/// What a probe of the holder's address found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It answered with this holder id.
    Answered(String),
    /// Nothing answered for [`TAKEOVER_AFTER`].
    Silent,
}

/// Judges the holder labelled `l`, seen from `me`. `running` gives the start time of a local
/// pid that runs; `probe` is asked only for a holder on another machine. Pure but for those.
pub fn judge(
    l: &BTreeMap<String, String>,
    me: &Identity,
    running: &dyn Fn(u32) -> Option<u64>,
    probe: &mut dyn FnMut(&str) -> Probe,
) -> Verdict {
    let get = |k: &str| l.get(k).map(String::as_str);
    if get(labels::HOLDER) == Some(me.holder.as_str()) {
        return Verdict::Ours;
    }
    let same_machine = me.boot_id.is_some()
        && get(labels::BOOT_ID) == me.boot_id.as_deref()
        && get(labels::PID_NS) == me.pid_ns.as_deref();
    if same_machine {
        let Some(pid) = get(labels::PID).and_then(|p| p.parse().ok()) else {
            return Verdict::CannotTell("its lease carries no pid".into());
        };
        let start: Option<u64> = get(labels::PID_START).and_then(|s| s.parse().ok());
        return match running(pid) {
            Some(s) if start.is_none_or(|start| start == s) => Verdict::Alive,
            _ => Verdict::Gone,
        };
    }
    let Some(address) = get(labels::ADDRESS).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        return Verdict::CannotTell("its lease carries no address".into());
    };
    if address.ip().is_loopback() || address.ip().is_unspecified() {
        return Verdict::CannotTell(format!(
            "it runs elsewhere (another machine or container) and listens on {address}, which \
             cannot be reached from here"
        ));
    }
    match probe(&address.to_string()) {
        Probe::Answered(h) if Some(h.as_str()) == get(labels::HOLDER) => Verdict::Alive,
        Probe::Answered(_) | Probe::Silent => Verdict::Gone,
    }
}

/// Why a lease could not be had or kept.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "zone {zone} ({host}) is managed by another controller named `{controller}`: {holder}. \
         Two controllers with one name on one engine would delete each other's containers. \
         Stop that one first, or give this one its own `controllerName`{hint}"
    )]
    HeldByOther {
        zone: String,
        host: String,
        controller: String,
        holder: String,
        hint: String,
    },
    #[error(
        "zones {zone} and {other} are the same Docker engine ({identity}): every container would \
         be seen twice. Configure each engine once"
    )]
    SameEngine {
        zone: String,
        other: String,
        identity: String,
    },
    #[error("the lease on zone {zone} was taken over: {holder}; this controller stops")]
    Lost { zone: String, holder: String },
    #[error("zone {zone}: {source}")]
    Engine {
        zone: String,
        #[source]
        source: Arc<EngineError>,
    },
}

/// Every lease of this controller, and the signal that one was lost.
pub struct Leases {
    me: Arc<Identity>,
    zones: Mutex<Vec<Arc<ZoneLease>>>,
    /// Engine identities per zone, to refuse two zones on one engine.
    identities: Mutex<BTreeMap<String, EngineIdentity>>,
    lost: CancellationToken,
    lost_why: Mutex<Option<LeaseError>>,
    http: reqwest::Client,
    /// Where the keeper's engine calls are timed (`/metrics`), once the wiring set it.
    telemetry: std::sync::OnceLock<Arc<crate::health::telemetry::Telemetry>>,
}

impl Leases {
    /// No lease yet, for `me`.
    pub fn new(me: Identity) -> Arc<Leases> {
        crate::util::crypto::install_provider();
        Arc::new(Leases {
            me: Arc::new(me),
            zones: Mutex::new(Vec::new()),
            identities: Mutex::new(BTreeMap::new()),
            lost: CancellationToken::new(),
            lost_why: Mutex::new(None),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap_or_default(),
            telemetry: std::sync::OnceLock::new(),
        })
    }

    /// Times the engine calls of the keeper and of later lease checks into `telemetry` (the
    /// reconciler's calls are timed by the builder's connectors; these go around them).
    pub fn time_with(&self, telemetry: Arc<crate::health::telemetry::Telemetry>) {
        let _ = self.telemetry.set(telemetry);
    }

    /// `engine` of `zone`, timed once [`Leases::time_with`] was called.
    fn timed(&self, engine: Arc<dyn Engine>, zone: &str) -> Arc<dyn Engine> {
        match self.telemetry.get() {
            Some(t) => super::timed::timed(engine, zone, t.clone()),
            None => engine,
        }
    }

    /// This process's identity.
    pub fn identity(&self) -> &Identity {
        &self.me
    }

    /// Why a lease could not be had or kept, once that happened.
    pub fn lost(&self) -> Option<LeaseError> {
        self.lost_why.locked().clone()
    }

    /// The lease of zone `zone` (on engine `host`, for messages).
    pub fn zone(self: &Arc<Self>, zone: &str, host: &str) -> Arc<ZoneLease> {
        let z = Arc::new(ZoneLease {
            zone: zone.to_string(),
            host: host.to_string(),
            leases: self.clone(),
            id: tokio::sync::Mutex::new(None),
            engine: Mutex::new(None),
            held_once: Default::default(),
        });
        self.zones.locked().push(z.clone());
        z
    }

    /// Records that a lease cannot be kept: the keeper ends and the controller exits.
    fn lose(&self, why: LeaseError) {
        let mut w = self.lost_why.locked();
        if w.is_none() {
            *w = Some(why);
        }
        self.lost.cancel();
    }

    /// Checks every lease every few seconds until `shutdown`; ends with the error as soon as
    /// one is lost (the supervisor then stops the controller).
    ///
    /// # Errors
    /// The lease that was lost (taken over, or held by another controller when its zone came
    /// back).
    pub async fn keep(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), LeaseError> {
        let mut tick = tokio::time::interval(KEEP_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.lost.cancelled() => break,
                _ = tick.tick() => {}
            }
            let zones = self.zones.locked().clone();
            for z in zones {
                let engine = z.engine.locked().clone();
                if let Some(engine) = engine {
                    // Unreachable engines are the observer's business; only a loss counts.
                    let _ = z.check(&*self.timed(engine, &z.zone)).await;
                }
            }
        }
        Err(self
            .lost_why
            .locked()
            .clone()
            .expect("set before cancelling"))
    }

    /// Removes our lease containers (a clean exit, or a refused start). By id: a lease taken
    /// over by another controller is a different container and stays.
    pub async fn release(&self) {
        let zones = self.zones.locked().clone();
        for z in zones {
            let engine = z.engine.locked().clone();
            let id = z.id.lock().await.take();
            if let (Some(engine), Some(id)) = (engine, id) {
                match self
                    .timed(engine, &z.zone)
                    .remove(&id, Duration::ZERO)
                    .await
                {
                    Ok(()) | Err(EngineError::NotFound(_)) => {
                        info!(zone = %z.zone, "lease released")
                    }
                    Err(e) => {
                        warn!(zone = %z.zone, error = %e, "cannot release the lease; the next controller takes it over")
                    }
                }
            }
        }
    }

    /// Probes a holder on another machine: its holder id, or silence for [`TAKEOVER_AFTER`].
    async fn probe(&self, address: &str) -> Probe {
        let deadline = tokio::time::Instant::now() + TAKEOVER_AFTER;
        loop {
            let answer = self
                .http
                .get(format!("http://{address}/lease"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if let Some(r) = answer {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    return Probe::Answered(v["holder"].as_str().unwrap_or_default().to_string());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Probe::Silent;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The lease of one zone.
pub struct ZoneLease {
    zone: String,
    host: String,
    leases: Arc<Leases>,
    /// Our lease container's id; the async lock keeps two checks from racing to re-create it.
    id: tokio::sync::Mutex<Option<String>>,
    /// The engine it was last acquired on (for the keeper and the release).
    engine: Mutex<Option<Arc<dyn Engine>>>,
    /// Set once the lease was ours: failing to get it afterwards means it was taken over.
    held_once: std::sync::atomic::AtomicBool,
}

impl ZoneLease {
    fn engine_error(&self, e: EngineError) -> LeaseError {
        LeaseError::Engine {
            zone: self.zone.clone(),
            source: Arc::new(e),
        }
    }

    /// Takes the lease on `engine`, or says who holds it.
    ///
    /// # Errors
    /// [`LeaseError::HeldByOther`] when a live (or unjudgeable) controller holds it,
    /// [`LeaseError::SameEngine`] when another zone of ours is this engine,
    /// [`LeaseError::Engine`] when the engine fails.
    pub async fn acquire(&self, engine: &dyn Engine) -> Result<(), LeaseError> {
        let mut id = self.id.lock().await;
        self.acquire_locked(engine, &mut id).await
    }

    async fn acquire_locked(
        &self,
        engine: &dyn Engine,
        id: &mut Option<String>,
    ) -> Result<(), LeaseError> {
        let me = &self.leases.me;
        let name = lease_name(&me.controller);
        for _ in 0..5 {
            match engine.create_marker(&name, &me.labels(&self.zone)).await {
                Ok(created) => {
                    *id = Some(created.id);
                    self.held_once
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    info!(zone = %self.zone, lease = %name, "lease acquired");
                    return Ok(());
                }
                Err(EngineError::Conflict(_)) => {}
                Err(e) => return Err(self.engine_error(e)),
            }
            let holder = match engine.inspect(&name).await {
                Ok(h) => h,
                // Released between our create and this look: try again.
                Err(EngineError::NotFound(_)) => continue,
                Err(e) => return Err(self.engine_error(e)),
            };
            let verdict = match judge(&holder.labels, me, &process_start, &mut |_| Probe::Silent) {
                // Only another machine needs the (slow) network probe.
                Verdict::Gone if !same_machine(&holder.labels, me) => {
                    let address = holder
                        .labels
                        .get(labels::ADDRESS)
                        .cloned()
                        .unwrap_or_default();
                    let answer = self.leases.probe(&address).await;
                    judge(&holder.labels, me, &process_start, &mut |_| answer.clone())
                }
                v => v,
            };
            match verdict {
                Verdict::Ours => {
                    let other = holder.labels.get(labels::ZONE).cloned().unwrap_or_default();
                    if other == self.zone {
                        *id = Some(holder.id);
                        self.held_once
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        return Ok(());
                    }
                    return Err(LeaseError::SameEngine {
                        zone: self.zone.clone(),
                        other,
                        identity: self.host.clone(),
                    });
                }
                Verdict::Alive => {
                    return Err(self.held_by_other(&holder.labels, String::new()));
                }
                Verdict::CannotTell(why) => {
                    let hint = format!(
                        ". Whether it still runs cannot be told ({why}); if it is gone, remove \
                         its lease: docker -H {} rm {name}",
                        self.host
                    );
                    return Err(self.held_by_other(&holder.labels, hint));
                }
                Verdict::Gone => {
                    warn!(zone = %self.zone, holder = %describe(&holder.labels), "the lease holder is gone; taking over");
                    // By id: a lease someone else took in the meantime is never removed.
                    match engine.remove(&holder.id, Duration::ZERO).await {
                        Ok(()) | Err(EngineError::NotFound(_)) => {}
                        Err(e) => return Err(self.engine_error(e)),
                    }
                }
            }
        }
        Err(self.engine_error(EngineError::Other(format!(
            "the lease {name} keeps changing hands"
        ))))
    }

    fn held_by_other(&self, l: &BTreeMap<String, String>, hint: String) -> LeaseError {
        LeaseError::HeldByOther {
            zone: self.zone.clone(),
            host: self.host.clone(),
            controller: self.leases.me.controller.clone(),
            holder: describe(l),
            hint,
        }
    }

    /// Fencing: `Ok` while our lease container still exists (re-created if it was merely
    /// removed and nobody took it). A lease taken over is lost for good.
    ///
    /// # Errors
    /// [`LeaseError::Lost`] (also signalled to [`Leases::keep`]), or an engine error.
    pub async fn check(&self, engine: &dyn Engine) -> Result<(), LeaseError> {
        if self.leases.lost.is_cancelled() {
            return Err(self
                .leases
                .lost_why
                .locked()
                .clone()
                .expect("set before cancelling"));
        }
        let mut id = self.id.lock().await;
        if let Some(ours) = id.clone() {
            match engine.inspect(&ours).await {
                Ok(_) => return Ok(()),
                Err(EngineError::NotFound(_)) => *id = None,
                Err(e) => return Err(self.engine_error(e)),
            }
        }
        match self.acquire_locked(engine, &mut id).await {
            Ok(()) => Ok(()),
            Err(e @ (LeaseError::HeldByOther { .. } | LeaseError::SameEngine { .. })) => {
                let held_before = self.held_once.load(std::sync::atomic::Ordering::SeqCst);
                let lost = match e {
                    LeaseError::HeldByOther { holder, .. } if held_before => LeaseError::Lost {
                        zone: self.zone.clone(),
                        holder,
                    },
                    other => other,
                };
                self.leases.lose(lost.clone());
                Err(lost)
            }
            Err(e) => Err(e),
        }
    }

    /// Connects through `connect`, refuses an engine another zone already is, takes or checks
    /// the lease, and hands out the engine fenced by it.
    async fn attach(
        self: &Arc<Self>,
        connect: &Connector,
    ) -> crate::engine::Result<Arc<dyn Engine>> {
        let inner = connect().await?;
        let watched = self.leases.timed(inner.clone(), &self.zone);
        let identity = watched.identity().await?;
        let fatal = |e: LeaseError| {
            self.leases.lose(e.clone());
            EngineError::Other(e.to_string())
        };
        {
            let mut ids = self.leases.identities.locked();
            if let Some((other, _)) = ids
                .iter()
                .find(|(z, i)| **z != self.zone && **i == identity)
            {
                return Err(fatal(LeaseError::SameEngine {
                    zone: self.zone.clone(),
                    other: other.clone(),
                    identity: identity.to_string(),
                }));
            }
            ids.insert(self.zone.clone(), identity);
        }
        match self.check(&*watched).await {
            Ok(()) => {}
            Err(LeaseError::Engine { source, .. }) => {
                return Err(EngineError::Unreachable(source.to_string()))
            }
            Err(e) => return Err(fatal(e)),
        }
        *self.engine.locked() = Some(inner.clone());
        Ok(Arc::new(Fenced {
            inner,
            lease: self.clone(),
        }))
    }

    /// A connector that hands out engines fenced by this lease.
    pub fn connector(self: &Arc<Self>, connect: Connector) -> Connector {
        let lease = self.clone();
        Arc::new(move || {
            let (lease, connect) = (lease.clone(), connect.clone());
            Box::pin(async move { lease.attach(&connect).await })
        })
    }
}

fn same_machine(l: &BTreeMap<String, String>, me: &Identity) -> bool {
    me.boot_id.is_some()
        && l.get(labels::BOOT_ID) == me.boot_id.as_ref()
        && l.get(labels::PID_NS) == me.pid_ns.as_ref()
}

/// An engine whose creations and removals first check the lease.
pub struct Fenced {
    inner: Arc<dyn Engine>,
    lease: Arc<ZoneLease>,
}

impl Fenced {
    async fn fence(&self, op: &'static str) -> crate::engine::Result<()> {
        let began = std::time::Instant::now();
        let checked = self.lease.check(&*self.inner).await;
        tracing::debug!(
            op,
            took_ms = began.elapsed().as_secs_f64() * 1000.0,
            "lease checked before acting"
        );
        match checked {
            Ok(()) => Ok(()),
            Err(LeaseError::Engine { source, .. }) => Err(match &*source {
                EngineError::Unreachable(m) => EngineError::Unreachable(m.clone()),
                other => EngineError::Other(other.to_string()),
            }),
            Err(e) => Err(EngineError::Other(e.to_string())),
        }
    }
}

#[async_trait]
impl Engine for Fenced {
    async fn ping(&self) -> crate::engine::Result<()> {
        self.inner.ping().await
    }
    async fn list(&self, filter: &[(String, String)]) -> crate::engine::Result<Vec<Observed>> {
        self.inner.list(filter).await
    }
    async fn inspect(&self, id: &str) -> crate::engine::Result<Observed> {
        self.inner.inspect(id).await
    }
    async fn create_and_start(&self, spec: &ContainerSpec) -> crate::engine::Result<Observed> {
        self.fence("create").await?;
        self.inner.create_and_start(spec).await
    }
    async fn remove(&self, id: &str, grace: Duration) -> crate::engine::Result<()> {
        self.fence("remove").await?;
        self.inner.remove(id, grace).await
    }
    async fn events(
        &self,
        filter: &[(String, String)],
    ) -> crate::engine::Result<BoxStream<'static, crate::engine::Result<EngineEvent>>> {
        self.inner.events(filter).await
    }
    async fn logs_tail(&self, id: &str, lines: usize) -> crate::engine::Result<String> {
        self.inner.logs_tail(id, lines).await
    }
    async fn stats(&self, id: &str) -> crate::engine::Result<StatsSample> {
        self.inner.stats(id).await
    }
    async fn create_marker(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> crate::engine::Result<Observed> {
        self.inner.create_marker(name, labels).await
    }
    async fn identity(&self) -> crate::engine::Result<EngineIdentity> {
        self.inner.identity().await
    }
    /// Not fenced: a command in a container changes nothing the lease guards.
    async fn exec_wait(
        &self,
        id: &str,
        cmd: &[String],
        keep: usize,
    ) -> crate::engine::Result<crate::engine::ExecOutcome> {
        self.inner.exec_wait(id, cmd, keep).await
    }

    /// A hook acts in a container: only while the lease is ours, like a removal.
    async fn run_hook(&self, id: &str, cmd: &[String]) -> crate::engine::Result<(i64, String)> {
        self.fence("hook").await?;
        self.inner.run_hook(id, cmd).await
    }
    async fn transition(
        &self,
        id: &str,
        t: crate::engine::Transition,
    ) -> crate::engine::Result<()> {
        self.fence("transition").await?;
        self.inner.transition(id, t).await
    }
    /// Not fenced: a rename starts, stops and removes nothing (a warm pool member's take is
    /// fenced by its unpause or start), and it is on the hot path of self-healing.
    async fn rename(&self, id: &str, name: &str) -> crate::engine::Result<()> {
        self.inner.rename(id, name).await
    }
    async fn ensure_image(&self, spec: &ContainerSpec) -> crate::engine::Result<()> {
        self.fence("ensure_image").await?;
        self.inner.ensure_image(spec).await
    }
    fn pulls(&self) -> Vec<crate::engine::docker::pull::PullProgress> {
        self.inner.pulls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::memory::MemoryEngine;

    fn me(holder: &str) -> Identity {
        Identity {
            controller: "default".into(),
            holder: holder.into(),
            pid: 100,
            pid_start: Some(5000),
            host: "box".into(),
            boot_id: Some("boot-1".into()),
            pid_ns: Some("pid:[1]".into()),
            address: "127.0.0.1:56785".into(),
            dir: "/srv/m".into(),
        }
    }

    fn silent(_: &str) -> Probe {
        Probe::Silent
    }

    #[test]
    fn a_holder_on_this_machine_is_alive_while_its_pid_runs_with_its_start_time() {
        let holder = me("aaaa").labels("a");
        let other = me("bbbb");
        assert_eq!(
            judge(&holder, &other, &|_| Some(5000), &mut silent),
            Verdict::Alive
        );
        assert_eq!(
            judge(&holder, &other, &|_| None, &mut silent),
            Verdict::Gone
        );
        // The pid was reused by another process: the holder is gone.
        assert_eq!(
            judge(&holder, &other, &|_| Some(9999), &mut silent),
            Verdict::Gone
        );
        assert_eq!(
            judge(&holder, &me("aaaa"), &|_| None, &mut silent),
            Verdict::Ours
        );
    }

    #[test]
    fn a_holder_elsewhere_is_probed_at_its_address() {
        let mut far = me("aaaa");
        far.boot_id = Some("boot-2".into());
        far.address = "10.0.0.5:56785".into();
        let holder = far.labels("a");
        let here = me("bbbb");
        let mut answered = |_: &str| Probe::Answered("aaaa".into());
        assert_eq!(
            judge(&holder, &here, &|_| None, &mut answered),
            Verdict::Alive
        );
        assert_eq!(judge(&holder, &here, &|_| None, &mut silent), Verdict::Gone);
        let mut stranger = |_: &str| Probe::Answered("cccc".into());
        assert_eq!(
            judge(&holder, &here, &|_| None, &mut stranger),
            Verdict::Gone
        );
        // On loopback elsewhere it cannot be reached: never taken over blindly.
        far.address = "127.0.0.1:56785".into();
        assert!(matches!(
            judge(&far.labels("a"), &here, &|_| None, &mut silent),
            Verdict::CannotTell(_)
        ));
    }

    #[test]
    fn lease_names_are_valid_container_names() {
        assert_eq!(lease_name("default"), "microscaler-lease-default");
        let odd = lease_name("team a/b");
        assert!(
            odd.starts_with("microscaler-lease-") && !odd.contains(' '),
            "{odd}"
        );
    }

    async fn connected(
        leases: &Arc<Leases>,
        zone: &str,
        engine: &MemoryEngine,
    ) -> crate::engine::Result<Arc<dyn Engine>> {
        let z = leases.zone(zone, "mem");
        let e: Arc<dyn Engine> = Arc::new(engine.clone());
        z.connector(crate::engine::observe::fixed_connector(e))().await
    }

    #[tokio::test(start_paused = true)]
    async fn the_keepers_engine_calls_are_timed_like_the_others() {
        let engine = MemoryEngine::new();
        let leases = Leases::new(Identity::of_this_process(
            "timed",
            "127.0.0.1:1".parse().unwrap(),
            Path::new("/t"),
        ));
        let telemetry = Arc::new(crate::health::telemetry::Telemetry::default());
        leases.time_with(telemetry.clone());
        connected(&leases, "a", &engine).await.unwrap();
        let keeper = tokio::spawn(leases.clone().keep(CancellationToken::new()));
        tokio::time::sleep(KEEP_EVERY * 2).await;
        leases.release().await;
        keeper.abort();
        let mut r = prometheus_client::registry::Registry::with_prefix("microscaler");
        telemetry.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        let count = |op: &str| {
            let prefix = format!(
                "microscaler_engine_request_duration_seconds_count{{operation=\"{op}\",zone=\"a\"}} "
            );
            out.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        assert_eq!(count("identity"), 1, "{out}");
        assert_eq!(count("create_marker"), 1, "the lease taken: {out}");
        assert!(count("inspect") >= 2, "the keeper's checks: {out}");
        assert_eq!(count("remove"), 1, "the release: {out}");
    }

    #[tokio::test]
    async fn a_second_controller_with_the_same_name_is_refused_while_the_first_runs() {
        let engine = MemoryEngine::new();
        let mut first_id =
            Identity::of_this_process("default", "127.0.0.1:1".parse().unwrap(), Path::new("/a"));
        first_id.holder = "first".into();
        let first = Leases::new(first_id);
        connected(&first, "a", &engine).await.unwrap();
        // Same machine, and this process (the "first") runs: refused, naming it.
        let second = Leases::new(Identity::of_this_process(
            "default",
            "127.0.0.1:2".parse().unwrap(),
            Path::new("/b"),
        ));
        let err = match connected(&second, "a", &engine).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("the second controller got the lease"),
        };
        assert!(err.contains("another controller named `default`"), "{err}");
        assert!(err.contains("listening on 127.0.0.1:1"), "{err}");
        // Another name has its own lease.
        let other = Leases::new(Identity::of_this_process(
            "blue",
            "127.0.0.1:3".parse().unwrap(),
            Path::new("/c"),
        ));
        connected(&other, "a", &engine).await.unwrap();
        // The first releases on a clean exit: the second may then take it.
        first.release().await;
        let second = Leases::new(Identity::of_this_process(
            "default",
            "127.0.0.1:2".parse().unwrap(),
            Path::new("/b"),
        ));
        connected(&second, "a", &engine).await.unwrap();
    }

    #[tokio::test]
    async fn a_dead_holders_lease_is_taken_over_and_the_old_holder_is_fenced() {
        let engine = MemoryEngine::new();
        let mut dead =
            Identity::of_this_process("default", "127.0.0.1:1".parse().unwrap(), Path::new("/a"));
        dead.holder = "dead".into();
        dead.pid_start = Some(1); // not the start time of this pid: it "died"
        let old = Leases::new(dead);
        let fenced = connected(&old, "a", &engine).await.unwrap();
        let new = Leases::new(Identity::of_this_process(
            "default",
            "127.0.0.1:2".parse().unwrap(),
            Path::new("/b"),
        ));
        connected(&new, "a", &engine).await.unwrap();
        // The old holder (cut off, not dead after all) must not act any more.
        let err = fenced
            .create_and_start(&ContainerSpec {
                name: "x".into(),
                image: "img".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("was taken over"), "{err}");
        assert!(old.lost.is_cancelled());
        assert!(engine.containers().iter().all(|c| c.name != "x"));
    }

    #[tokio::test]
    async fn two_zones_on_one_engine_are_refused() {
        let engine = MemoryEngine::new();
        let leases = Leases::new(Identity::of_this_process(
            "default",
            "127.0.0.1:1".parse().unwrap(),
            Path::new("/a"),
        ));
        connected(&leases, "a", &engine).await.unwrap();
        let err = match connected(&leases, "b", &engine).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("zone b was accepted"),
        };
        assert!(
            err.contains("zones b and a are the same Docker engine"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_pruned_lease_is_created_again() {
        let engine = MemoryEngine::new();
        let leases = Leases::new(Identity::of_this_process(
            "default",
            "127.0.0.1:1".parse().unwrap(),
            Path::new("/a"),
        ));
        let fenced = connected(&leases, "a", &engine).await.unwrap();
        let lease = engine
            .containers()
            .into_iter()
            .find(|c| c.name == "microscaler-lease-default")
            .unwrap();
        engine.remove_by_hand(&lease.id).unwrap();
        fenced
            .create_and_start(&ContainerSpec {
                name: "x".into(),
                image: "img".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(engine
            .containers()
            .iter()
            .any(|c| c.name == "microscaler-lease-default"));
    }
}
