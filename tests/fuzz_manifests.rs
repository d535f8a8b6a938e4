//! Fuzzing the parser, the validator and what runs on validated input (issue 9): no manifest a
//! tenant can write makes the controller panic.
//!
//! Two generators: raw text (anything at all), and manifests of each kind whose fields take
//! hostile values (huge, negative, fractional, wrongly typed, absurd durations). Every manifest
//! that passes validation is then pushed through what the controller does with it: the
//! namespace checks, the container spec and hash, and policy evaluation at extreme times.
//!
//! Bounded for CI: `PROPTEST_CASES` cases per property (default 256 here); `scripts/fuzz`
//! runs a long session.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use microscaler::autoscale::policy::{GroupSample, GroupState, History};
use microscaler::autoscale::{evaluate_group, CapacityOwner};
use microscaler::config::tenancy::{Tenancy, Usage};
use microscaler::manifest::{parse_file, parse_file_checked, DurationSpec, Object, ObjectKey};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Values a hostile tenant would try, as YAML text.
fn hostile_value() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "0",
        "-1",
        "1",
        "0.5",
        "-0.0",
        "1e30",
        "1e308",
        "-1e308",
        "1e-320",
        ".nan",
        ".inf",
        "-.inf",
        "4294967295",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "-9223372036854775808",
        "\"1e30\"",
        "\"99999999999999999999d\"",
        "\"18446744073709551615s1s\"",
        "\"365d\"",
        "\"366d\"",
        "\"1h\"",
        "\"0s\"",
        "\"1.5ms\"",
        "\"25%\"",
        "\"100%\"",
        "\"101%\"",
        "\"-5%\"",
        "\"%\"",
        "null",
        "true",
        "~",
        "[]",
        "{}",
        "[1, 2]",
        "{a: 1}",
        "\"\"",
        "\"host\"",
        "\"container:abc\"",
        "\"0.0.0.0\"",
        "\"::\"",
        "\"0 0 31 2 *\"",
        "\"* * * * *\"",
        "\"0 8 * * MON-FRI\"",
        "\"Europe/Berlin\"",
        "\"9999-12-31T23:59:59Z\"",
        "\"0001-01-01T00:00:00Z\"",
        "\"CPU\"",
        "\"Memory\"",
        "\"TargetTracking\"",
        "\"Scheduled\"",
        "\"Step\"",
        "\"Stopped\"",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        4 => fixed,
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:e}")),
        1 => "[a-z0-9.:%-]{0,12}".prop_map(|s| format!("\"{s}\"")),
    ]
}

const LC_FIELDS: &[&str] = &[
    "instanceType",
    "resources",
    "command",
    "entrypoint",
    "env",
    "ports",
    "labels",
    "userData",
    "network",
    "stopGracePeriod",
];
const GROUP_FIELDS: &[&str] = &[
    "minSize",
    "maxSize",
    "desiredCapacity",
    "availabilityZones",
    "scaleOutCooldown",
    "scaleInCooldown",
    "domain",
    "state",
    "maxSurge",
    "maxUnavailable",
    "healthCheckGracePeriod",
];
const POLICY_FIELDS: &[&str] = &[
    "type",
    "metric",
    "pushedMetric",
    "samplingWindow",
    "breachDuration",
    "scaleOutStep",
    "scaleInStep",
    "upperThreshold",
    "lowerThreshold",
    "targetValue",
    "tolerance",
    "scaleInStabilization",
    "maxScaleOutStep",
    "maxScaleInStep",
];

/// Values for nested fields: resources, ports, schedules.
fn nested(field: &'static str) -> BoxedStrategy<String> {
    match field {
        "resources" => (hostile_value(), hostile_value())
            .prop_map(|(c, m)| format!("{{cpus: {c}, memoryMiB: {m}}}"))
            .boxed(),
        "ports" => (hostile_value(), hostile_value(), hostile_value())
            .prop_map(|(c, h, ip)| format!("[{{containerPort: {c}, hostPort: {h}, hostIp: {ip}}}]"))
            .boxed(),
        _ => hostile_value().boxed(),
    }
}

/// A spec: some of `fields`, each with a hostile value, over a minimal valid base.
fn spec(base: &'static str, fields: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(fields).prop_flat_map(|f| nested(f).prop_map(move |v| (f, v))),
        0..5,
    )
    .prop_map(move |pairs| {
        let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
        for (f, v) in pairs {
            lines.retain(|l| !l.trim_start().starts_with(&format!("{f}:")));
            lines.push(format!("  {f}: {v}"));
        }
        lines.join("\n") + "\n"
    })
}

fn schedule() -> impl Strategy<Value = String> {
    (hostile_value(), hostile_value(), hostile_value(), hostile_value()).prop_map(
        |(cron, min, d, end)| {
            format!(
                "  schedule: [{{cron: {cron}, minSize: {min}, desiredCapacity: {d}, endTime: {end}}}]\n"
            )
        },
    )
}

