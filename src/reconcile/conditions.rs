//! The conditions of a group's status, from what one pass saw: a pure function, table-tested.
//!
//! # Rules
//! - `Ready`: every desired instance runs the current spec and is ready, no more run, and none
//!   is still stopping; `WaitingForLaunchConfiguration` while the spec names a missing one.
//! - `Progressing`: the first of rolling update, replacing unhealthy instances, scaling out,
//!   scaling in, stopping, rebalancing, waiting for readiness that applies; else `Converged`.
//! - `Progressing`: the first of protected instances holding back a scale-in or a rollout
//!   (`ProtectedFromScaleIn`), rolling update, scaling out, scaling in, stopping, rebalancing,
//!   waiting for readiness that applies; else `Converged`.
//! - The status a pass publishes before it acts (`in_flight`) says what it is doing in the same
//!   condition: the reason above, its message followed by "; launching N, removing M".
//! - `Degraded`: every problem, in a fixed order (the spec's, the quota, unreachable zones,
//!   refused removals, the last failure); the first gives the reason, the messages are joined.
//! - `Invalid`: the manifest's first error while the last valid version keeps running.
//! - `DeletionHeld`: only while the manifest's deletion is held.
//! - A condition keeps its `lastTransitionTime` while its status stays the same.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::ReconcileError;
use super::plan::{Counts, CreateReason, Plan, RemoveReason};
use crate::status::{self, Condition};

/// What the conditions are built from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The capacity to converge to.
    pub desired: u32,
    /// The group's zones (only their unreachability degrades it).
    pub zones: &'a [String],
    pub counts: Counts,
    /// Containers of the group still being stopped.
    pub stopping: usize,
    /// Set while the launch configuration is missing (the sentence to show).
    pub waiting_for: Option<&'a str>,
    /// What the group still needs after this pass.
    pub remaining: &'a Plan,
    /// Problems of the spec itself (unknown zones).
    pub problems: &'a [ReconcileError],
    /// The quota that held creations back in this pass.
    pub quota: Option<&'a ReconcileError>,
    /// Zones that do not answer, with the last error.
    pub unreachable: &'a [(String, String)],
    /// A removal the engine refused (retried in the background).
    pub removal: Option<&'a ReconcileError>,
    /// The last failure, and how long creations are still held back because of it.
    pub failure: Option<(&'a ReconcileError, Option<Duration>)>,
    /// The first error of the group's manifest (the last valid version keeps running).
    pub manifest_error: Option<&'a str>,
    /// Why the group's deletion is held.
    pub deletion_held: Option<&'a str>,
    /// What the pass is doing now, for the status it publishes before acting (`None` in the
    /// status of what it sees after acting).
    pub in_flight: Option<InFlight>,
}

/// The steps a pass is carrying out, counted for the status published before it acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InFlight {
    /// Instances being launched (new containers, or warm pool members taken).
    pub launching: usize,
    /// Instances being removed (drained, stopped, removed in the background).
    pub removing: usize,
}

impl InFlight {
    /// "launching 3", "removing 1", "launching 1, removing 1"; `None` when nothing is.
    fn words(self) -> Option<String> {
        match (self.launching, self.removing) {
            (0, 0) => None,
            (l, 0) => Some(format!("launching {l}")),
            (0, r) => Some(format!("removing {r}")),
            (l, r) => Some(format!("launching {l}, removing {r}")),
        }
    }
}

/// Whether the group is `Ready`: exactly the desired instances, all current and ready, and no
/// container of it still stopping.
pub fn is_ready(desired: u32, counts: Counts, stopping: usize) -> bool {
    counts.ready >= desired
        && counts.updated >= desired
        && counts.current == desired
        && stopping == 0
}

