//! Warm pools on the real engines: spares are paused containers, a killed or removed instance
//! is replaced by one of them (a container that existed before the kill), the pool refills,
//! spares are never counted, a new launch configuration replaces them, and a controller killed
//! with `kill -9` tells spares from instances by what the engine shows.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;

const SPARE: &str = "-warm";

fn instances_on(host: &str, ns: &TestNs) -> Vec<DockerContainer> {
    containers_on(host, &ns.name)
        .into_iter()
        .filter(|c| c.state == "running" && !c.name.ends_with(SPARE))
        .collect()
}

fn spares_on(host: &str, ns: &TestNs) -> Vec<DockerContainer> {
    containers_on(host, &ns.name)
        .into_iter()
        .filter(|c| c.state == "paused" && c.name.ends_with(SPARE))
        .collect()
}

fn ids(list: &[DockerContainer]) -> BTreeSet<String> {
    list.iter().map(|c| c.id.clone()).collect()
}

fn expect(ctl: &Controller, ns: &TestNs, what: &str, cond: impl FnMut() -> bool) {
    crate::common::expect(ctl, ns, what, Duration::from_secs(30), cond);
}

#[test]
fn a_killed_instance_is_replaced_by_a_spare_that_existed_before_the_kill() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let a = docker_host_a();
    ctl.write_manifest(
        "web.yaml",
        &sleepers(
            &ns.name,
            2,
            2,
            "",
            "  warmPool: {minSize: 2, maxPrepared: 2}\n",
        ),
    );
    expect(&ctl, &ns, "2 instances and 2 paused spares", || {
        instances_on(&a, &ns).len() == 2 && spares_on(&a, &ns).len() == 2
    });
    for s in spares_on(&a, &ns) {
        assert_eq!(
            s.labels.get("io.microscaler.warm-pool").map(String::as_str),
            Some("true")
        );
    }

    // Never counted: 2 instances, Ready, and the spares listed as warm.
    expect(&ctl, &ns, "status counts instances only", || {
        let out = ctl.ms(&["describe", "asg", "web", "-n", &ns.name]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.contains("Current/Ready/Updated: 2 / 2 / 2")
            && text.contains("Warm Pool:             2/2 ready (Paused)")
            && text.contains("holding")
    });
    let table = assert_success(&ctl.ms(&["get", "instances", "-n", &ns.name]));
    assert_eq!(
        table
            .lines()
            .filter(|l| l.split_whitespace().nth(3) == Some("warm"))
            .count(),
        2,
        "{table}"
    );

    // kill -9 of an instance: a spare that existed before the kill takes its place.
    for round in 0..2 {
        let spares = ids(&spares_on(&a, &ns));
        let victim = instances_on(&a, &ns).remove(0);
        if round == 0 {
            kill9(&victim);
        } else {
            docker_ok(&a, &["rm", "-f", &victim.id]);
        }
        expect(&ctl, &ns, "a spare serves", || {
            let now = instances_on(&a, &ns);
            now.len() == 2
                && now.iter().all(|c| c.id != victim.id)
                && now.iter().any(|c| spares.contains(&c.id))
        });
        expect(&ctl, &ns, "pool refilled", || {
            spares_on(&a, &ns).len() == 2 && containers(&ns).len() == 4
        });
    }
    expect(&ctl, &ns, "activity says so", || {
        let out = ctl.ms(&["describe", "asg", "web", "-n", &ns.name]);
        String::from_utf8_lossy(&out.stdout).contains("replaced from warm pool")
    });
}

