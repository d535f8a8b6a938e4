//! Wiring: the shared state the watcher, the reconciler and the apply endpoint all see.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apply::ratelimit::RateLimiter;
use crate::apply::write_locks::NamespaceLocks;
use crate::config::tenancy::Tenancy;
use crate::config::Config;
use crate::engine::docker::DockerEngine;
use crate::engine::lease::{Identity, Leases};
use crate::engine::observe::{observe, Connector, Zone};
use crate::engine::Engine;
use crate::files::OwnWrites;
use crate::health::liveness::Liveness;
use crate::health::supervise::Supervisor;
use crate::manifest::{Kind, ObjectKey};
use crate::reconcile::queue::Queue;
use crate::reconcile::Reconciler;
use crate::status::sync::StatusSync;
use crate::status::GroupStatus;
use crate::util::unpoisoned::LockExt;
use crate::watch::store::Desired;
use futures::FutureExt;

/// State shared by every part of a running controller.
pub struct Shared {
    pub config: Config,
    /// Latest desired-state snapshot (written by the watcher only).
    pub desired: watch::Receiver<Arc<Desired>>,
    /// Latest status of every group (written by the reconciler only).
    pub status: RwLock<BTreeMap<ObjectKey, GroupStatus>>,
    /// Set once the first full load of the directory is done.
    pub ready: AtomicBool,
    /// Asks the watcher to rescan the directory now (after the apply endpoint wrote a file), so an
    /// `ms apply` does not wait for the debounce of file events.
    pub rescan: Notify,
    /// Deletions confirmed by name (`ms delete`): the watcher and the reconciler never hold them.
    pub confirmations: Arc<crate::watch::prune::Confirmations>,
    /// Groups on the engines whose deletion the reconciler holds or keeps failing at.
    pub prune_report: Arc<crate::watch::prune::Report>,
    /// Set when an essential task ended: `/readyz` fails from then on.
    pub health: Arc<crate::health::supervise::Health>,
    /// Manifests whose status cannot be written, and why (written by the status writer).
    pub status_problems: crate::status::sync::WriteProblems,
    /// Per-namespace limits (from `config.namespaces`).
    pub tenancy: Arc<Tenancy>,
    /// What `/healthz` reports: the loops' heartbeats and the queue's progress.
    pub liveness: Arc<Liveness>,
    /// Changes per token (`api.writesPerSecond`).
    pub write_limit: RateLimiter,
    /// Pushed metric values per token (`api.pushesPerSecond`).
    pub push_limit: RateLimiter,
    /// The API's file edits, serialized per namespace.
    pub write_locks: NamespaceLocks,
}

impl Shared {
    /// Shared state over a desired-state channel: no status yet, not ready.
    pub fn new(config: Config, desired: watch::Receiver<Arc<Desired>>) -> Shared {
        Shared {
            tenancy: Arc::new(config.tenancy()),
            liveness: Arc::default(),
            write_limit: RateLimiter::new(config.api.writes_per_second, config.api.write_burst),
            push_limit: RateLimiter::new(config.api.pushes_per_second, config.api.push_burst),
            write_locks: NamespaceLocks::default(),
            config,
            desired,
            status: RwLock::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
            rescan: Notify::new(),
            confirmations: Default::default(),
            prune_report: Default::default(),
            health: Default::default(),
            status_problems: Default::default(),
        }
    }
}

/// Starts one observer per zone (in order) for this controller, each connecting with its
/// [`Connector`], and returns the zones for the reconciler. When a zone changes as a whole
/// (first list, resync, reachability) every group of the desired state is enqueued.
pub fn spawn_zones(
    shared: &Arc<Shared>,
    zones: Vec<(String, Connector)>,
    resync: Duration,
    queue: &Arc<Queue<ObjectKey>>,
    shutdown: &CancellationToken,
) -> Vec<Arc<Zone>> {
    let (zones, observers) = zones_and_observers(shared, zones, resync, queue, shutdown);
    for (_, observer) in observers {
        tokio::spawn(observer);
    }
    zones
}

