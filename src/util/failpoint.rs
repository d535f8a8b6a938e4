//! Fault injection for end-to-end tests: `MS_FAILPOINTS=name=arg,...` makes named places
//! misbehave, so a test against the real binary can prove that supervision catches what it
//! claims to catch. Never set in production; unset, each check is one look at a `OnceLock`.
//!
//! Failpoints:
//! - `task-exit=NAME:SECS`: the essential task NAME (`watcher`, `status writer`, ...) returns
//!   SECS seconds after it started, as a task that died would.
//! - `reconcile-panic=NAMESPACE/NAME:N`: the first N reconciles of that group panic.
//! - `remove-error=NAMESPACE/NAME:N`: the first N removals of that group's containers fail, as
//!   with an engine that refuses every stop and remove.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable read once at the first check.
pub const ENV: &str = "MS_FAILPOINTS";

fn points() -> &'static HashMap<String, String> {
    static POINTS: OnceLock<HashMap<String, String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (!k.trim().is_empty()).then(|| (k.trim().to_string(), v.trim().to_string()))
            })
            .collect()
    })
}

/// `SUBJECT:N` of failpoint `name` when it names `subject`.
fn count_for(name: &str, subject: &str) -> Option<u64> {
    let (s, n) = points().get(name)?.rsplit_once(':')?;
    (s == subject).then(|| n.parse().ok()).flatten()
}

/// Runs `task`; `None` when failpoint `task-exit` cut it short (as if it had returned).
pub fn end_task_early<T: Send + 'static>(
    name: &str,
    task: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = Option<T>> + Send + 'static {
    let after = count_for("task-exit", name).map(Duration::from_secs);
    async move {
        match after {
            None => Some(task.await),
            Some(d) => {
                tokio::select! {
                    t = task => Some(t),
                    _ = tokio::time::sleep(d) => {
                        tracing::warn!("failpoint task-exit: ending the task on purpose");
                        None
                    }
                }
            }
        }
    }
}

/// Panics (failpoint `reconcile-panic`) while the configured count for `group` lasts.
pub fn reconcile_panic(group: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    if let Some(n) = count_for("reconcile-panic", group) {
        if HITS.fetch_add(1, Ordering::SeqCst) < n {
            panic!("failpoint reconcile-panic: {group}");
        }
    }
}

/// Whether failpoint `remove-error` fails this removal of a container of `group`.
pub fn remove_error(group: &str) -> bool {
    static HITS: AtomicU64 = AtomicU64::new(0);
    count_for("remove-error", group).is_some_and(|n| HITS.fetch_add(1, Ordering::SeqCst) < n)
}
