//! Watches the real files behind symlinked manifests.
//!
//! An edit of a symlink's target changes nothing in the watched directory, so the directory's
//! watch never hears of it and the change would wait for the periodic rescan. The directories
//! holding the targets are watched too (not recursively), and an event on a target asks the
//! loop to look again. (Symlinked *directories* need nothing: the recursive watch follows them.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{RecursiveMode, Watcher};
use tracing::warn;

use super::EventTx;
use crate::util::unpoisoned::LockExt;

/// The real paths of the symlinked files among `files` (run off the async runtime: one `lstat`
/// per file, one `realpath` per link).
pub fn symlink_targets<'a>(files: impl Iterator<Item = &'a PathBuf>) -> BTreeSet<PathBuf> {
    files
        .filter(|f| {
            std::fs::symlink_metadata(f)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false)
        })
        .filter_map(|f| std::fs::canonicalize(f).ok())
        .collect()
}

/// The watch on the directories of the current targets.
#[derive(Default)]
pub struct TargetWatch {
    watcher: Option<notify::RecommendedWatcher>,
    /// Directories watched now.
    dirs: BTreeSet<PathBuf>,
    /// The targets whose events count (the watched directories hold other files too).
    targets: Arc<Mutex<BTreeSet<PathBuf>>>,
}

impl TargetWatch {
    /// Watches the directories of `targets` (re-creating the watcher when they change).
    pub fn update(&mut self, targets: BTreeSet<PathBuf>, events: &EventTx) {
        let dirs: BTreeSet<PathBuf> = targets
            .iter()
            .filter_map(|t| t.parent().map(Path::to_path_buf))
            .collect();
        *self.targets.locked() = targets;
        if dirs == self.dirs && (self.watcher.is_some() || dirs.is_empty()) {
            return;
        }
        self.watcher = None;
        self.dirs = dirs.clone();
        if dirs.is_empty() {
            return;
        }
        let filter = self.targets.clone();
        let tx = events.clone();
        let made = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let ours = match &res {
                Ok(e) => {
                    let targets = filter.locked();
                    e.paths.iter().any(|p| targets.contains(p))
                }
                Err(_) => true,
            };
            if ours {
                // A target lives outside the directory, where the loop's path rules (hidden
                // names, extensions) do not apply: an event without paths means "look again".
                let _ = tx.send(Ok(notify::Event::new(notify::EventKind::Any)));
            }
        });
        match made {
            Ok(mut w) => {
                for d in &dirs {
                    if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
                        warn!(dir = %d.display(), "cannot watch the target of a symlinked manifest ({e}); its edits wait for the periodic rescan");
                    }
                }
                self.watcher = Some(w);
            }
            Err(e) => warn!(
                "cannot watch the targets of symlinked manifests ({e}); their edits wait for the periodic rescan"
            ),
        }
    }
}
