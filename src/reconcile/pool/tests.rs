//! Table tests of the warm pool's decisions.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};

use super::*;
use crate::reconcile::plan::{self, Create, Target};
use ContainerState::*;

fn target(size: u32, zones: &[&str]) -> PoolTarget {
    PoolTarget {
        size,
        state: WarmPoolState::Paused,
        reuse_on_scale_in: false,
        spec_hash: "new".into(),
        zones: zones.iter().map(|z| z.to_string()).collect(),
    }
}

/// Member `n` in `zone` with spec `hash`, in `state`, created `age` seconds after t0.
fn member(n: usize, zone: &str, hash: &str, state: ContainerState, age: i64) -> Member {
    Member {
        id: format!("m{n}"),
        name: format!("web-m{n}-warm"),
        instance: format!("web-m{n}"),
        zone: zone.into(),
        state,
        spec_hash: hash.into(),
        created: Utc.timestamp_opt(1_700_000_000 + age, 0).unwrap(),
        marked: true,
        stuck: false,
        unhealthy: false,
        preparing: false,
    }
}

fn instance(n: usize, zone: &str, hash: &str) -> Instance {
    Instance {
        id: format!("i{n}"),
        name: format!("web-i{n}"),
        zone: zone.into(),
        state: Running,
        health: None,
        created: Utc.timestamp_opt(1_700_000_000 + n as i64, 0).unwrap(),
        spec_hash: hash.into(),
        exit_code: None,
        foreign: false,
        probe_ready: None,
        liveness_failed: false,
        protected: false,
        post_start_pending: false,
    }
}

fn zones(z: &[&str]) -> BTreeSet<String> {
    z.iter().map(|s| s.to_string()).collect()
}

fn creates(zs: &[&str], reason: CreateReason) -> Plan {
    Plan {
        create: zs
            .iter()
            .map(|z| Create {
                zone: z.to_string(),
                reason: reason.clone(),
            })
            .collect(),
        remove: vec![],
        held_by_protection: 0,
    }
}

const ALL: Allow = Allow {
    take: true,
    refill: true,
};

fn none_in_flight() -> BTreeMap<String, u32> {
    BTreeMap::new()
}

fn taken(p: &PoolPlan) -> Vec<(&str, &str)> {
    p.take
        .iter()
        .map(|t| (t.id.as_str(), t.zone.as_str()))
        .collect()
}

fn removed(p: &PoolPlan) -> Vec<(&str, RemoveReason)> {
    p.remove
        .iter()
        .map(|r| (r.id.as_str(), r.reason.clone()))
        .collect()
}

#[test]
fn creations_take_from_the_pool_first_in_the_zone_that_needs_them() {
    // The planner wants one instance in a and one in b (say, a kill in each zone).
    let mut plan = creates(&["a", "b"], CreateReason::Replace);
    let members = [
        member(1, "b", "new", Paused, 1),
        member(2, "a", "new", Paused, 2),
        member(3, "a", "old", Paused, 0),
    ];
    let p = apply(
        &target(3, &["a", "b"]),
        &mut plan,
        &[],
        &members,
        &zones(&["a", "b"]),
        &none_in_flight(),
        ALL,
    );
    assert_eq!(taken(&p), vec![("m2", "a"), ("m1", "b")]);
    assert!(p
        .take
        .iter()
        .all(|t| t.wake == Some(Transition::Unpause) && t.reason == CreateReason::Replace));
    assert_eq!(p.take[0].instance, "web-m2");
    assert!(plan.create.is_empty(), "nothing left to launch cold");
    // The member of the old spec never serves: it goes.
    assert_eq!(removed(&p), vec![("m3", RemoveReason::Rollout)]);
}

#[test]
fn a_zone_without_members_launches_cold_and_no_member_crosses_zones() {
    let mut plan = creates(&["a", "a", "b"], CreateReason::ScaleOut);
    let members = [member(1, "b", "new", Paused, 0)];
    let p = apply(
        &target(1, &["a", "b"]),
        &mut plan,
        &[],
        &members,
        &zones(&["a", "b"]),
        &none_in_flight(),
        ALL,
    );
    assert_eq!(taken(&p), vec![("m1", "b")]);
    let cold: Vec<&str> = plan.create.iter().map(|c| c.zone.as_str()).collect();
    assert_eq!(cold, vec!["a", "a"]);
    // Capacity still launches cold: no refill competes with it.
    assert!(p.refill.is_empty());
}

