//! The reconciler on real engines: the original health-manager scenarios, restarts of the
//! controller and of dockerd, two zones, rolling updates and failure containment.

use std::time::{Duration, Instant};

use crate::common::*;

fn running_on(host: &str, ns: &TestNs) -> Vec<DockerContainer> {
    containers_on(host, &ns.name)
        .into_iter()
        .filter(|c| c.state == "running")
        .collect()
}

fn running(ns: &TestNs) -> Vec<DockerContainer> {
    running_on(&docker_host_a(), ns)
}

fn ids(list: &[DockerContainer]) -> Vec<String> {
    list.iter().map(|c| c.id.clone()).collect()
}

#[test]
fn the_original_health_manager_scenarios_pass() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let file = ctl.write_manifest("web.yaml", &sleepers(&ns.name, 1, 5, "", ""));

    // Start a group of 1 and see it running, with the ownership labels users can filter on.
    expect(&ctl, &ns, "1 running", Duration::from_secs(15), || {
        running(&ns).len() == 1
    });
    let first = running(&ns).remove(0);
    for key in [
        "io.microscaler.managed-by",
        "io.microscaler.namespace",
        "io.microscaler.group",
        "io.microscaler.launch-configuration",
        "io.microscaler.spec-hash",
        "io.microscaler.zone",
    ] {
        assert!(
            first.labels.contains_key(key),
            "label {key} missing: {:?}",
            first.labels
        );
    }
    let by_label = docker_ok(
        &docker_host_a(),
        &[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            "label=io.microscaler.group=web",
            "--filter",
            &format!("label={}", ns.label()),
        ],
    );
    assert_eq!(by_label.trim(), first.id);

    // Kill its container (SIGKILL of the process from the host) and see it replaced.
    kill9(&first);
    expect(
        &ctl,
        &ns,
        "replacement after kill -9",
        Duration::from_secs(10),
        || {
            let r = running(&ns);
            r.len() == 1 && r[0].id != first.id
        },
    );
    // ... and after `docker rm -f`.
    let second = running(&ns).remove(0);
    docker_ok(&docker_host_a(), &["rm", "-f", &second.id]);
    expect(
        &ctl,
        &ns,
        "replacement after rm -f",
        Duration::from_secs(10),
        || {
            let r = running(&ns);
            r.len() == 1 && r[0].id != second.id
        },
    );
    let ours = running(&ns).remove(0);

    // Start an extra labelled container by hand and see it removed (ours stays).
    let extra = docker_ok(
        &docker_host_a(),
        &[
            "run",
            "-d",
            "--label",
            "io.microscaler.managed-by=microscaler",
            "--label",
            &ns.label(),
            "--label",
            "io.microscaler.group=web",
            "--label",
            &format!("io.microscaler.controller={}", ctl.name),
            TEST_IMAGE,
            "sleep",
            "3600",
        ],
    );
    let extra = extra.trim().to_string();
    expect(
        &ctl,
        &ns,
        "extra container removed",
        Duration::from_secs(10),
        || containers(&ns).iter().all(|c| c.id != extra),
    );
    assert_eq!(
        ids(&running(&ns)),
        vec![ours.id.clone()],
        "the group's own container must stay"
    );

    // Raise desired to 3.
    assert_success(&ctl.ms(&["scale", "asg", "web", "--desired", "3", "-n", &ns.name]));
    expect(&ctl, &ns, "3 running", Duration::from_secs(15), || {
        running(&ns).len() == 3
    });

    // Kill all 3 and see 3 again.
    let three = running(&ns);
    for c in &three {
        kill9(c);
    }
    expect(&ctl, &ns, "3 new running", Duration::from_secs(15), || {
        let r = running(&ns);
        r.len() == 3 && r.iter().all(|c| three.iter().all(|o| o.id != c.id))
    });
    expect(
        &ctl,
        &ns,
        "dead ones removed",
        Duration::from_secs(10),
        || containers(&ns).len() == 3,
    );

    // Stop the group and see 0; the status block in the file says so.
    assert_success(&ctl.ms(&["stop", "asg", "web", "-n", &ns.name]));
    expect(&ctl, &ns, "0 containers", Duration::from_secs(15), || {
        containers(&ns).is_empty()
    });
    expect(&ctl, &ns, "status written", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.contains("state: Stopped")
            && text.contains("current: 0")
            && text.contains("group stopped")
    });
}

