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
