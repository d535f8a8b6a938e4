//! Lifecycle hooks, draining, termination policies and scale-in protection against the real
//! engine: preStop runs before the stop signal, a drained instance is out of service first, the
//! policy picks the victim, protection (from the CLI and with the instance's own token) keeps
//! an instance through a scale-in and a controller restart, and a drain survives a kill -9.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::cli::{group_containers, ms, started, wait_running};
use super::common::*;

const CONVERGE: Duration = Duration::from_secs(60);

/// A launch configuration whose container prints `got-sigterm` on SIGTERM, with a preStop
/// hook writing `prestop-ran` into the container's own output (PID 1's stdout).
fn hooked_lc(ns: &TestNs, name: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\n\
         kind: LaunchConfiguration\n\
         metadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  image: {TEST_IMAGE}\n\
         \x20 command: [\"sh\", \"-c\", \"trap 'echo got-sigterm; exit 0' TERM; echo started; while true; do sleep 0.1; done\"]\n\
         \x20 stopGracePeriod: 5s\n\
         \x20 lifecycle:\n\
         \x20   preStop:\n\
         \x20     exec:\n\
         \x20       command: [\"sh\", \"-c\", \"echo prestop-ran > /proc/1/fd/1\"]\n\
         \x20     timeout: 5s\n",
        ns = ns.name
    )
}

fn group(ns: &TestNs, name: &str, lc: &str, desired: u32, extra: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\n\
         kind: AutoScalingGroup\n\
         metadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  launchConfiguration: {lc}\n  minSize: 0\n  maxSize: 5\n  desiredCapacity: {desired}\n{extra}",
        ns = ns.name
    )
}

/// `ms get instances -o json` items of the namespace.
fn instances(ctl: &Controller, ns: &TestNs) -> Vec<serde_json::Value> {
    let out = ms(ctl, &["get", "instances", "-n", &ns.name, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(out.ok()).unwrap_or_default();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn state_of(ctl: &Controller, ns: &TestNs, name: &str) -> Option<String> {
    instances(ctl, ns)
        .iter()
        .find(|i| i["name"] == name)
        .and_then(|i| i["state"].as_str().map(str::to_string))
}

/// Follows a container's output until it is removed (the stream ends with it).
fn follow_logs(id: &str) -> std::process::Child {
    docker(&docker_host_a())
        .args(["logs", "-f", id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker logs -f")
}

#[test]
fn scale_in_drains_the_policys_victim_then_runs_pre_stop_before_sigterm() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    ctl.write_manifest("lc.yaml", &hooked_lc(&ns, "hooked"));
    ctl.write_manifest(
        "web.yaml",
        &group(
            &ns,
            "web",
            "hooked",
            2,
            "  drainTimeout: 3s\n  terminationPolicies: [NewestInstance]\n",
        ),
    );
    wait_running(&ctl, &ns, "web", 2);
    // Oldest first: the newest is the victim of NewestInstance (the default would take the
    // oldest).
    let all = group_containers(&ns, "web");
    let (oldest, newest) = (all[0].clone(), all[1].clone());
    let mut logs = follow_logs(&newest.id);

    let t0 = Instant::now();
    ms(
        &ctl,
        &["scale", "asg", "web", "--desired", "1", "-n", &ns.name],
    )
    .ok();
    // Out of service at once: state draining, while the container still runs.
    assert!(
        wait_until(Duration::from_secs(10), || state_of(
            &ctl,
            &ns,
            &newest.name
        )
        .as_deref()
            == Some("draining")),
        "the victim is not shown draining: {:#?}",
        instances(&ctl, &ns)
    );
    let drain_seen = t0.elapsed();
    assert!(
        group_containers(&ns, "web")
            .iter()
            .any(|c| c.id == newest.id && c.state == "running"),
        "a draining instance still runs"
    );
    // Removed after the drain.
    assert!(
        wait_until(CONVERGE, || !group_containers(&ns, "web")
            .iter()
            .any(|c| c.id == newest.id)),
        "the victim was not removed"
    );
    let gone = t0.elapsed();
    assert!(
        gone >= Duration::from_secs(3),
        "removed after {gone:?}, before its 3 s drain (draining seen after {drain_seen:?})"
    );
    let mut out = String::new();
    let _ = logs.stdout.take().unwrap().read_to_string(&mut out);
    let _ = logs.wait();
    let pre = out.find("prestop-ran");
    let term = out.find("got-sigterm");
    assert!(
        pre.is_some() && term.is_some() && pre < term,
        "preStop must run before SIGTERM; the container printed:\n{out}"
    );
    // The survivor is the oldest, and describe says why the other went and how.
    let left = group_containers(&ns, "web");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, oldest.id);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let d = ms(&ctl, &["describe", "asg", "web", "-n", &ns.name]);
            d.stdout
                .contains("drained 3 s, preStop ok (exit 0), stopped in")
        }),
        "describe does not say how the instance was stopped:\n{}",
        ms(&ctl, &["describe", "asg", "web", "-n", &ns.name]).stdout
    );
}