#[test]
fn settled_members_serve_before_ones_still_being_settled() {
    let mut plan = creates(&["a"], CreateReason::ScaleOut);
    let members = [
        member(1, "a", "new", Running, 0), // older, but not paused yet
        member(2, "a", "new", Paused, 5),
    ];
    let p = apply(
        &target(2, &["a"]),
        &mut plan,
        &[],
        &members,
        &zones(&["a"]),
        &none_in_flight(),
        ALL,
    );
    assert_eq!(taken(&p), vec![("m2", "a")]);
    // The one left is paused, as the pool's state says.
    assert_eq!(
        p.settle,
        vec![Settle {
            id: "m1".into(),
            name: "web-m1-warm".into(),
            zone: "a".into(),
            transition: Transition::Pause
        }]
    );
}

#[test]
fn no_take_during_the_groups_backoff() {
    let mut plan = creates(&["a"], CreateReason::Replace);
    let members = [member(1, "a", "new", Paused, 0)];
    let p = apply(
        &target(1, &["a"]),
        &mut plan,
        &[],
        &members,
        &zones(&["a"]),
        &none_in_flight(),
        Allow {
            take: false,
            refill: false,
        },
    );
    assert!(p.take.is_empty());
    assert_eq!(plan.create.len(), 1);
}

#[test]
fn refills_never_exceed_the_pool_size_or_the_refill_width() {
    // (size, usable members, in flight) -> refills
    let cases: [(u32, usize, u32, usize); 7] = [
        (0, 0, 0, 0),
        (1, 0, 0, 1),
        (5, 0, 0, REFILL_WIDTH as usize),
        (5, 1, 1, 1),
        (5, 4, 0, 1),
        (2, 1, 1, 0),
        (3, 0, REFILL_WIDTH, 0),
    ];
    for (size, have, flying, want) in cases {
        let members: Vec<Member> = (0..have)
            .map(|n| member(n, "a", "new", Paused, n as i64))
            .collect();
        let in_flight = BTreeMap::from([("a".to_string(), flying)]);
        let mut plan = Plan::default();
        let p = apply(
            &target(size, &["a"]),
            &mut plan,
            &[],
            &members,
            &zones(&["a"]),
            &in_flight,
            ALL,
        );
        assert_eq!(
            p.refill.len(),
            want,
            "size {size}, {have} members, {flying} in flight"
        );
        let total = have as u32 + flying + p.refill.len() as u32;
        assert!(
            total <= size.max(have as u32 + flying),
            "case {size}/{have}/{flying}"
        );
    }
}

#[test]
fn refills_spread_over_the_groups_reachable_zones_and_wait_for_their_backoff() {
    let members = [member(1, "a", "new", Paused, 0)];
    let mut plan = Plan::default();
    let p = apply(
        &target(3, &["a", "b", "c"]),
        &mut plan,
        &[],
        &members,
        &zones(&["a", "b"]),
        &none_in_flight(),
        ALL,
    );
    assert_eq!(p.refill, vec!["b".to_string(), "a".to_string()]);
    let p = apply(
        &target(3, &["a", "b"]),
        &mut Plan::default(),
        &[],
        &members,
        &zones(&["a", "b"]),
        &none_in_flight(),
        Allow {
            take: true,
            refill: false,
        },
    );
    assert!(p.refill.is_empty());
}

#[test]
fn a_spec_change_rotates_the_pool() {
    let members = [
        member(1, "a", "old", Paused, 0),
        member(2, "b", "old", Paused, 1),
        member(3, "b", "new", Paused, 2),
    ];
    let mut plan = Plan::default();
    let p = apply(
        &target(3, &["a", "b"]),
        &mut plan,
        &[],
        &members,
        &zones(&["a", "b"]),
        &none_in_flight(),
        ALL,
    );
    assert_eq!(
        removed(&p),
        vec![("m1", RemoveReason::Rollout), ("m2", RemoveReason::Rollout)]
    );
    // New members in the zone with fewest, at the refill width.
    assert_eq!(p.refill, vec!["a".to_string(), "a".to_string()]);
    // A zone dropped from the group loses its members too.
    let p = apply(
        &target(3, &["b"]),
        &mut Plan::default(),
        &[],
        &[member(4, "a", "new", Paused, 0)],
        &zones(&["a", "b"]),
        &none_in_flight(),
        ALL,
    );
    assert_eq!(removed(&p), vec![("m4", RemoveReason::Rollout)]);
}

