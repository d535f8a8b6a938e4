//! Wiring: the shared state the watcher, the reconciler and the apply endpoint all see.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

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
}
