//! The pure planning function: desired group + observed containers → what to create and remove.
//!
//! Nothing here does I/O or reads a clock, so every rule (capacity, zone balancing, rollout,
//! replacement of failed instances) is a table-driven unit test. The executor in
//! `reconcile.rs` performs the plan.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::engine::{ContainerState, Health};
use crate::manifest::TerminationPolicy;

/// What the group wants, resolved from its manifest and its launch configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Capacity to converge to: `desiredCapacity` clamped to [min, max], 0 when stopped or deleted.
    pub desired: u32,
    /// Upper bound of the group (rebalancing may exceed it by one, never more).
    pub max_size: u32,
    /// The group's zones, in the order written (ties go to the earlier zone).
    pub zones: Vec<String>,
    /// Hash of the launch configuration as containers should run it.
    pub spec_hash: String,
    /// Extra instances allowed while rolling out (resolved count, at least 1 when `max_unavailable` is 0).
    pub max_surge: u32,
    /// Instances that may be unavailable while rolling out (resolved count).
    pub max_unavailable: u32,
    /// Which instances go first after zone balancing (empty: `[Default]`).
    pub termination_policies: Vec<TerminationPolicy>,
}

/// One container of the group, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub zone: String,
    pub state: ContainerState,
    pub health: Option<Health>,
    pub created: DateTime<Utc>,
    pub spec_hash: String,
    pub exit_code: Option<i64>,
    /// Not launched by this controller (no launch mark, or one made for another container):
    /// a copy started by hand with the group's labels. Surplus removes these first.
    pub foreign: bool,
    /// The verdict of the group's readiness probe (`healthCheck`); `None` without one. An
    /// instance not probed yet is `Some(false)`: not ready until its probe passes.
    pub probe_ready: Option<bool>,
    /// Failed its liveness probe `unhealthyThreshold` times in a row after the grace period:
    /// it is replaced.
    pub liveness_failed: bool,
    /// Protected from scale-in (`ms protect instance`): never chosen by a scale-in, a rebalance
    /// or a rolling update (which waits); still replaced when it fails.
    pub protected: bool,
    /// Its `postStart` hook has not succeeded yet: not ready.
    pub post_start_pending: bool,
}

impl Instance {
    /// Running, where the image has a health check healthy, and where the group has a readiness
    /// probe passing it.
    pub fn is_ready(&self) -> bool {
        self.state == ContainerState::Running
            && !matches!(self.health, Some(Health::Starting | Health::Unhealthy))
            && self.probe_ready != Some(false)
            && !self.post_start_pending
    }

    fn is_alive(&self) -> bool {
        !self.state.is_failed()
    }
}

/// Why an instance is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateReason {
    /// Fewer instances than desired (scale-out or first start).
    ScaleOut,
    /// Replaces an instance that failed or vanished.
    Replace,
    /// New launch configuration, or a zone removed from the group (rolling update).
    Rollout,
    /// Zones are uneven (a zone came back): launch into the emptiest first.
    Rebalance,
}

/// Why an instance is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveReason {
    /// Exited or dead: removed and replaced.
    Failed,
    /// More instances than desired: scale in (zone with most, oldest first).
    ScaleIn,
    /// Outdated launch configuration or a zone no longer in the group, replaced already.
    Rollout,
    /// Part of moving capacity back to an emptier zone.
    Rebalance,
    /// Failed its liveness probe: replaced (its replacement first while it still serves).
    Unhealthy,
}

/// One creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    pub zone: String,
    pub reason: CreateReason,
}

/// One removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remove {
    pub id: String,
    pub name: String,
    pub zone: String,
    pub reason: RemoveReason,
}

/// The plan for one pass. Empty when the group has converged.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub create: Vec<Create>,
    pub remove: Vec<Remove>,
    /// Instances the plan would remove (scale-in, rollout) but may not: they are protected.
    /// Not work to do (`is_empty` ignores it); the status says so.
    pub held_by_protection: u32,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.remove.is_empty()
    }
}

/// Counts a plan needs that the status shows too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Alive instances (not failed) in reachable zones.
    pub current: u32,
    /// Ready instances.
    pub ready: u32,
    /// Alive instances with the current spec in one of the group's zones.
    pub updated: u32,
    /// Alive instances that failed liveness (being replaced).
    pub unhealthy: u32,
}

/// Counts of a group's instances.
pub fn counts(target: &Target, instances: &[Instance]) -> Counts {
    let alive: Vec<&Instance> = instances.iter().filter(|i| i.is_alive()).collect();
    Counts {
        current: alive.len() as u32,
        ready: alive.iter().filter(|i| i.is_ready()).count() as u32,
        updated: alive.iter().filter(|i| is_current(target, i)).count() as u32,
        unhealthy: alive.iter().filter(|i| i.liveness_failed).count() as u32,
    }
}

fn is_current(target: &Target, i: &Instance) -> bool {
    i.spec_hash == target.spec_hash && target.zones.contains(&i.zone)
}