#[test]
fn a_controller_killed_mid_scale_out_converges_to_exactly_the_desired_count() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    ctl.write_manifest("web.yaml", &sleepers(&ns.name, 30, 40, "", ""));
    expect(
        &ctl,
        &ns,
        "scale-out under way",
        Duration::from_secs(20),
        || containers(&ns).len() >= 4,
    );
    ctl.kill();
    let at_kill = containers(&ns).len();
    assert!(
        at_kill < 30,
        "the scale-out finished before the kill ({at_kill}); nothing was tested"
    );
    ctl.restart(&ControllerOptions::default()).wait_ready();
    expect(
        &ctl,
        &ns,
        "exactly 30 running",
        Duration::from_secs(60),
        || {
            let all = containers(&ns);
            all.len() == 30 && all.iter().all(|c| c.state == "running")
        },
    );
    // And it stays there: no duplicates arrive late, no orphans.
    std::thread::sleep(Duration::from_secs(2));
    let all = containers(&ns);
    assert_eq!(
        all.len(),
        30,
        "{:?}",
        all.iter().map(|c| (&c.name, &c.state)).collect::<Vec<_>>()
    );
    let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 30, "duplicate names");
    assert!(all
        .iter()
        .all(|c| c.labels.get("io.microscaler.group").map(String::as_str) == Some("web")));
}

#[test]
fn a_restarted_dockerd_is_reconnected_and_converged_without_restarting_the_controller() {
    let _b = zone_b_lock();
    let ns = TestNs::new();
    let host_b = docker_host_b();
    let mut ctl = Controller::start_with(ControllerOptions {
        zones: vec![("b".to_string(), host_b.clone())],
        ..Default::default()
    });
    ctl.wait_ready();
    ctl.write_manifest("web.yaml", &sleepers(&ns.name, 2, 5, "", ""));
    expect(&ctl, &ns, "2 running on b", Duration::from_secs(15), || {
        running_on(&host_b, &ns).len() == 2
    });
    let before = ids(&running_on(&host_b, &ns));

    stop_engine_b();
    start_engine_b();
    expect(
        &ctl,
        &ns,
        "2 running on b after the restart",
        Duration::from_secs(40),
        || {
            let r = running_on(&host_b, &ns);
            r.len() == 2 && containers_on(&host_b, &ns.name).len() == 2
        },
    );
    let after = ids(&running_on(&host_b, &ns));
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "the old containers died with dockerd and were replaced"
    );
    assert!(
        ctl.log().contains("zone unreachable"),
        "the outage should be logged"
    );
}

#[test]
fn zones_are_balanced_made_up_when_one_is_down_and_rebalanced_when_it_returns() {
    let _b = zone_b_lock();
    let ns = TestNs::new();
    let (host_a, host_b) = (docker_host_a(), docker_host_b());
    let mut ctl = Controller::start_with(ControllerOptions::two_zones());
    ctl.wait_ready();
    let zones = "  availabilityZones: [a, b]\n";
    ctl.write_manifest("web.yaml", &sleepers(&ns.name, 4, 4, "", zones));
    expect(&ctl, &ns, "2 + 2", Duration::from_secs(20), || {
        running_on(&host_a, &ns).len() == 2 && running_on(&host_b, &ns).len() == 2
    });

    // Zone b goes down: its capacity is made up in a, and status says b is unreachable.
    stop_engine_b();
    expect(
        &ctl,
        &ns,
        "4 in a while b is down",
        Duration::from_secs(20),
        || running_on(&host_a, &ns).len() == 4,
    );
    let json = assert_success(&ctl.ms(&["get", "asgs", "web", "-n", &ns.name, "-o", "json"]));
    assert!(
        json.contains("unreachableZones"),
        "status should name the unreachable zone: {json}"
    );

    // Zone b returns: back to 2 + 2, never more than maxSize + 1 running on the way.
    start_engine_b();
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (a, b) = (
            running_on(&host_a, &ns).len(),
            running_on(&host_b, &ns).len(),
        );
        assert!(a + b <= 5, "{a} + {b} running exceeds maxSize + 1");
        if a == 2 && b == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not rebalanced: a={a} b={b}\n{}",
            ctl.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Removing zone b from the group moves its instances to a.
    ctl.write_manifest(
        "web.yaml",
        &sleepers(&ns.name, 4, 4, "", "  availabilityZones: [a]\n"),
    );
    expect(
        &ctl,
        &ns,
        "all 4 moved to a",
        Duration::from_secs(30),
        || running_on(&host_a, &ns).len() == 4 && containers_on(&host_b, &ns.name).is_empty(),
    );
}