#[test]
fn failed_unhealthy_stuck_and_foreign_members_go_and_young_or_preparing_ones_stay() {
    let mut foreign = member(3, "a", "new", Paused, 2);
    foreign.marked = false;
    let mut stuck = member(4, "a", "new", Created, 3);
    stuck.stuck = true;
    let young = member(5, "a", "new", Created, 4);
    let mut preparing = member(6, "a", "new", Running, 5);
    preparing.preparing = true;
    // Left running by a preparation that failed its HEALTHCHECK: never paused and kept.
    let mut unhealthy = member(7, "a", "new", Running, 6);
    unhealthy.unhealthy = true;
    let members = [
        member(1, "a", "new", Exited, 0),
        member(2, "a", "new", Dead, 1),
        foreign,
        stuck,
        young,
        preparing,
        unhealthy,
    ];
    let in_flight = BTreeMap::from([("a".to_string(), 1)]);
    let p = apply(
        &target(2, &["a"]),
        &mut Plan::default(),
        &[],
        &members,
        &zones(&["a"]),
        &in_flight,
        ALL,
    );
    assert_eq!(
        removed(&p),
        vec![
            ("m1", RemoveReason::Failed),
            ("m2", RemoveReason::Failed),
            ("m3", RemoveReason::Rollout),
            ("m4", RemoveReason::Failed),
            ("m7", RemoveReason::Failed),
        ]
    );
    // The one being prepared is neither paused again nor taken here.
    assert!(p.settle.is_empty());
    assert_eq!(p.refill.len(), 1, "one in flight, one more to reach 2");
}

#[test]
fn a_smaller_pool_removes_from_the_zone_with_most_oldest_first_after_serving() {
    let members = [
        member(1, "a", "new", Paused, 0),
        member(2, "a", "new", Paused, 1),
        member(3, "a", "new", Paused, 2),
        member(4, "b", "new", Paused, 3),
    ];
    // The cap fell to 1 because desired rose by one: that creation is served first.
    let mut plan = creates(&["b"], CreateReason::ScaleOut);
    let p = apply(
        &target(1, &["a", "b"]),
        &mut plan,
        &[],
        &members,
        &zones(&["a", "b"]),
        &none_in_flight(),
        ALL,
    );
    assert_eq!(taken(&p), vec![("m4", "b")]);
    assert_eq!(
        removed(&p),
        vec![("m1", RemoveReason::ScaleIn), ("m2", RemoveReason::ScaleIn)]
    );
    assert!(p.refill.is_empty());
    // A pool switched off removes every member.
    let p = apply(
        &target(0, &["a", "b"]),
        &mut Plan::default(),
        &[],
        &members,
        &zones(&["a", "b"]),
        &none_in_flight(),
        ALL,
    );
    assert_eq!(p.remove.len(), 4);
}

#[test]
fn each_pool_state_settles_and_wakes_its_own_way() {
    // (pool state, member state) -> settle step while waiting, wake step when taken
    let cases = [
        (
            WarmPoolState::Paused,
            Running,
            Some(Transition::Pause),
            None,
        ),
        (
            WarmPoolState::Paused,
            Paused,
            None,
            Some(Transition::Unpause),
        ),
        (
            WarmPoolState::Running,
            Paused,
            Some(Transition::Unpause),
            Some(Transition::Unpause),
        ),
        (
            WarmPoolState::Stopped,
            Exited,
            None,
            Some(Transition::Start),
        ),
    ];
    for (state, s, settle, wake) in cases {
        let mut t = target(1, &["a"]);
        t.state = state;
        let members = [member(1, "a", "new", s, 0)];
        let p = apply(
            &t,
            &mut Plan::default(),
            &[],
            &members,
            &zones(&["a"]),
            &none_in_flight(),
            ALL,
        );
        assert_eq!(
            p.settle.first().map(|s| s.transition),
            settle,
            "{state:?} / {s:?}"
        );
        assert!(p.remove.is_empty(), "{state:?} / {s:?}");
        let p = apply(
            &t,
            &mut creates(&["a"], CreateReason::Replace),
            &[],
            &members,
            &zones(&["a"]),
            &none_in_flight(),
            ALL,
        );
        assert_eq!(p.take[0].wake, wake, "{state:?} / {s:?}");
    }
    // A stopped pool has no use for a paused member; a paused pool none for an exited one.
    let mut t = target(1, &["a"]);
    t.state = WarmPoolState::Stopped;
    let p = apply(
        &t,
        &mut Plan::default(),
        &[],
        &[member(1, "a", "new", Paused, 0)],
        &zones(&["a"]),
        &none_in_flight(),
        ALL,
    );
    assert_eq!(removed(&p), vec![("m1", RemoveReason::Failed)]);
    let mut t = target(1, &["a"]);
    t.state = WarmPoolState::Stopped;
    let p = apply(
        &t,
        &mut Plan::default(),
        &[],
        &[member(1, "a", "new", Running, 0)],
        &zones(&["a"]),
        &none_in_flight(),
        ALL,
    );
    assert!(matches!(p.settle[0].transition, Transition::Stop(_)));
}

