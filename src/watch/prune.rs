//! When a group may be deleted for lack of a manifest ("pruned"), and the confirmations that
//! lift a hold.
//!
//! A read that yields nothing is not proof that the user wants deletion: an emptied, unmounted
//! or mistyped directory, a folder that cannot be read, a manifest that fails to parse (the group
//! may have moved into it) all look like "these groups are gone". [`judge`] is the one pure rule
//! that decides which deletions go ahead; the watcher applies it to the groups a reload would
//! drop (they keep running as last loaded), the reconciler to groups found on the engines that
//! no snapshot of this process ever defined (a restart over an empty directory or a typo).
//!
//! # Rules
//! A group that would be deleted is held when, in this order:
//! 1. it was confirmed by name (`ms delete asg NAME`): never held;
//! 2. any manifest file or directory fails to load: held ([`HoldReason::FileErrors`]);
//! 3. `--allow-empty` was given: not held;
//! 4. no group would remain at all: held ([`HoldReason::Empty`]);
//! 5. no group of its namespace would remain: held ([`HoldReason::Namespace`]);
//! 6. at least 4 groups are known and more than half would go at once: held
//!    ([`HoldReason::Majority`]).
//!
//! A hold is lifted by putting the manifest back, by `ms delete asg NAME -n NS` (which works
//! whether the file is still there or not), or (rules 4 to 6) by `--allow-empty`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::manifest::ObjectKey;
use crate::util::unpoisoned::LockExt;

/// How long an explicit `ms delete` confirms the deletion of a group.
pub const CONFIRMATION_WINDOW: Duration = Duration::from_secs(600);

/// Why a deletion is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldReason {
    /// Manifests fail to load (first one given): the group may be defined in one of them.
    FileErrors { first: PathBuf, count: usize },
    /// No group would remain at all.
    Empty { groups: usize },
    /// Every group of the namespace would go.
    Namespace { groups: usize },
    /// More than half of all groups would go at once.
    Majority { deleting: usize, total: usize },
}

impl HoldReason {
    /// One sentence saying why `key` is not deleted and how to confirm it.
    pub fn message(&self, key: &ObjectKey) -> String {
        let why = match self {
            HoldReason::FileErrors { first, count } => format!(
                "{count} manifest path(s) fail to load (first: {}), and the group may be defined \
                 there: it is not deleted until they load",
                first.display()
            ),
            HoldReason::Empty { groups } => format!(
                "the manifest directory defines no autoscaling group (emptied, unmounted, wrong \
                 --dir or checkout?) while {groups} group(s) would be deleted: nothing is deleted"
            ),
            HoldReason::Namespace { groups } => format!(
                "every group of namespace `{}` ({groups}) would be deleted at once (folder \
                 removed or not mounted?): they are kept",
                key.namespace
            ),
            HoldReason::Majority { deleting, total } => {
                format!("{deleting} of {total} groups would be deleted at once: they are kept")
            }
        };
        let flag = match self {
            HoldReason::FileErrors { .. } => "",
            _ => ", or restart the controller with --allow-empty",
        };
        format!(
            "deletion of autoscaling group {}/{} held: {why}. Put its manifest back, or confirm \
             with `ms delete asg {} -n {}`{flag}",
            key.namespace, key.name, key.name, key.namespace
        )
    }
}

/// Decides which of the groups in `deleting` are held (the others may be deleted).
///
/// `remaining` are the groups that stay; `error_paths` the manifest paths that fail to load
/// (first one first); `confirmed` says whether a group was confirmed by name. Pure.
///
/// # Guarantees
/// - A confirmed group is never held; with `error_paths` non-empty every other group is.
/// - With `allow_empty` only file errors hold.
/// - The result's keys are a subset of `deleting`.
pub fn judge(
    deleting: &BTreeSet<ObjectKey>,
    remaining: &BTreeSet<ObjectKey>,
    error_paths: &[PathBuf],
    allow_empty: bool,
    confirmed: &dyn Fn(&ObjectKey) -> bool,
) -> BTreeMap<ObjectKey, HoldReason> {
    let open: Vec<&ObjectKey> = deleting.iter().filter(|k| !confirmed(k)).collect();
    let mut held = BTreeMap::new();
    if open.is_empty() {
        return held;
    }
    if let Some(first) = error_paths.first() {
        for k in open {
            held.insert(
                k.clone(),
                HoldReason::FileErrors {
                    first: first.clone(),
                    count: error_paths.len(),
                },
            );
        }
        return held;
    }
    if allow_empty {
        return held;
    }
    if remaining.is_empty() {
        for k in &open {
            held.insert((*k).clone(), HoldReason::Empty { groups: open.len() });
        }
        return held;
    }
    let total = deleting.len() + remaining.len();
    let majority = total >= 4 && open.len() * 2 > total;
    for k in open {
        let in_namespace = |set: &mut dyn Iterator<Item = &ObjectKey>| {
            set.filter(|o| o.namespace == k.namespace).count()
        };
        let left = in_namespace(&mut remaining.iter());
        let reason = if left == 0 {
            HoldReason::Namespace {
                groups: in_namespace(&mut deleting.iter()),
            }
        } else if majority {
            HoldReason::Majority {
                deleting: deleting.len(),
                total,
            }
        } else {
            continue;
        };
        held.insert(k.clone(), reason);
    }
    held
}

/// Deletions confirmed by name (`ms delete`), shared by the API, the watcher and the reconciler.
#[derive(Debug, Default)]
pub struct Confirmations {
    until: Mutex<BTreeMap<ObjectKey, Instant>>,
    changed: Notify,
}

