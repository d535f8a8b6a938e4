//! Images from a registry: the engines pull what they do not have (zone a and zone b each),
//! with the controller's Docker config or a namespace's own credentials; a registry that refuses
//! us, an image that does not exist and `imagePullPolicy: Never` are each the group's condition.

use std::time::Duration;

use crate::common::*;
use crate::registry::Registry;

fn group(ns: &str, image: &str, desired: u32, policy: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\n\
         kind: LaunchConfiguration\n\
         metadata:\n  name: web\n  namespace: {ns}\n\
         spec:\n  image: {image}\n  command: [\"sleep\", \"3600\"]\n  stopGracePeriod: 0s\n{policy}\
         ---\n\
         apiVersion: microscaler.io/v1\n\
         kind: AutoScalingGroup\n\
         metadata:\n  name: web\n  namespace: {ns}\n\
         spec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: 4\n  desiredCapacity: {desired}\n  availabilityZones: [a, b]\n"
    )
}

fn running(ns: &TestNs) -> usize {
    [docker_host_a(), docker_host_b()]
        .iter()
        .map(|h| {
            containers_on(h, &ns.name)
                .iter()
                .filter(|c| c.state == "running")
                .count()
        })
        .sum()
}

/// Waits until `ms describe` of the group shows every one of `needles`.
fn wait_described(ctl: &Controller, ns: &TestNs, needles: &[&str]) {
    let mut shown = String::new();
    let ok = wait_until(Duration::from_secs(60), || {
        let out = ctl.ms(&["describe", "asg", "web", "-n", &ns.name]);
        shown = String::from_utf8_lossy(&out.stdout).into_owned();
        needles.iter().all(|n| shown.contains(n))
    });
    assert!(
        ok,
        "expected {needles:?} in ms describe:\n{shown}\nlog:\n{}",
        ctl.log()
    );
}

#[test]
fn images_are_pulled_from_a_registry_with_the_right_credentials_and_failures_are_conditions() {
    let _b = zone_b_lock();
    let mut registry = Registry::start();
    let (open, own, missing, never) = (TestNs::new(), TestNs::new(), TestNs::new(), TestNs::new());
    let image = registry.push_test_image(&format!("{}/busybox:1", own.name));
    let kept_away = registry.push_test_image(&format!("{}/busybox:1", never.name));
    assert!(!Registry::engine_has(&docker_host_a(), &image));
    assert!(!Registry::engine_has(&docker_host_b(), &image));

    let scratch = tempfile::tempdir().unwrap();
    let controller_docker = scratch.path().join("controller-docker");
    std::fs::create_dir_all(&controller_docker).unwrap();
    let own_file = registry.write_docker_config(&scratch.path().join(&own.name));
    let opts = ControllerOptions {
        env: vec![(
            "DOCKER_CONFIG".into(),
            controller_docker.display().to_string(),
        )],
        extra_config: format!(
            "registryCredentials:\n  {}: {f}\n  {}: {f}\n",
            own.name,
            missing.name,
            f = own_file.display()
        ),
        ..ControllerOptions::two_zones()
    };
    let mut ctl = Controller::start_with(opts);
    ctl.wait_ready();

    // A namespace with its own credentials: the first launch pulls, on each engine.
    ctl.write_manifest("own.yaml", &group(&own.name, &image, 3, ""));
    // The controller's Docker config has no login yet: the registry refuses, visibly. (Always:
    // with IfNotPresent, the copy the other namespace pulled would serve it, as in Kubernetes;
    // Always asks the registry, with this namespace's credentials, at every launch.)
    ctl.write_manifest(
        "open.yaml",
        &group(&open.name, &image, 2, "  imagePullPolicy: Always\n"),
    );
    // An image the registry does not have: its answer is the condition.
    let nope = registry.reference(&format!("{}/nope:1", own.name));
    registry.references.push(nope.clone());
    ctl.write_manifest("missing.yaml", &group(&missing.name, &nope, 1, ""));
    // Never: no pull, the missing image is the failure.
    ctl.write_manifest(
        "never.yaml",
        &group(&never.name, &kept_away, 1, "  imagePullPolicy: Never\n"),
    );

    assert!(
        wait_until(Duration::from_secs(90), || running(&own) == 3),
        "three instances of the pulled image; log:\n{}",
        ctl.log()
    );
    assert!(
        Registry::engine_has(&docker_host_a(), &image),
        "zone a pulled"
    );
    assert!(
        Registry::engine_has(&docker_host_b(), &image),
        "zone b pulled"
    );
    let pulls = ctl
        .log()
        .lines()
        .filter(|l| l.contains("image pulled") && l.contains(&image))
        .count();
    assert!(
        (1..=2).contains(&pulls),
        "one pull per engine at most, saw {pulls}"
    );
    // `-o wide` names the image each instance runs by content: the ID the engine pulled.
    let id = docker(&docker_host_a())
        .args(["image", "inspect", "-f", "{{.Id}}", &image])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    let short = format!("sha256:{}", &id.trim_start_matches("sha256:")[..12]);
    let mut wide = String::new();
    let shown = wait_until(Duration::from_secs(30), || {
        let out = ctl.ms(&["get", "instances", "-n", &own.name, "-o", "wide"]);
        wide = String::from_utf8_lossy(&out.stdout).into_owned();
        wide.lines().next().is_some_and(|h| h.contains("IMAGE-ID"))
            && wide.lines().skip(1).filter(|l| l.contains(&short)).count() == 3
    });
    assert!(shown, "every instance shows {short}:\n{wide}");

    wait_described(
        &ctl,
        &open,
        &["Degraded", "cannot pull", "no basic auth credentials"],
    );
    assert_eq!(running(&open), 0);
    wait_described(
        &ctl,
        &missing,
        &["Degraded", "cannot pull", "manifest unknown"],
    );
    wait_described(
        &ctl,
        &never,
        &["Degraded", "No such image", "imagePullPolicy: Never"],
    );
    assert!(
        !Registry::engine_has(&docker_host_a(), &kept_away),
        "Never never pulls"
    );

    // The controller's own Docker config gains a login: the next attempt pulls with it.
    registry.write_docker_config(&controller_docker);
    assert!(
        wait_until(Duration::from_secs(90), || running(&open) == 2),
        "the refused group launches once the controller's Docker config logs in; log:\n{}",
        ctl.log()
    );
}
