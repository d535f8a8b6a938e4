//! Safety under real operations (issue 8), end to end against the real engine: restarts over an
//! emptied or broken directory, a removed or unreadable folder, second controllers, a missing
//! `--dir`, copies started by hand, a fixed crash loop, dead tasks, a panicking reconcile,
//! failing removals and one engine configured as two zones. Each test names its case.
//!
//! Launch configurations stop with `stopGracePeriod: 0s`, so a deletion that should not happen
//! shows within a second; "nothing changes" checks watch a window of a few seconds.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{
    group_containers, group_doc, lc_doc, ms, running_ids, sleeper, started, table, wait_running,
    CONVERGE,
};
use crate::common::{
    docker, docker_host_a, docker_ok, http_get, wait_until, Controller, ControllerOptions, TestNs,
    TEST_IMAGE,
};

/// An LC and a group of `desired` sleepers, named `name`, as one file.
fn app(ns: &TestNs, name: &str, desired: u32) -> String {
    format!(
        "{}---\n{}",
        sleeper(ns, name),
        group_doc(ns, name, name, 0, 4, desired)
    )
}

/// Waits until `ms get problems` prints something containing every one of `needles`.
fn wait_problem(ctl: &Controller, needles: &[&str]) -> String {
    let mut last = None;
    let seen = wait_until(CONVERGE, || {
        let run = ms(ctl, &["get", "problems"]);
        let ok = run.code == 0 && needles.iter().all(|n| run.stdout.contains(n));
        last = Some(run);
        ok
    });
    assert!(seen, "ms get problems never showed {needles:?}: {last:#?}");
    last.unwrap().stdout
}

/// Asserts that `group`'s running containers stay exactly `ids`, and none is being stopped.
fn assert_kept(ns: &TestNs, group: &str, ids: &[String], window: Duration) {
    let changed = wait_until(window, || {
        running_ids(ns, group) != ids
            || group_containers(ns, group)
                .iter()
                .any(|c| c.state != "running")
    });
    assert!(
        !changed,
        "the containers of {group} changed: {ids:?} became {:?}",
        group_containers(ns, group)
            .iter()
            .map(|c| (&c.id, &c.state))
            .collect::<Vec<_>>()
    );
}

fn assert_ready(ctl: &Controller) {
    assert_eq!(
        http_get(ctl.port, "/readyz").map(|(s, _)| s),
        Some(200),
        "a held deletion keeps the controller ready"
    );
}

