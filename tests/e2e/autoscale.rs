//! Autoscaling on the real engine: containers that burn CPU on demand scale a group out under a
//! target-tracking or step policy and back in; a scheduled action fires; a pushed metric scales.
//!
//! Waits are kept short through configuration (metrics every second, 5 s stabilization, 1 s
//! cooldowns), never by weakening the decision logic.

use std::time::Duration;

use crate::common::*;

/// Burns CPU while /tmp/burn exists, sleeps otherwise.
const BURN: &str = "while :; do if [ -f /tmp/burn ]; then :; else sleep 1; fi; done";

const CONFIG: &str = "metricsPeriod: 1s\npushedMetricMaxAge: 30s\nresyncPeriod: 2s\n";

fn group_yaml(ns: &str, min: u32, max: u32, desired: u32, policy: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\n\
         kind: LaunchConfiguration\n\
         metadata:\n  name: burn\n  namespace: {ns}\n\
         spec:\n  image: {TEST_IMAGE}\n  command: [\"sh\", \"-c\", \"{BURN}\"]\n  resources:\n    cpus: 0.5\n  stopGracePeriod: 0s\n\
         ---\n\
         apiVersion: microscaler.io/v1\n\
         kind: AutoScalingGroup\n\
         metadata:\n  name: burn\n  namespace: {ns}\n\
         spec:\n  launchConfiguration: burn\n  minSize: {min}\n  maxSize: {max}\n  desiredCapacity: {desired}\n  scaleOutCooldown: 1s\n  scaleInCooldown: 1s\n  healthCheckGracePeriod: 1s\n\
         ---\n\
         apiVersion: microscaler.io/v1\n\
         kind: ScalingPolicy\n\
         metadata:\n  name: burn-policy\n  namespace: {ns}\n\
         spec:\n  autoScalingGroup: burn\n{policy}"
    )
}

fn running(ns: &TestNs) -> Vec<DockerContainer> {
    containers(ns)
        .into_iter()
        .filter(|c| c.state == "running")
        .collect()
}

fn burn(ns: &TestNs, on: bool) {
    for c in running(ns) {
        let cmd = if on {
            "touch /tmp/burn"
        } else {
            "rm -f /tmp/burn"
        };
        let _ = docker(&docker_host_a())
            .args(["exec", &c.id, "sh", "-c", cmd])
            .output();
    }
}

