//! The one wiring of a controller: [`Controller::builder`] → [`Builder::spawn`] → [`Handle`].
//!
//! The binary, the reconcile scenario tests, the API tests and the scale model all start their
//! controller here, so what they test or measure is wired as what runs. Each part gets the
//! handles it needs and nothing else; every task runs under one [`Supervisor`], which fails
//! readiness and stops everything when an essential task ends early.
//!
//! # Parts, in pipeline order
//! 1. The directory watcher (desired state), unless the caller feeds it ([`Builder::desired`]).
//! 2. One observer per zone (observed state), each with its heartbeat.
//! 3. The status writer: the board at once, the files shortly after.
//! 4. The autoscaler: metrics, policies, the effective capacity of groups with policies.
//! 5. The change feed and the reconciler (desired + observed → actions).
//! 6. The load balancers (a managed HAProxy), with the reconciler.
//! 7. The HTTP API, when given a listener.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use crate::apply;
use crate::apply::ratelimit::RateLimiter;
use crate::apply::write_locks::{FileLocks, NamespaceLocks};
use crate::autoscale::{Autoscaler, Settings};
use crate::config::load_balancers::zone_address;
use crate::config::{Config, StatusMode};
use crate::engine::lease::Leases;
use crate::engine::observe::{observe, Connector, Zone};
use crate::engine::timed::timed_connector;
use crate::health::liveness::silence_bound;
use crate::health::supervise::{Supervisor, TaskEnded};
use crate::health::telemetry::Telemetry;
use crate::lb::{self, haproxy::Haproxy};
use crate::manifest::ObjectKey;
use crate::reconcile::changes::enqueue_changes;
use crate::reconcile::queue::Queue;
use crate::reconcile::{self, Reconciler};
use crate::status::sync::{self, StatusSync};
use crate::util::tickets::Tickets;
use crate::watch::store::{Desired, DesiredReader};
use crate::watch::WatchOptions;

/// How long a group may wait for a worker, or one reconcile may run, before `/healthz` fails.
const RECONCILE_STALL: Duration = Duration::from_secs(300);

/// Quiet time before status is written: a burst of reconciles becomes one write per file.
const STATUS_COALESCE: Duration = Duration::from_millis(200);

/// How long the last status write may take at shutdown (SIGTERM must not wait for thousands of
/// files; what is left is written at the next start, level-triggered).
pub const FINAL_FLUSH: Duration = Duration::from_millis(1000);

/// Groups reconciled at once by default.
const WORKERS: usize = 64;

/// A controller, as a builder of its wiring.
pub struct Controller;

impl Controller {
    /// A controller with `config`: by default it watches `config.dir`, has no zones, serves no
    /// API, and runs the status writer, the autoscaler and the reconciler.
    pub fn builder(config: Config) -> Builder {
        Builder {
            config,
            zones: Vec::new(),
            desired: None,
            listener: None,
            leases: None,
            workers: WORKERS,
            autoscaler: true,
            status_writer: true,
            reconciler: true,
        }
    }
}

/// What [`Builder::spawn`] starts; see [`Controller::builder`] for the defaults.
pub struct Builder {
    config: Config,
    /// The zones, in order, each with how to connect to its engine.
    zones: Vec<(String, Connector)>,
    /// Desired state fed by the caller (no directory watcher).
    desired: Option<DesiredReader>,
    /// Where the HTTP API listens (none: no API).
    listener: Option<TcpListener>,
    /// The engine leases this controller holds (kept by a task, shown at `GET /lease`).
    leases: Option<Arc<Leases>>,
    /// Groups reconciled at once.
    workers: usize,
    autoscaler: bool,
    status_writer: bool,
    reconciler: bool,
}

impl Builder {
    /// The zones, in order: each a name and how to connect to its engine.
    pub fn zones(mut self, zones: Vec<(String, Connector)>) -> Self {
        self.zones = zones;
        self
    }

    /// Takes the desired state from `desired` instead of watching `config.dir` (the caller holds
    /// the sender: scenario tests, API tests, the scale model).
    pub fn desired(mut self, desired: DesiredReader) -> Self {
        self.desired = Some(desired);
        self
    }

