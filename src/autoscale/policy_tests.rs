//! Table-driven tests of every policy type and guard, on made-up time.

use super::*;
use chrono::TimeZone;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn policy(yaml: &str) -> ScalingPolicySpec {
    serde_yaml_ng::from_str(&format!("autoScalingGroup: web\n{yaml}")).expect("policy parses")
}

/// `defaults` overridden by the lines of `extra` (same keys).
fn with(defaults: &str, extra: &str) -> String {
    let keys: Vec<&str> = extra.lines().filter_map(|l| l.split(':').next()).collect();
    let mut out: Vec<&str> = defaults
        .lines()
        .filter(|l| !keys.contains(&l.split(':').next().unwrap_or("")))
        .collect();
    out.extend(extra.lines());
    out.join("\n")
}

fn tt(extra: &str) -> (String, ScalingPolicySpec) {
    (
        "cpu-target".to_string(),
        policy(&with(
            "type: TargetTracking\nmetric: CPU\ntargetValue: 50\nsamplingWindow: 10s",
            extra,
        )),
    )
}

fn step_policy(extra: &str) -> (String, ScalingPolicySpec) {
    (
        "cpu-step".to_string(),
        policy(&with(
            "metric: CPU\nsamplingWindow: 10s\nbreachDuration: 60s\nupperThreshold: 80\nlowerThreshold: 30\nscaleOutStep: 1\nscaleInStep: 1",
            extra,
        )),
    )
}

fn group(capacity: u32) -> GroupInput {
    GroupInput {
        capacity,
        min_size: 1,
        max_size: 10,
        scale_out_cooldown: Duration::from_secs(0),
        scale_in_cooldown: Duration::from_secs(0),
        max_pushed_age: Duration::from_secs(60),
    }
}

fn sample(secs: i64, cpu: Option<f64>, instances: u32) -> GroupSample {
    GroupSample {
        time: at(secs),
        cpu,
        memory: cpu.map(|_| 20.0),
        instances,
    }
}

/// One evaluation with a single CPU sample taken just before.
fn once(
    policies: &[(String, ScalingPolicySpec)],
    g: GroupInput,
    cpu: Option<f64>,
    instances: u32,
) -> Outcome {
    let mut h = History::default();
    h.record(sample(0, cpu, instances));
    evaluate(at(1), &g, policies, &h, &mut GroupState::default())
}

#[test]
#[allow(clippy::type_complexity)]
fn single_evaluations_follow_each_rule_and_name_the_guard() {
    // (what, policies, capacity, cpu, measured instances, desired, guard)
    let cases: Vec<(
        &str,
        Vec<(String, ScalingPolicySpec)>,
        u32,
        Option<f64>,
        u32,
        u32,
        Option<Guard>,
    )> = vec![
        (
            "target tracking scales out at once",
            vec![tt("")],
            2,
            Some(100.0),
            2,
            4,
            None,
        ),
        (
            "the tolerance band keeps the capacity",
            vec![tt("")],
            2,
            Some(54.0),
            2,
            2,
            Some(Guard::Tolerance),
        ),
        (
            "outside the band it acts",
            vec![tt("")],
            2,
            Some(60.0),
            2,
            3,
            None,
        ),
        (
            "a wider tolerance holds more",
            vec![tt("tolerance: 25")],
            2,
            Some(60.0),
            2,
            2,
            Some(Guard::Tolerance),
        ),
        (
            "the rate limit caps a scale-out",
            vec![tt("maxScaleOutStep: 2")],
            2,
            Some(100.0),
            4,
            4,
            Some(Guard::RateLimit),
        ),
        (
            "the rate limit caps a scale-in",
            vec![tt("maxScaleInStep: 1")],
            6,
            Some(5.0),
            6,
            5,
            Some(Guard::RateLimit),
        ),
        (
            "warming instances are not multiplied",
            vec![tt("")],
            4,
            Some(100.0),
            2,
            4,
            None,
        ),
        (
            "maxSize caps the result",
            vec![tt("")],
            8,
            Some(100.0),
            8,
            10,
            Some(Guard::MaxSize),
        ),
        (
            "minSize floors the result",
            vec![tt("")],
            2,
            Some(1.0),
            2,
            1,
            None,
        ),
        (
            "missing metrics hold",
            vec![tt("")],
            3,
            None,
            0,
            3,
            Some(Guard::MissingMetrics),
        ),
        (
            "no measured instance is missing too",
            vec![tt("")],
            3,
            Some(0.0),
            0,
            3,
            Some(Guard::MissingMetrics),
        ),
        (
            "a step policy waits for the breach duration",
            vec![step_policy("")],
            2,
            Some(95.0),
            2,
            2,
            Some(Guard::BreachDuration),
        ),
        (
            "largest wins: a missing policy holds another's scale-in",
            vec![
                tt(""),
                (
                    "mem".into(),
                    policy("type: TargetTracking\npushedMetric: queue\ntargetValue: 5"),
                ),
            ],
            4,
            Some(5.0),
            4,
            4,
            Some(Guard::MissingMetrics),
        ),
        (
            "largest wins: scale-out beats steady",
            vec![tt(""), step_policy("")],
            2,
            Some(100.0),
            2,
            4,
            None,
        ),
    ];
    for (what, policies, cap, cpu, n, want, guard) in cases {
        let out = once(&policies, group(cap), cpu, n);
        assert_eq!(
            (out.decision.desired, out.decision.guard),
            (want, guard),
            "{what}: {}",
            out.decision.message
        );
        assert!(
            (out.min_size..=out.max_size).contains(&out.decision.desired),
            "{what}"
        );
    }
}

