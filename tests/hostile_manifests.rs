//! Manifests a hostile tenant would write (issue 9): every absurd number is a clear error at the
//! field that holds it, never a panic, and the bounds say what would be accepted.

use std::path::Path;

use microscaler::manifest::parse_file;

const LC: &str = "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {name: web}\nspec:\n  image: microscaler/busybox:latest\n";
const GROUP: &str = "apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {name: web}\nspec:\n  launchConfiguration: web\n  minSize: 1\n  maxSize: 3\n";
const POLICY: &str = "apiVersion: microscaler.io/v1\nkind: ScalingPolicy\nmetadata: {name: cpu}\nspec:\n  autoScalingGroup: web\n  metric: CPU\n  upperThreshold: 80\n  lowerThreshold: 30\n  scaleOutStep: 1\n  scaleInStep: 1\n";
const TT: &str = "apiVersion: microscaler.io/v1\nkind: ScalingPolicy\nmetadata: {name: tt}\nspec:\n  autoScalingGroup: web\n  type: TargetTracking\n  metric: CPU\n  targetValue: 50\n";

/// The errors of `base` with `extra` appended to its spec, as (field, message).
fn errors(base: &str, extra: &str) -> Vec<(String, String)> {
    let text = format!("{base}  {extra}\n");
    let parsed = parse_file(Path::new("hostile.yaml"), &text);
    parsed
        .errors
        .into_iter()
        .map(|e| (e.field, e.message))
        .collect()
}

#[track_caller]
fn refused(base: &str, extra: &str, field: &str, words: &str) {
    let errs = errors(base, extra);
    assert!(
        errs.iter().any(|(f, m)| f == field && m.contains(words)),
        "`{extra}`: wanted {field}: ...{words}..., got {errs:?}"
    );
}

#[test]
fn the_sampling_window_that_stopped_every_tenant_is_refused() {
    refused(
        POLICY,
        "samplingWindow: 10000000000000",
        "spec.samplingWindow",
        "too long",
    );
    refused(
        POLICY,
        "samplingWindow: 400d",
        "spec.samplingWindow",
        "limit of 365d",
    );
    refused(
        POLICY,
        "breachDuration: 366d",
        "spec.breachDuration",
        "limit of",
    );
    refused(
        TT,
        "scaleInStabilization: 9000h",
        "spec.scaleInStabilization",
        "limit of",
    );
    assert!(errors(POLICY, "samplingWindow: 365d").is_empty());
}

#[test]
fn absurd_stop_grace_periods_are_errors_not_dropped_connections() {
    for v in [
        "\"1e30\"",
        "99999999999999999999d",
        "18446744073709551615s1s",
        "1e30",
    ] {
        refused(
            LC,
            &format!("stopGracePeriod: {v}"),
            "spec.stopGracePeriod",
            "too long",
        );
    }
    refused(
        LC,
        "stopGracePeriod: 2h",
        "spec.stopGracePeriod",
        "limit of 1h",
    );
    assert!(errors(LC, "stopGracePeriod: 1h").is_empty());
}

#[test]
fn sizes_and_counts_are_bounded() {
    refused(
        LC,
        "resources: {memoryMiB: 18446744073709551615}",
        "spec.resources.memoryMiB",
        "above the limit",
    );
    refused(
        LC,
        "resources: {cpus: 1e300}",
        "spec.resources.cpus",
        "above the limit",
    );
    refused(
        GROUP,
        "maxSurge: 4294967295",
        "spec.maxSurge",
        "above the limit",
    );
    refused(
        GROUP,
        "maxUnavailable: 4000",
        "spec.maxUnavailable",
        "above the limit",
    );
    refused(
        GROUP,
        "scaleOutCooldown: 1000d",
        "spec.scaleOutCooldown",
        "limit of",
    );
    let no_steps = POLICY.replace("  scaleOutStep: 1\n", "");
    refused(
        &no_steps,
        "scaleOutStep: 4294967295",
        "spec.scaleOutStep",
        "above the limit",
    );
    refused(
        TT.replace("  targetValue: 50\n", "").as_str(),
        "targetValue: 1e300",
        "spec.targetValue",
        "beyond the limit",
    );
    refused(
        TT,
        "maxScaleOutStep: 100000",
        "spec.maxScaleOutStep",
        "above the limit",
    );
    refused(
        "apiVersion: microscaler.io/v1\nkind: ScalingPolicy\nmetadata: {name: s}\nspec:\n  autoScalingGroup: web\n  type: Scheduled\n",
        "schedule: [{cron: \"0 8 * * *\", desiredCapacity: 4294967295}]",
        "spec.schedule[0].desiredCapacity",
        "above the limit",
    );
}

#[test]
fn hostile_health_checks_are_refused_at_their_field() {
    let lc = format!("{LC}  ports: [80]\n");
    refused(
        &lc,
        "healthCheck: {type: HTTP, port: 80, interval: 1ms}",
        "spec.healthCheck.interval",
        "outside 1s to 1h",
    );
    refused(
        &lc,
        "healthCheck: {type: HTTP, port: 80, unhealthyThreshold: 4294967295}",
        "spec.healthCheck.unhealthyThreshold",
        "outside 1 to 100",
    );
    refused(
        &lc,
        "healthCheck: {type: HTTP, port: 80, unhealthyThreshold: 99999999999999999999}",
        "spec.healthCheck.unhealthyThreshold",
        "",
    );
    refused(
        &lc,
        &format!(
            "healthCheck: {{type: HTTP, port: 80, path: /{}}}",
            "a".repeat(100_000)
        ),
        "spec.healthCheck.path",
        "use at most 1024",
    );
    refused(
        &lc,
        "healthCheck: {type: HTTP, port: 80, timeout: 100000d}",
        "spec.healthCheck.timeout",
        "",
    );
    refused(
        &lc,
        "healthCheck: {type: HTTP, port: 8080}",
        "spec.healthCheck.port",
        "add `ports: [8080]`",
    );
    refused(
        GROUP,
        "healthCheck: {type: Exec, command: []}",
        "spec.healthCheck.command",
        "must not be empty",
    );
    assert!(errors(&lc, "healthCheck: {type: HTTP, port: 80, interval: 1s}").is_empty());
}
