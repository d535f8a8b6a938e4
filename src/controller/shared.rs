//! The handles a running controller's parts share, created once by the builder and handed out
//! one by one: each part receives only those it needs, and no part below the controller
//! receives (or imports) this bag.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::tenancy::Tenancy;
use crate::config::Config;
use crate::health::liveness::Liveness;
use crate::health::supervise::Health;
use crate::status::sync::WriteProblems;
use crate::status::StatusBoard;
use crate::watch::prune::{Confirmations, Report};
use crate::watch::store::DesiredReader;

/// The handles shared by the parts of one running controller.
pub struct Shared {
    pub config: Arc<Config>,
    /// Latest desired-state snapshot (written by the watcher only).
    pub desired: DesiredReader,
    /// Latest status of every group (written by the status writer only).
    pub status: Arc<StatusBoard>,
    /// Each load balancer's latest status (written by the load balancer loop).
    pub lb_status: Arc<crate::lb::LbBoard>,
    /// Set once the first full load of the directory is done (by the change feed).
    pub ready: Arc<AtomicBool>,
    /// Asks the watcher to rescan the directory now (after the API wrote a file, or a user edit
    /// raced a status write), so a change does not wait for the debounce of file events.
    pub rescan: Arc<Notify>,
    /// Deletions confirmed by name (`ms delete`): the watcher and the reconciler never hold them.
    pub confirmations: Arc<Confirmations>,
    /// Groups on the engines whose deletion the reconciler holds or keeps failing at.
    pub prune_report: Arc<Report>,
    /// Set when an essential task ended: `/readyz` fails from then on.
    pub health: Arc<Health>,
    /// Manifests whose status cannot be written, and why (written by the status writer).
    pub status_problems: WriteProblems,
    /// Per-namespace limits (from `config.namespaces`).
    pub tenancy: Arc<Tenancy>,
    /// What `/healthz` reports: the loops' heartbeats and the queue's progress.
    pub liveness: Arc<Liveness>,
}

impl Shared {
    /// Fresh handles over a desired-state reader: no status yet, not ready.
    pub fn new(config: Config, desired: DesiredReader) -> Shared {
        Shared {
            tenancy: Arc::new(config.tenancy()),
            config: Arc::new(config),
            desired,
            status: Arc::default(),
            lb_status: Arc::default(),
            ready: Arc::default(),
            rescan: Arc::default(),
            confirmations: Arc::default(),
            prune_report: Arc::default(),
            health: Arc::default(),
            status_problems: WriteProblems::default(),
            liveness: Arc::default(),
        }
    }
}
