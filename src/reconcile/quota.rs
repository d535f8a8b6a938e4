//! Namespace quotas at launch time: how many of a group's planned creations fit its namespace's
//! `maxContainers`, `maxCpus` and `maxMemoryMiB`, counting what runs and what is being created.
//!
//! Groups of one namespace reconcile in parallel, so each pass reserves what it is about to
//! create before creating it; the reservation ends when the pass ends (by then its containers
//! are in the zones' caches and counted there). This is the hard guarantee: the API's checks
//! of desired capacities only give an early, clearer answer. A pass's takes of stopped warm
//! pool spares are reserved with its creations (a start adds a container the caches did not
//! count); paused and running spares are counted already (`pool::cut_to_quota`).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::tenancy::{ContainerLimits, Tenancy, Usage};
use crate::util::unpoisoned::LockExt;

/// Creations in flight per namespace.
#[derive(Debug, Default)]
pub struct QuotaLedger {
    inflight: Mutex<HashMap<String, Usage>>,
}

/// Creations reserved by one pass; released on drop.
#[derive(Debug)]
pub struct Reservation<'a> {
    ledger: &'a QuotaLedger,
    namespace: String,
    usage: Usage,
    /// How many creations were granted.
    pub granted: u32,
    /// Why fewer than wanted were granted (names the quota and where it is configured).
    pub refused: Option<String>,
}

impl QuotaLedger {
    /// Reserves up to `wanted` containers with `each` limits in `namespace`, where `running`
    /// already runs (from the zones' caches).
    pub fn reserve<'a>(
        &'a self,
        tenancy: &Tenancy,
        namespace: &str,
        running: Usage,
        wanted: u32,
        each: ContainerLimits,
    ) -> Reservation<'a> {
        let mut inflight = self.inflight.locked();
        let mut used = running;
        if let Some(u) = inflight.get(namespace) {
            used.add(*u);
        }
        let (granted, refused) = tenancy.room(namespace, used, wanted, each);
        let usage = Usage::of(granted, each);
        inflight
            .entry(namespace.to_string())
            .or_default()
            .add(usage);
        Reservation {
            ledger: self,
            namespace: namespace.to_string(),
            usage,
            granted,
            refused,
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut inflight = self.ledger.inflight.locked();
        if let Some(u) = inflight.get_mut(&self.namespace) {
            u.sub(self.usage);
            if u.containers == 0 {
                inflight.remove(&self.namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn parallel_passes_of_one_namespace_share_its_quota() {
        let limits: BTreeMap<String, crate::config::tenancy::NamespaceLimits> =
            serde_yaml_ng::from_str("{team-a: {maxContainers: 5}}").unwrap();
        let t = Tenancy::new(limits, None, vec![]);
        let ledger = QuotaLedger::default();
        let each = (Some(1.0), Some(64));
        let running = Usage::of(1, each);
        let a = ledger.reserve(&t, "team-a", running, 3, each);
        assert_eq!((a.granted, a.refused.is_none()), (3, true));
        let b = ledger.reserve(&t, "team-a", running, 3, each);
        assert_eq!(b.granted, 1);
        assert!(b
            .refused
            .as_deref()
            .unwrap()
            .contains("at most 5 containers"));
        // Another namespace is not affected.
        let c = ledger.reserve(&t, "team-b", Usage::default(), 3, each);
        assert_eq!(c.granted, 3);
        drop((a, b));
        let d = ledger.reserve(&t, "team-a", running, 9, each);
        assert_eq!(d.granted, 4);
    }
}
