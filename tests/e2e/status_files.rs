//! Issue 10: where status goes and what it never touches, with a real controller and engine.
//!
//! Inline blocks that come back after anyone removes them, a byte order mark kept, read-only
//! manifests and symlinks out of the watched directory reported instead of written, the sidecar
//! tree and `statusMode: off`, and the README's first command in a fresh checkout.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cli::{group_doc, ms, sleeper, started, status_of, table, wait_running, CONVERGE};
use crate::common::{free_port, http_get, wait_until, ControllerOptions, TestNs};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Groups of desired 0 (status without containers): one plain, one with a byte order mark, one
/// read-only, one reached through a symlink to a file outside the watched directory.
#[cfg(unix)]
#[test]
fn status_comes_back_keeps_a_bom_and_never_goes_into_read_only_or_outside_files() {
    let ns = TestNs::new();
    let outside = tempfile::tempdir().unwrap();
    let ctl = started(ControllerOptions {
        // Only file events can bring a symlink target's edit in time.
        extra_config: "rescanPeriod: 10m\n".into(),
        ..Default::default()
    });
    ctl.write_manifest("lc.yaml", &sleeper(&ns, "web"));
    let plain = ctl.write_manifest("plain.yaml", &group_doc(&ns, "plain", "web", 0, 3, 0));
    let bom_text = format!("\u{feff}{}", group_doc(&ns, "bom", "web", 0, 3, 0));
    let bom = ctl.write_manifest("bom.yaml", &bom_text);
    let ro_text = group_doc(&ns, "ro", "web", 0, 3, 0);
    let ro = ctl.dir.join("ro.yaml");
    std::fs::write(&ro, &ro_text).unwrap();
    chmod(&ro, 0o444);
    let real = outside.path().join("real.yaml");
    let real_text = group_doc(&ns, "linked", "web", 0, 3, 0);
    std::fs::write(&real, &real_text).unwrap();
    std::os::unix::fs::symlink(&real, ctl.dir.join("linked.yaml")).unwrap();

    // Every group loads (the BOM file and the link too).
    let loaded = wait_until(CONVERGE, || {
        let run = ms(&ctl, &["get", "asgs", "-n", &ns.name]);
        table(&run.stdout).len() == 4
    });
    assert!(loaded, "{:#?}", ms(&ctl, &["get", "asgs", "-n", &ns.name]));

    // Inline status, and the byte order mark stays first.
    assert!(wait_until(CONVERGE, || status_of(&read(&plain), "plain").is_some()));
    assert!(wait_until(CONVERGE, || read(&bom).contains("\nstatus:\n")));
    assert!(read(&bom).starts_with('\u{feff}'), "{:?}", read(&bom));

    // Read-only and outside: untouched, reported by `ms get problems` and `ms describe`.
    let mut problems = String::new();
    let reported = wait_until(CONVERGE, || {
        problems = ms(&ctl, &["get", "problems"]).stdout;
        problems.contains("ro.yaml") && problems.contains("linked.yaml")
    });
    assert!(reported, "{problems}");
    assert!(problems.contains("read-only"), "{problems}");
    assert!(
        problems.contains("outside the watched directory"),
        "{problems}"
    );
    assert_eq!(read(&ro), ro_text);
    assert_eq!(read(&real), real_text);
    let describe = ms(&ctl, &["describe", "asg", "ro", "-n", &ns.name]);
    assert!(
        describe.ok().contains("StatusWritten") && describe.stdout.contains("ReadOnly"),
        "{describe:#?}"
    );
    // CLI edits respect it too.
    let scale = ms(
        &ctl,
        &["scale", "asg", "ro", "-n", &ns.name, "--desired", "1"],
    );
    assert_eq!(scale.code, 1, "{scale:#?}");
    assert!(scale.stderr.contains("read-only"), "{scale:#?}");
    assert_eq!(read(&ro), ro_text);

    // Made writable: the status follows (the problem is retried with backoff).
    chmod(&ro, 0o644);
    assert!(
        wait_until(Duration::from_secs(70), || status_of(&read(&ro), "ro")
            .is_some()),
        "no status after the file became writable: {:#?}",
        ms(&ctl, &["get", "problems"])
    );
    let cleared = wait_until(CONVERGE, || {
        !ms(&ctl, &["get", "problems"]).stdout.contains("ro.yaml")
    });
    assert!(cleared, "{:#?}", ms(&ctl, &["get", "problems"]));

    // The symlink's target edited (as editors save: a new file renamed over it): loaded at once.
    let tmp = outside.path().join(".real.yaml.swp");
    std::fs::write(&tmp, real_text.replace("maxSize: 3", "maxSize: 7")).unwrap();
    std::fs::rename(&tmp, &real).unwrap();
    let seen = wait_until(Duration::from_secs(10), || {
        let run = ms(&ctl, &["get", "asgs", "-n", &ns.name]);
        table(&run.stdout)
            .iter()
            .any(|r| r["NAME"] == "linked" && r["MAX"] == "7")
    });
    assert!(seen, "{:#?}", ms(&ctl, &["get", "asgs", "-n", &ns.name]));

    // Anyone removing a block (`cp` of the original): it comes back though nothing changed.
    let original = group_doc(&ns, "plain", "web", 0, 3, 0);
    std::fs::write(&plain, &original).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || status_of(&read(&plain), "plain")
            .is_some()),
        "the removed status block did not come back within 5 s"
    );
}

