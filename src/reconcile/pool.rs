//! The warm pool's decisions: a pure function from the group's plan and the pool members seen
//! on the engines to what to take, prepare, settle, give back and remove.
//!
//! It runs after [`super::plan::plan`], which never sees pool members (they are not instances):
//! creations of the plan in a zone with a ready member become takes of that member (an unpause
//! instead of a cold create and start); the rest stay cold launches. Refills are low priority:
//! only when the plan (after takes) launches nothing, at most [`REFILL_WIDTH`] at a time per
//! group. Like the planner it does no I/O and reads no clock, so every rule is a table test
//! (`pool/tests.rs`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::plan::{CreateReason, Instance, Plan, Remove, RemoveReason};
use crate::engine::{ContainerState, Transition};
use crate::manifest::WarmPoolState;

/// Pool members prepared at once per group: a refill never competes much with the launches of
/// other groups (the engine starts only 8–10 containers a second on two cores).
pub const REFILL_WIDTH: u32 = 2;

/// What the group's pool should be.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolTarget {
    /// Spares to keep (0: no pool; members are removed).
    pub size: u32,
    /// What a spare is while it waits.
    pub state: WarmPoolState,
    /// Scaled-in instances go back to the pool while it has room.
    pub reuse_on_scale_in: bool,
    /// The group's current container spec: members of another are replaced.
    pub spec_hash: String,
    /// The group's zones, in the order written.
    pub zones: Vec<String>,
}

/// One pool member, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    /// Its name now (the instance's name plus `-warm`).
    pub name: String,
    /// The instance name it becomes when taken.
    pub instance: String,
    pub zone: String,
    pub state: ContainerState,
    pub spec_hash: String,
    pub created: DateTime<Utc>,
    /// Carries this controller's launch mark for `instance` (else it was not made by us: removed).
    pub marked: bool,
    /// Still `created` long after its creation: nobody will start it.
    pub stuck: bool,
    /// Its image's HEALTHCHECK says `unhealthy` (a spare whose preparation failed its check, or
    /// that turned unhealthy before it waited): it would serve no better once taken.
    pub unhealthy: bool,
    /// Being prepared by a refill of this controller right now (not to be touched).
    pub preparing: bool,
}

/// A pool member taken as an instance, in place of a cold launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    pub id: String,
    /// Its pool name, and the instance name it is renamed to.
    pub member: String,
    pub instance: String,
    pub zone: String,
    /// Whether it must be unpaused or started (else it runs already).
    pub wake: Option<Transition>,
    /// The creation it replaces.
    pub reason: CreateReason,
    /// The member holds resources now (paused, running), so the namespace's quotas count it
    /// already. False for a stopped spare: its start adds a container's worth, reserved like a
    /// cold creation ([`cut_to_quota`]).
    pub counted: bool,
}

/// A member brought to the pool's state (a pool's state changed, or a step was interrupted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    pub id: String,
    pub name: String,
    pub zone: String,
    pub transition: Transition,
}

/// A scaled-in instance that goes back to the pool instead of being removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveBack {
    pub id: String,
    /// Its instance name, and the pool name it is renamed to.
    pub instance: String,
    pub zone: String,
    /// How it reaches the pool's state (none for a `Running` pool).
    pub transition: Option<Transition>,
}

/// What the pool does in one pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolPlan {
    pub take: Vec<Take>,
    pub settle: Vec<Settle>,
    pub give_back: Vec<GiveBack>,
    /// Members to remove (failed, obsolete, foreign, surplus).
    pub remove: Vec<Remove>,
    /// Zones to prepare one new member in, each.
    pub refill: Vec<String>,
}

impl PoolPlan {
    pub fn is_empty(&self) -> bool {
        self.take.is_empty()
            && self.settle.is_empty()
            && self.give_back.is_empty()
            && self.remove.is_empty()
            && self.refill.is_empty()
    }
}

/// What the pool may do in this pass besides its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allow {
    /// Creations may be served from the pool (not during the group's launch backoff).
    pub take: bool,
    /// New members may be prepared (not during the pool's or the group's backoff).
    pub refill: bool,
}

/// Whether a member in state `s` is in the pool's state already.
fn state_ok(target: WarmPoolState, s: ContainerState) -> bool {
    matches!(
        (target, s),
        (WarmPoolState::Paused, ContainerState::Paused)
            | (WarmPoolState::Running, ContainerState::Running)
            | (WarmPoolState::Stopped, ContainerState::Exited)
    )
}