#[test]
fn a_protected_instance_survives_scale_in_and_a_restart_until_unprotected() {
    let ns = TestNs::new();
    let opts = ControllerOptions::default();
    let mut ctl = started(opts.clone());
    ctl.write_manifest("lc.yaml", &super::cli::sleeper(&ns, "sleeper"));
    ctl.write_manifest("web.yaml", &group(&ns, "web", "sleeper", 2, ""));
    wait_running(&ctl, &ns, "web", 2);
    let all = group_containers(&ns, "web");
    let oldest = all[0].clone();
    // Protect the oldest: the default policy would take it first.
    let out = ms(&ctl, &["protect", "instance", &oldest.name, "-n", &ns.name]);
    assert!(out.ok().contains("protected from scale-in"), "{out:?}");
    // The protection is kept across a kill -9.
    ctl.kill();
    ctl.restart(&opts).wait_ready();
    ms(
        &ctl,
        &["scale", "asg", "web", "--desired", "1", "-n", &ns.name],
    )
    .ok();
    let ids = wait_running(&ctl, &ns, "web", 1);
    assert_eq!(
        ids,
        vec![oldest.id.clone()],
        "the protected instance was removed"
    );
    let wide = ms(&ctl, &["get", "instances", "-n", &ns.name, "-o", "wide"]);
    assert!(wide.ok().contains("until-unprotected"), "{wide:?}");
    // Scaling to 0 leaves it running, and the status says why.
    ms(
        &ctl,
        &["scale", "asg", "web", "--desired", "0", "-n", &ns.name],
    )
    .ok();
    assert!(
        wait_until(Duration::from_secs(10), || ms(
            &ctl,
            &["describe", "asg", "web", "-n", &ns.name]
        )
        .stdout
        .contains("ProtectedFromScaleIn")),
        "{}",
        ms(&ctl, &["describe", "asg", "web", "-n", &ns.name]).stdout
    );
    assert_eq!(super::cli::running_ids(&ns, "web"), vec![oldest.id.clone()]);
    ms(
        &ctl,
        &["unprotect", "instance", &oldest.name, "-n", &ns.name],
    )
    .ok();
    assert!(
        wait_until(CONVERGE, || group_containers(&ns, "web").is_empty()),
        "unprotected, it should go"
    );
}

