//! Table tests of the conditions: one row per rule.

use std::time::Duration;

use chrono::{TimeZone, Utc};

use super::*;
use crate::reconcile::plan::{Create, Remove};

fn counts(current: u32, ready: u32, updated: u32) -> Counts {
    Counts {
        current,
        ready,
        updated,
        unhealthy: 0,
    }
}

const ZONES: &[String] = &[];

fn base<'a>(zones: &'a [String], remaining: &'a Plan) -> Inputs<'a> {
    Inputs {
        desired: 2,
        zones,
        counts: counts(2, 2, 2),
        stopping: 0,
        waiting_for: None,
        remaining,
        problems: &[],
        quota: None,
        unreachable: &[],
        removal: None,
        failure: None,
        manifest_error: None,
        deletion_held: None,
        in_flight: None,
    }
}

/// (type, status, reason, message) of each condition.
fn summary(i: &Inputs<'_>) -> Vec<(String, String, String, String)> {
    conditions(i, &[], Utc::now())
        .into_iter()
        .map(|c| (c.type_, c.status, c.reason, c.message))
        .collect()
}

fn find(i: &Inputs<'_>, t: &str) -> (String, String, String) {
    summary(i)
        .into_iter()
        .find(|c| c.0 == t)
        .map(|c| (c.1, c.2, c.3))
        .unwrap_or_else(|| panic!("no {t} condition"))
}

fn row(s: &str, r: &str, m: &str) -> (String, String, String) {
    (s.into(), r.into(), m.into())
}

#[test]
fn a_converged_group_is_ready_converged_as_expected_and_valid() {
    let none = Plan::default();
    let i = base(ZONES, &none);
    assert_eq!(
        summary(&i),
        vec![
            (
                "Ready".into(),
                "True".into(),
                "AllInstancesReady".into(),
                "2 of 2 instances ready".into()
            ),
            (
                "Progressing".into(),
                "False".into(),
                "Converged".into(),
                "the group matches its spec".into()
            ),
            (
                "Degraded".into(),
                "False".into(),
                "AsExpected".into(),
                "no failures".into()
            ),
            (
                "Invalid".into(),
                "False".into(),
                "Valid".into(),
                "the manifest is valid".into()
            ),
        ]
    );
}

#[test]
fn progressing_names_the_first_rule_that_applies() {
    let none = Plan::default();
    let rollout = Plan {
        create: vec![Create {
            zone: "a".into(),
            reason: CreateReason::Rollout,
        }],
        remove: vec![],
        ..Plan::default()
    };
    let rebalance = Plan {
        create: vec![],
        remove: vec![Remove {
            id: "1".into(),
            name: "web-1".into(),
            zone: "a".into(),
            reason: RemoveReason::Rebalance,
        }],
        ..Plan::default()
    };
    let protected = Plan {
        held_by_protection: 1,
        ..Plan::default()
    };
    let table: Vec<(Inputs<'_>, (String, String, String))> = vec![
        (
            Inputs {
                counts: counts(3, 3, 3),
                ..base(ZONES, &protected)
            },
            row(
                "True",
                "ProtectedFromScaleIn",
                "1 instance(s) the group would remove are protected from scale-in (3 instances, 2 desired): ms unprotect instance NAME, or wait for the protection to expire",
            ),
        ),
        (
            Inputs {
                counts: counts(2, 2, 1),
                ..base(ZONES, &none)
            },
            row(
                "True",
                "RollingUpdate",
                "rolling update: 1 of 2 instances updated",
            ),
        ),
        (
            base(ZONES, &rollout),
            row(
                "True",
                "RollingUpdate",
                "rolling update: 2 of 2 instances updated",
            ),
        ),
        (
            Inputs {
                counts: Counts {
                    unhealthy: 1,
                    ..counts(2, 1, 2)
                },
                ..base(ZONES, &none)
            },
            row(
                "True",
                "ReplacingUnhealthy",
                "1 instance(s) failed liveness and are being replaced",
            ),
        ),
        (
            Inputs {
                counts: counts(1, 1, 1),
                ..base(ZONES, &none)
            },
            row("True", "ScalingOut", "1 of 2 instances running"),
        ),
        (
            Inputs {
                counts: counts(3, 3, 3),
                ..base(ZONES, &none)
            },
            row("True", "ScalingIn", "3 instances, 2 desired"),
        ),
        (
            Inputs {
                stopping: 1,
                ..base(ZONES, &none)
            },
            row("True", "ScalingIn", "1 instance(s) still stopping"),
        ),
        (
            base(ZONES, &rebalance),
            row("True", "Rebalancing", "moving instances between zones"),
        ),
        (
            Inputs {
                counts: counts(2, 1, 2),
                ..base(ZONES, &none)
            },
            row("True", "WaitingForReadiness", "1 of 2 instances ready"),
        ),
        (
            Inputs {
                waiting_for: Some("waiting for launch configuration `lc`"),
                counts: counts(0, 0, 0),
                ..base(ZONES, &none)
            },
            row("False", "Converged", "the group matches its spec"),
        ),
    ];
    for (inputs, want) in table {
        assert_eq!(find(&inputs, "Progressing"), want, "{inputs:?}");
    }
}

