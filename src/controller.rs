//! Wiring: the shared state the watcher, the reconciler and the apply endpoint all see.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::manifest::ObjectKey;
use crate::status::GroupStatus;
use crate::store::Desired;

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
}

/// Options of `ms controller` (flags override the configuration file).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub allow_empty: bool,
}

/// Runs the controller until SIGINT/SIGTERM.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let _ = opts;
    anyhow::bail!("controller not wired yet")
}