#[test]
fn an_instance_protects_itself_with_its_own_token_only() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    ctl.write_manifest("lc.yaml", &super::cli::sleeper(&ns, "sleeper"));
    ctl.write_manifest("web.yaml", &group(&ns, "web", "sleeper", 2, ""));
    wait_running(&ctl, &ns, "web", 2);
    let all = group_containers(&ns, "web");
    let env = |c: &DockerContainer, k: &str| {
        c.env
            .iter()
            .find_map(|e| e.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_default()
    };
    let (a, b) = (&all[0], &all[1]);
    assert_eq!(env(a, "MS_INSTANCE"), a.name);
    assert_eq!(env(a, "MS_NAMESPACE"), ns.name);
    assert_eq!(env(a, "MS_CONTROLLER_URL"), ctl.url());
    let token = env(a, "MS_PROTECT_TOKEN");
    assert_eq!(token.len(), 64, "an HMAC-SHA256 in hex");
    // The controller listens on 127.0.0.1, which a bridged container cannot reach: the call is
    // made from the host with the container's token, as the container would make it.
    let own = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "protect",
            "instance",
            name,
            "-n",
            &ns.name,
            "--instance-token",
            &token,
        ];
        args.extend_from_slice(extra);
        ms(&ctl, &args)
    };
    let other = own(&b.name, &["--for", "1h"]);
    assert!(
        other.code != 0,
        "a token protects its own instance only: {other:?}"
    );
    assert!(
        other.stderr.contains("not the one of instance"),
        "{other:?}"
    );
    let too_long = own(&a.name, &["--for", "9h"]);
    assert!(too_long.code != 0, "{too_long:?}");
    assert!(too_long.stderr.contains("at most 8h"), "{too_long:?}");
    let ok = own(&a.name, &["--for", "2h"]);
    assert!(ok.ok().contains("protected from scale-in until"), "{ok:?}");
    // The oldest (the default victim) is protected: scale-in takes the other one.
    ms(
        &ctl,
        &["scale", "asg", "web", "--desired", "1", "-n", &ns.name],
    )
    .ok();
    let ids = wait_running(&ctl, &ns, "web", 1);
    assert_eq!(ids, vec![a.id.clone()]);
}

#[test]
fn a_drain_interrupted_by_kill_9_resumes_on_the_same_instance() {
    let ns = TestNs::new();
    let opts = ControllerOptions::default();
    let mut ctl = started(opts.clone());
    ctl.write_manifest("lc.yaml", &super::cli::sleeper(&ns, "sleeper"));
    ctl.write_manifest(
        "web.yaml",
        &group(&ns, "web", "sleeper", 3, "  drainTimeout: 8s\n"),
    );
    wait_running(&ctl, &ns, "web", 3);
    let before = group_containers(&ns, "web");
    ms(
        &ctl,
        &["scale", "asg", "web", "--desired", "2", "-n", &ns.name],
    )
    .ok();
    let victim = before[0].name.clone(); // oldest first by default
    assert!(wait_until(Duration::from_secs(10), || state_of(
        &ctl, &ns, &victim
    )
    .as_deref()
        == Some("draining")));
    let t0 = Instant::now();
    ctl.kill();
    ctl.restart(&opts).wait_ready();
    // The same instance is draining again (not a second victim) and goes once its drain ends.
    assert!(
        wait_until(Duration::from_secs(10), || state_of(&ctl, &ns, &victim)
            .as_deref()
            == Some("draining")),
        "the drain did not resume: {:#?}",
        instances(&ctl, &ns)
    );
    assert!(
        wait_until(CONVERGE, || group_containers(&ns, "web").len() == 2),
        "the victim was not removed"
    );
    let left: Vec<String> = group_containers(&ns, "web")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(!left.contains(&victim), "{left:?}");
    assert_eq!(
        left,
        vec![before[1].name.clone(), before[2].name.clone()],
        "only the first victim went"
    );
    // The drain resumed for what was left, not a new full 8 s.
    assert!(
        t0.elapsed() < Duration::from_secs(8 + 5),
        "took {:?}",
        t0.elapsed()
    );
    let d = ms(&ctl, &["describe", "asg", "web", "-n", &ns.name]);
    assert!(
        d.stdout.contains("resumed after a controller restart"),
        "{}",
        d.stdout
    );
}

/// A launch configuration whose postStart hook runs `hook` (a shell line).
fn post_start_lc(ns: &TestNs, name: &str, hook: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\n\
         kind: LaunchConfiguration\n\
         metadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  image: {TEST_IMAGE}\n  command: [\"sleep\", \"3600\"]\n  stopGracePeriod: 0s\n\
         \x20 lifecycle:\n\
         \x20   postStart:\n\
         \x20     exec:\n\
         \x20       command: [\"sh\", \"-c\", \"{hook}\"]\n\
         \x20     timeout: 10s\n",
        ns = ns.name
    )
}

fn group_status(ctl: &Controller, ns: &TestNs, name: &str) -> serde_json::Value {
    let out = ms(ctl, &["get", "asg", name, "-n", &ns.name, "-o", "json"]);
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .map(|v| v["status"].clone())
        .unwrap_or_default()
}

