//! The live autoscaler against the simulator, and capacity ownership, without an engine.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use super::policy::{GroupSample, SetBy};
use super::simulate;
use super::*;
use crate::config::Config;
use crate::reconcile::queue::Queue;

const GROUP: &str = "\
apiVersion: microscaler.io/v1
kind: LaunchConfiguration
metadata: {name: web}
spec: {image: microscaler/busybox:latest}
---
apiVersion: microscaler.io/v1
kind: AutoScalingGroup
metadata: {name: web}
spec:
  launchConfiguration: web
  minSize: 1
  maxSize: 8
  desiredCapacity: 2
  scaleOutCooldown: 30s
  scaleInCooldown: 60s
";

const POLICIES: &str = "\
apiVersion: microscaler.io/v1
kind: ScalingPolicy
metadata: {name: cpu-target}
spec:
  autoScalingGroup: web
  type: TargetTracking
  metric: CPU
  targetValue: 50
  samplingWindow: 20s
  scaleInStabilization: 90s
---
apiVersion: microscaler.io/v1
kind: ScalingPolicy
metadata: {name: cpu-step}
spec:
  autoScalingGroup: web
  metric: CPU
  samplingWindow: 30s
  breachDuration: 40s
  upperThreshold: 90
  lowerThreshold: 10
  scaleOutStep: 2
  scaleInStep: 1
---
apiVersion: microscaler.io/v1
kind: ScalingPolicy
metadata: {name: queue}
spec:
  autoScalingGroup: web
  type: TargetTracking
  pushedMetric: depth
  targetValue: 100
  scaleInStabilization: 30s
";

fn snapshot(yaml: &str) -> Desired {
    crate::watch::store::test_snapshot(yaml)
}

fn autoscaler(yaml: &str) -> (Arc<Autoscaler>, watch::Sender<Arc<Desired>>) {
    let (tx, rx) = watch::channel(Arc::new(snapshot(yaml)));
    let a = Autoscaler::new(
        rx,
        Arc::new(Config::default().tenancy()),
        vec![],
        Arc::new(Queue::new()),
        Settings {
            period: Duration::from_secs(10),
            pushed_max_age: Duration::from_secs(120),
            concurrency: 4,
        },
    );
    (a, tx)
}

fn web() -> ObjectKey {
    ObjectKey::new(Kind::AutoScalingGroup, "default", "web")
}

fn group_of(a: &Autoscaler) -> AutoScalingGroup {
    a.desired.borrow().group(&web()).unwrap().clone()
}

#[test]
fn the_simulator_and_the_live_autoscaler_make_the_same_decisions() {
    // A load that rises, wobbles, and falls, with a pushed queue depth burst in between and a
    // gap in metrics (engine unreachable) near the end.
    let mut csv = String::from("time,load,depth\n");
    for i in 0..180 {
        let t = i * 10;
        let load = match t {
            0..=199 => 60.0,
            200..=799 => 60.0 + (t - 200) as f64 * 0.9 + if i % 2 == 0 { 40.0 } else { -40.0 },
            _ => 40.0,
        };
        let depth = if (300..600).contains(&t) { "950" } else { "0" };
        if (1400..1460).contains(&t) {
            csv.push_str(&format!("{t},,{depth}\n"));
        } else {
            csv.push_str(&format!("{t},{load},{depth}\n"));
        }
    }
    let rows = simulate::parse_trace("trace.csv", &csv).unwrap();

    let (policies, group) = simulate::load(&[
        ("group.yaml".into(), GROUP.into()),
        ("policies.yaml".into(), POLICIES.into()),
    ])
    .unwrap();
    let sim = simulate::run(
        &simulate::SimGroup {
            spec: group.unwrap(),
            max_pushed_age: Duration::from_secs(120),
        },
        &policies,
        &rows,
    );

    // The live autoscaler, fed the same samples the way its collector and the push endpoint do.
    let (live, _tx) = autoscaler(&format!("{GROUP}---\n{POLICIES}"));
    let key = web();
    let g = group_of(&live);
    let mut live_decisions = Vec::new();
    for row in &rows {
        let cap = live.effective(&key, &g).desired;
        let cpu = row.load.map(|l| (l / cap as f64).min(100.0));
        live.record(
            &key,
            GroupSample {
                time: row.time,
                cpu,
                memory: None,
                instances: if cpu.is_some() { cap } else { 0 },
            },
        );
        for (name, v) in &row.pushed {
            live.push(&key, name, *v, row.time, 100).unwrap();
        }
        let d = live.evaluate_all(row.time).remove(&key).unwrap();
        let eff = live.effective(&key, &g);
        live_decisions.push((eff.desired, eff.set_by, d));
    }
    assert_eq!(sim.len(), live_decisions.len());
    let mut changes = 0;
    let mut last_sim: Option<&policy::Decision> = None;
    for (s, (cap, set_by, d)) in sim.iter().zip(&live_decisions) {
        assert_eq!(
            s.decision.desired, *cap,
            "at {}: {}",
            s.row.time, s.decision.message
        );
        assert_eq!(&s.set_by, set_by, "at {}", s.row.time);
        // The live status keeps the first decision of each outcome.
        if last_sim.is_none_or(|p| !p.same_outcome(&s.decision)) {
            last_sim = Some(&s.decision);
        }
        assert_eq!(last_sim, Some(d), "at {}", s.row.time);
        changes += usize::from(s.decision.desired != s.decision.capacity);
    }
    // The trace exercises scale-out, scale-in, the pushed policy and the guards.
    assert!(changes >= 3, "{}", simulate::render(&sim, false));
    let guards: Vec<_> = sim.iter().filter_map(|s| s.decision.guard).collect();
    for g in [
        policy::Guard::Cooldown,
        policy::Guard::Stabilization,
        policy::Guard::MissingMetrics,
    ] {
        assert!(
            guards.contains(&g),
            "{g:?} never used:\n{}",
            simulate::render(&sim, false)
        );
    }
    assert!(
        sim.iter()
            .any(|s| s.set_by == SetBy::Pushed("queue".into())),
        "{}",
        simulate::render(&sim, false)
    );
}

