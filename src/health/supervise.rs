//! Essential tasks: if one ends before shutdown (returns, fails or panics), the controller stops
//! being ready, logs why, and exits non-zero, so systemd or another supervisor restarts it.
//!
//! A controller whose watcher or observer died would otherwise keep answering `/readyz` while
//! doing nothing. The order is deliberate: readiness fails first, then, after
//! [`READINESS_GRACE`] (so a load balancer or probe sees it), everything is shut down.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::util::unpoisoned::{panic_message, RwLockExt};

/// Time between readiness failing and the shutdown that follows.
pub const READINESS_GRACE: Duration = Duration::from_secs(1);

/// How long the other tasks get to finish after a shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// The controller's own health, as `/readyz` reports it.
#[derive(Debug, Default)]
pub struct Health {
    failure: RwLock<Option<String>>,
}

impl Health {
    /// Marks the controller as failed (the first reason wins).
    pub fn fail(&self, why: impl Into<String>) {
        let mut f = self.failure.write_locked();
        if f.is_none() {
            *f = Some(why.into());
        }
    }

    /// Why the controller failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.read_locked().clone()
    }
}

/// An essential task that ended before shutdown.
#[derive(Debug, thiserror::Error)]
#[error("essential task `{task}` ended: {why}")]
pub struct TaskEnded {
    pub task: String,
    pub why: String,
}

/// How a task ended.
type Outcome = Result<(), String>;

/// Runs the essential tasks of a controller.
pub struct Supervisor {
    tasks: JoinSet<(String, Outcome)>,
    shutdown: CancellationToken,
    health: Arc<Health>,
}

impl Supervisor {
    /// A supervisor that cancels `shutdown` when a task ends early and reports it in `health`.
    pub fn new(shutdown: CancellationToken, health: Arc<Health>) -> Self {
        Supervisor {
            tasks: JoinSet::new(),
            shutdown,
            health,
        }
    }

    /// Runs `task`; it must only return once shutdown has begun.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.spawn_fallible(name, async move {
            task.await;
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// Runs `task`; an error ends the controller whenever it comes.
    pub fn spawn_fallible<E: std::fmt::Display + Send + 'static>(
        &mut self,
        name: impl Into<String>,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let name = name.into();
        let task = crate::util::failpoint::end_task_early(&name, task);
        self.tasks.spawn(async move {
            let outcome = match AssertUnwindSafe(task).catch_unwind().await {
                Ok(Some(Ok(()))) | Ok(None) => Ok(()),
                Ok(Some(Err(e))) => Err(e.to_string()),
                Err(panic) => Err(format!("panicked: {}", panic_message(panic.as_ref()))),
            };
            (name, outcome)
        });
    }

    /// Waits until shutdown (then for every task, at most [`DRAIN`]), or until a task ends
    /// before it: then fails readiness, waits [`READINESS_GRACE`], starts the shutdown and
    /// returns the task's end as the error.
    ///
    /// # Errors
    /// The first essential task that ended before shutdown, or failed.
    pub async fn run(mut self) -> Result<(), TaskEnded> {
        let mut first: Option<TaskEnded> = None;
        loop {
            let ended = tokio::select! {
                r = self.tasks.join_next() => r,
                _ = self.shutdown.cancelled() => break,
            };
            let Some(joined) = ended else { break };
            let (task, outcome) = match joined {
                Ok(x) => x,
                Err(e) => ("?".to_string(), Err(e.to_string())),
            };
            if self.shutdown.is_cancelled() && outcome.is_ok() {
                continue;
            }
            let why = match outcome {
                Ok(()) => "it returned before shutdown".to_string(),
                Err(e) => e,
            };
            let ended = TaskEnded { task, why };
            error!(
                "{ended}; the controller stops (exit code 1) so that its supervisor restarts it"
            );
            self.health.fail(ended.to_string());
            first = Some(ended);
            tokio::time::sleep(READINESS_GRACE).await;
            self.shutdown.cancel();
            break;
        }
        self.drain(&mut first).await;
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits for the remaining tasks after shutdown began, recording the first failure.
    async fn drain(&mut self, first: &mut Option<TaskEnded>) {
        let deadline = tokio::time::Instant::now() + DRAIN;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(None) => return,
                Ok(Some(Ok((task, Ok(()))))) => debug!(task, "stopped"),
                Ok(Some(Ok((task, Err(why))))) => {
                    warn!(task, why, "failed while stopping");
                    if first.is_none() {
                        *first = Some(TaskEnded { task, why });
                    }
                }
                Ok(Some(Err(e))) => warn!(error = %e, "a task failed while stopping"),
                Err(_) => {
                    warn!(
                        left = self.tasks.len(),
                        "tasks did not stop within {DRAIN:?}; leaving them"
                    );
                    self.tasks.abort_all();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ends_early_fails_readiness_then_stops_everything() {
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::default());
        let mut s = Supervisor::new(shutdown.clone(), health.clone());
        let stop = shutdown.clone();
        s.spawn("observer", async move { stop.cancelled().await });
        s.spawn("watcher", async {
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        let run = tokio::spawn(s.run());
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let failure = health.failure().expect("readiness failed");
        assert!(failure.contains("`watcher` ended"), "{failure}");
        assert!(
            !shutdown.is_cancelled(),
            "readiness fails before the shutdown"
        );
        let err = run.await.unwrap().unwrap_err();
        assert_eq!(err.task, "watcher");
        assert!(shutdown.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_reported_with_its_message() {
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::default());
        let mut s = Supervisor::new(shutdown.clone(), health.clone());
        s.spawn("status writer", async { panic!("disk on fire") });
        let err = s.run().await.unwrap_err();
        assert_eq!(err.task, "status writer");
        assert!(err.why.contains("disk on fire"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_shutdown_is_ok() {
        let shutdown = CancellationToken::new();
        let mut s = Supervisor::new(shutdown.clone(), Arc::default());
        let stop = shutdown.clone();
        s.spawn("reconciler", async move { stop.cancelled().await });
        shutdown.cancel();
        s.run().await.unwrap();
    }
}
