//! The runner: waits once for the first full observation, then takes keys from the queue and
//! runs one pass per key at a time, turning each pass's result into when to look again.
//!
//! The contract is kube-runtime's: a pass is `reconcile(key) -> Result<Action, ReconcileError>`
//! and an error goes through `error_policy(key, &error) -> Action`. A pass never learns why it
//! runs, so it must be idempotent (level-triggered).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::error::ReconcileError;
use super::memory::BACKOFF_BASE;
use super::{now_secs, Reconciler};
use crate::manifest::ObjectKey;
use crate::status::{self, Condition};
use crate::util::unpoisoned::panic_message;

/// What to do with a key after a pass: look again after a while, or only when something
/// changes (a manifest, an engine event, the autoscaler) or at the periodic resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Look again after `d` (or sooner, if something changes).
    pub fn requeue(d: Duration) -> Self {
        Action {
            requeue_after: Some(d),
        }
    }

    /// Look again at `t` (now, if that has passed).
    pub fn requeue_at(t: Instant) -> Self {
        Action::requeue(t.saturating_duration_since(Instant::now()))
    }

    /// Look again only when something changes.
    pub fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }

    /// This action, looking again after `d` at the latest.
    pub fn at_most(self, d: Duration) -> Self {
        Action::requeue(self.requeue_after.map_or(d, |r| r.min(d)))
    }

    /// The delay before the next look, if any.
    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// How soon a pass called before the first full observation is tried again.
const NOT_OBSERVED_RETRY: Duration = Duration::from_millis(100);

impl Reconciler {
    /// Waits for the first full observation (the desired state loaded, every zone listed or
    /// found unreachable), then pops keys from the queue and reconciles them, up to `workers`
    /// groups at once.
    ///
    /// # Guarantees
    /// - No pass runs on a partial view: an empty store or an unlisted zone looks like
    ///   "nothing is desired" or "nothing runs" (kube-runtime's `wait_until_ready`).
    /// - Never two passes of one group at once (the queue); a panic in one pass becomes a
    ///   condition and a retry with backoff, and touches no other group.
    pub async fn run(self: Arc<Self>, workers: usize, shutdown: CancellationToken) {
        tokio::select! {
            _ = self.first_observation() => {}
            _ = shutdown.cancelled() => return,
        }
        self.observed.store(true, Ordering::SeqCst);
        let limit = Arc::new(tokio::sync::Semaphore::new(workers.max(1)));
        loop {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => p.expect("semaphore open"),
                _ = shutdown.cancelled() => break,
            };
            let key = tokio::select! {
                k = self.queue.next() => k,
                _ = shutdown.cancelled() => break,
            };
            let this = self.clone();
            tokio::spawn(async move {
                // Bound by `let`, so the pass (and the memory it holds) is dropped before
                // `error_policy` looks at the memory.
                let started = std::time::Instant::now();
                let result = AssertUnwindSafe(this.reconcile(&key)).catch_unwind().await;
                let took = started.elapsed();
                let action = match result {
                    Ok(Ok(action)) => {
                        this.ctx.telemetry.reconciled(took, None);
                        action
                    }
                    Ok(Err(e)) => {
                        this.ctx.telemetry.reconciled(took, Some(e.reason()));
                        this.error_policy(&key, &e)
                    }
                    Err(panic) => {
                        let e = ReconcileError::Panicked(panic_message(panic.as_ref()));
                        this.ctx.telemetry.reconciled(took, Some(e.reason()));
                        this.error_policy(&key, &e)
                    }
                };
                let at = action.requeue_after().map(|d| Instant::now() + d);
                this.queue.done(&key, at);
                drop(permit);
            });
        }
        self.actuator.finish_removals().await;
    }

    /// `Err` when the reconciler is not making progress (see [`Queue::stalled`](super::queue::Queue::stalled)); keys that
    /// wait for the first full observation do not count. For `/healthz`.
    ///
    /// # Errors
    /// A sentence naming the key and for how long.
    pub fn stalled(&self, limit: Duration) -> Result<String, String> {
        if !self.observed.load(Ordering::SeqCst) {
            return Ok("waiting for the first full observation".into());
        }
        self.queue.stalled(limit)
    }

    /// Returns once the desired state is loaded and every zone has been listed (or found
    /// unreachable) once. Neither goes back: the store publishes only loaded snapshots, and a
    /// zone once known stays reachable or unreachable.
    async fn first_observation(&self) {
        let mut desired = self.ctx.desired.clone();
        if desired.wait_for(|d| d.loaded).await.is_err() {
            // The watcher is gone before its first load: nothing to reconcile, ever.
            return std::future::pending().await;
        }
        for zone in &self.zones {
            zone.observed().await;
        }
    }

    /// When to look again at `key` after `error`.
    ///
    /// A pass records its own failures in the group's memory before it publishes the status
    /// (so that status already shows them); here they only decide the requeue: after the
    /// group's backoff. A panic published nothing, so it is recorded and published here.
    pub fn error_policy(&self, key: &ObjectKey, error: &ReconcileError) -> Action {
        match error {
            ReconcileError::NotObserved => Action::requeue(NOT_OBSERVED_RETRY),
            ReconcileError::Panicked(_) => self.panicked(key, error),
            _ => Action::requeue_at(
                self.memory
                    .lease(key)
                    .held()
                    .unwrap_or_else(|| Instant::now() + BACKOFF_BASE),
            ),
        }
    }

    /// Records a panic of one pass of `key`: logged, shown as `Degraded=True
    /// ReconcilePanicked`, retried after the group's backoff.
    fn panicked(&self, key: &ObjectKey, error: &ReconcileError) -> Action {
        error!(group = %key, "{error}");
        let hash = {
            let desired = self.ctx.desired.borrow().clone();
            desired
                .group(key)
                .map(|_| self.resolve(key, &desired, None).target.spec_hash)
        };
        let hold = {
            let mut mem = self.memory.lease(key);
            mem.fail(error.clone(), hash.as_deref().unwrap_or(""));
            mem.hold_until
        };
        if hash.is_some() {
            // The pass that panicked published nothing: say it now.
            let mut st = self.ctx.status.get(key).unwrap_or_default();
            st.conditions.retain(|c| c.type_ != status::DEGRADED);
            st.conditions.push(Condition {
                type_: status::DEGRADED.to_string(),
                status: "True".into(),
                reason: error.reason().into(),
                message: error.to_string(),
                last_transition_time: now_secs(),
            });
            self.ctx.status.publish(key, st);
        }
        Action::requeue_at(hold.unwrap_or_else(|| Instant::now() + BACKOFF_BASE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_action_requeues_after_its_delay_or_awaits_a_change() {
        assert_eq!(
            Action::requeue(Duration::from_secs(2)).requeue_after(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(Action::await_change().requeue_after(), None);
        let past = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            Action::requeue_at(past).requeue_after(),
            Some(Duration::ZERO)
        );
        assert_eq!(
            Action::requeue_at(Instant::now() + Duration::from_secs(3)).requeue_after(),
            Some(Duration::from_secs(3))
        );
    }
}