#[test]
fn sidecar_status_never_writes_a_manifest_and_off_writes_nothing_yet_the_api_serves_both() {
    let ns = TestNs::new();
    let side = tempfile::tempdir().unwrap();
    let status_dir = side.path().join("status");
    let ctl = started(ControllerOptions {
        extra_config: format!("statusMode: sidecar\nstatusDir: {}\n", status_dir.display()),
        ..Default::default()
    });
    std::fs::create_dir(ctl.dir.join("team")).unwrap();
    let manifest = format!(
        "{}---\n{}",
        sleeper(&ns, "web"),
        group_doc(&ns, "web", "web", 0, 3, 1)
    );
    let path = ctl.write_manifest("team/web.yaml", &manifest);
    wait_running(&ctl, &ns, "web", 1);
    let sidecar = status_dir.join("team/web.status.yaml");
    let ready = wait_until(CONVERGE, || {
        status_of(&read(&sidecar), "web").is_some_and(|s| s["ready"].as_u64() == Some(1))
    });
    assert!(ready, "{}", read(&sidecar));
    assert_eq!(read(&path), manifest, "the manifest is never written");
    let run = ms(&ctl, &["get", "asgs", "-n", &ns.name]);
    assert_eq!(table(run.ok())[0]["READY"], "1", "{run:#?}");
    let describe = ms(&ctl, &["describe", "asg", "web", "-n", &ns.name]);
    assert!(describe.ok().contains("Ready"), "{describe:#?}");
    // The manifest goes: so does its sidecar.
    std::fs::write(
        &path,
        sleeper(&ns, "web") + "---\n" + &group_doc(&ns, "other", "web", 0, 3, 0),
    )
    .unwrap();
    let moved = wait_until(CONVERGE, || {
        let text = read(&sidecar);
        status_of(&text, "other").is_some() && status_of(&text, "web").is_none()
    });
    assert!(moved, "{}", read(&sidecar));

    // Off: the API only.
    let ns2 = TestNs::new();
    let off = started(ControllerOptions {
        extra_config: "statusMode: off\n".into(),
        ..Default::default()
    });
    let text = format!(
        "{}---\n{}",
        sleeper(&ns2, "web"),
        group_doc(&ns2, "quiet", "web", 0, 3, 0)
    );
    let quiet = off.write_manifest("quiet.yaml", &text);
    let served = wait_until(CONVERGE, || {
        let run = ms(
            &off,
            &["get", "asgs", "quiet", "-n", &ns2.name, "-o", "json"],
        );
        serde_json::from_str::<serde_json::Value>(&run.stdout)
            .is_ok_and(|v| v["status"]["observedGeneration"].is_string())
    });
    assert!(served, "the API serves no status in off mode");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(&quiet), text);
    let files: Vec<_> = std::fs::read_dir(&off.dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "nothing but the manifest: {files:?}");
}