/// Runs a trace: one sample and one evaluation every `period` seconds, feeding the decided
/// capacity back. `load(t, capacity) -> (cpu, instances)`.
fn run(
    policies: &[(String, ScalingPolicySpec)],
    mut g: GroupInput,
    period: i64,
    until: i64,
    load: impl Fn(i64, u32) -> (Option<f64>, u32),
) -> Vec<(i64, Decision)> {
    let mut h = History::default();
    let mut st = GroupState::default();
    let mut out = Vec::new();
    let mut t = 0;
    while t <= until {
        let (cpu, n) = load(t, g.capacity);
        h.record(sample(t, cpu, n));
        let o = evaluate(at(t), &g, policies, &h, &mut st);
        g.capacity = o.decision.desired;
        out.push((t, o.decision));
        t += period;
    }
    out
}

fn capacities(trace: &[(i64, Decision)]) -> Vec<u32> {
    trace.iter().map(|(_, d)| d.desired).collect()
}

fn reversals(caps: &[u32]) -> usize {
    let dirs: Vec<i64> = caps
        .windows(2)
        .map(|w| (w[1] as i64 - w[0] as i64).signum())
        .filter(|d| *d != 0)
        .collect();
    dirs.windows(2).filter(|w| w[0] != w[1]).count()
}

#[test]
fn target_tracking_scales_in_only_after_the_stabilization_window() {
    let p = [tt("scaleInStabilization: 60s")];
    // 400 instance-percent of work for 2 minutes, then 40.
    let trace = run(&p, group(2), 10, 300, |t, cap| {
        let load = if t < 120 { 400.0 } else { 40.0 };
        (Some((load / cap as f64).min(100.0)), cap)
    });
    let cap_at = |s: i64| trace.iter().find(|(t, _)| *t == s).unwrap().1.desired;
    assert_eq!(cap_at(0), 4, "scale-out is immediate");
    assert_eq!(cap_at(10), 8);
    assert_eq!(
        cap_at(160),
        8,
        "held by the 60s window after the last high value (110s)"
    );
    let held = &trace.iter().find(|(t, _)| *t == 150).unwrap().1;
    assert_eq!(held.guard, Some(Guard::Stabilization), "{}", held.message);
    assert!(held.message.starts_with("held at 8"), "{}", held.message);
    assert_eq!(cap_at(170), 1, "after the window");
    assert_eq!(reversals(&capacities(&trace)), 1);
}

#[test]
fn flapping_input_does_not_flap_the_capacity() {
    // Load alternating every sample between 20% and 80% of 4 instances.
    let p = [tt("scaleInStabilization: 120s\nsamplingWindow: 10s")];
    let trace = run(&p, group(4), 10, 900, |t, cap| {
        let load = if (t / 10) % 2 == 0 { 80.0 } else { 320.0 };
        (Some((load / cap as f64).min(100.0)), cap)
    });
    let caps = capacities(&trace);
    assert!(reversals(&caps) <= 1, "{caps:?}");
    // Around the target within tolerance nothing changes at all.
    let trace = run(&[tt("")], group(4), 10, 600, |t, cap| {
        (Some(if (t / 10) % 2 == 0 { 46.0 } else { 54.0 }), cap)
    });
    assert!(capacities(&trace).iter().all(|c| *c == 4));
    // A step policy whose thresholds are crossed back and forth never acts.
    let trace = run(&[step_policy("")], group(4), 10, 600, |t, cap| {
        (Some(if (t / 10) % 2 == 0 { 10.0 } else { 95.0 }), cap)
    });
    assert!(capacities(&trace).iter().all(|c| *c == 4));
}