#[test]
fn an_instance_is_ready_only_after_post_start_and_a_failing_hook_replaces_it() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    ctl.write_manifest(
        "slow.yaml",
        &post_start_lc(&ns, "slow", "sleep 2; echo poststart-ok > /proc/1/fd/1"),
    );
    ctl.write_manifest("web.yaml", &group(&ns, "web", "slow", 1, ""));
    let ids = wait_running(&ctl, &ns, "web", 1);
    // Running, but not ready while its hook runs.
    let st = group_status(&ctl, &ns, "web");
    assert_eq!(st["ready"], 0, "ready before postStart ended: {st:#}");
    assert!(
        wait_until(Duration::from_secs(15), || group_status(&ctl, &ns, "web")
            ["ready"]
            == 1),
        "never ready: {:#}",
        group_status(&ctl, &ns, "web")
    );
    let logs = docker_ok(&docker_host_a(), &["logs", &ids[0]]);
    assert!(logs.contains("poststart-ok"), "{logs}");

    // A hook that fails: the instance is replaced, through the crash backoff, and says why.
    ctl.write_manifest("bad.yaml", &post_start_lc(&ns, "bad", "exit 3"));
    ctl.write_manifest("worker.yaml", &group(&ns, "worker", "bad", 1, ""));
    assert!(
        wait_until(CONVERGE, || {
            let st = group_status(&ctl, &ns, "worker");
            st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Degraded" && c["reason"] == "PostStartFailed")
        }),
        "no PostStartFailed: {:#}",
        group_status(&ctl, &ns, "worker")
    );
    let d = ms(&ctl, &["describe", "asg", "worker", "-n", &ns.name]);
    assert!(
        d.stdout.contains("postStart hook of instance") && d.stdout.contains("exited with 3"),
        "{}",
        d.stdout
    );
    // The backoff holds: a few replacements in 6 s (1 s, 2 s, 4 s apart), not a storm.
    let t0 = Instant::now();
    let launches = || {
        ctl.log()
            .lines()
            .filter(|l| l.contains("group=worker action=Launch"))
            .count()
    };
    let before = launches();
    std::thread::sleep(Duration::from_secs(6));
    let during = launches() - before;
    assert!(
        launches() >= 2,
        "the failed instance was not replaced:\n{}",
        ctl.log()
    );
    assert!(
        during <= 4,
        "{during} launches in {:?}: the crash backoff does not hold",
        t0.elapsed()
    );
}