/// What brings a usable member in state `s` to the pool's state, if anything.
fn settle_step(target: WarmPoolState, s: ContainerState) -> Option<Transition> {
    match (target, s) {
        (WarmPoolState::Paused, ContainerState::Running) => Some(Transition::Pause),
        (WarmPoolState::Running, ContainerState::Paused) => Some(Transition::Unpause),
        (WarmPoolState::Stopped, ContainerState::Running) => {
            Some(Transition::Stop(std::time::Duration::from_secs(10)))
        }
        _ => None,
    }
}

/// Whether a member in state `s` can serve, possibly after a settle step: alive for a paused
/// or running pool, exited (stopped on purpose) or runnable for a stopped one.
fn usable_state(target: WarmPoolState, s: ContainerState) -> bool {
    match target {
        WarmPoolState::Paused | WarmPoolState::Running => {
            matches!(s, ContainerState::Running | ContainerState::Paused)
        }
        WarmPoolState::Stopped => matches!(s, ContainerState::Running | ContainerState::Exited),
    }
}

/// How a member in state `s` becomes a running instance.
fn wake_step(s: ContainerState) -> Option<Transition> {
    match s {
        ContainerState::Paused => Some(Transition::Unpause),
        ContainerState::Exited => Some(Transition::Start),
        _ => None,
    }
}

/// Decides the pool's part of one pass, and takes the creations it serves out of `plan`.
///
/// `instances` are the group's instances (as the planner saw them), `members` its pool members
/// in reachable zones, `in_flight` the refills running now per zone (their members, once
/// visible, are `preparing`).
///
/// # Guarantees
/// - A creation is served only by a member of the current spec in the creation's own zone.
/// - Members + refills in flight + new refills never exceed `target.size`, and new refills are
///   at most [`REFILL_WIDTH`] minus those in flight, only when nothing else is launched.
/// - A member of another spec, of a zone no longer in the group, failed, unhealthy, stuck or not
///   made by this controller is removed; the pool is never used while `target.size` is 0, except to
///   serve creations.
pub fn apply(
    target: &PoolTarget,
    plan: &mut Plan,
    instances: &[Instance],
    members: &[Member],
    reachable: &BTreeSet<String>,
    in_flight: &BTreeMap<String, u32>,
    allow: Allow,
) -> PoolPlan {
    let mut out = PoolPlan::default();
    let zones: Vec<&String> = target
        .zones
        .iter()
        .filter(|z| reachable.contains(*z))
        .collect();

    // 1. Sort the members: what can serve, what is on its way, what goes.
    let mut usable: Vec<&Member> = Vec::new();
    for m in members {
        // Counted among the refills in flight until its refill ends.
        if m.preparing {
            continue;
        }
        let reason = if !m.marked {
            Some(RemoveReason::Rollout)
        } else if m.state == ContainerState::Created {
            // Young: a refill of a controller killed mid-way, or one starting now; stuck: gone.
            m.stuck.then_some(RemoveReason::Failed)
        } else if m.unhealthy || !usable_state(target.state, m.state) {
            Some(RemoveReason::Failed)
        } else if m.spec_hash != target.spec_hash || !target.zones.contains(&m.zone) {
            Some(RemoveReason::Rollout)
        } else {
            usable.push(m);
            None
        };
        if let Some(reason) = reason {
            out.remove.push(remove(m, reason));
        }
    }
    // Oldest first: the longest prepared serve first, and go first.
    usable.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));

    // 2. Creations of the plan served from the pool, in the zone that needs them.
    if allow.take {
        let mut cold = Vec::with_capacity(plan.create.len());
        for c in plan.create.drain(..) {
            let pick = usable
                .iter()
                .enumerate()
                .filter(|(_, m)| m.zone == c.zone)
                // Settled members first: the fastest to serve.
                .min_by_key(|(_, m)| !state_ok(target.state, m.state))
                .map(|(i, _)| i);
            match pick {
                Some(i) => {
                    let m = usable.remove(i);
                    out.take.push(Take {
                        id: m.id.clone(),
                        member: m.name.clone(),
                        instance: m.instance.clone(),
                        zone: m.zone.clone(),
                        wake: wake_step(m.state),
                        reason: c.reason,
                        counted: counted(m.state),
                    });
                }
                None => cold.push(c),
            }
        }
        plan.create = cold;
    }

    // What the pool holds from here on, per zone: usable members, refills in flight.
    let mut per_zone: BTreeMap<&str, u32> = zones.iter().map(|z| (z.as_str(), 0)).collect();
    for m in &usable {
        *per_zone.entry(m.zone.as_str()).or_default() += 1;
    }
    for (z, n) in in_flight {
        *per_zone.entry(z.as_str()).or_default() += n;
    }
    let in_flight_total: u32 = in_flight.values().sum();
    let mut held = usable.len() as u32 + in_flight_total;

    // 3. Scaled-in instances back to the pool, while it has room.
    if target.reuse_on_scale_in && target.size > 0 {
        let mut kept = Vec::with_capacity(plan.remove.len());
        for r in plan.remove.drain(..) {
            let zone = zones.iter().find(|z| ***z == r.zone).copied();
            let back = r.reason == RemoveReason::ScaleIn
                && held < target.size
                && zone.is_some()
                && instances.iter().any(|i| {
                    i.id == r.id && !i.foreign && i.is_ready() && i.spec_hash == target.spec_hash
                });
            if back {
                held += 1;
                if let Some(z) = zone {
                    *per_zone.entry(z.as_str()).or_default() += 1;
                }
                out.give_back.push(GiveBack {
                    id: r.id,
                    instance: r.name,
                    zone: r.zone,
                    transition: settle_step(target.state, ContainerState::Running),
                });
            } else {
                kept.push(r);
            }
        }
        plan.remove = kept;
    }

    // 4. Surplus members go: from the zone with most, oldest first.
    let mut surplus = held.saturating_sub(target.size);
    while surplus > 0 && !usable.is_empty() {
        let zone_of_most = usable
            .iter()
            .map(|m| m.zone.as_str())
            .max_by_key(|z| per_zone.get(z).copied().unwrap_or(0))
            .expect("usable is not empty")
            .to_string();
        let i = usable
            .iter()
            .position(|m| m.zone == zone_of_most)
            .expect("a member of that zone");
        let m = usable.remove(i);
        if let Some(n) = per_zone.get_mut(m.zone.as_str()) {
            *n = n.saturating_sub(1);
        }
        out.remove.push(remove(m, RemoveReason::ScaleIn));
        surplus -= 1;
    }

    // 5. The members that stay reach the pool's state.
    for m in &usable {
        if let Some(t) = settle_step(target.state, m.state) {
            out.settle.push(Settle {
                id: m.id.clone(),
                name: m.name.clone(),
                zone: m.zone.clone(),
                transition: t,
            });
        }
    }

    // 6. Refill at low priority: never while the group launches cold.
    let held = usable.len() as u32 + in_flight_total + out.give_back.len() as u32;
    if allow.refill && plan.create.is_empty() && !zones.is_empty() {
        let n = target
            .size
            .saturating_sub(held)
            .min(REFILL_WIDTH.saturating_sub(in_flight_total));
        for _ in 0..n {
            let zone = zones
                .iter()
                .min_by_key(|z| per_zone.get(z.as_str()).copied().unwrap_or(0))
                .expect("zones is not empty");
            *per_zone.entry(zone.as_str()).or_default() += 1;
            out.refill.push((*zone).clone());
        }
    }
    out
}

