//! `healthCheck` on real engines with busybox: an HTTP check that starts failing (the container
//! removes its index file), a TCP check (httpd killed inside a live container), an Exec check,
//! and a readiness probe gating a rolling update.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// A launch configuration running `script` under `sh -c` with port 80 published, with
/// `health_check` (lines indented by 4), and a group of `desired` with grace 0s.
fn checked(ns: &str, desired: u32, script: &str, health_check: &str, lc_extra: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1
kind: LaunchConfiguration
metadata:
  name: web
  namespace: {ns}
spec:
  image: {TEST_IMAGE}
  command: [\"sh\", \"-c\", \"{script}\"]
  stopGracePeriod: 0s
  ports: [80]
{lc_extra}  healthCheck:
{health_check}---
apiVersion: microscaler.io/v1
kind: AutoScalingGroup
metadata:
  name: web
  namespace: {ns}
spec:
  launchConfiguration: web
  minSize: 0
  maxSize: 4
  desiredCapacity: {desired}
  healthCheckGracePeriod: 0s
"
    )
}

fn status(ctl: &Controller, ns: &TestNs) -> Value {
    let out = ctl.ms(&["get", "asg", "web", "-n", &ns.name, "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .map(|v| v["status"].clone())
        .unwrap_or(Value::Null)
}

fn running(ns: &TestNs) -> Vec<DockerContainer> {
    containers(ns)
        .into_iter()
        .filter(|c| c.state == "running")
        .collect()
}

fn describe(ctl: &Controller, ns: &TestNs) -> String {
    let out = ctl.ms(&["describe", "asg", "web", "-n", &ns.name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn expect(
    ctl: &Controller,
    ns: &TestNs,
    what: &str,
    timeout: Duration,
    cond: impl FnMut() -> bool,
) {
    if !wait_until(timeout, cond) {
        panic!(
            "timed out after {timeout:?} waiting for: {what}\ncontainers: {:#?}\nms describe:\n{}\nlog:\n{}",
            containers(ns)
                .iter()
                .map(|c| (&c.name, &c.state))
                .collect::<Vec<_>>(),
            describe(ctl, ns),
            ctl.log()
        );
    }
}

/// Waits until the group has `n` instances, all ready by their probes.
fn all_ready(ctl: &Controller, ns: &TestNs, n: usize) {
    expect(
        ctl,
        ns,
        &format!("{n} ready instances"),
        Duration::from_secs(30),
        || {
            let s = status(ctl, ns);
            let inst = s["instances"].as_array().cloned().unwrap_or_default();
            s["ready"] == n && inst.len() == n && inst.iter().all(|i| i["ready"] == true)
        },
    );
}

/// Breaks the only instance with `break_cmd` (run in it) and checks it is replaced within
/// `budget`, and that `ms describe` says why with the probe's output (`says`).
fn breaks_and_is_replaced(
    ctl: &Controller,
    ns: &TestNs,
    break_cmd: &[&str],
    budget: Duration,
    says: &str,
) {
    all_ready(ctl, ns, 1);
    let sick = running(ns).remove(0);
    let mut args = vec!["exec", sick.id.as_str()];
    args.extend_from_slice(break_cmd);
    let broke = unix_nanos(std::time::SystemTime::now());
    docker_ok(&docker_host_a(), &args);
    // Replaced: the sick one stops running, or its replacement exists.
    expect(
        ctl,
        ns,
        "the broken instance replaced",
        Duration::from_secs(30),
        || {
            let all = containers(ns);
            all.iter().any(|c| c.id != sick.id)
                || !all.iter().any(|c| c.id == sick.id && c.state == "running")
        },
    );
    // When the controller acted, by the engine's own clock (polling `docker ps` on a loaded
    // machine would add its own latency): the first kill/stop of the sick one or create of
    // another, from the engine's event log.
    let took = Duration::from_nanos(first_action(ns, &sick.id, broke).saturating_sub(broke));
    eprintln!("acted {took:?} after the check started failing (budget {budget:?})");
    assert!(
        took <= budget,
        "acted after {took:?}, budget {budget:?}\n{}",
        describe(ctl, ns)
    );
    all_ready(ctl, ns, 1);
    assert_ne!(running(ns)[0].id, sick.id);
    let text = describe(ctl, ns);
    assert!(
        text.contains(says),
        "ms describe does not say `{says}`:\n{text}"
    );
}

fn unix_nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The engine time (Unix ns) of the first action on namespace `ns` since `since`: a kill,
/// stop or die of `sick`, or the creation of another container.
fn first_action(ns: &TestNs, sick: &str, since: u64) -> u64 {
    let secs = |ns: u64| format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
    let until = unix_nanos(std::time::SystemTime::now()) + 1_000_000_000;
    let out = docker_ok(
        &docker_host_a(),
        &[
            "events",
            "--since",
            &secs(since),
            "--until",
            &secs(until),
            "--filter",
            "type=container",
            "--filter",
            &format!("label={}", ns.label()),
            "--format",
            "{{.Action}} {{.Actor.ID}} {{.TimeNano}}",
        ],
    );
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (action, id, t) = (w.next()?, w.next()?, w.next()?.parse::<u64>().ok()?);
            let acted = (id == sick && matches!(action, "kill" | "stop" | "die"))
                || (id != sick && action == "create");
            acted.then_some(t)
        })
        .min()
        .unwrap_or_else(|| panic!("no action on {sick} in the engine's events:\n{out}"))
}

#[test]
fn an_http_check_that_starts_failing_replaces_the_instance_in_time() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let hc = "    type: HTTP\n    port: 80\n    path: /index.html\n    interval: 1s\n    timeout: 500ms\n    unhealthyThreshold: 2\n";
    ctl.write_manifest(
        "web.yaml",
        &checked(
            &ns.name,
            1,
            "echo ok > /tmp/index.html && exec httpd -f -p 80 -h /tmp",
            hc,
            "",
        ),
    );
    all_ready(&ctl, &ns, 1);
    let s = status(&ctl, &ns);
    assert_eq!(
        s["instances"][0]["health"], "ready: HTTP 200 from GET /index.html",
        "{s:#}"
    );
    // interval × unhealthyThreshold + 1 s
    breaks_and_is_replaced(
        &ctl,
        &ns,
        &["rm", "/tmp/index.html"],
        Duration::from_secs(3),
        "liveness failed 2 times in a row: HTTP 404 from GET /index.html; it is replaced",
    );
}

#[test]
fn a_tcp_check_replaces_an_instance_whose_server_died_inside_a_live_container() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let hc = "    type: TCP\n    port: 80\n    interval: 1s\n    timeout: 500ms\n    unhealthyThreshold: 2\n";
    ctl.write_manifest(
        "web.yaml",
        &checked(
            &ns.name,
            1,
            "httpd -f -p 80 -h /tmp & exec sleep 3600",
            hc,
            "",
        ),
    );
    // interval × unhealthyThreshold + 1 s, plus the probe's own timeout (a TCP probe waits to
    // see whether the engine's port proxy closes the connection).
    breaks_and_is_replaced(
        &ctl,
        &ns,
        &["killall", "httpd"],
        Duration::from_millis(3500),
        "liveness failed 2 times in a row: TCP port 80",
    );
}

#[test]
fn an_exec_check_replaces_an_instance_whose_command_fails() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let hc = "    type: Exec\n    command: [cat, /tmp/ok]\n    interval: 1s\n    timeout: 900ms\n    unhealthyThreshold: 2\n";
    ctl.write_manifest(
        "web.yaml",
        &checked(&ns.name, 1, "touch /tmp/ok && exec sleep 3600", hc, ""),
    );
    // interval × unhealthyThreshold + 1 s, plus the probe's own timeout: an exec goes through
    // the engine (create, start, inspect), which takes hundreds of milliseconds under load.
    breaks_and_is_replaced(
        &ctl,
        &ns,
        &["rm", "/tmp/ok"],
        Duration::from_millis(3900),
        "liveness failed 2 times in a row: exec cat /tmp/ok exited 1",
    );
}

