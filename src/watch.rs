//! Loads and watches the manifest directory (GitOps style) and publishes desired-state snapshots.
//!
//! Every change ends in one full, consistent reload: file events only say "look again", after a
//! short quiet time, so an editor's rename-over-write, swap files or a `git checkout` touching
//! fifty files all produce one snapshot. A periodic rescan covers missed events.
//!
//! The rules that make a typo or an accident harmless live in the pure [`build_snapshot`]:
//! a file with errors keeps its last valid objects, and a reload that would delete every group at
//! once is refused unless explicitly allowed.
//!
//! # Layout
//! The first stage of the pipeline: the directory in, desired-state snapshots out. This file
//! holds the options ([`WatchOptions`]) and re-exports the entry points.
//! - `load`: the files below the directory, each parsed once per content ([`Loader`],
//!   [`load_dir`]).
//! - `snapshot`: the snapshot rules, pure ([`build_snapshot`], [`same_meaning`],
//!   [`reference_warnings`]).
//! - `dirwatch`: the OS watch on the directory, and which events matter.
//! - `run`: the watch loop ([`run()`]): debounce, rescan, settle deletions, publish.
//! - [`store`]: the snapshot itself ([`store::Desired`]) and its reader.
//! - [`prune`]: when a group may be deleted for lack of a manifest, and confirmations by name.
//! - [`dirlock`]: one controller per manifest directory.
//! - `targets`: the files behind symlinks, watched too.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub mod dirlock;
mod dirwatch;
#[cfg(test)]
mod fixtures;
mod load;
pub mod prune;
mod run;
mod snapshot;
pub mod store;
mod targets;

use crate::config::tenancy::Tenancy;
use crate::health::liveness::Beat;
use crate::util::tickets::Tickets;
use dirwatch::EventTx;

pub use load::{load_dir, Loader, ParseFn};
pub use run::run;
pub use snapshot::{build_snapshot, build_snapshot_confirmed, reference_warnings, same_meaning};

/// How the directory is watched.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The manifest directory (read recursively).
    pub dir: PathBuf,
    /// Quiet time after the last file event before reloading (at most 1 s after the first event).
    pub debounce: Duration,
    /// Full rescan period: the safety net for missed file events.
    pub rescan_period: Duration,
    /// Accept a reload that deletes every group at once (`--allow-empty`).
    pub allow_empty: bool,
    /// Deletions confirmed by name (`ms delete`): never held, never made to settle.
    pub confirmations: Arc<prune::Confirmations>,
    /// Told, after each load, which files changed (content, creation, removal), so the status
    /// writer compares its blocks with them (level-triggered status).
    pub changed_files: Option<mpsc::UnboundedSender<Vec<PathBuf>>>,
    /// Directories below `dir` that hold no manifests (the sidecar status tree, when the user
    /// put it there): never loaded.
    pub ignore: Vec<PathBuf>,
    /// The per-namespace limits every manifest is checked against (host access, maxObjects).
    pub tenancy: Arc<Tenancy>,
    /// Touched after every rescan (`/healthz`).
    pub beat: Beat,
    /// Each load notes the last ticket taken before it began, and serves it once its snapshot
    /// is published (or found unchanged): the API's writes wait for their own load.
    pub loads: Arc<Tickets>,
}

impl WatchOptions {
    /// Options with the defaults: 50 ms debounce, 30 s rescan, empty reloads refused.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WatchOptions {
            dir: dir.into(),
            debounce: Duration::from_millis(50),
            rescan_period: Duration::from_secs(30),
            allow_empty: false,
            confirmations: Arc::default(),
            changed_files: None,
            ignore: Vec::new(),
            tenancy: Arc::default(),
            beat: Beat::detached(),
            loads: Arc::default(),
        }
    }
}

/// A reload that drops objects is believed only when a read at least this much later still
/// drops them: a file read while it is being rewritten (truncated, not yet written), a `git
/// checkout` halfway through or a rename in progress all look like a deletion for a moment.
pub const DELETION_SETTLE: Duration = Duration::from_millis(500);