/// The group's conditions; `previous` are the ones last published (their transition times
/// carry over), `now` the time of a transition.
pub fn conditions(i: &Inputs<'_>, previous: &[Condition], now: DateTime<Utc>) -> Vec<Condition> {
    let mut conds: Vec<(&str, bool, String, String)> = vec![ready(i)];
    let doing = i.in_flight.and_then(InFlight::words);
    conds.push(match progressing(i) {
        Some((reason, msg)) => match doing {
            Some(d) => (
                status::PROGRESSING,
                true,
                reason.into(),
                format!("{msg}; {d}"),
            ),
            None => (status::PROGRESSING, true, reason.into(), msg),
        },
        None => (
            status::PROGRESSING,
            false,
            "Converged".into(),
            "the group matches its spec".into(),
        ),
    });
    conds.push(degraded(i));
    conds.push(match i.manifest_error {
        None => (
            status::INVALID,
            false,
            "Valid".into(),
            "the manifest is valid".into(),
        ),
        Some(e) => (
            status::INVALID,
            true,
            "ManifestError".into(),
            format!("the manifest has errors, the last valid version keeps running: {e}"),
        ),
    });
    if let Some(held) = i.deletion_held {
        conds.push((
            status::DELETION_HELD,
            true,
            "ManifestGone".into(),
            held.to_string(),
        ));
    }
    conds
        .into_iter()
        .map(|(t, s, reason, message)| {
            let status_str = if s { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == t && c.status == status_str)
                .map_or(now, |c| c.last_transition_time);
            Condition {
                type_: t.to_string(),
                status: status_str.to_string(),
                reason,
                message,
                last_transition_time: since,
            }
        })
        .collect()
}

fn ready(i: &Inputs<'_>) -> (&'static str, bool, String, String) {
    let of = format!("{} of {} instances ready", i.counts.ready, i.desired);
    match i.waiting_for {
        Some(w) => (
            status::READY,
            false,
            "WaitingForLaunchConfiguration".into(),
            w.to_string(),
        ),
        None if is_ready(i.desired, i.counts, i.stopping) => {
            (status::READY, true, "AllInstancesReady".into(), of)
        }
        None => (status::READY, false, "NotAllInstancesReady".into(), of),
    }
}

fn progressing(i: &Inputs<'_>) -> Option<(&'static str, String)> {
    let (c, desired, remaining) = (i.counts, i.desired, i.remaining);
    if i.waiting_for.is_some() {
        None
    } else if remaining.held_by_protection > 0 {
        Some((
            "ProtectedFromScaleIn",
            format!(
                "{} instance(s) the group would remove are protected from scale-in ({} instances, {desired} desired): ms unprotect instance NAME, or wait for the protection to expire",
                remaining.held_by_protection, c.current
            ),
        ))
    } else if remaining
        .create
        .iter()
        .any(|c| c.reason == CreateReason::Rollout)
        || remaining
            .remove
            .iter()
            .any(|r| r.reason == RemoveReason::Rollout)
        || c.updated < c.current
    {
        Some((
            "RollingUpdate",
            format!(
                "rolling update: {} of {desired} instances updated",
                c.updated
            ),
        ))
    } else if c.unhealthy > 0 {
        Some((
            "ReplacingUnhealthy",
            format!(
                "{} instance(s) failed liveness and are being replaced",
                c.unhealthy
            ),
        ))
    } else if c.current < desired {
        Some((
            "ScalingOut",
            format!("{} of {desired} instances running", c.current),
        ))
    } else if c.current > desired {
        Some((
            "ScalingIn",
            format!("{} instances, {desired} desired", c.current),
        ))
    } else if i.stopping > 0 {
        Some((
            "ScalingIn",
            format!("{} instance(s) still stopping", i.stopping),
        ))
    } else if !remaining.is_empty() {
        Some(("Rebalancing", "moving instances between zones".to_string()))
    } else if c.ready < c.current {
        Some((
            "WaitingForReadiness",
            format!("{} of {} instances ready", c.ready, c.current),
        ))
    } else {
        None
    }
}

fn degraded(i: &Inputs<'_>) -> (&'static str, bool, String, String) {
    let mut problems: Vec<(&str, String)> = i
        .problems
        .iter()
        .chain(i.quota)
        .map(|e| (e.reason(), e.to_string()))
        .collect();
    for (zone, error) in i.unreachable.iter().filter(|(z, _)| i.zones.contains(z)) {
        let e = ReconcileError::ZoneUnreachable {
            zone: zone.clone(),
            error: error.clone(),
        };
        problems.push((e.reason(), e.to_string()));
    }
    if let Some(e) = i.removal {
        problems.push((e.reason(), e.to_string()));
    }
    if let Some((e, held_for)) = i.failure {
        let mut m = e.to_string();
        if let Some(d) = held_for {
            m.push_str(&format!(
                "; next launch attempt in {:.0}s",
                d.as_secs_f64().ceil()
            ));
        }
        problems.push((e.reason(), m));
    }
    match problems.first() {
        None => (
            status::DEGRADED,
            false,
            "AsExpected".into(),
            "no failures".into(),
        ),
        Some((reason, _)) => (
            status::DEGRADED,
            true,
            reason.to_string(),
            problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

#[cfg(test)]
mod tests;