#[test]
fn a_new_launch_configuration_replaces_the_spares_and_a_restart_keeps_them() {
    let ns = TestNs::new();
    let opts = ControllerOptions::default();
    let mut ctl = Controller::start_with(opts.clone());
    ctl.wait_ready();
    let a = docker_host_a();
    let pool = "  warmPool: {minSize: 2, maxPrepared: 2}\n";
    ctl.write_manifest(
        "web.yaml",
        &sleepers(&ns.name, 1, 1, "  env: {V: \"1\"}\n", pool),
    );
    expect(&ctl, &ns, "1 instance and 2 spares", || {
        instances_on(&a, &ns).len() == 1 && spares_on(&a, &ns).len() == 2
    });

    // kill -9 of the controller, then a restart: nothing created, nothing removed.
    let before = ids(&containers(&ns));
    ctl.kill();
    ctl.restart(&opts).wait_ready();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        ids(&containers(&ns)),
        before,
        "the restart changed the pool"
    );
    assert_eq!(instances_on(&a, &ns).len(), 1);

    // A new launch configuration: new spares (of the new spec), the old ones gone.
    let old_spares = ids(&spares_on(&a, &ns));
    ctl.write_manifest(
        "web.yaml",
        &sleepers(&ns.name, 1, 1, "  env: {V: \"2\"}\n", pool),
    );
    expect(&ctl, &ns, "spares of the new spec", || {
        let spares = spares_on(&a, &ns);
        let inst = instances_on(&a, &ns);
        spares.len() == 2
            && ids(&spares).is_disjoint(&old_spares)
            && inst.len() == 1
            && spares.iter().all(|s| {
                s.labels.get("io.microscaler.spec-hash")
                    == inst[0].labels.get("io.microscaler.spec-hash")
            })
            && inst[0].env.iter().any(|e| e == "V=2")
            && containers(&ns).len() == 3
    });
}

#[test]
fn a_stopped_pool_serves_with_a_start() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let a = docker_host_a();
    ctl.write_manifest(
        "web.yaml",
        &sleepers(
            &ns.name,
            1,
            1,
            "",
            "  warmPool: {minSize: 1, maxPrepared: 1, state: Stopped}\n",
        ),
    );
    let stopped = |ns: &TestNs| -> Vec<DockerContainer> {
        containers_on(&docker_host_a(), &ns.name)
            .into_iter()
            .filter(|c| c.state == "exited" && c.name.ends_with(SPARE))
            .collect()
    };
    expect(&ctl, &ns, "1 instance and 1 stopped spare", || {
        instances_on(&a, &ns).len() == 1 && stopped(&ns).len() == 1
    });
    let spare = stopped(&ns).remove(0);
    let victim = instances_on(&a, &ns).remove(0);
    kill9(&victim);
    expect(&ctl, &ns, "the stopped spare serves", || {
        instances_on(&a, &ns).iter().any(|c| c.id == spare.id)
    });
    expect(&ctl, &ns, "pool refilled", || {
        stopped(&ns).len() == 1 && containers(&ns).len() == 2
    });
}

#[test]
fn a_stopped_spare_is_not_started_beyond_the_namespace_quota() {
    let ns = TestNs::new();
    let opts = ControllerOptions {
        extra_config: format!("namespaces:\n  {}: {{maxContainers: 2}}\n", ns.name),
        ..Default::default()
    };
    let mut ctl = Controller::start_with(opts);
    ctl.wait_ready();
    let a = docker_host_a();
    let pool = "  warmPool: {minSize: 3, maxPrepared: 3, state: Stopped}\n";
    let stopped = |ns: &TestNs| -> Vec<DockerContainer> {
        containers_on(&docker_host_a(), &ns.name)
            .into_iter()
            .filter(|c| c.state == "exited" && c.name.ends_with(SPARE))
            .collect()
    };
    // What the quota counts: every container of the namespace that runs or is paused.
    let held = |ns: &TestNs| {
        containers_on(&docker_host_a(), &ns.name)
            .into_iter()
            .filter(|c| c.state == "running" || c.state == "paused")
            .count()
    };
    let within = |what: &str, cond: &mut dyn FnMut() -> bool| {
        let mut over = 0;
        expect(&ctl, &ns, what, || {
            over = over.max(held(&ns));
            over > 2 || cond()
        });
        assert!(over <= 2, "{what}: {over} containers held, quota 2");
    };
    // Prepared within the quota (two at a time at most), then stopped: not counted.
    ctl.write_manifest("web.yaml", &sleepers(&ns.name, 0, 10, "", pool));
    within("3 stopped spares", &mut || stopped(&ns).len() == 3);
    ctl.write_manifest("web.yaml", &sleepers(&ns.name, 2, 10, "", pool));
    within("2 instances from the pool", &mut || {
        instances_on(&a, &ns).len() == 2 && stopped(&ns).len() == 1
    });
    // At the quota, a scale-out does not start the last spare: refused, visibly.
    let file = ctl.write_manifest("web.yaml", &sleepers(&ns.name, 3, 10, "", pool));
    within("QuotaExceeded in the status", &mut || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("QuotaExceeded"))
    });
    let mut over = 0;
    wait_until(Duration::from_secs(3), || {
        over = over.max(held(&ns));
        false
    });
    assert!(over <= 2, "{over} containers held, quota 2");
    assert_eq!(instances_on(&a, &ns).len(), 2, "never scaled down");
    assert_eq!(stopped(&ns).len(), 1, "the spare waits, stopped");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("maxContainers"), "{text}");
}

