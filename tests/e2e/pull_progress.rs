//! Pulls seen while they run, and rollouts that pull first: a real registry behind a slow proxy
//! on 127.0.0.1 (so a 24 MB layer takes seconds), zone a and zone b. `ms describe` shows each
//! pull's layers and bytes while a launch waits on it, and a rollout to a new image pulls it on
//! both zones before it replaces any instance.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::registry::Registry;

/// Bytes per second the proxy lets through from the registry.
const RATE: usize = 8 * 1024 * 1024;

/// A TCP proxy to `127.0.0.1:to` that sends the registry's answers at [`RATE`]; runs until the
/// test process ends (its threads hold nothing else).
fn slow_proxy(to: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || copy(client, server, None));
            std::thread::spawn(move || copy(s2, c2, Some(RATE)));
        }
    });
    port
}

fn copy(mut from: TcpStream, mut to: TcpStream, rate: Option<usize>) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(rate) = rate {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Pushes an image of the test image plus `mb` MB of random data as `path`; returns the
/// reference through the proxy.
fn push_big(registry: &mut Registry, proxy: u16, path: &str, mb: u32) -> String {
    let host = docker_host_a();
    let name = format!(
        "ms-big-{}-{}",
        std::process::id(),
        path.replace(['/', ':'], "-")
    );
    docker_ok(
        &host,
        &[
            "run",
            "--name",
            &name,
            TEST_IMAGE,
            "dd",
            "if=/dev/urandom",
            "of=/big",
            "bs=1M",
            &format!("count={mb}"),
        ],
    );
    let tmp = format!("ms-big-tmp:{}", std::process::id());
    docker_ok(&host, &["commit", &name, &tmp]);
    docker_ok(&host, &["rm", "-f", &name]);
    let pushed = registry.push_image(&tmp, path);
    docker_ok(&host, &["rmi", &tmp]);
    let via_proxy = pushed.replace(
        &format!("127.0.0.1:{}", registry.port),
        &format!("127.0.0.1:{proxy}"),
    );
    registry.references.push(via_proxy.clone());
    via_proxy
}

fn docs(ns: &str, image: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\n\
         kind: LaunchConfiguration\n\
         metadata:\n  name: web\n  namespace: {ns}\n\
         spec:\n  image: {image}\n  command: [\"sleep\", \"3600\"]\n  stopGracePeriod: 0s\n\
         ---\n\
         apiVersion: microscaler.io/v1\n\
         kind: AutoScalingGroup\n\
         metadata:\n  name: web\n  namespace: {ns}\n\
         spec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: 4\n  desiredCapacity: 2\n  availabilityZones: [a, b]\n  maxSurge: 1\n  maxUnavailable: 1\n"
    )
}

/// Images of the namespace's containers on both zones.
fn images(ns: &TestNs) -> Vec<String> {
    [docker_host_a(), docker_host_b()]
        .iter()
        .flat_map(|h| containers_on(h, &ns.name))
        .map(|c| c.image)
        .collect()
}

/// The `Progressing` row of `ms describe`'s conditions: "Progressing  True  REASON  MESSAGE".
fn progressing(describe: &str) -> &str {
    describe
        .lines()
        .skip_while(|l| !l.starts_with("Conditions:"))
        .find(|l| l.trim_start().starts_with("Progressing "))
        .unwrap_or("")
}

/// Polls `ms describe` until it shows a pull of `image`; returns that output.
fn describe_during_pull(
    ctl: &Controller,
    ns: &TestNs,
    image: &str,
    max: Duration,
) -> Option<String> {
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        let out = ctl.ms(&["describe", "asg", "web", "-n", &ns.name]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("Image Pulls:") && text.contains(image) {
            return Some(text);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

#[test]
fn pulls_show_progress_and_a_rollout_pulls_on_every_zone_before_it_replaces() {
    let _b = zone_b_lock();
    let mut registry = Registry::start();
    let proxy = slow_proxy(registry.port);
    let ns = TestNs::new();
    let v1 = push_big(&mut registry, proxy, &format!("{}/big:1", ns.name), 24);
    let v2 = push_big(&mut registry, proxy, &format!("{}/big:2", ns.name), 24);
    let scratch = tempfile::tempdir().unwrap();
    let creds = scratch.path().join("docker");
    std::fs::create_dir_all(&creds).unwrap();
    // The proxy's address is the registry's name for the engines: log in under it.
    let config = registry.write_docker_config(&creds);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("127.0.0.1:{}", registry.port),
        &format!("127.0.0.1:{proxy}"),
    );
    std::fs::write(&config, text).unwrap();
    let mut ctl = Controller::start_with(ControllerOptions {
        extra_config: format!(
            "registryCredentials:\n  {}: {}\n",
            ns.name,
            config.display()
        ),
        ..ControllerOptions::two_zones()
    });
    ctl.wait_ready();

    // First launch: each zone pulls, and describe shows how far.
    ctl.write_manifest("web.yaml", &docs(&ns.name, &v1));
    let shown = describe_during_pull(&ctl, &ns, &v1, Duration::from_secs(60));
    let shown =
        shown.unwrap_or_else(|| panic!("no pull progress in ms describe; log:\n{}", ctl.log()));
    let row = shown
        .lines()
        .skip_while(|l| !l.starts_with("Image Pulls:"))
        .find(|l| l.contains(&v1))
        .expect("a row for the pull");
    // `a  IMAGE  1/2  5.0 MB / 25.2 MB  0s`: layers done of total, bytes of total.
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(["a", "b"].contains(&cells[0]), "{shown}");
    assert!(
        cells[2].split_once('/').is_some_and(|(d, t)| d <= t),
        "{shown}"
    );
    assert!(row.contains(" MB / "), "{shown}");
    // The status published before the launch says what it does while it waits on the pull.
    let p = progressing(&shown);
    assert!(
        p.contains(" True ") && p.contains("ScalingOut") && p.contains("; launching 2"),
        "{shown}"
    );
    assert!(
        wait_until(Duration::from_secs(120), || {
            let i = images(&ns);
            i.len() == 2 && i.iter().all(|x| *x == v1)
        }),
        "two instances of v1: {:?}\n{}",
        images(&ns),
        ctl.log()
    );
    // Once pulled, the progress is gone from the status.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let out = ctl.ms(&["describe", "asg", "web", "-n", &ns.name]);
            !String::from_utf8_lossy(&out.stdout).contains("Image Pulls:")
        }),
        "the pull stays shown after it ended"
    );

    // A rollout to v2: both zones pull it before any instance is replaced.
    ctl.write_manifest("web.yaml", &docs(&ns.name, &v2));
    let shown = describe_during_pull(&ctl, &ns, &v2, Duration::from_secs(60));
    let shown = shown.unwrap_or_else(|| panic!("no pre-pull progress; log:\n{}", ctl.log()));
    // Not Ready, and rolling, while the image is still on its way (not "Converged").
    let p = progressing(&shown);
    assert!(
        p.contains(" True ") && p.contains("RollingUpdate") && p.contains("; launching "),
        "{shown}"
    );
    assert!(
        images(&ns).iter().all(|i| *i == v1),
        "an instance was replaced while the new image was still being pulled: {:?}",
        images(&ns)
    );
    let mut first_v2_seen = false;
    let done = wait_until(Duration::from_secs(120), || {
        let i = images(&ns);
        if !first_v2_seen && i.contains(&v2) {
            first_v2_seen = true;
            // The first new instance starts only when both engines hold the image.
            assert!(
                Registry::engine_has(&docker_host_a(), &v2),
                "zone a lacks v2"
            );
            assert!(
                Registry::engine_has(&docker_host_b(), &v2),
                "zone b lacks v2"
            );
        }
        i.len() == 2 && i.iter().all(|x| *x == v2)
    });
    assert!(
        done,
        "the rollout finished: {:?}\n{}",
        images(&ns),
        ctl.log()
    );
    let pre_pulls = ctl
        .log()
        .lines()
        .filter(|l| l.contains("image pulled") && l.contains(&v2))
        .count();
    assert_eq!(pre_pulls, 2, "one pull of v2 per engine");
}