#[test]
fn a_changed_spec_desired_capacity_takes_over_until_a_policy_acts_again() {
    let (a, tx) = autoscaler(&format!("{GROUP}---\n{POLICIES}"));
    let key = web();
    let t0 = Utc::now();
    a.push(&key, "depth", 500.0, t0, 100).unwrap();
    a.evaluate_all(t0);
    let e = a.effective(&key, &group_of(&a));
    assert_eq!((e.desired, e.set_by), (5, SetBy::Pushed("queue".into())));
    let mut status = GroupStatus::default();
    a.fill_status(&key, &mut status);
    assert_eq!(
        status.desired_capacity_set_by.as_deref(),
        Some("pushed/queue")
    );
    assert!(status
        .last_decision
        .unwrap()
        .message
        .starts_with("scaled out from 2 to 5"));

    // The user edits spec.desiredCapacity (git checkout, ms scale): the user's value wins.
    tx.send(Arc::new(snapshot(&format!(
        "{}---\n{POLICIES}",
        GROUP.replace("desiredCapacity: 2", "desiredCapacity: 3")
    ))))
    .unwrap();
    let e = a.effective(&key, &group_of(&a));
    assert_eq!((e.desired, e.set_by), (3, SetBy::User));

    // Until a policy acts again.
    a.push(
        &key,
        "depth",
        700.0,
        t0 + chrono::Duration::seconds(60),
        100,
    )
    .unwrap();
    a.evaluate_all(t0 + chrono::Duration::seconds(60));
    let e = a.effective(&key, &group_of(&a));
    assert_eq!((e.desired, e.set_by), (7, SetBy::Pushed("queue".into())));
}

#[test]
fn groups_without_policies_keep_a_quiet_status() {
    let (a, _tx) = autoscaler(GROUP);
    let key = web();
    a.record(
        &key,
        GroupSample {
            time: Utc::now(),
            cpu: Some(42.0),
            memory: Some(10.0),
            instances: 2,
        },
    );
    a.evaluate_all(Utc::now());
    let mut status = GroupStatus::default();
    a.fill_status(&key, &mut status);
    assert_eq!(status, GroupStatus::default());
    assert_eq!(a.effective(&key, &group_of(&a)).desired, 2);
}

#[test]
fn a_policy_set_capacity_survives_a_restart_from_the_previous_status_source() {
    let (a, _tx) = autoscaler(&format!("{GROUP}---\n{POLICIES}"));
    let key = web();
    let generation = a.desired.borrow().objects[&key].generation.clone();
    // As the sidecar tree would hold it (the manifest itself has no status block).
    let previous = serde_json::json!({
        "observedGeneration": generation,
        "desiredCapacity": 4,
        "current": 4,
        "ready": 4,
        "desiredCapacitySetBy": "policy/cpu-target",
    });
    a.set_previous_status(Arc::new(move |k, in_file| {
        assert!(in_file.is_none());
        (k == &web()).then(|| previous.clone())
    }));
    let e = a.effective(&key, &group_of(&a));
    assert_eq!(
        (e.desired, e.set_by),
        (4, SetBy::Policy("cpu-target".into()))
    );
}