#[test]
fn step_policy_acts_after_the_breach_duration_and_respects_cooldowns() {
    let mut g = group(2);
    g.scale_out_cooldown = Duration::from_secs(120);
    g.scale_in_cooldown = Duration::from_secs(120);
    let trace = run(&[step_policy("")], g, 10, 600, |t, cap| {
        (Some(if t < 300 { 95.0 } else { 5.0 }), cap)
    });
    let d = |s: i64| trace.iter().find(|(t, _)| *t == s).unwrap().1.clone();
    assert_eq!(d(50).desired, 2);
    assert_eq!(d(50).guard, Some(Guard::BreachDuration));
    assert_eq!(d(60).desired, 3, "{}", d(60).message);
    assert_eq!(d(60).policy.as_deref(), Some("cpu-step"));
    assert_eq!(d(70).guard, Some(Guard::Cooldown), "{}", d(70).message);
    assert!(
        d(70).message.contains("scale-out cooldown until 09:03:00"),
        "{}",
        d(70).message
    );
    assert_eq!(d(180).desired, 4, "acts again after the cooldown");
    // Below the lower threshold from 300s: the breach must last 60s; the scale-in cooldown
    // (from the scale-out at 180s) is over by then, and each scale-in starts a new one.
    assert_eq!(d(350).desired, 4);
    assert_eq!(d(350).guard, Some(Guard::BreachDuration));
    assert_eq!(d(360).desired, 3, "{}", d(360).message);
    assert_eq!(d(370).guard, Some(Guard::Cooldown));
    assert!(
        d(370)
            .message
            .starts_with("held at 3: scale-in cooldown until 09:08:00"),
        "{}",
        d(370).message
    );
    assert_eq!(d(480).desired, 2);
    assert_eq!(reversals(&capacities(&trace)), 1);
}

#[test]
fn missing_metrics_never_scale_in() {
    for p in [tt(""), step_policy("breachDuration: 10s")] {
        let trace = run(&[p], group(5), 10, 300, |t, cap| {
            // Metrics vanish after 60s (engine unreachable).
            if t < 60 {
                (Some(50.0), cap)
            } else {
                (None, 0)
            }
        });
        assert!(
            capacities(&trace).iter().all(|c| *c >= 5),
            "{:?}",
            capacities(&trace)
        );
        assert_eq!(trace.last().unwrap().1.guard, Some(Guard::MissingMetrics));
    }
}

#[test]
fn stale_pushed_values_are_missing_not_zero() {
    let p = [(
        "queue".to_string(),
        policy(
            "type: TargetTracking\npushedMetric: depth\ntargetValue: 10\nscaleInStabilization: 0s",
        ),
    )];
    let mut h = History::default();
    h.push("depth", at(0), 55.0);
    let mut st = GroupState::default();
    let o = evaluate(at(5), &group(1), &p, &h, &mut st);
    assert_eq!(o.decision.desired, 6, "{}", o.decision.message);
    assert_eq!(o.set_by, Some(SetBy::Pushed("queue".into())));
    // 61s later the value is stale: held, not scaled to zero work.
    let o = evaluate(at(61), &group(6), &p, &h, &mut st);
    assert_eq!(o.decision.desired, 6);
    assert_eq!(o.decision.guard, Some(Guard::MissingMetrics));
    h.push("depth", at(70), 0.0);
    let o = evaluate(at(71), &group(6), &p, &h, &mut st);
    assert_eq!(o.decision.desired, 1, "{}", o.decision.message);
}