/// Conditions of a group as `ms get asg -o json` shows them: type → (status, reason, message).
fn conditions(
    ctl: &Controller,
    ns: &TestNs,
    group: &str,
) -> std::collections::BTreeMap<String, (String, String, String)> {
    let run = ms(ctl, &["get", "asg", group, "-n", &ns.name, "-o", "json"]);
    let v: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    v["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("type"), (s("status"), s("reason"), s("message")))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. A restart over an empty directory

#[test]
fn a_restart_over_an_emptied_directory_deletes_nothing_until_confirmed() {
    let ns = TestNs::new();
    let mut ctl = started(ControllerOptions::default());
    let web = ctl.write_manifest("web.yaml", &app(&ns, "web", 2));
    let ids = wait_running(&ctl, &ns, "web", 2);
    ctl.stop();
    // An unmounted volume, a fresh clone not pulled yet: the directory is there, but empty.
    std::fs::remove_file(&web).unwrap();
    ctl.restart(&ControllerOptions::default()).wait_ready();
    let confirm = format!("ms delete asg web -n {}", ns.name);
    let problems = wait_problem(&ctl, &["defines no autoscaling group", &confirm]);
    assert!(
        problems.contains(&format!("asg {}/web", ns.name)),
        "{problems}"
    );
    assert_kept(&ns, "web", &ids, Duration::from_secs(4));
    assert_ready(&ctl);

    // `ms delete` by name is the confirmation, although no file defines the group.
    let run = ms(&ctl, &["delete", "asg", "web", "-n", &ns.name]);
    assert_eq!(run.ok(), "autoscalinggroup/web deleted\n");
    assert!(
        wait_until(CONVERGE, || group_containers(&ns, "web").is_empty()),
        "the confirmed deletion did not happen"
    );
    assert!(wait_until(CONVERGE, || ms(&ctl, &["get", "problems"])
        .stdout
        .is_empty()));
}

// ---------------------------------------------------------------------------------------------
// 2. A restart while a manifest has a typo

#[test]
fn a_restart_while_a_manifest_has_a_typo_keeps_that_groups_containers() {
    let ns = TestNs::new();
    let mut ctl = started(ControllerOptions::default());
    let web = ctl.write_manifest("web.yaml", &app(&ns, "web", 2));
    ctl.write_manifest("api.yaml", &app(&ns, "api", 1));
    let web_ids = wait_running(&ctl, &ns, "web", 2);
    let api_ids = wait_running(&ctl, &ns, "api", 1);
    ctl.stop();
    let good = std::fs::read_to_string(&web).unwrap();
    std::fs::write(&web, good.replace("desiredCapacity:", "desiredCapasity:")).unwrap();
    ctl.restart(&ControllerOptions::default()).wait_ready();
    wait_problem(
        &ctl,
        &[
            "did you mean `desiredCapacity`",
            &format!("deletion of autoscaling group {}/web held", ns.name),
        ],
    );
    assert_kept(&ns, "web", &web_ids, Duration::from_secs(4));
    assert_eq!(running_ids(&ns, "api"), api_ids);
    assert_ready(&ctl);
    // Fixed: the group is managed again, with the very same containers.
    std::fs::write(&web, good).unwrap();
    assert!(wait_until(CONVERGE, || ms(&ctl, &["get", "problems"])
        .stdout
        .is_empty()));
    assert_eq!(wait_running(&ctl, &ns, "web", 2), web_ids);
}

// ---------------------------------------------------------------------------------------------
// 3. A namespace folder removed

#[test]
fn removing_a_namespace_folder_holds_its_groups_until_each_is_confirmed() {
    let keep = TestNs::new();
    let team = TestNs::new();
    let ctl = started(ControllerOptions::default());
    ctl.write_manifest("keep.yaml", &app(&keep, "keep", 1));
    let folder = ctl.dir.join("team-b");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("x.yaml"), app(&team, "x", 1)).unwrap();
    std::fs::write(folder.join("y.yaml"), app(&team, "y", 1)).unwrap();
    let x = wait_running(&ctl, &team, "x", 1);
    let y = wait_running(&ctl, &team, "y", 1);
    wait_running(&ctl, &keep, "keep", 1);

    std::fs::remove_dir_all(&folder).unwrap();
    let problems = wait_problem(
        &ctl,
        &[
            &format!("every group of namespace `{}`", team.name),
            &format!("ms delete asg x -n {}", team.name),
            &format!("ms delete asg y -n {}", team.name),
        ],
    );
    assert_eq!(table(&problems).len(), 2, "{problems}");
    assert_kept(&team, "x", &x, Duration::from_secs(3));
    assert_eq!(running_ids(&team, "y"), y);

    // Confirming one deletes that one only.
    let run = ms(&ctl, &["delete", "asg", "x", "-n", &team.name]);
    assert_eq!(run.ok(), "autoscalinggroup/x deleted\n");
    assert!(wait_until(CONVERGE, || group_containers(&team, "x").is_empty()));
    assert_kept(&team, "y", &y, Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------------
// 4. The last group's file removed by hand: visible, and `ms delete` / `ms apply` both work

#[test]
fn a_held_deletion_is_a_problem_and_ms_delete_or_ms_apply_resolve_it() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let text = app(&ns, "web", 1);
    let web = ctl.write_manifest("web.yaml", &text);
    let ids = wait_running(&ctl, &ns, "web", 1);
    std::fs::remove_file(&web).unwrap();
    let problems = wait_problem(&ctl, &[&format!("ms delete asg web -n {}", ns.name)]);
    assert!(problems.contains(&web.display().to_string()), "{problems}");
    // The group says so too.
    let mut c = Default::default();
    let held = wait_until(CONVERGE, || {
        c = conditions(&ctl, &ns, "web");
        c.get("DeletionHeld").is_some_and(|(s, _, _)| s == "True")
    });
    assert!(held, "{c:?}");

    // Applying the same file again writes it back (it is not "unchanged": no file holds it).
    let copy = ctl.tmp_path().join("web-copy.yaml");
    std::fs::write(&copy, &text).unwrap();
    let run = ms(&ctl, &["apply", "-f", copy.to_str().unwrap()]);
    assert_eq!(
        run.ok(),
        "launchconfiguration/web created\nautoscalinggroup/web created\n"
    );
    assert!(wait_until(CONVERGE, || ms(&ctl, &["get", "problems"])
        .stdout
        .is_empty()));
    assert_eq!(running_ids(&ns, "web"), ids);

    // Removed by hand again, then deleted by name: it really goes.
    std::fs::remove_dir_all(ctl.dir.join(&ns.name)).unwrap();
    wait_problem(&ctl, &[&format!("ms delete asg web -n {}", ns.name)]);
    assert_kept(&ns, "web", &ids, Duration::from_secs(2));
    let run = ms(&ctl, &["delete", "asg", "web", "-n", &ns.name]);
    assert_eq!(run.ok(), "autoscalinggroup/web deleted\n");
    assert!(
        wait_until(CONVERGE, || group_containers(&ns, "web").is_empty()),
        "`ms delete` said deleted but the containers stay"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A second controller

#[test]
fn a_second_controller_on_the_directory_or_the_name_refuses_and_a_dead_ones_lease_is_taken_over() {
    let ns = TestNs::new();
    let mut first = started(ControllerOptions::default());
    first.write_manifest("web.yaml", &app(&ns, "web", 1));
    let ids = wait_running(&first, &ns, "web", 1);
    let pid = first.pid().unwrap();

    // The same directory (another port, another name).
    let mut second = Controller::start_with(ControllerOptions {
        dir: Some(first.dir.clone()),
        ..Default::default()
    });
    let status = second
        .wait_exit(Duration::from_secs(30))
        .expect("a second controller on the same directory must refuse to start");
    assert!(!status.success());
    let log = second.log();
    assert!(log.contains("another controller already watches"), "{log}");
    assert!(log.contains(&format!("pid {pid}")), "{log}");
    assert!(
        log.contains(&format!("listening on 127.0.0.1:{}", first.port)),
        "{log}"
    );

    // The same controllerName on the same engine (another directory).
    let same_name = ControllerOptions {
        controller_name: Some(first.name.clone()),
        ..Default::default()
    };
    let mut third = Controller::start_with(same_name.clone());
    let status = third
        .wait_exit(Duration::from_secs(30))
        .expect("a second controller with the same name on one engine must refuse to start");
    assert!(!status.success());
    let log = third.log();
    assert!(
        log.contains(&format!(
            "managed by another controller named `{}`",
            first.name
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("pid {pid} on host"))
            && log.contains(&format!("listening on 127.0.0.1:{}", first.port)),
        "{log}"
    );
    assert_eq!(
        running_ids(&ns, "web"),
        ids,
        "the refused ones touched nothing"
    );

    // The first dies: the next one takes its lease at once and adopts its containers.
    first.kill();
    let mut next = started(ControllerOptions {
        dir: Some(first.dir.clone()),
        ..same_name
    });
    assert_eq!(wait_running(&next, &ns, "web", 1), ids);
    assert!(next.log().contains("the lease holder is gone; taking over"));

    // A clean stop releases the lease.
    let lease = format!("microscaler-lease-{}", first.name);
    let host = docker_host_a();
    let no_lease = || {
        docker_ok(
            &host,
            &["ps", "-a", "-q", "--filter", &format!("name=^{lease}$")],
        )
        .trim()
        .is_empty()
    };
    assert!(!no_lease());
    assert!(next.stop().is_some_and(|s| s.success()));
    assert!(no_lease(), "the lease must be released on a clean exit");
}

// ---------------------------------------------------------------------------------------------
// 6. A manifest directory that does not exist

#[test]
fn a_manifest_directory_that_does_not_exist_is_an_error_unless_created_on_purpose() {
    let scratch = tempfile::tempdir().unwrap();
    let missing = scratch.path().join("not-mounted");
    let mut ctl = Controller::start_with(ControllerOptions {
        dir: Some(missing.clone()),
        ..Default::default()
    });
    let status = ctl
        .wait_exit(Duration::from_secs(30))
        .expect("a missing --dir must be an error");
    assert!(!status.success());
    let log = ctl.log();
    assert!(
        log.contains("does not exist") && log.contains("--create-dir"),
        "{log}"
    );
    assert!(!missing.exists(), "nothing may be created silently");

    let mut ctl = Controller::start_with(ControllerOptions {
        dir: Some(missing.clone()),
        args: vec!["--create-dir".into()],
        ..Default::default()
    });
    ctl.wait_ready();
    assert!(missing.is_dir());
}

// ---------------------------------------------------------------------------------------------
// 7. A copy started by hand with a group's labels

#[test]
fn a_copy_started_by_hand_is_removed_and_the_groups_own_instance_kept() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    ctl.write_manifest("web.yaml", &app(&ns, "web", 1));
    let ours = wait_running(&ctl, &ns, "web", 1);
    let labels = &group_containers(&ns, "web")[0].labels;
    let mut run = docker(&docker_host_a());
    run.args(["run", "-d", "--name"])
        .arg(ns.container_name("copy"));
    for (k, v) in labels {
        run.arg("--label").arg(format!("{k}={v}"));
    }
    let out = run.args([TEST_IMAGE, "sleep", "7200"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let copy = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        wait_until(CONVERGE, || group_containers(&ns, "web").len() == 1),
        "the surplus was not removed: {:?}",
        group_containers(&ns, "web")
    );
    assert_eq!(
        running_ids(&ns, "web"),
        ours,
        "the copy {copy} must go, not the group's own instance"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. A crash loop fixed

#[test]
fn a_fixed_crash_loop_heals_at_once_without_waiting_out_the_old_backoff() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let crashing = format!(
        "{}---\n{}",
        lc_doc(&ns, "web", r#"["sh", "-c", "exit 3"]"#),
        group_doc(&ns, "web", "web", 0, 4, 2)
    );
    let file = ctl.write_manifest("web.yaml", &crashing);
    // Let the backoff grow past 10 s.
    let mut last = Default::default();
    let long_backoff = wait_until(Duration::from_secs(90), || {
        last = conditions(&ctl, &ns, "web");
        last.get("Degraded").is_some_and(|(s, reason, m)| {
            s == "True"
                && reason == "CrashLoop"
                && m.rsplit("next launch attempt in ")
                    .next()
                    .and_then(|t| t.trim_end_matches('s').parse::<u64>().ok())
                    .is_some_and(|secs| secs >= 10)
        })
    });
    assert!(long_backoff, "no long crash backoff: {last:?}");

    let fixed_at = Instant::now();
    std::fs::write(&file, app(&ns, "web", 2)).unwrap();
    let healed = wait_until(Duration::from_secs(60), || {
        let c = conditions(&ctl, &ns, "web");
        running_ids(&ns, "web").len() == 2
            && c.get("Ready").is_some_and(|(s, _, _)| s == "True")
            && c.get("Degraded").is_some_and(|(s, _, _)| s == "False")
    });
    assert!(healed, "{:?}", conditions(&ctl, &ns, "web"));
    assert!(
        fixed_at.elapsed() < Duration::from_secs(8),
        "healing took {:?} after the fix",
        fixed_at.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 9. An unreadable folder

#[test]
fn an_unreadable_folder_keeps_its_groups_running() {
    let keep = TestNs::new();
    let team = TestNs::new();
    // Root reads everything: the controller runs without the capabilities that bypass file
    // permissions, as a controller running as an ordinary user would.
    let ctl = started(ControllerOptions {
        wrapper: vec![
            "setpriv".into(),
            "--bounding-set=-dac_override,-dac_read_search".into(),
        ],
        ..Default::default()
    });
    ctl.write_manifest("keep.yaml", &app(&keep, "keep", 1));
    let folder = ctl.dir.join("team-b");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("x.yaml"), app(&team, "x", 2)).unwrap();
    let x = wait_running(&ctl, &team, "x", 2);
    wait_running(&ctl, &keep, "keep", 1);

    set_mode(&folder, 0o000);
    let problems = wait_problem(&ctl, &["cannot read the directory"]);
    assert!(
        problems.contains(&folder.display().to_string()),
        "{problems}"
    );
    assert_kept(&team, "x", &x, Duration::from_secs(4));
    set_mode(&folder, 0o755);
    assert!(wait_until(CONVERGE, || ms(&ctl, &["get", "problems"])
        .stdout
        .is_empty()));
    assert_eq!(running_ids(&team, "x"), x);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 10. Supervision

#[test]
fn a_dead_essential_task_fails_readiness_then_exits_non_zero() {
    let mut ctl = Controller::start_with(ControllerOptions {
        env: vec![("MS_FAILPOINTS".into(), "task-exit=watcher:6".into())],
        ..Default::default()
    });
    ctl.wait_ready();
    let mut not_ready = None;
    let failed = wait_until(Duration::from_secs(30), || {
        match http_get(ctl.port, "/readyz") {
            Some((503, body)) => {
                not_ready = Some(body);
                true
            }
            _ => false,
        }
    });
    assert!(failed, "/readyz never failed");
    assert!(
        not_ready.as_deref().unwrap().contains("`watcher` ended"),
        "{not_ready:?}"
    );
    let status = ctl
        .wait_exit(Duration::from_secs(30))
        .expect("the controller must exit");
    assert_eq!(status.code(), Some(1));
    assert!(ctl.log().contains("essential task `watcher` ended"));
}

#[test]
fn a_panic_in_one_groups_reconcile_is_contained_and_retried() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions {
        env: vec![(
            "MS_FAILPOINTS".into(),
            format!("reconcile-panic={}/web:3", ns.name),
        )],
        ..Default::default()
    });
    ctl.write_manifest("web.yaml", &app(&ns, "web", 1));
    ctl.write_manifest("api.yaml", &app(&ns, "api", 1));
    wait_running(&ctl, &ns, "api", 1);
    // Retried with backoff (1 s, 2 s, 4 s), then it converges.
    wait_running(&ctl, &ns, "web", 1);
    let log = ctl.log();
    assert!(
        log.matches("internal error while reconciling").count() >= 3,
        "{log}"
    );
    assert_ready(&ctl);
}

// ---------------------------------------------------------------------------------------------
// 11. An engine that refuses removals

#[test]
fn failed_removals_back_off_and_the_group_is_not_ready_while_its_containers_run() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions {
        env: vec![(
            "MS_FAILPOINTS".into(),
            format!("remove-error={}/web:1000", ns.name),
        )],
        ..Default::default()
    });
    ctl.write_manifest("web.yaml", &app(&ns, "web", 2));
    let ids = wait_running(&ctl, &ns, "web", 2);
    let run = ms(
        &ctl,
        &["scale", "asg", "web", "--desired", "0", "-n", &ns.name],
    );
    run.ok();
    std::thread::sleep(Duration::from_secs(8));
    let attempts = ctl.log().matches("removal failed; retrying in").count();
    // Two containers at 1, 2, 4 s: a handful, not a hot loop.
    assert!((2..=10).contains(&attempts), "{attempts} attempts in 8 s");
    assert_eq!(running_ids(&ns, "web"), ids);
    let c = conditions(&ctl, &ns, "web");
    assert_eq!(c["Ready"].0, "False", "{c:?}");
    assert_eq!(c["Degraded"].1, "RemovalFailed", "{c:?}");
    assert!(c["Degraded"].2.contains("the engine refused"), "{c:?}");
}

// ---------------------------------------------------------------------------------------------
// 12. One engine configured as two zones

#[test]
fn two_zones_on_one_engine_are_refused_at_start_up() {
    let socket = docker_host_a();
    let path = socket
        .strip_prefix("unix://")
        .unwrap_or(&socket)
        .to_string();
    // Two spellings of one socket.
    let mut ctl = Controller::start_with(ControllerOptions {
        zones: vec![("a".into(), socket.clone()), ("b".into(), path.clone())],
        ..Default::default()
    });
    let status = ctl.wait_exit(Duration::from_secs(30)).expect("refused");
    assert!(!status.success());
    assert!(
        ctl.log().contains("are the same Docker engine"),
        "{}",
        ctl.log()
    );

    // Another path to the same engine: told apart by the engine's identity.
    let scratch = tempfile::tempdir().unwrap();
    let alias = scratch.path().join("alias.sock");
    std::os::unix::fs::symlink(&path, &alias).unwrap();
    let mut ctl = Controller::start_with(ControllerOptions {
        zones: vec![
            ("a".into(), socket),
            ("b".into(), format!("unix://{}", alias.display())),
        ],
        ..Default::default()
    });
    let status = ctl.wait_exit(Duration::from_secs(30)).expect("refused");
    assert!(!status.success());
    let log = ctl.log();
    assert!(
        log.contains("zones b and a are the same Docker engine") || log.contains("zones a and b"),
        "{log}"
    );
}