/// Names of the quarantined instances (`ms get instances --quarantined`).
fn quarantined(ctl: &Controller, ns: &TestNs) -> Vec<String> {
    let out = ms(
        ctl,
        &[
            "get",
            "instances",
            "-n",
            &ns.name,
            "--quarantined",
            "-o",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_crashed_instance_is_quarantined_outside_capacity_until_released() {
    let ns = TestNs::new();
    let opts = ControllerOptions::default();
    let mut ctl = started(opts.clone());
    ctl.write_manifest(
        "lc.yaml",
        &super::cli::lc_doc(
            &ns,
            "app",
            r#"["sh", "-c", "echo crash-marker; sleep 1; exit 7"]"#,
        ),
    );
    let quarantine = "  quarantine:\n    maxCount: 1\n    keepFor: 1h\n";
    ctl.write_manifest("web.yaml", &group(&ns, "web", "app", 1, quarantine));
    assert!(
        wait_until(CONVERGE, || quarantined(&ctl, &ns).len() == 1),
        "nothing quarantined: {:#?}",
        instances(&ctl, &ns)
    );
    // Fix the launch configuration: the replacement runs, the crashed one stays for inspection.
    ctl.write_manifest("lc.yaml", &super::cli::sleeper(&ns, "app"));
    assert!(
        wait_until(CONVERGE, || super::cli::running_ids(&ns, "web").len() == 1),
        "no running replacement"
    );
    // Settled: one running instance of the fixed spec, one exited container, and it is the
    // quarantined one, for 2 s in a row (an old instance could still crash into quarantine, and
    // the status and the engine are read at slightly different times).
    let settled = || {
        let all = group_containers(&ns, "web");
        let q = quarantined(&ctl, &ns);
        let st = group_status(&ctl, &ns, "web");
        let ok = st["updated"] == 1
            && st["current"] == 1
            && st["ready"] == 1
            && all.len() == 2
            && all.iter().filter(|c| c.state == "running").count() == 1
            && q.len() == 1
            && all.iter().any(|c| c.state == "exited" && c.name == q[0]);
        ok.then_some(q)
    };
    assert!(
        wait_until(CONVERGE, || {
            let Some(q) = settled() else { return false };
            std::thread::sleep(Duration::from_secs(2));
            settled() == Some(q)
        }),
        "{:#?}",
        instances(&ctl, &ns)
    );
    let kept = quarantined(&ctl, &ns);
    assert_eq!(kept.len(), 1, "maxCount 1: {kept:?}");
    let c = group_containers(&ns, "web")
        .into_iter()
        .find(|c| c.name == kept[0])
        .expect("the quarantined container is kept");
    assert_eq!(c.state, "exited");
    assert_eq!(c.exit_code, 7);
    let logs = docker_ok(&docker_host_a(), &["logs", &c.id]);
    assert!(logs.contains("crash-marker"), "{logs}");
    // Outside capacity: desired 1, one running, and the group is Ready.
    let st = group_status(&ctl, &ns, "web");
    assert_eq!(st["current"], 1, "{st:#}");
    // Kept across a kill -9 (not removed as a failed instance after the restart).
    ctl.kill();
    ctl.restart(&opts).wait_ready();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(quarantined(&ctl, &ns), kept);
    let d = ms(&ctl, &["describe", "asg", "web", "-n", &ns.name]);
    assert!(
        d.stdout.contains("kept stopped for inspection"),
        "{}",
        d.stdout
    );
    // Quarantine switched off: the kept instance goes, the running one stays.
    ctl.write_manifest("web.yaml", &group(&ns, "web", "app", 1, ""));
    assert!(
        wait_until(CONVERGE, || !group_containers(&ns, "web")
            .iter()
            .any(|x| x.id == c.id)),
        "the quarantined instance was not released"
    );
    assert_eq!(super::cli::running_ids(&ns, "web").len(), 1);
}

#[test]
fn an_http_pre_stop_reaches_the_instance_through_its_published_port() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let lc = format!(
        "apiVersion: microscaler.io/v1\n\
         kind: LaunchConfiguration\n\
         metadata:\n  name: web\n  namespace: {ns}\n\
         spec:\n  image: {TEST_IMAGE}\n\
         \x20 command: [\"sh\", \"-c\", \"mkdir -p /www && echo bye > /www/prestop && exec httpd -f -vv -p 8080 -h /www\"]\n\
         \x20 ports: [8080]\n\
         \x20 stopGracePeriod: 2s\n\
         \x20 lifecycle:\n\
         \x20   preStop:\n\
         \x20     httpGet: {{path: /prestop, port: 8080}}\n",
        ns = ns.name
    );
    ctl.write_manifest("lc.yaml", &lc);
    ctl.write_manifest("web.yaml", &group(&ns, "web", "web", 1, ""));
    let ids = wait_running(&ctl, &ns, "web", 1);
    let mut logs = follow_logs(&ids[0]);
    ms(
        &ctl,
        &["scale", "asg", "web", "--desired", "0", "-n", &ns.name],
    )
    .ok();
    assert!(
        wait_until(CONVERGE, || group_containers(&ns, "web").is_empty()),
        "not removed"
    );
    let mut out = String::new();
    let _ = logs.stderr.take().unwrap().read_to_string(&mut out);
    let _ = logs.wait();
    // busybox httpd -vv logs (on stderr) each request's URL: the hook came through 127.0.0.1.
    assert!(out.contains("/prestop"), "no request in the log:\n{out}");
    assert!(
        wait_until(Duration::from_secs(10), || ms(
            &ctl,
            &["describe", "asg", "web", "-n", &ns.name]
        )
        .stdout
        .contains("preStop ok (HTTP 200)")),
        "{}",
        ms(&ctl, &["describe", "asg", "web", "-n", &ns.name]).stdout
    );
}