/// Decides one pass for one group.
///
/// `instances` are the group's containers in reachable zones (containers in unreachable zones
/// are unknown and must not be passed: their capacity is made up elsewhere). `reachable` is the
/// set of zones whose engine answers. Creations still in flight need no parameter: the actuator
/// writes each container it creates into the zone's cache at once (the expectations), so it is
/// among `instances` before any event or list reports it, and a lagging view never causes a
/// double creation.
///
/// # Guarantees
/// - Failed instances are always removed and always replaced (cooldowns never gate this).
/// - A rollout never drops below `desired - max_unavailable` ready instances and never exceeds
///   `desired + max_surge` instances.
/// - Rebalancing launches at most one instance above `desired` (so at most `max_size + 1`).
/// - An instance that failed liveness is removed at once when it is not ready, or while enough
///   others stay ready (`desired - max_unavailable`); else its replacement is launched first (at
///   least one above `desired`) and it goes once that one is ready.
pub fn plan(target: &Target, instances: &[Instance], reachable: &BTreeSet<String>) -> Plan {
    let mut out = Plan::default();
    let zones: Vec<&String> = target
        .zones
        .iter()
        .filter(|z| reachable.contains(*z))
        .collect();

    // 1. Failed instances go; their replacements are counted below as missing capacity.
    for i in instances.iter().filter(|i| !i.is_alive()) {
        out.remove.push(Remove {
            id: i.id.clone(),
            name: i.name.clone(),
            zone: i.zone.clone(),
            reason: RemoveReason::Failed,
        });
    }
    let failed_any = !out.remove.is_empty();

    let alive: Vec<&Instance> = instances.iter().filter(|i| i.is_alive()).collect();
    let (unhealthy, alive): (Vec<&Instance>, Vec<&Instance>) =
        alive.into_iter().partition(|i| i.liveness_failed);
    let (current, obsolete): (Vec<&Instance>, Vec<&Instance>) =
        alive.iter().partition(|i| is_current(target, i));
    let kept_unhealthy = replace_unhealthy(&mut out, target, &unhealthy, &alive);

    // Per-zone counts of current instances.
    let mut per_zone: BTreeMap<&str, u32> = zones.iter().map(|z| (z.as_str(), 0)).collect();
    for i in &current {
        if let Some(n) = per_zone.get_mut(i.zone.as_str()) {
            *n += 1;
        }
    }
    let cur = current.len() as u32;
    let desired = target.desired;
    if zones.is_empty() {
        // Nowhere to launch. Still remove what no longer belongs (failed, or a deleted group).
        if desired == 0 {
            remove_surplus(&mut out, &current, current.len(), RemoveReason::ScaleIn);
        }
        return out;
    }

    // 2. Too many current instances: scale in (see `pick_scale_in` for the order). One still
    // being started counts, but is not judged before it runs: it may be the very surplus (a
    // copy started by hand), so as many removals wait.
    let mut ready_scaled_in = 0u32;
    if cur > desired {
        let starting = current.iter().filter(|i| !removable(i)).count() as u32;
        let mut pool: Vec<&Instance> = current
            .iter()
            .copied()
            .filter(|i| removable(i) && !i.protected)
            .collect();
        let mut counts = per_zone.clone();
        let wanted = (cur - desired).saturating_sub(starting);
        for n in 0..wanted {
            let Some(victim) = pick_scale_in(target, &mut pool, &mut counts, &zones) else {
                out.held_by_protection = wanted - n;
                break;
            };
            ready_scaled_in += u32::from(victim.is_ready());
            out.remove.push(Remove {
                id: victim.id.clone(),
                name: victim.name.clone(),
                zone: victim.zone.clone(),
                reason: RemoveReason::ScaleIn,
            });
        }
    }

    // 3. Obsolete instances (old spec, or a zone no longer in the group): a rolling update.
    let current_ready = current.iter().filter(|i| i.is_ready()).count() as u32;
    if !obsolete.is_empty() {
        let total = cur + obsolete.len() as u32 + kept_unhealthy;
        let surge_room = desired
            .saturating_add(target.max_surge)
            .saturating_sub(total);
        let missing = desired.saturating_sub(cur);
        let creates = missing.min(surge_room);
        launch(
            &mut out,
            &mut per_zone,
            &zones,
            creates,
            CreateReason::Rollout,
        );

        // Remove unready obsolete instances freely; ready ones only while enough stay available.
        let min_available = desired.saturating_sub(target.max_unavailable);
        let obsolete_ready = obsolete.iter().filter(|i| i.is_ready()).count() as u32;
        let mut available = current_ready.saturating_sub(ready_scaled_in) + obsolete_ready;
        let mut ordered: Vec<&Instance> = obsolete.clone();
        ordered.sort_by(|a, b| {
            b.foreign
                .cmp(&a.foreign)
                .then(a.is_ready().cmp(&b.is_ready()))
                .then(by_policies(target, a, b))
        });
        // A rolling update waits for a protected instance (as ECS deployments wait for task
        // protection): it goes once unprotected or expired.
        out.held_by_protection += ordered
            .iter()
            .filter(|i| removable(i) && i.protected && !i.foreign)
            .count() as u32;
        for i in ordered
            .into_iter()
            .filter(|i| removable(i) && (!i.protected || i.foreign))
        {
            let ok = if !i.is_ready() {
                true
            } else if available > min_available {
                available -= 1;
                true
            } else {
                false
            };
            if ok {
                out.remove.push(Remove {
                    id: i.id.clone(),
                    name: i.name.clone(),
                    zone: i.zone.clone(),
                    reason: RemoveReason::Rollout,
                });
            }
        }
        return out;
    }

    // 4. Too few: scale out (or replace failed ones) into the zone with fewest. Unhealthy
    // instances kept until their replacement is ready bound it like a surge (at least one).
    if cur < desired {
        let reason = if failed_any || !unhealthy.is_empty() {
            CreateReason::Replace
        } else {
            CreateReason::ScaleOut
        };
        let room = desired
            .saturating_add(target.max_surge.max(1))
            .saturating_sub(cur + kept_unhealthy);
        let n = (desired - cur).min(room);
        launch(&mut out, &mut per_zone, &zones, n, reason);
        return out;
    }

    // 5. Right number but uneven zones (a zone came back, or was added): launch one into the
    // emptiest zone; the next pass scales in from the fullest. Only when everything is settled,
    // so a rebalance never competes with a scale-out or a rollout.
    if cur == desired && current_ready == cur && !failed_any && unhealthy.is_empty() {
        let min = per_zone.values().copied().min().unwrap_or(0);
        let max = per_zone.values().copied().max().unwrap_or(0);
        // The scale-in that follows takes from the fullest zone: if everything there is
        // protected, it would take the new instance again, forever.
        let fullest_has_unprotected = current
            .iter()
            .any(|i| per_zone.get(i.zone.as_str()) == Some(&max) && !i.protected && removable(i));
        if max > min.saturating_add(1) && desired <= target.max_size && fullest_has_unprotected {
            launch(&mut out, &mut per_zone, &zones, 1, CreateReason::Rebalance);
        }
    }
    out
}

