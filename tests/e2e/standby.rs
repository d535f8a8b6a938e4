//! Two controllers, one active and one `--standby`, on the same manifest directory and
//! `controllerName`: kill -9 the active during a scale-out, the standby takes over and finishes
//! it with exactly the desired count; the old one comes back as the standby.

use std::time::{Duration, Instant};

use crate::common::*;

const DESIRED: usize = 10;

fn group(ns: &str) -> String {
    sleepers(ns, DESIRED as u32, DESIRED as u32, "", "")
}

fn wait_log(ctl: &Controller, needle: &str, timeout: Duration) -> bool {
    wait_until(timeout, || ctl.log().contains(needle))
}

#[test]
fn the_standby_takes_over_a_scale_out_from_a_killed_active_and_the_old_one_comes_back_as_standby() {
    let ns = TestNs::new();
    let shared = tempfile::tempdir().unwrap();
    let dir = shared.path().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("e2e-standby-{}", std::process::id());
    let opts = ControllerOptions {
        controller_name: Some(name),
        dir: Some(dir.clone()),
        args: vec!["--standby".into()],
        // One creation at a time, so the scale-out is still running when the active dies.
        extra_config: "concurrency: 1\n".into(),
        ..Default::default()
    };
    let mut first = Controller::start_with(opts.clone());
    first.wait_ready();
    let second = Controller::start_with(opts.clone());
    assert!(
        wait_log(
            &second,
            "serving reads and waiting",
            Duration::from_secs(30)
        ),
        "the second controller waits as a standby; log:\n{}",
        second.log()
    );
    // The standby serves reads.
    let out = second.ms(&["get", "asgs", "-A"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    first.write_manifest("web.yaml", &group(&ns.name));
    let running = || {
        containers(&ns)
            .iter()
            .filter(|c| c.state == "running")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(60), || running() >= 2),
        "the scale-out starts; log:\n{}",
        first.log()
    );
    first.kill();
    let killed = Instant::now();
    let at_kill = running();
    assert!(
        wait_log(
            &second,
            "this controller is now active",
            Duration::from_secs(10)
        ),
        "the standby takes over within 10 s; log:\n{}",
        second.log()
    );
    let takeover = killed.elapsed();
    eprintln!("takeover after {takeover:?}; {at_kill} of {DESIRED} running at the kill");
    assert!(
        wait_until(Duration::from_secs(60), || running() == DESIRED),
        "the new active finishes the scale-out; log:\n{}",
        second.log()
    );
    let out = second.ms(&["get", "asgs", "-A"]);
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("standby"),
        "the new active no longer says standby"
    );
    // Exactly the desired count, and it stays so (no duplicate launched by either).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(containers(&ns).len(), DESIRED, "no duplicate containers");
    assert_eq!(running(), DESIRED);

    // The old active comes back: it is the standby now.
    first.spawn(&opts);
    assert!(
        wait_log(&first, "serving reads and waiting", Duration::from_secs(30)),
        "the old active comes back as the standby; log:\n{}",
        first.log()
    );
    assert!(
        !first.log().contains("this controller is now active")
            || first.log().matches("this controller is now active").count() == 1
    );
    assert_eq!(containers(&ns).len(), DESIRED);
}