/// An observer to run, named for the supervisor.
pub type Observer = (String, futures::future::BoxFuture<'static, ()>);

/// The zones and their observers (not started): [`spawn_zones`] without the spawning.
pub fn zones_and_observers(
    shared: &Arc<Shared>,
    zones: Vec<(String, Connector)>,
    resync: Duration,
    queue: &Arc<Queue<ObjectKey>>,
    shutdown: &CancellationToken,
) -> (Vec<Arc<Zone>>, Vec<Observer>) {
    let all_groups: Arc<dyn Fn() -> Vec<ObjectKey> + Send + Sync> = {
        let shared = shared.clone();
        Arc::new(move || {
            shared
                .desired
                .borrow()
                .groups()
                .map(|(k, _, _)| k.clone())
                .collect()
        })
    };
    zones
        .into_iter()
        .map(|(name, connect)| {
            let zone = Arc::new(Zone::for_controller(
                name.clone(),
                shared.config.controller_name.clone(),
            ));
            zone.set_beat(
                shared
                    .liveness
                    .beat(&format!("zone {name} observer"), silence_bound(resync)),
            );
            let observer = observe(
                zone.clone(),
                connect,
                resync,
                queue.clone(),
                all_groups.clone(),
                shutdown.clone(),
            );
            (zone, (format!("observer of zone {name}"), observer.boxed()))
        })
        .unzip()
}

/// How long a loop that wakes at least every `period` may stay silent before `/healthz` fails.
pub fn silence_bound(period: Duration) -> Duration {
    period
        .saturating_mul(3)
        .saturating_add(Duration::from_secs(30))
}

/// How long a group may wait for a worker, or one reconcile may run, before `/healthz` fails.
const RECONCILE_STALL: Duration = Duration::from_secs(300);

/// Options of `ms controller` (flags override the configuration file).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub allow_empty: bool,
    /// Create the manifest directory when it does not exist (otherwise an error).
    pub create_dir: bool,
}

