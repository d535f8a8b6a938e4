//! The work queue of the reconciler: one slot per key, earliest run time wins, never two runs of
//! the same key at once (a key scheduled while it runs is run again right after).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::util::unpoisoned::LockExt;
use tokio::time::Instant;

/// A delay queue keyed by object, in the manner of kube-runtime's scheduler + runner.
pub struct Queue<K> {
    inner: Mutex<Inner<K>>,
    wake: Notify,
}

struct Inner<K> {
    /// When each waiting key should run.
    due: HashMap<K, (Instant, u64)>,
    /// The same entries, ordered by run time (the `u64` breaks ties in insertion order).
    order: BTreeSet<(Instant, u64, K)>,
    /// Keys being reconciled right now, with when each started.
    running: HashMap<K, Instant>,
    /// Keys scheduled while running: they go back into `due` when their run finishes.
    rerun: HashMap<K, Instant>,
    seq: u64,
}

impl<K: Clone + Eq + Hash + Ord> Default for Queue<K> {
    fn default() -> Self {
        Queue {
            inner: Mutex::new(Inner {
                due: HashMap::new(),
                order: BTreeSet::new(),
                running: HashMap::new(),
                rerun: HashMap::new(),
                seq: 0,
            }),
            wake: Notify::new(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> Inner<K> {
    fn insert(&mut self, key: K, at: Instant) {
        if let Some(&(old, seq)) = self.due.get(&key) {
            if old <= at {
                return;
            }
            self.order.remove(&(old, seq, key.clone()));
        }
        self.seq += 1;
        self.due.insert(key.clone(), (at, self.seq));
        self.order.insert((at, self.seq, key));
    }
}

/// Observers and the autoscaler tell the reconciler about a group through this.
impl crate::engine::observe::Enqueue for Queue<crate::manifest::ObjectKey> {
    fn enqueue(&self, key: crate::manifest::ObjectKey) {
        self.now(key);
    }
}

impl<K: Clone + Eq + Hash + Ord> Queue<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `key` at `at` at the latest (an earlier schedule wins).
    pub fn schedule(&self, key: K, at: Instant) {
        let mut inner = self.inner.locked();
        if inner.running.contains_key(&key) {
            let slot = inner.rerun.entry(key).or_insert(at);
            *slot = (*slot).min(at);
            return;
        }
        inner.insert(key, at);
        drop(inner);
        self.wake.notify_one();
    }

    /// Runs `key` as soon as possible.
    pub fn now(&self, key: K) {
        self.schedule(key, Instant::now());
    }

    /// Waits for the next due key and marks it running. Call [`Queue::done`] when finished.
    pub async fn next(&self) -> K {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_until = {
                let mut inner = self.inner.locked();
                match inner.order.first().cloned() {
                    Some((at, seq, key)) if at <= Instant::now() => {
                        inner.order.remove(&(at, seq, key.clone()));
                        inner.due.remove(&key);
                        inner.running.insert(key.clone(), Instant::now());
                        return key;
                    }
                    Some((at, _, _)) => Some(at),
                    None => None,
                }
            };
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = &mut notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `key` finished; `requeue` schedules its next run (merged with any schedule made
    /// while it ran: the earliest wins).
    pub fn done(&self, key: &K, requeue: Option<Instant>) {
        let mut inner = self.inner.locked();
        inner.running.remove(key);
        let rerun = inner.rerun.remove(key);
        let at = match (rerun, requeue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = at {
            inner.insert(key.clone(), at);
            drop(inner);
            self.wake.notify_one();
        }
    }

    /// Number of keys waiting (not running).
    pub fn len(&self) -> usize {
        self.inner.locked().due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Err` when the queue is not making progress: a key has been due for longer than `limit`
    /// without being picked up (every worker busy or stuck), or one run has lasted longer than
    /// `limit` (a reconcile that hangs). For `/healthz`.
    ///
    /// # Errors
    /// A sentence naming the key and for how long.
    pub fn stalled(&self, limit: std::time::Duration) -> Result<String, String>
    where
        K: std::fmt::Display,
    {
        let inner = self.inner.locked();
        let now = Instant::now();
        if let Some((at, _, key)) = inner.order.first() {
            let late = now.saturating_duration_since(*at);
            if late > limit {
                return Err(format!(
                    "{key} has been due for {:.0}s without a worker picking it up",
                    late.as_secs_f64()
                ));
            }
        }
        if let Some((key, since)) = inner.running.iter().min_by_key(|(_, t)| **t) {
            let ran = now.saturating_duration_since(*since);
            if ran > limit {
                return Err(format!(
                    "the reconcile of {key} has been running for {:.0}s",
                    ran.as_secs_f64()
                ));
            }
        }
        Ok(format!(
            "{} due, {} running",
            inner.due.len(),
            inner.running.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn earlier_schedule_wins_and_keys_are_deduplicated() {
        let q = Queue::new();
        let t0 = Instant::now();
        q.schedule("a", t0 + Duration::from_secs(10));
        q.schedule("a", t0 + Duration::from_secs(1));
        q.schedule("a", t0 + Duration::from_secs(5));
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, "a");
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_key_is_not_handed_out_twice_but_rerun_after() {
        let q = Queue::new();
        q.now("a");
        assert_eq!(q.next().await, "a");
        q.now("a"); // triggered while running
        q.now("b");
        assert_eq!(q.next().await, "b", "a must wait for its run to finish");
        q.done(&"a", None);
        assert_eq!(q.next().await, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_come_out_in_due_order() {
        let q = Queue::new();
        let t0 = Instant::now();
        q.schedule("late", t0 + Duration::from_secs(3));
        q.schedule("early", t0 + Duration::from_secs(1));
        q.now("now");
        assert_eq!(q.next().await, "now");
        assert_eq!(q.next().await, "early");
        assert_eq!(q.next().await, "late");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn done_with_requeue_schedules_the_next_run() {
        let q = Queue::new();
        q.now("a");
        let k = q.next().await;
        let t0 = Instant::now();
        q.done(&k, Some(t0 + Duration::from_secs(2)));
        assert_eq!(q.next().await, "a");
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
    }
}