/// The README's first command, run in a copy of a fresh checkout: it watches a directory of its
/// own, so the examples are neither started nor written to, and `ms get asgs` says what to do.
#[test]
fn the_readmes_first_command_in_a_fresh_checkout_starts_nothing_and_writes_nothing() {
    let checkout = tempfile::tempdir().unwrap();
    let examples = checkout.path().join("manifests/examples");
    std::fs::create_dir_all(&examples).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples");
    for e in std::fs::read_dir(&source).unwrap().flatten() {
        std::fs::copy(e.path(), examples.join(e.file_name())).unwrap();
    }
    let before = crate::common::snapshot_files(checkout.path());
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = checkout.path().join("../controller.log");
    // The README's command as is, but for a controller name of its own: a controller named
    // `default` on the shared engine would take other tests' unlabelled containers for its own.
    // The configuration names no directory, so the default one is used.
    let config = home.path().join("config.yaml");
    let name = format!("e2e-readme-{}", std::process::id());
    std::fs::write(&config, format!("controllerName: {name}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ms"))
        .args(["controller", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .current_dir(checkout.path())
        .env("HOME", home.path())
        .env_remove("XDG_DATA_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ready = wait_until(CONVERGE, || {
        matches!(http_get(port, "/readyz"), Some((200, _)))
    });
    let server = format!("http://127.0.0.1:{port}");
    let get = Command::new(env!("CARGO_BIN_EXE_ms"))
        .args(["--server", &server, "get", "asgs", "-A"])
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let _ = child.kill();
    let _ = child.wait();
    crate::common::remove_leases(&name);
    let log_text = read(&log);
    let _ = std::fs::remove_file(&log);
    assert!(ready, "the controller did not become ready:\n{log_text}");
    let stdout = String::from_utf8_lossy(&get.stdout);
    let stderr = String::from_utf8_lossy(&get.stderr);
    assert!(get.status.success(), "{stderr}");
    assert!(stdout.trim().is_empty(), "groups were loaded: {stdout}");
    assert!(stderr.contains("ms apply -f"), "no hint: {stderr}");
    assert_eq!(
        crate::common::snapshot_files(checkout.path()),
        before,
        "the checkout was modified"
    );
    let own = home.path().join(".local/share/microscaler/manifests");
    assert!(own.is_dir(), "{log_text}");
    assert!(
        log_text.contains(".local/share/microscaler/manifests"),
        "{log_text}"
    );
}

/// Waits until `path` has not changed for `quiet`; returns its text then.
fn settled(path: &Path, quiet: Duration) -> String {
    let mut last = read(path);
    let mut since = std::time::Instant::now();
    let deadline = since + CONVERGE;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = read(path);
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        } else if since.elapsed() >= quiet {
            return last;
        }
    }
    panic!("{} never settled; last:\n{last}", path.display());
}

/// A controller killed and started again over a converged group leaves its manifest file byte
/// for byte as it was: a restart is nothing to commit. (A container list carries no start time;
/// without learning it again, every instance lost its `startedAt`.)
#[test]
fn a_restart_leaves_a_converged_groups_file_byte_for_byte() {
    let ns = TestNs::new();
    let mut ctl = started(ControllerOptions::default());
    let path = ctl.write_manifest("web.yaml", &crate::common::sleepers(&ns.name, 2, 4, "", ""));
    let converged = |t: &str| t.contains("current: 2") && t.matches("startedAt:").count() == 2;
    assert!(
        wait_until(CONVERGE, || converged(&read(&path))),
        "{}",
        read(&path)
    );
    let before = settled(&path, Duration::from_secs(2));
    assert!(converged(&before), "{before}");

    ctl.restart(&ControllerOptions::default()).wait_ready();
    // The restarted controller has looked at the group (it serves its status)...
    assert!(wait_until(CONVERGE, || {
        let run = ms(&ctl, &["get", "asgs", "-n", &ns.name]);
        table(&run.stdout)
            .iter()
            .any(|r| r.get("CURRENT").map(String::as_str) == Some("2"))
    }));
    // ...and had time to write it.
    let after = settled(&path, Duration::from_secs(3));
    assert_eq!(after, before, "the restart rewrote the file");
}