/// Removes the instances that failed liveness: not ready ones at once (they serve nothing),
/// ready ones only while `desired - max_unavailable` others stay ready (counting `healthy`, the
/// other alive instances). Returns how many wait for their replacement.
fn replace_unhealthy(
    out: &mut Plan,
    target: &Target,
    unhealthy: &[&Instance],
    healthy: &[&Instance],
) -> u32 {
    let min_available = target.desired.saturating_sub(target.max_unavailable);
    let mut ready = healthy
        .iter()
        .chain(unhealthy)
        .filter(|i| i.is_ready())
        .count() as u32;
    let mut kept = 0;
    let mut ordered: Vec<&&Instance> = unhealthy.iter().collect();
    ordered.sort_by_key(|i| (i.is_ready(), i.created));
    for i in ordered {
        let go = if !i.is_ready() {
            true
        } else if ready > min_available {
            ready -= 1;
            true
        } else {
            false
        };
        if go {
            out.remove.push(Remove {
                id: i.id.clone(),
                name: i.name.clone(),
                zone: i.zone.clone(),
                reason: RemoveReason::Unhealthy,
            });
        } else {
            kept += 1;
        }
    }
    kept
}

/// A container still `created` is being started by someone (`docker run` in progress): it is
/// left alone until it runs or counts as stuck (then it arrives here as failed).
fn removable(i: &Instance) -> bool {
    i.state != ContainerState::Created
}

/// Adds `n` creations, each into the zone with the fewest instances (ties: zone order).
fn launch<'z>(
    out: &mut Plan,
    per_zone: &mut BTreeMap<&'z str, u32>,
    zones: &[&'z String],
    n: u32,
    reason: CreateReason,
) {
    for _ in 0..n {
        let zone = zones
            .iter()
            .min_by_key(|z| per_zone.get(z.as_str()).copied().unwrap_or(0))
            .expect("zones is not empty");
        *per_zone.entry(zone.as_str()).or_default() += 1;
        out.create.push(Create {
            zone: (*zone).clone(),
            reason: reason.clone(),
        });
    }
}

/// Orders `a` before `b` (`Less`) when `a` should be terminated first by the group's
/// termination policies, applied in order; ties end oldest first, then by name.
pub fn by_policies(target: &Target, a: &Instance, b: &Instance) -> Ordering {
    let outdated = |i: &Instance| !is_current(target, i);
    let oldest_lc = |a: &Instance, b: &Instance| outdated(b).cmp(&outdated(a));
    let oldest = |a: &Instance, b: &Instance| a.created.cmp(&b.created);
    let default = [TerminationPolicy::Default];
    let policies = if target.termination_policies.is_empty() {
        &default[..]
    } else {
        &target.termination_policies[..]
    };
    let mut o = Ordering::Equal;
    for p in policies {
        o = o.then_with(|| match p {
            TerminationPolicy::Default => oldest_lc(a, b).then(oldest(a, b)),
            TerminationPolicy::OldestInstance => oldest(a, b),
            TerminationPolicy::NewestInstance => oldest(b, a),
            TerminationPolicy::OldestLaunchConfiguration => oldest_lc(a, b),
        });
    }
    o.then(oldest(a, b)).then(a.name.cmp(&b.name))
}