impl Confirmations {
    /// Confirms the deletion of `key` for [`CONFIRMATION_WINDOW`].
    pub fn confirm(&self, key: &ObjectKey) {
        let mut until = self.until.locked();
        let now = Instant::now();
        until.retain(|_, t| *t > now);
        until.insert(key.clone(), now + CONFIRMATION_WINDOW);
        drop(until);
        // One consumer (the controller's enqueue loop): a stored permit is never lost.
        self.changed.notify_one();
    }

    /// Whether the deletion of `key` is confirmed now.
    pub fn is_confirmed(&self, key: &ObjectKey) -> bool {
        let until = self.until.locked();
        until.get(key).is_some_and(|t| *t > Instant::now())
    }

    /// Completes at the next [`Confirmations::confirm`].
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

/// Groups found on the engines whose deletion the reconciler holds, or whose deletion keeps
/// failing: what `ms get problems` shows besides the manifests' own problems.
#[derive(Debug, Default)]
pub struct Report {
    groups: Mutex<BTreeMap<ObjectKey, String>>,
}

impl Report {
    /// Sets (or, with `None`, clears) the problem of `key`.
    pub fn set(&self, key: &ObjectKey, problem: Option<String>) {
        let mut g = self.groups.locked();
        match problem {
            Some(p) => {
                g.insert(key.clone(), p);
            }
            None => {
                g.remove(key);
            }
        }
    }

    /// Every reported group and its problem.
    pub fn all(&self) -> BTreeMap<ObjectKey, String> {
        self.groups.locked().clone()
    }

    /// Whether `key` is reported.
    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.groups.locked().contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;

    fn k(ns: &str, name: &str) -> ObjectKey {
        ObjectKey::new(Kind::AutoScalingGroup, ns, name)
    }

    fn set(keys: &[(&str, &str)]) -> BTreeSet<ObjectKey> {
        keys.iter().map(|(ns, n)| k(ns, n)).collect()
    }

    fn none(_: &ObjectKey) -> bool {
        false
    }

    #[test]
    fn deleting_one_group_of_several_in_its_namespace_goes_ahead() {
        let held = judge(
            &set(&[("default", "b")]),
            &set(&[("default", "a")]),
            &[],
            false,
            &none,
        );
        assert!(held.is_empty(), "{held:?}");
    }

    #[test]
    fn an_empty_directory_holds_everything_unless_allowed_or_confirmed() {
        let deleting = set(&[("default", "a"), ("team", "b")]);
        let held = judge(&deleting, &BTreeSet::new(), &[], false, &none);
        assert_eq!(held.len(), 2);
        assert_eq!(held[&k("default", "a")], HoldReason::Empty { groups: 2 });
        assert!(judge(&deleting, &BTreeSet::new(), &[], true, &none).is_empty());
        let only_a = |key: &ObjectKey| key.name == "a";
        let held = judge(&deleting, &BTreeSet::new(), &[], false, &only_a);
        assert_eq!(held.keys().collect::<Vec<_>>(), vec![&k("team", "b")]);
    }

    #[test]
    fn a_whole_namespace_is_held_but_not_the_others() {
        let held = judge(
            &set(&[("team-b", "x"), ("team-b", "y"), ("default", "gone")]),
            &set(&[("default", "a"), ("default", "c"), ("team-c", "z")]),
            &[],
            false,
            &none,
        );
        assert_eq!(held.len(), 2, "{held:?}");
        assert_eq!(held[&k("team-b", "x")], HoldReason::Namespace { groups: 2 });
        assert!(!held.contains_key(&k("default", "gone")));
    }

    #[test]
    fn more_than_half_of_four_or_more_is_held() {
        let remaining = set(&[("default", "a"), ("default", "b")]);
        let two = set(&[("default", "c"), ("default", "d")]);
        assert!(judge(&two, &remaining, &[], false, &none).is_empty());
        let three = set(&[("default", "c"), ("default", "d"), ("default", "e")]);
        let held = judge(&three, &remaining, &[], false, &none);
        assert_eq!(held.len(), 3);
        assert_eq!(
            held[&k("default", "c")],
            HoldReason::Majority {
                deleting: 3,
                total: 5
            }
        );
        // Fewer than 4 groups: 2 of 3 is no majority rule (the namespace rule still applies).
        let held = judge(
            &set(&[("default", "b"), ("default", "c")]),
            &set(&[("default", "a")]),
            &[],
            false,
            &none,
        );
        assert!(held.is_empty());
    }

    #[test]
    fn file_errors_hold_every_unconfirmed_deletion_even_with_allow_empty() {
        let errors = vec![PathBuf::from("/m/a.yaml"), PathBuf::from("/m/b")];
        let deleting = set(&[("default", "x"), ("default", "y")]);
        let held = judge(&deleting, &set(&[("default", "a")]), &errors, true, &none);
        assert_eq!(held.len(), 2);
        let msg = held[&k("default", "x")].message(&k("default", "x"));
        assert!(msg.contains("/m/a.yaml"), "{msg}");
        assert!(msg.contains("ms delete asg x -n default"), "{msg}");
        assert!(!msg.contains("--allow-empty"), "{msg}");
        let confirmed = |key: &ObjectKey| key.name == "x";
        let held = judge(&deleting, &BTreeSet::new(), &errors, false, &confirmed);
        assert_eq!(held.keys().collect::<Vec<_>>(), vec![&k("default", "y")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_confirmation_lasts_its_window() {
        let c = Confirmations::default();
        assert!(!c.is_confirmed(&k("default", "a")));
        c.confirm(&k("default", "a"));
        assert!(c.is_confirmed(&k("default", "a")));
        assert!(!c.is_confirmed(&k("default", "b")));
        tokio::time::advance(CONFIRMATION_WINDOW + Duration::from_secs(1)).await;
        assert!(!c.is_confirmed(&k("default", "a")));
    }
}