fn describe(ctl: &Controller, ns: &TestNs) -> String {
    let out = ctl.ms(&["describe", "asg", "burn", "-n", &ns.name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until `n` instances run, failing with `ms describe` and the log otherwise.
fn expect_running(ctl: &Controller, ns: &TestNs, n: usize, what: &str, timeout: Duration) {
    if !wait_until(timeout, || running(ns).len() == n) {
        panic!(
            "timed out after {timeout:?} waiting for {n} running instances ({what}); {} run\n{}\nlog tail:\n{}",
            running(ns).len(),
            describe(ctl, ns),
            ctl.log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Returns the namespace first: locals drop in reverse order, so the controller is stopped
/// before the namespace's containers are removed (else it would replace them and leak one).
fn start(policy: &str, min: u32, max: u32, desired: u32) -> (TestNs, Controller) {
    let ns = TestNs::new();
    let mut ctl = Controller::start_with(ControllerOptions {
        extra_config: CONFIG.to_string(),
        ..Default::default()
    });
    ctl.wait_ready();
    ctl.write_manifest(
        "burn.yaml",
        &group_yaml(&ns.name, min, max, desired, policy),
    );
    (ns, ctl)
}

fn status_file(ctl: &Controller) -> String {
    std::fs::read_to_string(ctl.dir.join("burn.yaml")).unwrap_or_default()
}

#[test]
fn target_tracking_on_cpu_scales_out_under_load_and_in_after_the_stabilization_window() {
    let (ns, ctl) = start(
        "  type: TargetTracking\n  metric: CPU\n  targetValue: 20\n  samplingWindow: 2s\n  scaleInStabilization: 5s\n",
        1,
        2,
        1,
    );
    expect_running(&ctl, &ns, 1, "initial capacity", Duration::from_secs(20));
    // One instance burning its 0.5 CPU: up to 100% of its limit, far above the target even on
    // a busy machine (a shared CI runner may give it less than its limit).
    burn(&ns, true);
    expect_running(&ctl, &ns, 2, "scale-out on CPU", Duration::from_secs(20));
    let text = describe(&ctl, &ns);
    assert!(text.contains("set by policy burn-policy"), "{text}");
    assert!(
        text.contains("desired capacity raised from 1 to 2 by policy burn-policy"),
        "{text}"
    );
    assert!(wait_until(Duration::from_secs(5), || status_file(&ctl)
        .contains("desiredCapacitySetBy: policy/burn-policy")));
    // The spec was not rewritten.
    assert!(status_file(&ctl).contains("desiredCapacity: 1\n"));
    burn(&ns, false);
    expect_running(
        &ctl,
        &ns,
        1,
        "scale-in after stabilization",
        Duration::from_secs(30),
    );
    let text = describe(&ctl, &ns);
    assert!(text.contains("Last decision:"), "{text}");
    // The activity, not the last decision: the next evaluation after the scale-in ("steady at
    // 1") replaces that, and on a loaded machine it may come before the container is gone.
    assert!(
        text.contains("desired capacity lowered from 2 to 1 by policy burn-policy"),
        "{text}"
    );
    let top = ctl.ms(&["top", "instances", "burn", "-n", &ns.name]);
    let top = assert_success(&top);
    assert!(top.contains("CPU%") && top.contains("burn-"), "{top}");
}

#[test]
fn step_policy_scales_out_after_the_breach_duration_and_back_in() {
    let (ns, ctl) = start(
        "  metric: CPU\n  samplingWindow: 2s\n  breachDuration: 2s\n  upperThreshold: 15\n  lowerThreshold: 5\n  scaleOutStep: 1\n  scaleInStep: 1\n",
        1,
        2,
        1,
    );
    expect_running(&ctl, &ns, 1, "initial capacity", Duration::from_secs(20));
    burn(&ns, true);
    expect_running(&ctl, &ns, 2, "step scale-out", Duration::from_secs(25));
    assert!(wait_until(Duration::from_secs(5), || status_file(&ctl)
        .contains("desiredCapacitySetBy: policy/burn-policy")));
    burn(&ns, false);
    expect_running(&ctl, &ns, 1, "step scale-in", Duration::from_secs(30));
}

#[test]
fn a_scheduled_action_fires_and_the_user_takes_over_afterwards() {
    // Fire at the next whole minute (UTC), at least 5 s away.
    let cron = {
        use chrono::Timelike;
        let t = chrono::Utc::now() + chrono::Duration::seconds(5);
        let next = t + chrono::Duration::seconds(60 - t.second() as i64);
        format!("{} {} * * *", next.minute(), next.hour())
    };
    let (ns, ctl) = start(
        &format!("  type: Scheduled\n  schedule:\n    - cron: \"{cron}\"\n      timeZone: UTC\n      desiredCapacity: 2\n"),
        1,
        3,
        1,
    );
    expect_running(&ctl, &ns, 1, "before the action", Duration::from_secs(20));
    expect_running(
        &ctl,
        &ns,
        2,
        "the scheduled action",
        Duration::from_secs(75),
    );
    assert!(wait_until(Duration::from_secs(5), || status_file(&ctl)
        .contains("desiredCapacitySetBy: schedule/burn-policy")));
    // The user changes spec.desiredCapacity: the user's value takes over.
    assert_success(&ctl.ms(&["scale", "asg", "burn", "--desired", "3", "-n", &ns.name]));
    expect_running(&ctl, &ns, 3, "the user's capacity", Duration::from_secs(20));
    assert!(wait_until(Duration::from_secs(10), || status_file(&ctl)
        .contains("desiredCapacitySetBy: user")));
}

#[test]
fn a_pushed_metric_scales_a_group_and_an_unknown_group_is_refused() {
    let (ns, ctl) = start(
        "  type: TargetTracking\n  pushedMetric: queue_depth\n  targetValue: 5\n  samplingWindow: 1s\n  scaleInStabilization: 3s\n",
        1,
        3,
        1,
    );
    expect_running(&ctl, &ns, 1, "initial capacity", Duration::from_secs(20));
    let out = ctl.ms(&["push-metric", "burn", "queue_depth", "15", "-n", &ns.name]);
    assert!(assert_success(&out).contains("queue_depth = 15"));
    expect_running(
        &ctl,
        &ns,
        3,
        "pushed 15 for 5 per instance",
        Duration::from_secs(20),
    );
    assert!(wait_until(Duration::from_secs(10), || status_file(&ctl)
        .contains("desiredCapacitySetBy: pushed/burn-policy")));
    assert_success(&ctl.ms(&["push-metric", "burn", "queue_depth", "0", "-n", &ns.name]));
    expect_running(&ctl, &ns, 1, "pushed 0", Duration::from_secs(20));
    // A wrong name and an unknown group are refused with one line.
    let out = ctl.ms(&["push-metric", "nope", "queue_depth", "1", "-n", &ns.name]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