/// Runs the controller until SIGINT/SIGTERM.
///
/// # Errors
/// An invalid configuration, a missing manifest directory (without `create_dir`), another
/// controller on the same directory or engine, a listen address in use, or an essential task
/// that ended before shutdown.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let mut config = Config::load(opts.config.as_deref())?;
    if let Some(d) = opts.dir {
        config.dir = d;
    }
    if let Some(l) = opts.listen {
        config.listen = l;
    }
    config.allow_empty |= opts.allow_empty;
    config.validate()?;
    // A directory that is not there is a mistake (a typo in --dir, a volume not mounted), not
    // an empty desired state.
    // The default directory is ours to create; one the user named must be there already.
    if !config.dir.is_dir() {
        anyhow::ensure!(
            opts.create_dir || config.dir == crate::config::default_dir(),
            "the manifest directory {} does not exist (a typo in --dir, or a volume not mounted?); \
             create it, or pass --create-dir",
            config.dir.display()
        );
        std::fs::create_dir_all(&config.dir).with_context(|| {
            format!(
                "cannot create the manifest directory {}",
                config.dir.display()
            )
        })?;
    }
    config.dir = std::fs::canonicalize(&config.dir)?;
    let ignore = prepare_status_dir(&mut config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another controller running?)",
                config.listen
            )
        })?;
    let _dir_lock =
        crate::watch::dirlock::lock(&config.dir, listener.local_addr()?, &config.controller_name)?;
    // Every engine that answers must be ours (its lease taken) before anything acts.
    let leases = Leases::new(Identity::of_this_process(
        &config.controller_name,
        listener.local_addr()?,
        &config.dir,
    ));
    let connectors = match connect_zones(&config, &leases).await {
        Ok(c) => c,
        Err(refused) => {
            leases.release().await;
            return Err(refused);
        }
    };
    info!(dir = %config.dir.display(), listen = %listener.local_addr()?, zones = ?config.zone_names(), "controller starting");
    // Descriptor headroom: the soft limit up to the hard one, and API connections capped at
    // half of it, so a connection flood can never starve the engines or the directory.
    let fd_limit = crate::apply::serve::raise_fd_limit();
    crate::apply::serve::log_limits(
        &crate::apply::serve::ConnLimits::new(&config.api, fd_limit),
        fd_limit,
    );

    let shutdown = CancellationToken::new();
    let (tx, rx) = watch::channel(Arc::new(Desired::default()));
    let shared = Arc::new(Shared::new(config.clone(), rx));
    let own = Arc::new(OwnWrites::new());
    let mut tasks = Supervisor::new(shutdown.clone(), shared.health.clone());

    // The directory watcher (the only writer of desired state).
    let rescan = Arc::new(Notify::new());
    {
        let (shared, rescan) = (shared.clone(), rescan.clone());
        let stop = shutdown.clone();
        tasks.spawn("rescan relay", async move {
            loop {
                tokio::select! {
                    _ = shared.rescan.notified() => rescan.notify_one(),
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = crate::watch::WatchOptions {
        dir: config.dir.clone(),
        debounce: config.debounce.0,
        rescan_period: config.rescan_period.0,
        allow_empty: config.allow_empty,
        confirmations: shared.confirmations.clone(),
        changed_files: Some(changed_tx),
        ignore,
        tenancy: shared.tenancy.clone(),
        beat: shared
            .liveness
            .beat("watcher", silence_bound(config.rescan_period.0)),
    };
    tasks.spawn(
        "watcher",
        crate::watch::run(opts, tx, own.clone(), rescan, shutdown.clone()),
    );

    // Zones and their observers.
    let queue: Arc<Queue<ObjectKey>> = Arc::new(Queue::new());
    tasks.spawn_fallible("lease keeper", leases.clone().keep(shutdown.clone()));
    let (zones, observers) = zones_and_observers(
        &shared,
        connectors,
        config.resync_period.0,
        &queue,
        &shutdown,
    );
    for (name, observer) in observers {
        tasks.spawn(name, observer);
    }

    {
        let queue = queue.clone();
        shared
            .liveness
            .check("reconciler", move || queue.stalled(RECONCILE_STALL));
    }

    // Desired-state changes: readiness, and a reconcile of every group whose inputs changed.
    tasks.spawn(
        "change feed",
        enqueue_changes(shared.clone(), queue.clone(), shutdown.clone()),
    );

    let sync = StatusSync::new(shared.clone(), own, STATUS_COALESCE);
    tasks.spawn("status writer", sync.clone().run(shutdown.clone()));
    {
        // Files the watcher saw change: their status blocks are compared with them again.
        let sync = sync.clone();
        let stop = shutdown.clone();
        tasks.spawn("changed-files relay", async move {
            while let Some(files) = changed_rx.recv().await {
                sync.files_changed(files);
            }
            // The sender is the watcher's: its end is reported as the watcher's.
            stop.cancelled().await;
        });
    }
    // The autoscaler: metrics, policies, the effective capacity of groups with policies.
    let autoscaler = crate::autoscale::Autoscaler::new(
        shared.clone(),
        zones.clone(),
        queue.clone(),
        crate::autoscale::Settings::from_config(&config),
    );
    {
        let sync = sync.clone();
        autoscaler.set_previous_status(Arc::new(move |key, in_file| sync.previous(key, in_file)));
    }
    tasks.spawn("autoscaler", autoscaler.clone().run(shutdown.clone()));
    let reconciler = Reconciler::new(
        shared.clone(),
        zones,
        queue,
        sync.clone(),
        config.concurrency,
    );
    reconciler.set_autoscaler(autoscaler.clone());
    tasks.spawn("reconciler", reconciler.run(64, shutdown.clone()));

    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down; containers keep running and are adopted at the next start");
        stop.cancel();
    });
    let stop = shutdown.clone();
    let extra = crate::autoscale::pushed::routes(shared.clone(), autoscaler)
        .merge(crate::engine::lease::routes(leases.identity()));
    tasks.spawn_fallible(
        "api server",
        crate::apply::serve_with(
            listener,
            shared,
            extra,
            async move { stop.cancelled().await },
        ),
    );
    let outcome = tasks.run().await;
    let deadline = std::time::Instant::now() + FINAL_FLUSH;
    tokio::task::spawn_blocking(move || sync.flush(Some(deadline))).await?;
    leases.release().await;
    outcome?;
    Ok(())
}

/// The connector of every zone, each fenced by the zone's lease. Zones that answer now are
/// connected and leased here, so that a zone held by another controller, or two zones on one
/// engine, refuse the start; the others take their lease when they answer.
///
/// # Errors
/// A lease held by another live controller, or two zones that are one engine.
async fn connect_zones(
    config: &Config,
    leases: &Arc<Leases>,
) -> anyhow::Result<Vec<(String, Connector)>> {
    let mut out = Vec::new();
    for z in &config.zones {
        let host = z.docker_host.clone();
        let shown = host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| crate::engine::docker::DEFAULT_SOCKET.to_string());
        let plain: Connector = Arc::new(move || {
            let host = host.clone();
            Box::pin(async move {
                let e = DockerEngine::connect(host.as_deref()).await?;
                Ok(Arc::new(e) as Arc<dyn Engine>)
            })
        });
        let fenced = leases.zone(&z.name, &shown).connector(plain);
        match tokio::time::timeout(Duration::from_secs(10), fenced()).await {
            Ok(Ok(engine)) => {
                // The observer's first connection is this one.
                let first = std::sync::Mutex::new(Some(engine));
                let connect: Connector = Arc::new(move || {
                    let ready = first.locked().take();
                    match ready {
                        Some(e) => Box::pin(async move { Ok(e) }),
                        None => fenced(),
                    }
                });
                out.push((z.name.clone(), connect));
            }
            Ok(Err(e)) => {
                if let Some(refused) = leases.lost() {
                    return Err(refused.into());
                }
                warn!(zone = %z.name, error = %e, "zone unreachable at start; its lease is taken when it answers");
                out.push((z.name.clone(), fenced));
            }
            Err(_) => {
                warn!(zone = %z.name, "zone did not answer within 10 s at start; its lease is taken when it answers");
                out.push((z.name.clone(), fenced));
            }
        }
    }
    Ok(out)
}

/// Quiet time before status is written: a burst of reconciles becomes one write per file.
const STATUS_COALESCE: Duration = Duration::from_millis(200);

/// How long the last status write may take at shutdown (SIGTERM must not wait for thousands of
/// files; what is left is written at the next start, level-triggered).
pub const FINAL_FLUSH: Duration = Duration::from_millis(1000);

/// Makes the sidecar status directory absolute and creates it; returns the directories the
/// watcher must skip (the sidecar tree, when the user put it inside the watched directory).
fn prepare_status_dir(config: &mut Config) -> anyhow::Result<Vec<PathBuf>> {
    if config.status_mode != crate::config::StatusMode::Sidecar {
        return Ok(Vec::new());
    }
    let Some(root) = config.status_dir.clone() else {
        return Ok(Vec::new()); // refused by validation
    };
    std::fs::create_dir_all(&root)
        .with_context(|| format!("cannot create the status directory {}", root.display()))?;
    let root = std::fs::canonicalize(&root)?;
    if root == config.dir {
        anyhow::bail!(
            "statusDir {} is the watched directory itself: choose a directory outside it",
            root.display()
        );
    }
    let inside = root.starts_with(&config.dir);
    config.status_dir = Some(root.clone());
    Ok(if inside { vec![root] } else { Vec::new() })
}

/// Sets readiness after the first full load, and enqueues every group whose own spec, launch
/// configuration, manifest errors or held deletion changed (deleted groups too: their
/// containers go), and the groups whose deletion the reconciler holds.
pub(crate) async fn enqueue_changes(
    shared: Arc<Shared>,
    queue: Arc<Queue<ObjectKey>>,
    shutdown: CancellationToken,
) {
    let mut rx = shared.desired.clone();
    let mut prev: HashMap<ObjectKey, String> = HashMap::new();
    loop {
        let snapshot = rx.borrow_and_update().clone();
        if snapshot.loaded {
            shared.ready.store(true, Ordering::SeqCst);
        }
        let mut now: HashMap<ObjectKey, String> = HashMap::new();
        for (key, group, entry) in snapshot.groups() {
            let lc_gen = snapshot
                .objects
                .get(&ObjectKey::new(
                    Kind::LaunchConfiguration,
                    key.namespace.clone(),
                    group.spec.launch_configuration.clone(),
                ))
                .map(|e| e.generation.as_str())
                .unwrap_or("-");
            let errors = snapshot.errors_for(key).len();
            let held = snapshot.held.contains_key(key);
            now.insert(
                key.clone(),
                format!("{}/{lc_gen}/{errors}/{held}", entry.generation),
            );
        }
        for (key, fp) in &now {
            if prev.get(key) != Some(fp) {
                queue.now(key.clone());
            }
        }
        for key in prev.keys() {
            if !now.contains_key(key) {
                queue.now(key.clone());
            }
        }
        prev = now;
        // Groups whose deletion is held: a new snapshot or a confirmation may lift the hold.
        for key in shared.prune_report.all().into_keys() {
            queue.now(key);
        }
        tokio::select! {
            // The watcher gone is the watcher's failure to report, not this feed's: wait for
            // the shutdown the supervisor starts when it sees the watcher end.
            r = rx.changed() => if r.is_err() { shutdown.cancelled().await; return },
            _ = shared.confirmations.changed() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