/// Picks the instance to scale in: one this controller did not launch first, then not ready
/// before ready, then zone balancing (the zone with the most instances; ties: later zone), then
/// the group's termination policies (by default: outdated spec, then oldest first, the original
/// microscaler's rule and AWS's default). Protected instances are not in `pool`.
fn pick_scale_in<'a>(
    target: &Target,
    pool: &mut Vec<&'a Instance>,
    counts: &mut BTreeMap<&str, u32>,
    zones: &[&String],
) -> Option<&'a Instance> {
    let zone_rank = |z: &str| {
        zones
            .iter()
            .position(|x| x.as_str() == z)
            .unwrap_or(usize::MAX)
    };
    let best = pool
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| {
            let ca = counts.get(a.zone.as_str()).copied().unwrap_or(u32::MAX);
            let cb = counts.get(b.zone.as_str()).copied().unwrap_or(u32::MAX);
            a.foreign
                .cmp(&b.foreign)
                .then(b.is_ready().cmp(&a.is_ready()))
                .then(ca.cmp(&cb))
                .then(zone_rank(&a.zone).cmp(&zone_rank(&b.zone)))
                .then(by_policies(target, b, a))
        })
        .map(|(idx, _)| idx)?;
    let victim = pool.remove(best);
    if let Some(c) = counts.get_mut(victim.zone.as_str()) {
        *c = c.saturating_sub(1);
    }
    Some(victim)
}