#[test]
fn scheduled_actions_fire_in_their_time_zone_and_set_bounds() {
    let p = [(
        "office".to_string(),
        policy(
            "type: Scheduled\nschedule:\n- {cron: \"0 8 * * MON-FRI\", timeZone: Europe/Berlin, minSize: 4, desiredCapacity: 6}\n- {cron: \"0 18 * * MON-FRI\", timeZone: Europe/Berlin, minSize: 1}",
        ),
    )];
    let h = History::default();
    let mut st = GroupState::default();
    // 2026-03-02 is a Monday; Berlin is UTC+1: 08:00 there is 07:00 UTC.
    let utc = |h: u32, m: u32| Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap();
    let o = evaluate(utc(6, 59), &group(2), &p, &h, &mut st);
    assert_eq!(
        (o.decision.desired, o.min_size),
        (2, 1),
        "the evening bounds of Friday"
    );
    let o = evaluate(utc(7, 0), &group(2), &p, &h, &mut st);
    assert_eq!(o.decision.desired, 6, "{}", o.decision.message);
    assert_eq!(o.min_size, 4);
    assert_eq!(o.set_by, Some(SetBy::Schedule("office".into())));
    assert!(
        o.decision.message.contains("fired"),
        "{}",
        o.decision.message
    );
    // It fires once; a user lowering to 2 afterwards is raised to the scheduled minSize.
    let o = evaluate(utc(7, 1), &group(2), &p, &h, &mut st);
    assert_eq!(
        (o.decision.desired, o.decision.guard),
        (4, Some(Guard::MinSize))
    );
    assert_eq!(o.set_by, Some(SetBy::Schedule("office".into())));
    let o = evaluate(utc(17, 30), &group(4), &p, &h, &mut st);
    assert_eq!(o.min_size, 1);
}

#[test]
fn scheduled_actions_honour_start_and_end_times() {
    let p = [(
        "sale".to_string(),
        policy("type: Scheduled\nschedule:\n- {cron: \"* * * * *\", minSize: 5, startTime: \"2026-03-02T09:00:00Z\", endTime: \"2026-03-02T10:00:00Z\"}"),
    )];
    let h = History::default();
    let mut st = GroupState::default();
    assert_eq!(evaluate(at(-60), &group(1), &p, &h, &mut st).min_size, 1);
    let o = evaluate(at(30), &group(1), &p, &h, &mut st);
    assert_eq!((o.min_size, o.decision.desired), (5, 5));
    assert_eq!(evaluate(at(3600), &group(5), &p, &h, &mut st).min_size, 1);
}

#[test]
fn same_outcome_ignores_time_and_values() {
    let p = [tt("")];
    let a = once(&p, group(2), Some(52.0), 2).decision;
    let b = once(&p, group(2), Some(53.0), 2).decision;
    assert!(a.same_outcome(&b));
    let c = once(&p, group(2), Some(90.0), 2).decision;
    assert!(!a.same_outcome(&c));
}

#[test]
fn set_by_round_trips_through_its_text() {
    for s in [
        SetBy::User,
        SetBy::Policy("a".into()),
        SetBy::Pushed("b".into()),
        SetBy::Schedule("c".into()),
    ] {
        assert_eq!(SetBy::parse(&s.to_string()), Some(s));
    }
}

/// Issue 9: a `samplingWindow` of 317,000 years made `now - window` panic while the autoscaler
/// held its lock. Validation refuses such values now; the arithmetic saturates anyway.
#[test]
fn extreme_durations_saturate_instead_of_panicking() {
    for huge in [
        Duration::from_secs(10_000_000_000_000),
        Duration::from_secs(u64::MAX),
    ] {
        extreme(huge);
    }
}

fn extreme(huge: Duration) {
    let mut spec_step = step_policy("upperThreshold: 10").1;
    spec_step.sampling_window = crate::manifest::DurationSpec(huge);
    spec_step.breach_duration = crate::manifest::DurationSpec(huge);
    let mut spec_tt = tt("").1;
    spec_tt.sampling_window = crate::manifest::DurationSpec(huge);
    spec_tt.scale_in_stabilization = Some(crate::manifest::DurationSpec(huge));
    let policies = vec![("a".to_string(), spec_step), ("b".to_string(), spec_tt)];
    let g = GroupInput {
        scale_out_cooldown: huge,
        scale_in_cooldown: huge,
        max_pushed_age: huge,
        ..group(3)
    };
    let mut h = History::default();
    h.record(sample(0, Some(99.0), 3));
    h.push("q", at(0), 1e300);
    let mut state = GroupState::default();
    for now in [
        at(1),
        at(2),
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
    ] {
        let out = evaluate(now, &g, &policies, &h, &mut state);
        assert!(out.decision.desired <= 10);
    }
    assert!(h
        .reading(&MetricRef::Pushed("q".into()), huge, at(1), huge)
        .is_some());
}