/// Whether a container in state `s` counts in its namespace's quotas (the zones' caches count
/// what has not failed: see `engine::observe::Zone::namespace_usage`).
fn counted(s: ContainerState) -> bool {
    !s.is_failed()
}

/// How many of `pool`'s takes need room in the namespace's quotas (stopped spares to start).
pub fn takes_to_reserve(pool: &PoolPlan) -> u32 {
    pool.take.iter().filter(|t| !t.counted).count() as u32
}

/// Fits the pass to what the namespace's quotas granted: `granted` of the takes that need room
/// ([`takes_to_reserve`]) and of `plan`'s cold creations, takes first (a start is cheaper than
/// a create and start). Takes of counted members always stay. The takes cut are not done
/// (their members stay in the pool), and neither are the pool's refills, which counted on
/// those members being gone and would find no room either. Returns how many takes were cut.
pub fn cut_to_quota(pool: &mut PoolPlan, plan: &mut Plan, granted: u32) -> u32 {
    let mut left = granted;
    let mut cut = 0;
    pool.take.retain(|t| {
        if t.counted {
            return true;
        }
        if left > 0 {
            left -= 1;
            true
        } else {
            cut += 1;
            false
        }
    });
    plan.create.truncate(left as usize);
    if cut > 0 {
        pool.refill.clear();
    }
    cut
}

fn remove(m: &Member, reason: RemoveReason) -> Remove {
    Remove {
        id: m.id.clone(),
        name: m.name.clone(),
        zone: m.zone.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests;