/// Three documents: a launch configuration, a group and a policy over hostile values.
fn manifests() -> impl Strategy<Value = String> {
    (
        spec("  image: microscaler/busybox:latest", LC_FIELDS),
        spec("  launchConfiguration: web\n  minSize: 1\n  maxSize: 3", GROUP_FIELDS),
        spec(
            "  autoScalingGroup: web\n  metric: CPU\n  upperThreshold: 80\n  lowerThreshold: 30\n  scaleOutStep: 1\n  scaleInStep: 1",
            POLICY_FIELDS,
        ),
        prop::option::of(schedule()),
    )
        .prop_map(|(lc, group, policy, sched)| {
            let head = |kind: &str, name: &str| {
                format!("apiVersion: microscaler.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: team-a}}\nspec:\n")
            };
            format!(
                "{}{lc}---\n{}{group}---\n{}{policy}{}",
                head("LaunchConfiguration", "web"),
                head("AutoScalingGroup", "web"),
                head("ScalingPolicy", "cpu"),
                sched.unwrap_or_default()
            )
        })
}

fn tenancy() -> Tenancy {
    let limits = serde_yaml_ng::from_str("{team-a: {maxCpus: 8, maxMemoryMiB: 4096}}").unwrap();
    Tenancy::new(limits, None, vec![56785])
}

/// Everything the controller does with a valid set of objects.
fn exercise(objects: &[Object]) {
    let t = tenancy();
    for o in objects {
        t.check_object(o);
    }
    let usage = t.desired_usage("team-a", objects.iter());
    t.check_usage("team-a", Usage::default(), usage).ok();
    let lc = objects.iter().find_map(|o| match o {
        Object::LaunchConfiguration(l) => Some(l),
        _ => None,
    });
    let group = objects.iter().find_map(|o| match o {
        Object::AutoScalingGroup(g) => Some(g),
        _ => None,
    });
    let policies: Vec<(String, _)> = objects
        .iter()
        .filter_map(|o| match o {
            Object::ScalingPolicy(p) => Some((p.metadata.name.clone(), p.spec.clone())),
            _ => None,
        })
        .collect();
    if let (Some(lc), Some(group)) = (lc, group) {
        let limits = t.container_limits("team-a", &lc.spec);
        t.room("team-a", usage, 1000, limits);
        let hash = microscaler::reconcile::container_hash_with_limits(lc, group, limits);
        let key = ObjectKey::new(
            microscaler::manifest::Kind::AutoScalingGroup,
            "team-a",
            "web",
        );
        let spec = microscaler::reconcile::container_spec(&key, lc, group, "a", &hash, "c", limits);
        assert!(spec.memory_bytes.is_none_or(|m| m > 0));
        assert!(spec.nano_cpus.is_none_or(|c| c > 0));
    }
    if let Some(group) = group {
        let now = Utc::now();
        let mut history = History::default();
        for (i, cpu) in [Some(95.0), Some(5.0), None, Some(f64::MAX)]
            .iter()
            .enumerate()
        {
            history.record(GroupSample {
                time: now - chrono::Duration::seconds(40 - 10 * i as i64),
                cpu: *cpu,
                memory: *cpu,
                instances: u32::MAX,
            });
        }
        history.push("q", now, f64::MAX);
        let mut owner = CapacityOwner::default();
        let mut state = GroupState::default();
        for at in [
            now,
            now + chrono::Duration::days(400),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ] {
            let d = evaluate_group(
                &mut owner,
                &group.spec,
                &policies,
                &history,
                &mut state,
                at,
                Duration::from_secs(u64::MAX),
            );
            assert!(d.desired <= group.spec.max_size.max(group.spec.min_size));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn raw_text_never_panics(text in "\\PC{0,400}") {
        parse_file(Path::new("fuzz.yaml"), &text);
        let _ = DurationSpec::parse(&text);
    }

    #[test]
    fn hostile_values_are_errors_or_run_without_panicking(text in manifests()) {
        let t = tenancy();
        let parsed = parse_file_checked(Path::new("fuzz.yaml"), &text, &|o| t.check_object(o));
        let plain = parse_file(Path::new("fuzz.yaml"), &text);
        // Every error names a place in the file.
        for e in parsed.errors.iter().chain(&plain.errors) {
            prop_assert!(e.line >= 1 && !e.message.is_empty(), "{e}");
        }
        let objects: Vec<Object> = plain.objects.into_iter().map(|o| o.object).collect();
        exercise(&objects);
    }

    #[test]
    fn durations_never_panic(n in any::<f64>(), unit in prop::sample::select(vec!["", "ms", "s", "m", "h", "d"]), reps in 1usize..4) {
        let text: String = std::iter::repeat_n(format!("{n}{unit}"), reps).collect();
        let _ = DurationSpec::parse(&text);
        let _ = serde_yaml_ng::from_str::<DurationSpec>(&format!("{n}"));
    }
}