#[test]
fn a_readiness_probe_gates_a_rolling_update() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    // Readiness only: an instance is ready once /tmp/ready exists (never removed for it).
    let hc = "    readiness:\n      type: Exec\n      command: [cat, /tmp/ready]\n      interval: 1s\n      timeout: 900ms\n";
    let ready_at_once = "touch /tmp/ready && exec sleep 3600";
    ctl.write_manifest("web.yaml", &checked(&ns.name, 2, ready_at_once, hc, ""));
    all_ready(&ctl, &ns, 2);
    let old: Vec<String> = running(&ns).into_iter().map(|c| c.id).collect();

    // The new launch configuration's instances never get ready by themselves.
    let never_ready = "exec sleep 3600";
    ctl.write_manifest(
        "web.yaml",
        &checked(&ns.name, 2, never_ready, hc, "  env:\n    VERSION: \"2\"\n"),
    );
    expect(
        &ctl,
        &ns,
        "a new instance started",
        Duration::from_secs(20),
        || running(&ns).iter().any(|c| !old.contains(&c.id)),
    );
    std::thread::sleep(Duration::from_secs(6));
    let now: Vec<DockerContainer> = running(&ns);
    assert!(
        old.iter().all(|id| now.iter().any(|c| &c.id == id)),
        "an old instance went while its replacement was not ready:\n{}",
        describe(&ctl, &ns)
    );
    assert_eq!(now.len(), 3, "surge of 1, no more: {now:#?}");
    let s = status(&ctl, &ns);
    let fresh = s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["upToDate"] == true)
        .cloned()
        .expect("the new instance in the status");
    assert_eq!(fresh["ready"], false, "{s:#}");
    assert!(
        fresh["health"]
            .as_str()
            .is_some_and(|h| h.starts_with("not ready: exec cat /tmp/ready exited 1")),
        "{fresh:#}"
    );
    assert_eq!(s["ready"], 2, "{s:#}");

    // Make the new ones ready as they come: the rollout completes, old ones go.
    expect(
        &ctl,
        &ns,
        "the rollout completed",
        Duration::from_secs(60),
        || {
            for c in running(&ns).iter().filter(|c| !old.contains(&c.id)) {
                let _ = docker(&docker_host_a())
                    .args(["exec", &c.id, "touch", "/tmp/ready"])
                    .output();
            }
            let r = running(&ns);
            r.len() == 2
                && r.iter().all(|c| !old.contains(&c.id))
                && status(&ctl, &ns)["ready"] == 2
        },
    );
}

