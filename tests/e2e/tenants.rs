//! Two tenants on one controller and real engines (issue 9): one tries every hostile input, the
//! other never notices, and a connection flood does not stop self-healing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Output;
use std::time::Duration;

use crate::common::*;

const TOKEN_A: &str = "tenant-a-token-0123456789";
const TOKEN_B: &str = "tenant-b-token-0123456789";
const CONVERGE: Duration = Duration::from_secs(40);

/// `ms --token TOKEN args...` with `input` on stdin; (exit code, stdout, stderr).
fn ms_as(ctl: &Controller, token: &str, args: &[&str], input: &str) -> (i32, String, String) {
    let mut full = vec!["--token", token];
    full.extend_from_slice(args);
    let mut cmd = ctl.ms_command(&full);
    cmd.env("XDG_CONFIG_HOME", ctl.tmp_path().join("no-login"))
        .env_remove("MS_TOKEN")
        .env_remove("MS_SERVER");
    let out: Output = output_with_stdin(cmd, input);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lc(ns: &str, name: &str, extra: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  image: {TEST_IMAGE}\n  command: [sleep, \"3600\"]\n  stopGracePeriod: 0s\n{extra}"
    )
}

fn group(ns: &str, name: &str, desired: u32) -> String {
    format!(
        "apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  launchConfiguration: {name}\n  minSize: 0\n  maxSize: 10\n  desiredCapacity: {desired}\n"
    )
}

fn running(ns: &TestNs) -> Vec<DockerContainer> {
    containers(ns)
        .into_iter()
        .filter(|c| c.state == "running")
        .collect()
}

#[track_caller]
fn wait_running(ctl: &Controller, ns: &TestNs, n: usize) -> Vec<String> {
    let ok = wait_until(CONVERGE, || {
        let all = containers(ns);
        all.len() == n && all.iter().all(|c| c.state == "running")
    });
    assert!(
        ok,
        "namespace {} did not reach {n} running containers: {:?}\ncontroller log:\n{}",
        ns.name,
        containers(ns)
            .iter()
            .map(|c| (&c.name, &c.state))
            .collect::<Vec<_>>(),
        ctl.log()
    );
    let mut ids: Vec<String> = running(ns).into_iter().map(|c| c.id).collect();
    ids.sort();
    ids
}

fn two_tenants(a: &TestNs, b: &TestNs, extra: &str) -> Controller {
    let opts = ControllerOptions {
        extra_config: format!(
            "metricsPeriod: 1s\ntokens:\n  - token: {TOKEN_A}\n    namespaces: [{}]\n  - token: {TOKEN_B}\n    namespaces: [{}]\n{extra}",
            a.name, b.name
        ),
        ..Default::default()
    };
    let mut ctl = Controller::start_with(opts);
    ctl.wait_ready();
    ctl
}

#[test]
fn one_tenants_hostile_inputs_never_reach_the_other_tenants_group() {
    let (a, b) = (TestNs::new(), TestNs::new());
    let ctl = two_tenants(&a, &b, "");
    let web_b = format!(
        "{}---\n{}",
        lc(&b.name, "web", ""),
        group(&b.name, "web", 1)
    );
    let (code, out, err) = ms_as(&ctl, TOKEN_B, &["apply", "-f", "-"], &web_b);
    assert_eq!(code, 0, "{out}{err}");
    let first = wait_running(&ctl, &b, 1);

    // Tenant A: a group with a policy at every extreme validation still accepts.
    let extreme = format!(
        "{}---\n{}scaleOutCooldown: 365d\n  scaleInCooldown: 365d\n---\napiVersion: microscaler.io/v1\nkind: ScalingPolicy\nmetadata: {{name: cpu, namespace: {ns}}}\nspec:\n  autoScalingGroup: web\n  metric: CPU\n  samplingWindow: 365d\n  breachDuration: 365d\n  upperThreshold: 1000000000000\n  lowerThreshold: 0\n  scaleOutStep: 1000\n  scaleInStep: 1000\n---\napiVersion: microscaler.io/v1\nkind: ScalingPolicy\nmetadata: {{name: tt, namespace: {ns}}}\nspec:\n  autoScalingGroup: web\n  type: TargetTracking\n  pushedMetric: q\n  targetValue: 0.000001\n  samplingWindow: 365d\n  scaleInStabilization: 365d\n",
        lc(&a.name, "web", "  resources: {cpus: 0.1, memoryMiB: 16}\n"),
        group(&a.name, "web", 1).replace("desiredCapacity: 1\n", "desiredCapacity: 1\n  "),
        ns = a.name
    );
    let (code, out, err) = ms_as(&ctl, TOKEN_A, &["apply", "-f", "-"], &extreme);
    assert_eq!(code, 0, "{out}{err}");
    // Case 1: the window that overflowed, through the API and straight into the directory.
    let overflow = format!(
        "apiVersion: microscaler.io/v1\nkind: ScalingPolicy\nmetadata: {{name: boom, namespace: {}}}\nspec:\n  autoScalingGroup: web\n  metric: CPU\n  samplingWindow: 10000000000000\n  upperThreshold: 80\n  lowerThreshold: 30\n  scaleOutStep: 1\n  scaleInStep: 1\n",
        a.name
    );
    let (code, _, err) = ms_as(&ctl, TOKEN_A, &["apply", "-f", "-"], &overflow);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("spec.samplingWindow") && err.contains("too long"),
        "{err}"
    );
    std::fs::create_dir_all(ctl.dir.join(&a.name)).unwrap();
    ctl.write_manifest(&format!("{}/boom.yaml", a.name), &overflow);
    // Case 2: absurd grace periods are a clear error, not a dropped connection.
    for grace in [
        "\"1e30\"",
        "99999999999999999999d",
        "18446744073709551615s1s",
    ] {
        let (code, _, err) = ms_as(
            &ctl,
            TOKEN_A,
            &["apply", "-f", "-"],
            &lc(&a.name, "g", "")
                .replace("stopGracePeriod: 0s", &format!("stopGracePeriod: {grace}")),
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("spec.stopGracePeriod"), "{grace}: {err}");
    }
    // Case 3: host access is refused, naming the setting.
    for (extra, words) in [
        ("  network: host\n", "allowHostNetwork"),
        ("  network: container:abc\n", "allowContainerNetwork"),
        (
            "  ports: [{containerPort: 80, hostIp: 0.0.0.0, hostPort: 31000}]\n",
            "allowedHostIps",
        ),
        (
            "  ports: [{containerPort: 80, hostPort: 8080}]\n",
            "hostPortRange",
        ),
    ] {
        let (code, _, err) = ms_as(
            &ctl,
            TOKEN_A,
            &["apply", "-f", "-"],
            &lc(&a.name, "h", extra),
        );
        assert_eq!(code, 1, "{extra}: {err}");
        assert!(
            err.contains(words) && err.contains("config.yaml"),
            "{extra}: {err}"
        );
    }
    // Tenant A may not touch tenant B at all.
    let (code, _, err) = ms_as(
        &ctl,
        TOKEN_A,
        &["scale", "asg", "web", "--desired", "0", "-n", &b.name],
        "",
    );
    assert_eq!(code, 1, "{err}");

    // Meanwhile tenant B's group heals and scales as if alone (several autoscaler periods on).
    docker_ok(&docker_host_a(), &["kill", &first[0]]);
    let healed = wait_running(&ctl, &b, 1);
    assert_ne!(healed, first, "the killed container was replaced");
    let (code, out, err) = ms_as(
        &ctl,
        TOKEN_B,
        &["scale", "asg", "web", "--desired", "3", "-n", &b.name],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    wait_running(&ctl, &b, 3);
    // The file written straight into the directory is a located error, and nothing panicked.
    let (code, out, _) = ms_as(&ctl, TOKEN_A, &["get", "problems"], "");
    assert_eq!(code, 0);
    assert!(
        out.contains("boom.yaml") && out.contains("spec.samplingWindow"),
        "{out}"
    );
    let (status, body) = http_get(ctl.port, "/healthz").expect("the controller answers");
    assert_eq!(status, 200, "{body}");
    assert!(!ctl.log().contains("panicked"), "{}", ctl.log());
}

#[test]
fn containers_get_default_limits_and_a_namespace_quota_caps_its_containers() {
    let (a, b) = (TestNs::new(), TestNs::new());
    let ctl = two_tenants(
        &a,
        &b,
        &format!("namespaces:\n  {}: {{maxContainers: 2}}\n", a.name),
    );
    // Applying more than the quota is refused up front, naming the setting.
    let three = format!(
        "{}---\n{}",
        lc(&a.name, "web", ""),
        group(&a.name, "web", 3)
    );
    let (code, _, err) = ms_as(&ctl, TOKEN_A, &["apply", "-f", "-"], &three);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("namespaces.{}.maxContainers", a.name)),
        "{err}"
    );
    // Written straight into the directory, the reconciler holds it at the quota, visibly.
    std::fs::create_dir_all(ctl.dir.join(&a.name)).unwrap();
    let file = ctl.write_manifest(&format!("{}/web.yaml", a.name), &three);
    wait_running(&ctl, &a, 2);
    let ok = wait_until(CONVERGE, || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("QuotaExceeded"))
    });
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("maxContainers"), "{text}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(containers(&a).len(), 2, "never more than the quota");
    // No instanceType, no resources: the default limits of 1 CPU and 512 MiB.
    for c in running(&a) {
        assert_eq!(
            (c.nano_cpus, c.memory),
            (1_000_000_000, 512 << 20),
            "{}",
            c.name
        );
    }
    // The other namespace has the default quota.
    let web_b = format!(
        "{}---\n{}",
        lc(&b.name, "web", ""),
        group(&b.name, "web", 3)
    );
    let (code, out, err) = ms_as(&ctl, TOKEN_B, &["apply", "-f", "-"], &web_b);
    assert_eq!(code, 0, "{out}{err}");
    wait_running(&ctl, &b, 3);
}

