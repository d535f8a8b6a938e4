//! `postStart` hooks: run once a new instance started; the instance is not ready until its hook
//! succeeded, and one whose hook failed counts as failed (replaced through the crash backoff).
//!
//! # Restart
//! Which hooks are pending lives in memory. A controller restarted while a hook ran cannot
//! tell whether it succeeded; running it twice could be worse than not at all, so it is not
//! run again: the instance counts as started (documented in docs/lifecycle.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::hooks;
use super::queue::Queue;
use crate::engine::{Engine, Observed};
use crate::manifest::{Hook, ObjectKey};
use crate::util::unpoisoned::LockExt;

/// Where a hook is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Running,
    Failed(String),
}

/// The `postStart` hooks of every group, by container id.
#[derive(Debug, Default)]
pub(super) struct PostStarts {
    phases: Arc<Mutex<HashMap<String, Phase>>>,
    tasks: TaskTracker,
}

impl PostStarts {
    /// Runs `hook` against the container just launched (`o`), in the background; its group is
    /// looked at again when it ends.
    pub fn start(
        &self,
        key: &ObjectKey,
        engine: Arc<dyn Engine>,
        o: &Observed,
        hook: Hook,
        queue: Arc<Queue<ObjectKey>>,
    ) {
        self.phases.locked().insert(o.id.clone(), Phase::Running);
        let (phases, key, id, name, ports) = (
            self.phases.clone(),
            key.clone(),
            o.id.clone(),
            o.name.clone(),
            o.ports.clone(),
        );
        self.tasks.spawn(async move {
            let r = hooks::run(&engine, &id, &ports, &hook).await;
            let mut p = phases.locked();
            // Forgotten meanwhile: the instance went already.
            if let Some(phase) = p.get_mut(&id) {
                match r {
                    Ok(note) => {
                        info!(group = %key, instance = %name, "postStart ok ({note})");
                        p.remove(&id);
                    }
                    Err(why) => {
                        warn!(group = %key, instance = %name, "postStart failed: {why}");
                        *phase = Phase::Failed(why);
                    }
                }
            }
            drop(p);
            queue.now(key);
        });
    }

    /// Whether the hook of container `id` still runs.
    pub fn pending(&self, id: &str) -> bool {
        self.phases.locked().get(id) == Some(&Phase::Running)
    }

    /// Why the hook of container `id` failed, if it did.
    pub fn failed(&self, id: &str) -> Option<String> {
        match self.phases.locked().get(id) {
            Some(Phase::Failed(why)) => Some(why.clone()),
            _ => None,
        }
    }

    /// Forgets container `id` (it is being removed).
    pub fn forget(&self, id: &str) {
        self.phases.locked().remove(id);
    }
}