#[test]
fn a_restarted_controller_keeps_ready_instances_ready_until_their_probes_say_otherwise() {
    let ns = TestNs::new();
    let opts = ControllerOptions::default();
    let mut ctl = Controller::start_with(opts.clone());
    ctl.wait_ready();
    // A slow readiness probe (2 s per result): without the rule, a restart would show the
    // instances not ready (and take them out of any load balancer) for at least that long.
    let hc = "    readiness:\n      type: Exec\n      command: [sh, -c, \"sleep 2; cat /tmp/ready\"]\n      interval: 5s\n      timeout: 4s\n";
    ctl.write_manifest(
        "web.yaml",
        &checked(&ns.name, 2, "touch /tmp/ready && exec sleep 3600", hc, ""),
    );
    all_ready(&ctl, &ns, 2);
    std::thread::sleep(Duration::from_secs(1)); // the status file catches up
    ctl.kill();
    ctl.restart(&opts).wait_ready();
    let until = Instant::now() + Duration::from_secs(8);
    let mut seen = 0;
    while Instant::now() < until {
        let s = status(&ctl, &ns);
        if let Some(ready) = s["ready"].as_u64() {
            seen += 1;
            assert_eq!(ready, 2, "ready dropped after the restart:\n{s:#}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen > 10, "the status was served {seen} times");
}