#[test]
fn a_connection_flood_neither_exhausts_descriptors_nor_stops_self_healing() {
    let ns = TestNs::new();
    // 256 descriptors: the API may hold 128 connections; the flood below opens 1,500.
    let opts = ControllerOptions {
        nofile: Some(256),
        ..Default::default()
    };
    let mut ctl = Controller::start_with(opts);
    ctl.wait_ready();
    let dir_file = ctl.write_manifest(
        "web.yaml",
        &format!(
            "{}---\n{}",
            lc(&ns.name, "web", ""),
            group(&ns.name, "web", 2)
        ),
    );
    let first = wait_running(&ctl, &ns, 2);

    // The flood: idle connections (no request, no token) from this process, all on 127.0.0.1.
    let mut flood = Vec::new();
    let mut refused = 0;
    for _ in 0..1500 {
        match TcpStream::connect(("127.0.0.1", ctl.port)) {
            Ok(s) => flood.push(s),
            Err(_) => refused += 1,
        }
    }
    // Connections beyond the cap (128: half the descriptors) are closed at once, the first few
    // with a readable 503; those within it stay open until the header-read timeout.
    let closed_beyond_cap = || {
        let mut closed = 0;
        for s in &flood {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 512];
            let mut s = s;
            match s.read(&mut buf) {
                Ok(_) => closed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => closed += 1,
            }
        }
        closed
    };
    let ok = wait_until(Duration::from_secs(5), || {
        closed_beyond_cap() >= 1500 - 128 - refused
    });
    assert!(
        ok,
        "connections beyond the cap were not refused: {} of 1500 closed",
        closed_beyond_cap()
    );
    assert!(
        ctl.log().contains("API connection limit reached"),
        "{}",
        ctl.log()
    );

    // While the flood lasts (re-opened as the controller closes idle ones): a killed container
    // is replaced and an edit of the directory is applied.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keeper = {
        let (stop, port) = (stop.clone(), ctl.port);
        std::thread::spawn(move || {
            let mut held = flood;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                held.retain_mut(|s| {
                    s.set_nonblocking(true).ok();
                    let mut b = [0u8; 1];
                    !matches!(s.read(&mut b), Ok(0))
                });
                while held.len() < 1500 {
                    match TcpStream::connect(("127.0.0.1", port)) {
                        Ok(s) => held.push(s),
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            for s in &mut held {
                let _ = s.write_all(b"");
            }
        })
    };
    docker_ok(&docker_host_a(), &["kill", &first[0]]);
    let healed = wait_running(&ctl, &ns, 2);
    assert!(
        !healed.contains(&first[0]),
        "the killed container was replaced"
    );
    let text = std::fs::read_to_string(&dir_file).unwrap();
    std::fs::write(
        &dir_file,
        text.replace("desiredCapacity: 2", "desiredCapacity: 3"),
    )
    .unwrap();
    wait_running(&ctl, &ns, 3);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    keeper.join().unwrap();

    // Afterwards the API answers again and the controller is live.
    let ok = wait_until(Duration::from_secs(20), || {
        http_get(ctl.port, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    assert!(ok, "{}", ctl.log());
    assert!(!ctl.log().contains("Too many open files"), "{}", ctl.log());
    ctl.stop();
}