    /// Serves the HTTP API on `listener`.
    pub fn serve(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Keeps `leases` (an essential task) and says who holds them at `GET /lease`.
    pub fn leases(mut self, leases: Arc<Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// Reconciles at most `workers` groups at once (default 64).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// No metrics and no policies: every group runs the capacity of its spec (the scenario
    /// tests and the scale model look at the reconciler alone). The API's metric routes still
    /// answer, with nothing.
    pub fn without_autoscaler(mut self) -> Self {
        self.autoscaler = false;
        self
    }

    /// Status goes to the board (the API) only, never to files, and no final flush.
    pub fn without_status_writer(mut self) -> Self {
        self.status_writer = false;
        self
    }

    /// Neither the change feed nor the reconcile runner: the [`Reconciler`] in the handle only
    /// runs the passes its caller asks for (the scale model), and readiness is the caller's to
    /// set (the API tests).
    pub fn without_reconciler(mut self) -> Self {
        self.reconciler = false;
        self
    }

    /// Starts every part under one supervisor; `shutdown` (or dropping the handle) stops them.
    /// Must be called within a tokio runtime.
    pub fn spawn(self, shutdown: CancellationToken) -> Handle {
        let Builder {
            config,
            zones,
            desired,
            listener,
            leases,
            workers,
            autoscaler: autoscaling,
            status_writer,
            reconciler: reconciling,
        } = self;
        let (watcher_tx, desired) = match desired {
            Some(rx) => (None, rx),
            None => {
                let (tx, rx) = watch::channel(Arc::new(Desired::default()));
                (Some(tx), rx)
            }
        };
        let shared = Arc::new(Shared::new(config, desired));
        let config = shared.config.clone();
        let mut tasks = Supervisor::new(shutdown.clone(), shared.health.clone());
        let own = Arc::new(crate::files::OwnWrites::new());
        let queue: Arc<Queue<ObjectKey>> = Arc::new(Queue::new());
        // Recorded by the stages, served by the API at `/metrics`.
        let telemetry = Arc::new(Telemetry::default());
        // Each group's capacity and metrics over time: recorded on publish, charted by the API.
        let history = Arc::new(crate::status::history::History::default());

        // The status writer: what the reconciler publishes, on the board at once, in files later.
        let status = StatusSync::new(
            Arc::new(sync::Context {
                config: config.clone(),
                desired: shared.desired.clone(),
                status: shared.status.clone(),
                problems: shared.status_problems.clone(),
                rescan: shared.rescan.clone(),
                telemetry: telemetry.clone(),
                history: history.clone(),
            }),
            own.clone(),
            STATUS_COALESCE,
        );

        // The directory watcher: the only writer of desired state. The API's writes wait for
        // its loads.
        let loads = watcher_tx.is_some().then(|| Arc::new(Tickets::default()));
        if let Some(tx) = watcher_tx {
            let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
            let opts = WatchOptions {
                dir: config.dir.clone(),
                debounce: config.debounce.0,
                rescan_period: config.rescan_period.0,
                allow_empty: config.allow_empty,
                confirmations: shared.confirmations.clone(),
                changed_files: Some(changed_tx),
                ignore: ignored_dirs(&config),
                tenancy: shared.tenancy.clone(),
                beat: shared
                    .liveness
                    .beat("watcher", silence_bound(config.rescan_period.0)),
                loads: loads.clone().unwrap_or_default(),
            };
            tasks.spawn(
                "watcher",
                crate::watch::run(
                    opts,
                    tx,
                    own.clone(),
                    shared.rescan.clone(),
                    shutdown.clone(),
                ),
            );
            // Files the watcher saw change: their status blocks are compared with them again.
            let (status, stop) = (status.clone(), shutdown.clone());
            tasks.spawn("changed-files relay", async move {
                while let Some(files) = changed_rx.recv().await {
                    status.files_changed(files);
                }
                // The sender is the watcher's: its end is reported as the watcher's.
                stop.cancelled().await;
            });
        }
        if let Some(leases) = &leases {
            leases.time_with(telemetry.clone());
            tasks.spawn_fallible("lease keeper", leases.clone().keep(shutdown.clone()));
        }

        // One observer per zone. When a zone changes as a whole (first list, resync,
        // reachability) every group of the desired state is enqueued.
        let all_groups: Arc<dyn Fn() -> Vec<ObjectKey> + Send + Sync> = {
            let desired = shared.desired.clone();
            Arc::new(move || {
                desired
                    .borrow()
                    .groups()
                    .map(|(k, _, _)| k.clone())
                    .collect()
            })
        };
        let resync = config.resync_period.0;
        let mut zone_list = Vec::new();
        for (name, connect) in zones {
            let connect = timed_connector(connect, name.clone(), telemetry.clone());
            let zone = Arc::new(Zone::for_controller(
                name.clone(),
                config.controller_name.clone(),
            ));
            zone.set_beat(
                shared
                    .liveness
                    .beat(&format!("zone {name} observer"), silence_bound(resync)),
            );
            tasks.spawn(
                format!("observer of zone {name}"),
                observe(
                    zone.clone(),
                    connect,
                    resync,
                    queue.clone(),
                    all_groups.clone(),
                    shutdown.clone(),
                ),
            );
            zone_list.push(zone);
        }

        if status_writer {
            tasks.spawn("status writer", status.clone().run(shutdown.clone()));
        }

        // The autoscaler: metrics, policies, the effective capacity of groups with policies.
        let settings = Settings::from_config(&config);
        let period = settings.period;
        let autoscaler = Autoscaler::new(
            shared.desired.clone(),
            shared.tenancy.clone(),
            zone_list.clone(),
            queue.clone(),
            settings,
        );
        {
            let status = status.clone();
            autoscaler
                .set_previous_status(Arc::new(move |key, in_file| status.previous(key, in_file)));
        }
        if autoscaling {
            let beat = shared.liveness.beat("autoscaler", silence_bound(period));
            tasks.spawn("autoscaler", autoscaler.clone().run(beat, shutdown.clone()));
        }

        // The reconciler, and the change feed that tells it which groups to look at.
        let reconciler = Reconciler::new(
            reconcile::Context {
                controller_name: config.controller_name.clone(),
                allow_empty: config.allow_empty,
                desired: shared.desired.clone(),
                tenancy: shared.tenancy.clone(),
                confirmations: shared.confirmations.clone(),
                prune_report: shared.prune_report.clone(),
                status: status.clone(),
                autoscaler: autoscaling.then(|| autoscaler.clone()),
                telemetry: telemetry.clone(),
            },
            zone_list.clone(),
            queue.clone(),
            config.concurrency,
        );
        if reconciling {
            {
                let reconciler = reconciler.clone();
                shared
                    .liveness
                    .check("reconciler", move || reconciler.stalled(RECONCILE_STALL));
            }
            tasks.spawn(
                "change feed",
                enqueue_changes(
                    shared.desired.clone(),
                    shared.ready.clone(),
                    shared.confirmations.clone(),
                    shared.prune_report.clone(),
                    queue.clone(),
                    shutdown.clone(),
                ),
            );
            tasks.spawn(
                "reconciler",
                reconciler.clone().run(workers, shutdown.clone()),
            );
        }

        // The load balancers: one managed HAProxy, members following the published instances.
        // Only a controller that reconciles runs it (a standby's reader never does).
        if reconciling {
            let lbc = &config.load_balancers;
            let driver = Arc::new(Haproxy::new(
                &config.controller_name,
                lbc.haproxy(),
                lbc.run_dir(&config.controller_name),
            ));
            let settings = lb::members::Settings {
                config: lbc.clone(),
                zones: config
                    .zones
                    .iter()
                    .map(|z| {
                        let addr = zone_address(lbc, &z.name, z.docker_host.as_deref());
                        (z.name.clone(), addr)
                    })
                    .collect(),
                reserved: vec![config.listen],
            };
            let ctx = lb::run::Context {
                desired: shared.desired.clone(),
                status: shared.status.clone(),
                board: shared.lb_status.clone(),
                settings,
            };
            let beat = shared
                .liveness
                .beat("load balancers", silence_bound(lb::run::PERIOD));
            tasks.spawn(
                "load balancers",
                lb::run::run(ctx, driver, beat, shutdown.clone()),
            );
        }

        // The HTTP API: reads everything, writes only files (and confirmations, rescans).
        let api = Arc::new(apply::Context {
            config: config.clone(),
            desired: shared.desired.clone(),
            status: shared.status.clone(),
            lb_status: shared.lb_status.clone(),
            status_problems: shared.status_problems.clone(),
            ready: shared.ready.clone(),
            rescan: shared.rescan.clone(),
            loads,
            confirmations: shared.confirmations.clone(),
            prune_report: shared.prune_report.clone(),
            health: shared.health.clone(),
            liveness: shared.liveness.clone(),
            tenancy: shared.tenancy.clone(),
            autoscaler: autoscaler.clone(),
            lease: leases.as_ref().map(|l| l.identity().clone()),
            write_limit: RateLimiter::new(config.api.writes_per_second, config.api.write_burst),
            push_limit: RateLimiter::new(config.api.pushes_per_second, config.api.push_burst),
            write_locks: NamespaceLocks::default(),
            file_locks: FileLocks::default(),
            telemetry,
            history,
            exec_sessions: Arc::default(),
        });
        if let Some(listener) = listener {
            let stop = shutdown.clone();
            tasks.spawn_fallible(
                "api server",
                apply::serve(listener, api.clone(), async move { stop.cancelled().await }),
            );
        }

        Handle {
            shared,
            zones: zone_list,
            queue,
            status,
            autoscaler,
            reconciler,
            api,
            shutdown,
            supervisor: Some(tokio::spawn(tasks.run())),
            final_flush: status_writer,
        }
    }
}

/// Directories below the watched one that hold no manifests: the sidecar status tree, when the
/// configuration put it there (made absolute by `ms controller` before the build).
fn ignored_dirs(config: &Config) -> Vec<PathBuf> {
    match (&config.status_mode, &config.status_dir) {
        (StatusMode::Sidecar, Some(root)) if root.starts_with(&config.dir) => vec![root.clone()],
        _ => Vec::new(),
    }
}

/// A running controller: its parts, for callers that look inside (tests, the scale model), and
/// the supervisor of its tasks. Dropping it stops everything.
pub struct Handle {
    /// The handles the parts were given.
    pub shared: Arc<Shared>,
    /// The zones, in configuration order.
    pub zones: Vec<Arc<Zone>>,
    /// The reconcile queue.
    pub queue: Arc<Queue<ObjectKey>>,
    /// The status writer.
    pub status: Arc<StatusSync>,
    pub autoscaler: Arc<Autoscaler>,
    pub reconciler: Arc<Reconciler>,
    /// What the HTTP API works with (also when it is not served).
    pub api: Arc<apply::Context>,
    shutdown: CancellationToken,
    supervisor: Option<JoinHandle<Result<(), TaskEnded>>>,
    /// Whether [`Handle::wait`] ends with a bounded status flush.
    final_flush: bool,
}

impl Handle {
    /// Starts the shutdown (as SIGTERM does).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for the shutdown, or for an essential task to end early (which fails readiness and
    /// starts the shutdown), then for the tasks to stop, then writes what status it can within
    /// [`FINAL_FLUSH`].
    ///
    /// # Errors
    /// The first essential task that ended before shutdown, or failed.
    pub async fn wait(mut self) -> Result<(), TaskEnded> {
        let outcome = match self.supervisor.take() {
            Some(supervisor) => supervisor.await.unwrap_or_else(|e| {
                Err(TaskEnded {
                    task: "supervisor".into(),
                    why: e.to_string(),
                })
            }),
            None => Ok(()),
        };
        if self.final_flush {
            let status = self.status.clone();
            let deadline = std::time::Instant::now() + FINAL_FLUSH;
            let flushed = tokio::task::spawn_blocking(move || status.flush(Some(deadline))).await;
            if let Err(e) = flushed {
                return outcome.and(Err(TaskEnded {
                    task: "final status flush".into(),
                    why: e.to_string(),
                }));
            }
        }
        outcome
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
