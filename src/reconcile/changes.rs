//! The change feed: turns each new desired-state snapshot (and each confirmed deletion) into
//! the keys to reconcile, and marks the controller ready after the first full load.
//!
//! Like kube-runtime's trigger streams, it says only *which* group to look at, never what
//! changed: the reconcile re-reads everything itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::queue::Queue;
use crate::manifest::{Kind, ObjectKey};
use crate::watch::prune::{Confirmations, Report};
use crate::watch::store::DesiredReader;

/// Sets `ready` after the first full load, and enqueues every group whose own spec, launch
/// configuration, manifest errors or held deletion changed (deleted groups too: their
/// containers go), and the groups whose deletion the reconciler holds (`held`).
pub async fn enqueue_changes(
    mut rx: DesiredReader,
    ready: Arc<AtomicBool>,
    confirmations: Arc<Confirmations>,
    held: Arc<Report>,
    queue: Arc<Queue<ObjectKey>>,
    shutdown: CancellationToken,
) {
    let mut prev: HashMap<ObjectKey, String> = HashMap::new();
    loop {
        let snapshot = rx.borrow_and_update().clone();
        if snapshot.loaded {
            ready.store(true, Ordering::SeqCst);
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
        for key in held.all().into_keys() {
            queue.now(key);
        }
        tokio::select! {
            // The watcher gone is the watcher's failure to report, not this feed's: wait for
            // the shutdown the supervisor starts when it sees the watcher end.
            r = rx.changed() => if r.is_err() { shutdown.cancelled().await; return },
            _ = confirmations.changed() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