fn remove_surplus(out: &mut Plan, current: &[&Instance], n: usize, reason: RemoveReason) {
    let mut sorted: Vec<&&Instance> = current.iter().collect();
    sorted.sort_by_key(|i| (!i.foreign, i.is_ready(), i.created));
    for i in sorted.into_iter().take(n) {
        out.remove.push(Remove {
            id: i.id.clone(),
            name: i.name.clone(),
            zone: i.zone.clone(),
            reason: reason.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn target(desired: u32, zones: &[&str]) -> Target {
        Target {
            desired,
            max_size: 10,
            zones: zones.iter().map(|z| z.to_string()).collect(),
            spec_hash: "new".into(),
            max_surge: 1,
            max_unavailable: 0,
            termination_policies: vec![],
        }
    }

    /// `spec` is `zone:hash:state:age` shorthand, e.g. `a:new:running:5` (age in seconds before t0).
    fn inst(
        n: usize,
        zone: &str,
        hash: &str,
        state: ContainerState,
        created_secs: i64,
    ) -> Instance {
        Instance {
            id: format!("id{n}"),
            name: format!("web-{n}"),
            zone: zone.into(),
            state,
            health: None,
            created: Utc.timestamp_opt(1_700_000_000 + created_secs, 0).unwrap(),
            spec_hash: hash.into(),
            exit_code: None,
            foreign: false,
            probe_ready: None,
            liveness_failed: false,
            protected: false,
            post_start_pending: false,
        }
    }

    /// An instance that failed liveness (`ready`: whether it still passes readiness).
    fn failing(n: usize, zone: &str, created_secs: i64, ready: bool) -> Instance {
        let mut i = inst(n, zone, "new", Running, created_secs);
        i.liveness_failed = true;
        i.probe_ready = Some(ready);
        i
    }

    fn reasons(p: &Plan) -> Vec<(&str, RemoveReason)> {
        p.remove
            .iter()
            .map(|r| (r.id.as_str(), r.reason.clone()))
            .collect()
    }

    #[test]
    fn a_not_ready_unhealthy_instance_is_removed_and_replaced_at_once() {
        let i = vec![inst(1, "a", "new", Running, 0), failing(2, "b", 1, false)];
        let p = plan(&target(2, &["a", "b"]), &i, &zones(&["a", "b"]));
        assert_eq!(reasons(&p), vec![("id2", RemoveReason::Unhealthy)]);
        assert_eq!(
            p.create,
            vec![Create {
                zone: "b".into(),
                reason: CreateReason::Replace
            }]
        );
    }

    #[test]
    fn a_ready_unhealthy_instance_waits_for_its_replacement_to_be_ready() {
        // maxUnavailable 0: the one still serving stays until the replacement serves.
        let t = target(2, &["a"]);
        let i = vec![inst(1, "a", "new", Running, 0), failing(2, "a", 1, true)];
        let p = plan(&t, &i, &zones(&["a"]));
        assert!(p.remove.is_empty(), "{p:?}");
        assert_eq!(p.create.len(), 1);
        assert_eq!(p.create[0].reason, CreateReason::Replace);
        // The replacement is starting (not ready): nothing more, nothing removed.
        let mut starting = inst(3, "a", "new", Running, 2);
        starting.probe_ready = Some(false);
        let mut i2 = i.clone();
        i2.push(starting.clone());
        assert!(plan(&t, &i2, &zones(&["a"])).is_empty());
        // Ready: the unhealthy one goes, nothing is created.
        starting.probe_ready = Some(true);
        let mut i3 = i.clone();
        i3.push(starting);
        let p = plan(&t, &i3, &zones(&["a"]));
        assert_eq!(reasons(&p), vec![("id2", RemoveReason::Unhealthy)]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn max_unavailable_lets_a_ready_unhealthy_instance_go_before_its_replacement() {
        let mut t = target(3, &["a"]);
        t.max_unavailable = 1;
        t.max_surge = 0;
        let i = vec![
            inst(1, "a", "new", Running, 0),
            inst(2, "a", "new", Running, 0),
            failing(3, "a", 1, true),
        ];
        let p = plan(&t, &i, &zones(&["a"]));
        assert_eq!(reasons(&p), vec![("id3", RemoveReason::Unhealthy)]);
        assert_eq!(p.create.len(), 1);
    }

    #[test]
    fn unhealthy_replacements_never_drop_the_ready_count_below_desired() {
        // All three failed liveness but still pass readiness: one surge at a time, each old
        // one removed only once a replacement is ready.
        let t = target(3, &["a"]);
        let mut i: Vec<Instance> = (0..3).map(|n| failing(n, "a", n as i64, true)).collect();
        let p = plan(&t, &i, &zones(&["a"]));
        assert!(p.remove.is_empty());
        assert_eq!(p.create.len(), 1, "surge of 1");
        let mut fresh = inst(10, "a", "new", Running, 10);
        fresh.probe_ready = Some(true);
        i.push(fresh);
        let p = plan(&t, &i, &zones(&["a"]));
        assert_eq!(reasons(&p), vec![("id0", RemoveReason::Unhealthy)]);
        let ready_after = i.iter().filter(|x| x.is_ready()).count() - p.remove.len();
        assert!(ready_after >= 3);
    }

    #[test]
    fn a_stopped_group_removes_unhealthy_instances_too() {
        let i = vec![failing(1, "a", 0, true), failing(2, "a", 0, false)];
        let p = plan(&target(0, &["a"]), &i, &zones(&["a"]));
        let mut r = removed(&p);
        r.sort();
        assert_eq!(r, vec!["id1", "id2"]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn a_failing_readiness_probe_makes_an_instance_not_ready_and_gates_a_rollout() {
        let mut i: Vec<Instance> = (0..2)
            .map(|n| inst(n, "a", "old", Running, n as i64))
            .collect();
        let mut fresh = inst(9, "a", "new", Running, 9);
        fresh.probe_ready = Some(false);
        assert!(!fresh.is_ready());
        i.push(fresh.clone());
        let t = target(2, &["a"]);
        assert!(plan(&t, &i, &zones(&["a"])).is_empty(), "no old one goes");
        fresh.probe_ready = Some(true);
        i[2] = fresh;
        assert_eq!(removed(&plan(&t, &i, &zones(&["a"]))), vec!["id0"]);
        assert_eq!(counts(&t, &i).ready, 3);
    }

    #[test]
    fn counts_show_the_unhealthy_instances() {
        let i = vec![inst(1, "a", "new", Running, 0), failing(2, "a", 0, false)];
        let c = counts(&target(2, &["a"]), &i);
        assert_eq!((c.current, c.ready, c.unhealthy), (2, 1, 1));
    }

    fn zones(z: &[&str]) -> BTreeSet<String> {
        z.iter().map(|s| s.to_string()).collect()
    }

    fn create_zones(p: &Plan) -> Vec<&str> {
        p.create.iter().map(|c| c.zone.as_str()).collect()
    }

    fn removed(p: &Plan) -> Vec<&str> {
        p.remove.iter().map(|r| r.id.as_str()).collect()
    }

    use ContainerState::*;

    #[test]
    fn scale_out_from_zero_spreads_over_zones_in_order() {
        let p = plan(&target(5, &["a", "b"]), &[], &zones(&["a", "b"]));
        assert_eq!(create_zones(&p), vec!["a", "b", "a", "b", "a"]);
        assert!(p.create.iter().all(|c| c.reason == CreateReason::ScaleOut));
        assert!(p.remove.is_empty());
    }

    #[test]
    fn scale_out_launches_into_the_zone_with_fewest() {
        let i = vec![
            inst(1, "a", "new", Running, 0),
            inst(2, "a", "new", Running, 1),
        ];
        let p = plan(&target(4, &["a", "b"]), &i, &zones(&["a", "b"]));
        assert_eq!(create_zones(&p), vec!["b", "b"]);
    }

    #[test]
    fn scale_in_takes_from_the_zone_with_most_oldest_first() {
        let i = vec![
            inst(1, "a", "new", Running, 10),
            inst(2, "b", "new", Running, 5),
            inst(3, "b", "new", Running, 1),
            inst(4, "b", "new", Running, 7),
        ];
        let p = plan(&target(2, &["a", "b"]), &i, &zones(&["a", "b"]));
        assert_eq!(removed(&p), vec!["id3", "id2"]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn failed_instances_are_removed_and_replaced() {
        let mut dead = inst(2, "a", "new", Exited, 2);
        dead.exit_code = Some(137);
        let i = vec![inst(1, "a", "new", Running, 1), dead];
        let p = plan(&target(2, &["a"]), &i, &zones(&["a"]));
        assert_eq!(removed(&p), vec!["id2"]);
        assert_eq!(
            p.create,
            vec![Create {
                zone: "a".into(),
                reason: CreateReason::Replace
            }]
        );
    }

    #[test]
    fn creations_not_yet_started_count_so_none_is_doubled() {
        // What the actuator just created is in the cache as `created` before its start event:
        // it counts towards the capacity, in its zone, and is not judged before it runs.
        let p = plan(
            &target(3, &["a", "b"]),
            &[
                inst(1, "a", "new", Running, 0),
                inst(2, "b", "new", Created, 0),
                inst(3, "a", "new", Created, 0),
            ],
            &zones(&["a", "b"]),
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn a_stopped_or_deleted_group_removes_everything() {
        let i = vec![
            inst(1, "a", "new", Running, 0),
            inst(2, "b", "old", Running, 0),
        ];
        let p = plan(&target(0, &["a", "b"]), &i, &zones(&["a", "b"]));
        let mut r = removed(&p);
        r.sort();
        assert_eq!(r, vec!["id1", "id2"]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn a_container_being_started_by_hand_is_left_alone_until_it_runs() {
        let i = vec![
            inst(1, "a", "new", Running, 0),
            inst(2, "a", "", Created, 5),
        ];
        assert!(plan(&target(1, &["a"]), &i, &zones(&["a"])).is_empty());
        let i = vec![
            inst(1, "a", "new", Running, 0),
            inst(2, "a", "", Running, 5),
        ];
        assert_eq!(
            removed(&plan(&target(1, &["a"]), &i, &zones(&["a"]))),
            vec!["id2"]
        );
    }

    #[test]
    fn surplus_removes_a_copy_started_by_hand_first_then_not_ready_ones() {
        // Ours is older and in the fuller zone, the copy is newer: the copy goes anyway.
        let mut copy = inst(3, "b", "new", Running, 9);
        copy.foreign = true;
        let i = vec![
            inst(1, "a", "new", Running, 0),
            inst(2, "a", "new", Running, 1),
            copy,
        ];
        let p = plan(&target(2, &["a", "b"]), &i, &zones(&["a", "b"]));
        assert_eq!(removed(&p), vec!["id3"]);
        // Among our own: not ready before ready, whatever the zones and ages say.
        let mut starting = inst(6, "b", "new", Running, 9);
        starting.health = Some(Health::Starting);
        let i = vec![
            inst(4, "a", "new", Running, 0),
            inst(5, "a", "new", Running, 1),
            starting,
        ];
        let p = plan(&target(2, &["a", "b"]), &i, &zones(&["a", "b"]));
        assert_eq!(removed(&p), vec!["id6"]);
    }

    #[test]
    fn a_surplus_copy_being_started_is_waited_for_then_removed_first() {
        let mut copy = inst(2, "a", "new", Created, 9);
        copy.foreign = true;
        let i = vec![inst(1, "a", "new", Running, 0), copy.clone()];
        let t = target(1, &["a"]);
        assert!(plan(&t, &i, &zones(&["a"])).is_empty());
        copy.state = Running;
        let i = vec![inst(1, "a", "new", Running, 0), copy];
        assert_eq!(removed(&plan(&t, &i, &zones(&["a"]))), vec!["id2"]);
    }

    #[test]
    fn converged_group_plans_nothing() {
        let i = vec![
            inst(1, "a", "new", Running, 0),
            inst(2, "b", "new", Running, 0),
        ];
        assert!(plan(&target(2, &["a", "b"]), &i, &zones(&["a", "b"])).is_empty());
    }

    #[test]
    fn rollout_surges_before_removing_and_keeps_availability() {
        let i: Vec<Instance> = (0..3)
            .map(|n| inst(n, "a", "old", Running, n as i64))
            .collect();
        let t = target(3, &["a"]);
        // Pass 1: one new instance (surge 1), no old one removed yet (max unavailable 0).
        let p = plan(&t, &i, &zones(&["a"]));
        assert_eq!(
            p.create,
            vec![Create {
                zone: "a".into(),
                reason: CreateReason::Rollout
            }]
        );
        assert!(p.remove.is_empty());
        // Pass 2: the new one is running: exactly one old one (the oldest) goes.
        let mut i2 = i.clone();
        i2.push(inst(10, "a", "new", Running, 20));
        let p = plan(&t, &i2, &zones(&["a"]));
        assert_eq!(removed(&p), vec!["id0"]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn rollout_waits_while_the_new_instance_is_not_ready() {
        let mut i: Vec<Instance> = (0..2)
            .map(|n| inst(n, "a", "old", Running, n as i64))
            .collect();
        let mut fresh = inst(9, "a", "new", Running, 9);
        fresh.health = Some(Health::Starting);
        i.push(fresh);
        assert!(plan(&target(2, &["a"]), &i, &zones(&["a"])).is_empty());
    }

    #[test]
    fn instances_in_a_zone_removed_from_the_group_are_moved() {
        let i = vec![
            inst(1, "a", "new", Running, 0),
            inst(2, "c", "new", Running, 0),
        ];
        let t = target(2, &["a", "b"]);
        let p = plan(&t, &i, &zones(&["a", "b", "c"]));
        assert_eq!(create_zones(&p), vec!["b"]);
        assert!(p.remove.is_empty());
        let mut i2 = i.clone();
        i2.push(inst(3, "b", "new", Running, 1));
        assert_eq!(
            removed(&plan(&t, &i2, &zones(&["a", "b", "c"]))),
            vec!["id2"]
        );
    }

    #[test]
    fn an_unreachable_zone_capacity_is_made_up_in_the_others() {
        // Zone b is down: its instances are unknown (not passed); a gets all the capacity.
        let i = vec![inst(1, "a", "new", Running, 0)];
        let p = plan(&target(3, &["a", "b"]), &i, &zones(&["a"]));
        assert_eq!(create_zones(&p), vec!["a", "a"]);
    }

    #[test]
    fn a_returning_zone_is_rebalanced_without_exceeding_max_plus_one() {
        // b came back empty after its capacity was made up in a: 4 in a, 0 in b.
        let mut t = target(4, &["a", "b"]);
        t.max_size = 4;
        let i: Vec<Instance> = (0..4)
            .map(|n| inst(n, "a", "new", Running, n as i64))
            .collect();
        let p = plan(&t, &i, &zones(&["a", "b"]));
        assert_eq!(
            p.create,
            vec![Create {
                zone: "b".into(),
                reason: CreateReason::Rebalance
            }]
        );
        assert!(p.remove.is_empty());
        // Next pass: 5 = max + 1 instances; scale in from a (oldest first), nothing created.
        let mut i2 = i.clone();
        i2.push(inst(9, "b", "new", Running, 9));
        let p = plan(&t, &i2, &zones(&["a", "b"]));
        assert_eq!(removed(&p), vec!["id0"]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn a_returning_zone_with_its_old_instances_is_scaled_in_from_the_fullest() {
        // a made up b's capacity (4 in a); b returns with its 2 containers: 6 > 4.
        let mut i: Vec<Instance> = (0..4)
            .map(|n| inst(n, "a", "new", Running, n as i64 + 10))
            .collect();
        i.push(inst(7, "b", "new", Running, 0));
        i.push(inst(8, "b", "new", Running, 1));
        let p = plan(&target(4, &["a", "b"]), &i, &zones(&["a", "b"]));
        assert_eq!(removed(&p), vec!["id0", "id1"]);
    }

    #[test]
    fn no_reachable_zone_means_no_creation() {
        let p = plan(&target(3, &["a"]), &[], &zones(&[]));
        assert!(p.is_empty());
    }

    fn with_policies(mut t: Target, p: &[TerminationPolicy]) -> Target {
        t.termination_policies = p.to_vec();
        t
    }

    #[test]
    fn termination_policies_order_scale_in_after_zone_balancing() {
        use TerminationPolicy::*;
        // One zone, three instances aged 30, 20, 10 s (id1 oldest); one goes.
        let i = vec![
            inst(1, "a", "new", Running, 0),
            inst(2, "a", "new", Running, 10),
            inst(3, "a", "new", Running, 20),
        ];
        let table: Vec<(&[TerminationPolicy], &str)> = vec![
            (&[], "id1"),
            (&[Default], "id1"),
            (&[OldestInstance], "id1"),
            (&[NewestInstance], "id3"),
            // All run the current spec: the next policy (here the fallback, oldest) decides.
            (&[OldestLaunchConfiguration], "id1"),
            (&[OldestLaunchConfiguration, NewestInstance], "id3"),
        ];
        for (policies, want) in table {
            let t = with_policies(target(2, &["a"]), policies);
            assert_eq!(
                removed(&plan(&t, &i, &zones(&["a"]))),
                vec![want],
                "{policies:?}"
            );
        }
        // Zone balancing comes first: NewestInstance takes the newest of the fullest zone,
        // not the newest overall.
        let i = vec![
            inst(1, "a", "new", Running, 0),
            inst(2, "a", "new", Running, 10),
            inst(3, "b", "new", Running, 50),
        ];
        let t = with_policies(target(2, &["a", "b"]), &[NewestInstance]);
        assert_eq!(removed(&plan(&t, &i, &zones(&["a", "b"]))), vec!["id2"]);
        // Always first: a copy started by hand, then instances not ready, whatever the policy.
        let mut copy = inst(4, "a", "new", Running, 0);
        copy.foreign = true;
        let mut starting = inst(5, "a", "new", Running, 5);
        starting.health = Some(Health::Starting);
        let i = vec![
            inst(1, "a", "new", Running, 0),
            inst(2, "a", "new", Running, 99),
            copy,
            starting,
        ];
        let t = with_policies(target(2, &["a"]), &[NewestInstance]);
        assert_eq!(removed(&plan(&t, &i, &zones(&["a"]))), vec!["id4", "id5"]);
    }

    #[test]
    fn oldest_launch_configuration_puts_outdated_instances_first() {
        use TerminationPolicy::*;
        let t = with_policies(
            target(2, &["a"]),
            &[OldestLaunchConfiguration, NewestInstance],
        );
        let old = inst(1, "a", "old", Running, 0);
        let new_older = inst(2, "a", "new", Running, 5);
        let new_newer = inst(3, "a", "new", Running, 9);
        let mut sorted = [&new_newer, &old, &new_older];
        sorted.sort_by(|a, b| by_policies(&t, a, b));
        let ids: Vec<&str> = sorted.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, vec!["id1", "id3", "id2"]);
        // And in a rolling update, the outdated instances are replaced oldest first (Default).
        let t = target(2, &["a"]);
        let mut sorted = [&new_newer, &old, &new_older];
        sorted.sort_by(|a, b| by_policies(&t, a, b));
        let ids: Vec<&str> = sorted.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, vec!["id1", "id2", "id3"]);
    }

    #[test]
    fn protected_instances_are_never_scaled_in_and_the_plan_says_so() {
        let mut p1 = inst(1, "a", "new", Running, 0);
        p1.protected = true;
        let i = vec![p1.clone(), inst(2, "a", "new", Running, 10)];
        // The oldest is protected: the other goes.
        let p = plan(&target(1, &["a"]), &i, &zones(&["a"]));
        assert_eq!(removed(&p), vec!["id2"]);
        assert_eq!(p.held_by_protection, 0);
        // Both protected: nothing goes, and the plan says how many it could not remove.
        let mut p2 = inst(2, "a", "new", Running, 10);
        p2.protected = true;
        let p = plan(&target(0, &["a"]), &[p1.clone(), p2], &zones(&["a"]));
        assert!(p.is_empty());
        assert_eq!(p.held_by_protection, 2);
        // A protected instance that failed is still replaced.
        let mut dead = p1.clone();
        dead.state = Exited;
        let p = plan(&target(1, &["a"]), &[dead], &zones(&["a"]));
        assert_eq!(removed(&p), vec!["id1"]);
        assert_eq!(create_zones(&p), vec!["a"]);
    }

    #[test]
    fn a_rolling_update_waits_for_a_protected_instance() {
        let mut old = inst(1, "a", "old", Running, 0);
        old.protected = true;
        let i = vec![old, inst(2, "a", "new", Running, 5)];
        let p = plan(&target(1, &["a"]), &i, &zones(&["a"]));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(p.held_by_protection, 1);
    }

    #[test]
    fn no_rebalance_when_the_fullest_zone_is_all_protected() {
        // 3 in a (all protected), 0 in b: launching into b would only have the new instance
        // scaled in again, forever.
        let i: Vec<Instance> = (0..3)
            .map(|n| {
                let mut x = inst(n, "a", "new", Running, n as i64);
                x.protected = true;
                x
            })
            .collect();
        assert!(plan(&target(3, &["a", "b"]), &i, &zones(&["a", "b"])).is_empty());
        // One unprotected in a: the rebalance goes ahead, and its scale-in takes that one.
        let mut i2 = i.clone();
        i2[1].protected = false;
        let t = target(3, &["a", "b"]);
        assert_eq!(create_zones(&plan(&t, &i2, &zones(&["a", "b"]))), vec!["b"]);
        i2.push(inst(9, "b", "new", Running, 9));
        assert_eq!(removed(&plan(&t, &i2, &zones(&["a", "b"]))), vec!["id1"]);
    }

    #[test]
    fn an_instance_whose_post_start_runs_is_not_ready() {
        let mut fresh = inst(2, "a", "new", Running, 9);
        fresh.post_start_pending = true;
        assert!(!fresh.is_ready());
        // A rollout waits for it, as for any instance not ready.
        let i = vec![inst(1, "a", "old", Running, 0), fresh];
        assert!(plan(&target(1, &["a"]), &i, &zones(&["a"])).is_empty());
    }

    #[test]
    fn counts_distinguish_current_ready_and_updated() {
        let mut starting = inst(3, "a", "new", Running, 0);
        starting.health = Some(Health::Starting);
        let i = vec![
            inst(1, "a", "new", Running, 0),
            inst(2, "a", "old", Running, 0),
            starting,
            inst(4, "a", "new", Exited, 0),
        ];
        let c = counts(&target(3, &["a"]), &i);
        assert_eq!(
            c,
            Counts {
                current: 3,
                ready: 2,
                updated: 2,
                unhealthy: 0,
            }
        );
    }
}
