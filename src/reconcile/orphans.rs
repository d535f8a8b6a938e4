//! Groups found on the engines that no snapshot of this process ever defined: deleted only when
//! [`crate::watch::prune::judge`] lets them go.
//!
//! The watcher holds the deletions it sees happen (a group in one snapshot, gone from the next).
//! After a restart it has seen nothing: an empty directory, a wrong `--dir` or a manifest with a
//! typo make the engines' containers look like groups without a manifest. This gate applies the
//! same rules to them, with the engines as the list of groups that would go. Groups the watcher
//! let go are not judged twice: they were defined in a snapshot of this process ("known").

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tracing::{error, info};

use crate::engine::observe::Zone;
use crate::manifest::ObjectKey;
use crate::util::unpoisoned::LockExt;
use crate::watch::prune::{self, Confirmations, Report};
use crate::watch::store::Desired;

/// The gate, shared by every reconcile.
pub(super) struct OrphanGate {
    /// Groups defined in a snapshot this process saw, or whose deletion was let go.
    known: Mutex<HashSet<ObjectKey>>,
    confirmations: Arc<Confirmations>,
    report: Arc<Report>,
    allow_empty: bool,
}

impl OrphanGate {
    pub(super) fn new(
        confirmations: Arc<Confirmations>,
        report: Arc<Report>,
        allow_empty: bool,
    ) -> Self {
        OrphanGate {
            known: Mutex::new(HashSet::new()),
            confirmations,
            report,
            allow_empty,
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<ObjectKey>> {
        self.known.locked()
    }

    /// Records that `key` is defined in the current snapshot (a manifest came back: whatever
    /// was held or failing about its deletion is moot).
    pub(super) fn defined(&self, key: &ObjectKey) {
        if !self.known().contains(key) {
            self.known().insert(key.clone());
        }
        if self.report.contains(key) {
            self.report.set(key, None);
        }
    }

    /// Records that nothing of `key` is left on the engines: a later container with its labels
    /// is judged afresh.
    pub(super) fn gone(&self, key: &ObjectKey) {
        self.known().remove(key);
        self.report.set(key, None);
    }

    /// Whether the containers of `key`, which `desired` does not define, may be removed.
    /// `Err` carries the reason (already reported for `ms get problems`).
    pub(super) fn may_prune(
        &self,
        key: &ObjectKey,
        desired: &Desired,
        zones: &[Arc<Zone>],
    ) -> Result<(), String> {
        if self.known().contains(key) {
            return Ok(());
        }
        let remaining: BTreeSet<ObjectKey> = desired.groups().map(|(k, _, _)| k.clone()).collect();
        let deleting: BTreeSet<ObjectKey> = {
            let known = self.known();
            zones
                .iter()
                .flat_map(|z| z.group_keys())
                .chain(std::iter::once(key.clone()))
                .filter(|k| !remaining.contains(k) && !known.contains(k))
                .collect()
        };
        let errors: Vec<PathBuf> = desired.file_errors.keys().cloned().collect();
        let confirmations = &self.confirmations;
        let held = prune::judge(&deleting, &remaining, &errors, self.allow_empty, &|k| {
            confirmations.is_confirmed(k)
        });
        match held.get(key) {
            Some(reason) => {
                let message = reason.message(key);
                if !self.report.contains(key) {
                    error!(group = %key, "{message}");
                }
                self.report.set(key, Some(message.clone()));
                Err(message)
            }
            None => {
                if self.report.contains(key) {
                    info!(group = %key, "deletion no longer held; its containers are removed");
                }
                self.report.set(key, None);
                self.known().insert(key.clone());
                Ok(())
            }
        }
    }
}
