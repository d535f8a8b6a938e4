//! The OS watch on the directory, and which of its events may change what the directory defines.

use std::fs;
use std::path::{Component, Path};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::warn;

use super::load::{is_ignored_name, is_manifest_name};

/// Identity of the directory itself, to notice it being replaced (`rm -r` + `mkdir`, a new mount).
pub(super) fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    let m = fs::metadata(dir).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        Some((0, 0))
    }
}

pub(super) type EventTx = mpsc::UnboundedSender<notify::Result<notify::Event>>;

/// The OS watcher on the directory, re-created when the directory appears or is replaced.
#[derive(Default)]
pub(super) struct DirWatch {
    watcher: Option<notify::RecommendedWatcher>,
    watched: Option<(u64, u64)>,
}

impl DirWatch {
    pub(super) fn ensure(&mut self, dir: &Path, tx: &EventTx) {
        let id = dir_identity(dir);
        if id.is_some() && id == self.watched && self.watcher.is_some() {
            return;
        }
        self.watcher = None;
        self.watched = id;
        if id.is_none() {
            return;
        }
        let tx = tx.clone();
        let result = notify::recommended_watcher(move |res| {
            // The receiver only goes away when the loop ends.
            let _ = tx.send(res);
        })
        .and_then(|mut w| w.watch(dir, RecursiveMode::Recursive).map(|()| w));
        match result {
            Ok(w) => self.watcher = Some(w),
            Err(e) => warn!(
                dir = %dir.display(),
                "cannot watch the manifest directory ({e}); changes are picked up by the periodic rescan only"
            ),
        }
    }
}

/// Whether an event may change what the directory defines.
pub(super) fn is_relevant(dir: &Path, event: &notify::Result<notify::Event>) -> bool {
    let event = match event {
        Ok(e) => e,
        Err(e) => {
            warn!("file watch error: {e}; rescanning");
            return true;
        }
    };
    // Opening and reading (our own rescans included) changes nothing.
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.is_empty() || event.paths.iter().any(|p| is_relevant_path(dir, p))
}

fn is_relevant_path(dir: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    if rel.as_os_str().is_empty() {
        return true; // the directory itself
    }
    let hidden = rel.components().any(|c| match c {
        Component::Normal(n) => is_ignored_name(&n.to_string_lossy()),
        _ => false,
    });
    if hidden {
        return false;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Directories (existing, or removed ones, which usually have no extension) may hold manifests.
    is_manifest_name(&name) || path.extension().is_none() || path.is_dir()
}