#[test]
fn scale_in_gives_ready_current_instances_back_while_the_pool_has_room() {
    let mut t = target(2, &["a"]);
    t.reuse_on_scale_in = true;
    let instances = [
        instance(1, "a", "new"),
        instance(2, "a", "new"),
        instance(3, "a", "old"),
        instance(4, "a", "new"),
    ];
    let mut plan = plan::plan(
        &Target {
            desired: 1,
            max_size: 10,
            zones: vec!["a".into()],
            spec_hash: "new".into(),
            max_surge: 1,
            max_unavailable: 0,
            termination_policies: vec![],
        },
        &instances[..2],
        &zones(&["a"]),
    );
    assert_eq!(plan.remove.len(), 1);
    let members = [member(9, "a", "new", Paused, 0)];
    let p = apply(
        &t,
        &mut plan,
        &instances,
        &members,
        &zones(&["a"]),
        &none_in_flight(),
        ALL,
    );
    assert_eq!(p.give_back.len(), 1);
    assert_eq!(p.give_back[0].transition, Some(Transition::Pause));
    assert!(plan.remove.is_empty(), "given back, not removed");
    assert!(
        p.refill.is_empty(),
        "the given-back instance fills the pool"
    );

    // No room, another spec, or not ready: removed as usual.
    let mut unready = instance(5, "a", "new");
    unready.state = Created;
    let instances = [instance(3, "a", "old"), unready, instance(6, "a", "new")];
    let mut plan = Plan {
        create: vec![],
        remove: instances
            .iter()
            .map(|i| Remove {
                id: i.id.clone(),
                name: i.name.clone(),
                zone: i.zone.clone(),
                reason: RemoveReason::ScaleIn,
            })
            .collect(),
        held_by_protection: 0,
    };
    let members = [member(9, "a", "new", Paused, 0)];
    let mut t1 = t.clone();
    t1.size = 2;
    let p = apply(
        &t1,
        &mut plan,
        &instances,
        &members,
        &zones(&["a"]),
        &none_in_flight(),
        ALL,
    );
    let back: Vec<&str> = p.give_back.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(back, vec!["i6"]);
    let gone: Vec<&str> = plan.remove.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(gone, vec!["i3", "i5"]);
    // Without reuseOnScaleIn nothing comes back.
    let mut plan2 = plan.clone();
    plan2.remove.push(Remove {
        id: "i6".into(),
        name: "web-i6".into(),
        zone: "a".into(),
        reason: RemoveReason::ScaleIn,
    });
    let p = apply(
        &target(2, &["a"]),
        &mut plan2,
        &instances,
        &[],
        &zones(&["a"]),
        &none_in_flight(),
        ALL,
    );
    assert!(p.give_back.is_empty());
    assert_eq!(plan2.remove.len(), 3);
}