#[test]
fn a_launch_configuration_change_rolls_out_without_losing_capacity() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let v1 = "  env:\n    VERSION: \"1\"\n";
    let v2 = "  env:\n    VERSION: \"2\"\n";
    ctl.write_manifest("web.yaml", &sleepers(&ns.name, 3, 5, v1, ""));
    expect(&ctl, &ns, "3 running v1", Duration::from_secs(15), || {
        running(&ns).len() == 3
    });
    let old = ids(&running(&ns));
    ctl.write_manifest("web.yaml", &sleepers(&ns.name, 3, 5, v2, ""));
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut max_seen = 0;
    loop {
        let r = running(&ns);
        // The surge bounds the instances in service or starting. An old instance chosen for
        // removal is killed at once (grace 0 s) and leaves the list a moment later, when the
        // engine has removed it: counting it would make the bound depend on the engine's load.
        let live = containers(&ns)
            .iter()
            .filter(|c| c.state == "running" || c.state == "created")
            .count();
        max_seen = max_seen.max(live);
        assert!(
            r.len() >= 3,
            "capacity dropped to {} during the rollout",
            r.len()
        );
        let all_new = r.len() == 3 && r.iter().all(|c| c.env.iter().any(|e| e == "VERSION=2"));
        if all_new && containers(&ns).len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "rollout did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ids(&running(&ns)).iter().all(|id| !old.contains(id)));
    assert!(
        max_seen <= 4,
        "the default surge of 25% of 3 is one extra instance, saw {max_seen}"
    );
    let describe = assert_success(&ctl.ms(&["describe", "asg", "web", "-n", &ns.name]));
    assert!(
        describe.contains("rolling update"),
        "activities should show the rollout:\n{describe}"
    );
}

#[test]
fn a_missing_image_and_a_crashing_container_are_contained_and_explained() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    // A missing image: Degraded with the engine's own error, nothing created.
    let missing =
        sleepers(&ns.name, 3, 5, "", "").replace(TEST_IMAGE, "microscaler/does-not-exist:1");
    ctl.write_manifest("web.yaml", &missing);
    expect(
        &ctl,
        &ns,
        "Degraded with the engine error",
        Duration::from_secs(15),
        || {
            let d = ctl.ms(&["describe", "asg", "web", "-n", &ns.name]);
            let text = String::from_utf8_lossy(&d.stdout);
            text.contains("LaunchFailed") && text.contains("microscaler/does-not-exist:1")
        },
    );
    assert!(containers(&ns).is_empty());

    // A container that exits at once: slow start + backoff, Degraded with exit code and log.
    let crash = sleepers(&ns.name, 3, 5, "", "").replace(
        "command: [\"sleep\", \"3600\"]",
        "command: [\"sh\", \"-c\", \"echo boom-from-the-app; exit 3\"]",
    );
    let since = chrono_now();
    ctl.write_manifest("web.yaml", &crash);
    expect(
        &ctl,
        &ns,
        "CrashLoop with exit code and log",
        Duration::from_secs(20),
        || {
            let d = ctl.ms(&["describe", "asg", "web", "-n", &ns.name]);
            let text = String::from_utf8_lossy(&d.stdout);
            text.contains("CrashLoop")
                && text.contains("code 3")
                && text.contains("boom-from-the-app")
        },
    );
    std::thread::sleep(Duration::from_secs(8));
    let until = chrono_now();
    let events = docker_ok(
        &docker_host_a(),
        &[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "event=create",
            "--filter",
            &format!("label={}", ns.label()),
            "--format",
            "{{.ID}}",
        ],
    );
    let creates = events.lines().count();
    // Without backoff this would be hundreds in ~10 s; with it, a handful.
    assert!(
        (1..=12).contains(&creates),
        "{creates} containers created in ~10 s of crash loop"
    );
}

fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    secs.to_string()
}