#[test]
fn ready_needs_every_instance_current_ready_and_nothing_stopping() {
    let none = Plan::default();
    let table: Vec<(Inputs<'_>, (String, String, String))> = vec![
        (
            Inputs {
                stopping: 1,
                ..base(ZONES, &none)
            },
            row("False", "NotAllInstancesReady", "2 of 2 instances ready"),
        ),
        (
            Inputs {
                counts: counts(2, 2, 1),
                ..base(ZONES, &none)
            },
            row("False", "NotAllInstancesReady", "2 of 2 instances ready"),
        ),
        (
            Inputs {
                counts: counts(3, 3, 3),
                ..base(ZONES, &none)
            },
            row("False", "NotAllInstancesReady", "3 of 2 instances ready"),
        ),
        (
            Inputs {
                waiting_for: Some("waiting for launch configuration `lc`"),
                ..base(ZONES, &none)
            },
            row(
                "False",
                "WaitingForLaunchConfiguration",
                "waiting for launch configuration `lc`",
            ),
        ),
    ];
    for (inputs, want) in table {
        assert_eq!(find(&inputs, "Ready"), want, "{inputs:?}");
    }
}

#[test]
fn degraded_lists_every_problem_in_order_and_takes_the_first_reason() {
    let none = Plan::default();
    let zones = vec!["a".to_string(), "b".to_string()];
    let unknown = [ReconcileError::UnknownZone(
        "zone `c` is not configured".into(),
    )];
    let quota = ReconcileError::QuotaExceeded("namespace full".into());
    let removal = ReconcileError::RemovalFailed {
        why: "refused".into(),
        retry_in: Duration::from_secs(4),
    };
    let failure = ReconcileError::Panicked("oops".into());
    let unreachable = [
        ("b".to_string(), "down".to_string()),
        ("z".to_string(), "not ours".to_string()),
    ];
    let all = Inputs {
        problems: &unknown,
        quota: Some(&quota),
        unreachable: &unreachable,
        removal: Some(&removal),
        failure: Some((&failure, Some(Duration::from_millis(2500)))),
        ..base(&zones, &none)
    };
    assert_eq!(
        find(&all, "Degraded"),
        row(
            "True",
            "UnknownZone",
            "zone `c` is not configured; namespace full; zone b is unreachable (down); its capacity is made up in the other zones; refused; next attempt in 4s; internal error while reconciling (please report it): oops; retrying with backoff; next launch attempt in 3s",
        )
    );
    let failure_only = Inputs {
        failure: Some((&failure, None)),
        ..base(&zones, &none)
    };
    assert_eq!(
        find(&failure_only, "Degraded"),
        row(
            "True",
            "ReconcilePanicked",
            "internal error while reconciling (please report it): oops; retrying with backoff",
        )
    );
    let other_zone_down = Inputs {
        unreachable: &unreachable[1..],
        ..base(&zones, &none)
    };
    assert_eq!(
        find(&other_zone_down, "Degraded"),
        row("False", "AsExpected", "no failures"),
        "a zone the group does not use does not degrade it"
    );
}

#[test]
fn invalid_and_deletion_held_follow_the_manifest() {
    let none = Plan::default();
    let i = Inputs {
        manifest_error: Some("line 3: unknown field `sise`"),
        deletion_held: Some("the manifest is gone; confirm with ms delete"),
        ..base(ZONES, &none)
    };
    assert_eq!(
        find(&i, "Invalid"),
        row(
            "True",
            "ManifestError",
            "the manifest has errors, the last valid version keeps running: line 3: unknown field `sise`",
        )
    );
    assert_eq!(
        find(&i, "DeletionHeld"),
        row(
            "True",
            "ManifestGone",
            "the manifest is gone; confirm with ms delete"
        )
    );
    assert!(!summary(&base(ZONES, &none))
        .iter()
        .any(|c| c.0 == "DeletionHeld"));
}

#[test]
fn a_condition_keeps_its_transition_time_while_its_status_stays() {
    let none = Plan::default();
    let t0 = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let t1 = Utc.timestamp_opt(1_700_000_100, 0).unwrap();
    let first = conditions(&base(ZONES, &none), &[], t0);
    let same = conditions(&base(ZONES, &none), &first, t1);
    assert!(same.iter().all(|c| c.last_transition_time == t0));
    let scaling = Inputs {
        counts: counts(1, 1, 1),
        ..base(ZONES, &none)
    };
    let changed = conditions(&scaling, &first, t1);
    let at = |t: &str| {
        changed
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.last_transition_time)
    };
    assert_eq!(at("Ready"), Some(t1), "Ready turned False");
    assert_eq!(at("Progressing"), Some(t1), "Progressing turned True");
    assert_eq!(at("Degraded"), Some(t0), "Degraded stayed False");
}

#[test]
fn a_status_published_before_acting_says_what_is_being_done() {
    let none = Plan::default();
    let doing = |launching, removing| {
        Some(InFlight {
            launching,
            removing,
        })
    };
    let table: Vec<(Inputs<'_>, (String, String, String))> = vec![
        (
            Inputs {
                desired: 5,
                in_flight: doing(3, 0),
                ..base(ZONES, &none)
            },
            row(
                "True",
                "ScalingOut",
                "2 of 5 instances running; launching 3",
            ),
        ),
        (
            Inputs {
                desired: 1,
                in_flight: doing(0, 1),
                ..base(ZONES, &none)
            },
            row("True", "ScalingIn", "2 instances, 1 desired; removing 1"),
        ),
        (
            Inputs {
                counts: counts(2, 2, 1),
                in_flight: doing(1, 1),
                ..base(ZONES, &none)
            },
            row(
                "True",
                "RollingUpdate",
                "rolling update: 1 of 2 instances updated; launching 1, removing 1",
            ),
        ),
        // Nothing of the group's in flight (a warm pool's own work): the words of any pass.
        (
            Inputs {
                in_flight: doing(0, 0),
                ..base(ZONES, &none)
            },
            row("False", "Converged", "the group matches its spec"),
        ),
    ];
    for (i, want) in table {
        let acting = want.0 == "True";
        assert_eq!(find(&i, "Progressing"), want);
        // Ready only where nothing is being done to the group's instances.
        assert_eq!(find(&i, "Ready").0 == "True", !acting, "{want:?}");
    }
}
