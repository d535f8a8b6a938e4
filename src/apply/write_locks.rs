//! Serializes the API's file edits per namespace, not globally: one tenant's large applies never
//! queue another tenant's `ms scale` (issue 9 measured 0.01 s becoming 2.9 s behind one lock).
//!
//! Two edits of one namespace still run one after the other (each reads the files the previous
//! one wrote); edits of different namespaces that meet in one file are caught by the writer's
//! compare-before-write and retried.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::util::unpoisoned::LockExt;

/// One async lock per namespace, made on first use.
#[derive(Debug, Default)]
pub struct NamespaceLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl NamespaceLocks {
    /// Locks every namespace of `namespaces`, in sorted order (so two requests over the same
    /// namespaces never wait for each other crosswise). Held until the guards drop.
    pub async fn lock<'a>(
        &self,
        namespaces: impl IntoIterator<Item = &'a str>,
    ) -> Vec<OwnedMutexGuard<()>> {
        let sorted: BTreeSet<&str> = namespaces.into_iter().collect();
        let locks: Vec<Arc<tokio::sync::Mutex<()>>> = {
            let mut map = self.locks.locked();
            sorted
                .iter()
                .map(|ns| map.entry(ns.to_string()).or_default().clone())
                .collect()
        };
        let mut guards = Vec::with_capacity(locks.len());
        for l in locks {
            guards.push(l.lock_owned().await);
        }
        guards
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn namespaces_do_not_wait_for_each_other() {
        let locks = NamespaceLocks::default();
        let held = locks.lock(["team-a"]).await;
        // Another namespace proceeds at once.
        let other = tokio::time::timeout(Duration::from_millis(100), locks.lock(["team-b"])).await;
        assert!(other.is_ok());
        drop(other);
        // The same namespace waits.
        let same =
            tokio::time::timeout(Duration::from_millis(50), locks.lock(["team-a", "team-b"])).await;
        assert!(same.is_err());
        drop(held);
        let both =
            tokio::time::timeout(Duration::from_millis(100), locks.lock(["team-b", "team-a"]))
                .await;
        assert!(both.is_ok());
    }
}