#[test]
fn only_takes_of_stopped_spares_need_room_in_the_namespace_quotas() {
    // A stopped pool: its exited spares are not counted while they wait; a running one (a
    // settle interrupted) is.
    let mut t = target(3, &["a"]);
    t.state = WarmPoolState::Stopped;
    let mut plan = creates(&["a", "a", "a"], CreateReason::ScaleOut);
    let members = [
        member(1, "a", "new", Exited, 0),
        member(2, "a", "new", Running, 1),
    ];
    let p = apply(
        &t,
        &mut plan,
        &[],
        &members,
        &zones(&["a"]),
        &none_in_flight(),
        ALL,
    );
    let how: Vec<(&str, bool)> = p.take.iter().map(|t| (t.id.as_str(), t.counted)).collect();
    assert_eq!(how, vec![("m1", false), ("m2", true)]);
    assert_eq!(takes_to_reserve(&p), 1);
    assert_eq!(plan.create.len(), 1, "one cold launch left");
    // A paused pool's takes are counted already: nothing to reserve (the fast self-heal).
    let mut plan = creates(&["a"], CreateReason::Replace);
    let p = apply(
        &target(1, &["a"]),
        &mut plan,
        &[],
        &[member(1, "a", "new", Paused, 0)],
        &zones(&["a"]),
        &none_in_flight(),
        ALL,
    );
    assert!(p.take.iter().all(|t| t.counted));
    assert_eq!(takes_to_reserve(&p), 0);
}

/// A stopped pool of `n` exited spares in zone a serving `creations` scale-outs there.
fn stopped_pool_serving(n: usize, creations: usize) -> (PoolPlan, Plan) {
    let mut t = target(n as u32, &["a"]);
    t.state = WarmPoolState::Stopped;
    let zs = vec!["a"; creations];
    let mut plan = creates(&zs, CreateReason::ScaleOut);
    let members: Vec<Member> = (0..n)
        .map(|i| member(i, "a", "new", Exited, i as i64))
        .collect();
    let p = apply(
        &t,
        &mut plan,
        &[],
        &members,
        &zones(&["a"]),
        &none_in_flight(),
        ALL,
    );
    (p, plan)
}

#[test]
fn the_quota_serves_takes_first_then_cold_creations_and_cuts_the_rest() {
    // (spares, creations wanted, granted) → (takes kept, cold creations kept, takes cut)
    let table = [
        (2, 4, 4, (2, 2, 0)),
        (2, 4, 3, (2, 1, 0)),
        (2, 4, 2, (2, 0, 0)),
        (2, 4, 1, (1, 0, 1)),
        (2, 4, 0, (0, 0, 2)),
        (3, 1, 0, (0, 0, 1)),
        (0, 3, 2, (0, 2, 0)),
    ];
    for (spares, creations, granted, want) in table {
        let (mut p, mut plan) = stopped_pool_serving(spares, creations);
        assert_eq!(
            takes_to_reserve(&p) as usize + plan.create.len(),
            creations,
            "every creation is a take or a cold launch"
        );
        let cut = cut_to_quota(&mut p, &mut plan, granted);
        assert_eq!(
            (p.take.len(), plan.create.len(), cut as usize),
            want,
            "{spares} spares, {creations} wanted, {granted} granted"
        );
    }
}

#[test]
fn takes_of_counted_members_stay_when_the_quota_is_full_and_cut_takes_refill_nothing() {
    // A stopped pool with one exited spare and one left running (counted already).
    let mut t = target(4, &["a"]);
    t.state = WarmPoolState::Stopped;
    let mut plan = creates(&["a", "a", "a"], CreateReason::ScaleOut);
    let members = [
        member(1, "a", "new", Exited, 0),
        member(2, "a", "new", Running, 1),
    ];
    let mut p = apply(
        &t,
        &mut plan,
        &[],
        &members,
        &zones(&["a"]),
        &none_in_flight(),
        ALL,
    );
    // Two takes (only the stopped one needs room) and one cold launch; nothing granted.
    assert_eq!((p.take.len(), plan.create.len()), (2, 1));
    assert_eq!(cut_to_quota(&mut p, &mut plan, 0), 1);
    assert_eq!(
        taken(&p),
        vec![("m2", "a")],
        "the running member is still taken"
    );
    assert!(plan.create.is_empty());
    // A pass whose stopped takes were all served may refill; one that cut a take may not.
    let mut plan = creates(&["a"], CreateReason::ScaleOut);
    let mut p = apply(
        &t,
        &mut plan,
        &[],
        &[member(1, "a", "new", Exited, 0)],
        &zones(&["a"]),
        &none_in_flight(),
        ALL,
    );
    assert!(!p.refill.is_empty(), "the take leaves room to refill");
    let mut kept = p.clone();
    assert_eq!(cut_to_quota(&mut kept, &mut plan.clone(), 1), 0);
    assert_eq!(kept.refill, p.refill, "granted: refills stay");
    assert_eq!(cut_to_quota(&mut p, &mut plan, 0), 1);
    assert!(p.take.is_empty() && p.refill.is_empty());
}