/// `state` and `ready` of instance `name` in the group's published status (`None`: not listed).
fn published(ctl: &Controller, ns: &TestNs, name: &str) -> Option<(String, bool)> {
    let out = ctl.ms(&["get", "asg", "web", "-n", &ns.name, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let i = v["status"]["instances"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == name)?
        .clone();
    Some((i["state"].as_str()?.to_string(), i["ready"] == true))
}

/// A give-back (`reuseOnScaleIn`) behind a real HAProxy: the instance scaled in goes to `drain`
/// at once and gets no new request while it drains, leaves the backend, becomes the pool's
/// spare (the same container), and is never a member while it is one; a scale-out takes it back
/// and it joins only once running and ready. No request of a client loop fails.
#[test]
fn a_give_back_behind_a_load_balancer_drains_first_and_rejoins_only_when_ready() {
    use crate::load_balancer::*;
    const DRAIN: Duration = Duration::from_secs(5);
    let (ns, ctl, _dir, port) = lb_setup();
    // maxSize 2: the pool (its size is at most maxSize − desired) has room only after a
    // scale-in, so the instance scaled in is given back rather than a spare prepared. Two
    // probes a second apart before an instance is ready: a spare taken back runs for a second
    // before it may join.
    let yaml = |desired: u32| {
        with_group_lines(
            &web_behind_lb(
                &ns.name,
                desired,
                port,
                "  healthCheck: {type: HTTP, port: 8080, path: /, interval: 1s, healthyThreshold: 2}\n",
            ),
            &format!(
                "  drainTimeout: {}s\n  warmPool: {{minSize: 1, reuseOnScaleIn: true}}\n",
                DRAIN.as_secs()
            ),
        )
        .replace("maxSize: 10", "maxSize: 2")
    };
    let file = ctl.write_manifest("web.yaml", &yaml(2));
    expect(
        &ctl,
        &ns,
        "2 ready instances serving through the LB, no spare",
        || {
            let now = containers(&ns);
            names_through(port, 6).len() == 2
                && server_views(&ctl.name, &ns.name)
                    .iter()
                    .all(|s| s.admin == 0)
                && now.len() == 2
                && now
                    .iter()
                    .all(|c| published(&ctl, &ns, &c.name) == Some(("running".to_string(), true)))
        },
    );
    let before: BTreeSet<String> = ids(&containers(&ns));
    let client = ClientLoop::start(
        port,
        Duration::from_millis(10),
        9000,
        Duration::from_secs(90),
    );
    std::thread::sleep(Duration::from_millis(300));

    // Scale in: the instance chosen drains at once, while it still runs as an instance.
    let scaled_in = std::time::Instant::now();
    let (victim, to_drain) = scale_in_until_drain(&ctl, &ns.name, &file, &yaml(1));
    let container = containers(&ns)
        .into_iter()
        .find(|c| c.name == victim.name)
        .unwrap_or_else(|| panic!("server {} is no container", victim.name));
    let spare_port = published_8080(&container);
    assert_eq!(
        name_and_state(&container.id),
        Some((victim.name.clone(), "running".to_string())),
        "drain came after the give-back"
    );
    assert!(to_drain < DRAIN, "drain only after {to_drain:?}");
    expect(&ctl, &ns, "ms describe lb shows it draining", || {
        let out = ctl.ms(&["describe", "lb", "front", "-n", &ns.name]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains(&victim.name) && l.contains(" drain "))
    });

    // Violations seen by every sample from here: a spare (`-warm`, or the victim's container
    // while it is paused) taking connections from HAProxy, or, while the victim is `leaving`
    // the backend (drain, then maintenance and deletion), a new session for it.
    let mut wrong: Vec<String> = Vec::new();
    let sample = |wrong: &mut Vec<String>, leaving: bool| {
        let d1 = name_and_state(&container.id);
        let views = server_views(&ctl.name, &ns.name);
        let d2 = name_and_state(&container.id);
        let spare = |d: &Option<(String, String)>| {
            d.as_ref()
                .is_some_and(|(n, s)| n.ends_with(SPARE) || s == "paused")
        };
        for s in &views {
            // A server on its way out (drain, maintenance) takes no connection; one that
            // takes them must not lead to a spare.
            let serving = s.port == spare_port && s.admin == 0;
            if s.name.ends_with(SPARE) || (serving && spare(&d1) && spare(&d2)) {
                wrong.push(format!("a spare is a member: {s:?} ({d1:?})"));
            }
            if leaving && s.name == victim.name && (s.admin == 0 || s.stot != victim.stot) {
                wrong.push(format!(
                    "ready again, or a new session, while leaving: {s:?}"
                ));
            }
        }
        (views, d2)
    };

    // It leaves the backend after the drain and becomes the spare: same container, paused.
    let (mut removed_at, mut spare_at) = (None, None);
    expect(&ctl, &ns, "the victim given back to the pool", || {
        let (views, d) = sample(&mut wrong, true);
        if !views.iter().any(|s| s.name == victim.name) {
            removed_at.get_or_insert(scaled_in.elapsed());
        }
        if d == Some((format!("{}{SPARE}", victim.name), "paused".to_string())) {
            spare_at.get_or_insert(scaled_in.elapsed());
        }
        removed_at.is_some() && spare_at.is_some()
    });
    let (removed_at, spare_at) = (removed_at.unwrap(), spare_at.unwrap());
    assert!(
        removed_at >= DRAIN && spare_at >= DRAIN,
        "out of HAProxy after {removed_at:?}, a spare after {spare_at:?}: before the drain of {DRAIN:?}"
    );
    assert_eq!(ids(&containers(&ns)), before, "a container was recreated");
    expect(&ctl, &ns, "the spare shown as warm", || {
        published(&ctl, &ns, &format!("{}{SPARE}", victim.name)).is_some_and(|(s, _)| s == "warm")
    });
    // A while as a spare, never a member.
    let idle = std::time::Instant::now();
    while idle.elapsed() < Duration::from_secs(2) {
        sample(&mut wrong, false);
        std::thread::sleep(Duration::from_millis(50));
    }

    // Scale out: the spare is taken (same container, its instance name again) and joins only
    // once running and published ready.
    let scaled_out = std::time::Instant::now();
    std::fs::write(&file, yaml(2)).unwrap();
    let mut joined_at = None;
    expect(&ctl, &ns, "the spare taken back and serving", || {
        let (views, _) = sample(&mut wrong, false);
        let Some(s) = views.iter().find(|s| s.port == spare_port) else {
            return false;
        };
        joined_at.get_or_insert(scaled_out.elapsed());
        let now = name_and_state(&container.id);
        let status = published(&ctl, &ns, &victim.name);
        if now != Some((victim.name.clone(), "running".to_string()))
            || status != Some(("running".to_string(), true))
        {
            wrong.push(format!(
                "member {s:?} before it was ready: container {now:?}, status {status:?}"
            ));
        }
        s.name == victim.name && s.admin == 0 && names_through(port, 6).len() == 2
    });
    assert_eq!(ids(&containers(&ns)), before, "scale-out launched cold");
    std::thread::sleep(Duration::from_millis(500));
    let ok = client.finish_without_failures();
    assert!(wrong.is_empty(), "{:#?}", &wrong[..wrong.len().min(5)]);
    eprintln!(
        "give-back: drain after {to_drain:?}, out of HAProxy after {removed_at:?}, spare after \
         {spare_at:?}; taken back: member after {:?}; {ok} requests, 0 failed",
        joined_at.unwrap_or_default()
    );
}

/// A connection still open when a give-back's drain ends would hang in the paused spare: the
/// load balancer (TCP mode, its own drainTimeout 30s) closes it and drops the server as soon as
/// the instance is a spare, as it would for a stopped instance; the other instance's connection
/// is untouched.
#[test]
fn a_connection_left_open_after_a_give_back_drain_is_closed_not_frozen() {
    use crate::load_balancer::*;
    let (ns, ctl, _dir, port) = lb_setup();
    let yaml = |desired: u32| {
        with_group_lines(
            &web_behind_lb(&ns.name, desired, port, ""),
            "  drainTimeout: 2s\n  warmPool: {minSize: 1, reuseOnScaleIn: true}\n",
        )
        .replace("maxSize: 10", "maxSize: 2")
        .replace(
            "targetPort: 8080\n  drainTimeout: 5s\n",
            "targetPort: 8080\n  drainTimeout: 30s\n  mode: tcp\n  balance: leastconn\n",
        )
    };
    let file = ctl.write_manifest("web.yaml", &yaml(2));
    expect(&ctl, &ns, "2 instances serving through the LB", || {
        names_through(port, 6).len() == 2 && containers(&ns).len() == 2
    });
    let held = [hold(port), hold(port)];
    expect(&ctl, &ns, "one held connection per instance", || {
        let s = server_views(&ctl.name, &ns.name);
        s.len() == 2 && s.iter().all(|s| s.scur == 1)
    });

    let (victim, _) = scale_in_until_drain(&ctl, &ns.name, &file, &yaml(1));
    let spare = format!("{}{SPARE}", victim.name);
    expect(&ctl, &ns, "the victim given back to the pool", || {
        spares_on(&docker_host_a(), &ns)
            .iter()
            .any(|c| c.name == spare)
    });
    let spare_at = std::time::Instant::now();
    expect(&ctl, &ns, "the spare's server removed", || {
        !server_views(&ctl.name, &ns.name)
            .iter()
            .any(|s| s.name == victim.name)
    });
    let removed_after = spare_at.elapsed();
    assert!(
        removed_after < Duration::from_secs(10),
        "the server of a spare stayed {removed_after:?} (the LB's drain is 30 s)"
    );
    // The victim's connection was closed (no answer, at once); the other one is served.
    let finishing = std::time::Instant::now();
    let answers: Vec<Option<(u16, String)>> = held.into_iter().map(finish_held).collect();
    // A connection still held open would wait out its 5 s read timeout.
    assert!(finishing.elapsed() < Duration::from_secs(4), "{answers:?}");
    let hostname = hostname(&ns, &victim.name);
    assert_eq!(
        answers.iter().filter(|a| a.is_none()).count(),
        1,
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .flatten()
            .all(|(code, body)| *code == 200 && body.trim() != hostname),
        "{answers:?}"
    );
    eprintln!("left open: the spare's server removed {removed_after:?} after the spare was seen");
}
