//! Publishes group status: into the shared state (API) at once, into the manifest files shortly
//! after (coalesced), only when it changed, never into a file that currently fails to parse.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::controller::Shared;
use crate::manifest::ObjectKey;
use crate::status::GroupStatus;
use crate::statusfile::{self, OwnWrites, WriteOutcome};
use crate::unpoisoned::{LockExt, RwLockExt};

/// Hands status from the reconciler to the API and to the files.
pub struct StatusSync {
    shared: Arc<Shared>,
    own: Arc<OwnWrites>,
    /// Groups whose file needs its status block rewritten.
    dirty: Mutex<BTreeSet<ObjectKey>>,
    wake: Notify,
    /// Quiet time before writing, so a scale-out of 50 is a handful of writes, not 100.
    coalesce: Duration,
}

impl StatusSync {
    pub fn new(shared: Arc<Shared>, own: Arc<OwnWrites>, coalesce: Duration) -> Arc<Self> {
        Arc::new(StatusSync {
            shared,
            own,
            dirty: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
            coalesce,
        })
    }

    /// Records the latest status of `key`; schedules a file write if it changed.
    pub fn publish(&self, key: &ObjectKey, status: GroupStatus) {
        let mut map = self.shared.status.write_locked();
        if map.get(key) == Some(&status) {
            return;
        }
        map.insert(key.clone(), status);
        drop(map);
        self.dirty.locked().insert(key.clone());
        self.wake.notify_one();
    }

    /// Drops the status of a deleted group.
    pub fn forget(&self, key: &ObjectKey) {
        self.shared.status.write_locked().remove(key);
    }

    /// Writes dirty statuses until `shutdown` (and once more at shutdown).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let stop = tokio::select! {
                _ = self.wake.notified() => false,
                _ = shutdown.cancelled() => true,
            };
            if !stop {
                tokio::select! {
                    _ = tokio::time::sleep(self.coalesce) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.flush()).await;
            if stop || shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// Writes every dirty status now.
    pub fn flush(&self) {
        let keys: Vec<ObjectKey> = std::mem::take(&mut *self.dirty.locked())
            .into_iter()
            .collect();
        if keys.is_empty() {
            return;
        }
        let desired = self.shared.desired.borrow().clone();
        let mut reload = false;
        for key in keys {
            let Some(entry) = desired.objects.get(&key) else {
                continue;
            };
            // A file that fails to parse is never modified: the user is editing it.
            if desired.file_errors.contains_key(&entry.file) {
                continue;
            }
            let Some(status) = self.shared.status.read_locked().get(&key).cloned() else {
                continue;
            };
            let block = statusfile::render_status(&status);
            match statusfile::write_status_recorded(
                &entry.file,
                entry.doc_index,
                &key,
                Some(&block),
                &self.own,
            ) {
                Ok(WriteOutcome::Written) => {
                    debug!(group = %key, file = %entry.file.display(), "status written")
                }
                Ok(WriteOutcome::Unchanged) | Ok(WriteOutcome::Gone) => {}
                Ok(WriteOutcome::UserEdited) => {
                    debug!(group = %key, "file changed under us; the user's edit wins and is reloaded");
                    reload = true;
                }
                Err(e) => {
                    warn!(group = %key, file = %entry.file.display(), error = %e, "cannot write status")
                }
            }
        }
        if reload {
            self.shared.rescan.notify_one();
        }
    }
}
