//! Issue 10: a git checkout as the watched directory, with the real `git` and the real engine.
//!
//! A second clone plays the team pushing changes; the watched clone is switched, pulled, stashed,
//! reset and rebased while the controller runs. Every git command must succeed, the containers
//! must end as the checked-out manifests say, the status block must come back after git removed
//! it, and `git status` must be clean whenever the controller has caught up.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cli::{group_containers, group_doc, ms, sleeper, status_of, CONVERGE};
use crate::common::{wait_until, Controller, ControllerOptions, TestNs};

/// Runs `git args...` in `dir`; panics with git's output unless it succeeded.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs (Debian package git)");
    assert!(
        out.status.success(),
        "git {} failed in {}:\n{}{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn identify(dir: &Path) {
    git(dir, &["config", "user.email", "ops@example.com"]);
    git(dir, &["config", "user.name", "ops"]);
}

/// `desiredCapacity` of the group `web` in the spec of `text` set to `n` (the first occurrence:
/// the spec comes before any status block).
fn with_desired(text: &str, n: u32) -> String {
    let at = text.find("desiredCapacity: ").expect("a desiredCapacity");
    let end = at + text[at..].find('\n').expect("a line end");
    format!("{}desiredCapacity: {n}{}", &text[..at], &text[end..])
}

/// Commits `web.yaml` with `desired` in the team's clone and pushes it to `branch`.
fn push_desired(dev: &Path, branch: &str, desired: u32) {
    git(dev, &["checkout", "-q", branch]);
    let path = dev.join("web.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, with_desired(&text, desired)).unwrap();
    git(dev, &["commit", "-qam", &format!("web: {desired}")]);
    git(dev, &["push", "-q", "origin", branch]);
}

/// Waits until the group runs `n` containers, the status block in the watched file says so,
/// `git status` shows `expected_status`, and the file has been quiet for a moment (so the next
/// git command does not meet a status write in flight).
fn caught_up(ctl: &Controller, ns: &TestNs, n: u64, expected_status: &str) {
    let web = ctl.dir.join("web.yaml");
    let running = wait_until(CONVERGE, || {
        let all = group_containers(ns, "web");
        all.len() as u64 == n && all.iter().all(|c| c.state == "running")
    });
    assert!(
        running,
        "web did not reach {n} running containers: {:?}\n{:#?}",
        group_containers(ns, "web")
            .iter()
            .map(|c| &c.state)
            .collect::<Vec<_>>(),
        ms(ctl, &["get", "asgs", "-n", &ns.name])
    );
    let status_back = wait_until(CONVERGE, || {
        let text = std::fs::read_to_string(&web).unwrap_or_default();
        status_of(&text, "web").is_some_and(|s| {
            s["desiredCapacity"].as_u64() == Some(n) && s["ready"].as_u64() == Some(n)
        })
    });
    assert!(
        status_back,
        "the status block did not come back with {n} ready:\n{}",
        std::fs::read_to_string(&web).unwrap_or_default()
    );
    let mut last = String::new();
    let clean = wait_until(CONVERGE, || {
        last = git(&ctl.dir, &["status", "--porcelain"]);
        last == expected_status
    });
    assert!(
        clean,
        "git status is not `{expected_status}` but:\n{last}\n{}",
        std::fs::read_to_string(&web).unwrap_or_default()
    );
    let modified = || std::fs::metadata(&web).and_then(|m| m.modified()).ok();
    let mut seen = modified();
    let quiet = wait_until(CONVERGE, || {
        std::thread::sleep(Duration::from_millis(700));
        let now = modified();
        let same = now == seen;
        seen = now;
        same
    });
    assert!(quiet, "the status of web.yaml keeps changing");
}

#[test]
fn a_watched_checkout_is_switched_pulled_stashed_reset_and_rebased_while_the_controller_runs() {
    let ns = TestNs::new();
    let remote = tempfile::Builder::new()
        .prefix("ms-e2e-git-")
        .tempdir()
        .unwrap();
    let origin = remote.path().join("origin.git");
    let dev = remote.path().join("dev");
    git(
        remote.path(),
        &["init", "-q", "--bare", "-b", "main", "origin.git"],
    );
    git(
        remote.path(),
        &["clone", "-q", origin.to_str().unwrap(), "dev"],
    );
    identify(&dev);
    std::fs::write(dev.join("lc.yaml"), sleeper(&ns, "web")).unwrap();
    std::fs::write(dev.join("web.yaml"), group_doc(&ns, "web", "web", 0, 5, 1)).unwrap();
    git(&dev, &["add", "-A"]);
    git(&dev, &["commit", "-qm", "web: 1"]);
    git(&dev, &["push", "-q", "-u", "origin", "main"]);
    git(&dev, &["checkout", "-q", "-b", "big"]);
    push_desired(&dev, "big", 2);
    git(&dev, &["checkout", "-q", "main"]);

    // The watched directory is a clone with the status filter installed by one command.
    let opts = ControllerOptions::default();
    let mut ctl = Controller::prepare_with(&opts);
    git(&ctl.dir, &["clone", "-q", origin.to_str().unwrap(), "."]);
    identify(&ctl.dir);
    let init = Command::new(env!("CARGO_BIN_EXE_ms"))
        .args(["gitops", "init"])
        .arg(&ctl.dir)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    ctl.spawn(&opts);
    ctl.wait_ready();
    caught_up(&ctl, &ns, 1, "");
    assert!(
        ctl.log().contains("with the status filter"),
        "the start-up check did not see the filter:\n{}",
        ctl.log()
    );

    // Anyone removing the block (here the committed file copied over it) while the status stays
    // the same: it comes back after the watcher's debounce and one flush, not at the next change.
    let web = ctl.dir.join("web.yaml");
    let committed = git(&ctl.dir, &["show", "HEAD:web.yaml"]);
    std::fs::write(&web, &committed).unwrap();
    let back = wait_until(Duration::from_secs(5), || {
        status_of(&std::fs::read_to_string(&web).unwrap_or_default(), "web").is_some()
    });
    assert!(back, "the status block did not come back within 5 s");
    caught_up(&ctl, &ns, 1, "");

    // Branch switch, both ways.
    git(&ctl.dir, &["checkout", "-q", "big"]);
    caught_up(&ctl, &ns, 2, "");
    git(&ctl.dir, &["checkout", "-q", "main"]);
    caught_up(&ctl, &ns, 1, "");

    // A pull of what the team pushed from the other clone.
    push_desired(&dev, "main", 3);
    git(&ctl.dir, &["pull", "-q", "--ff-only"]);
    caught_up(&ctl, &ns, 3, "");

    // A local edit, stashed and popped: the status block is never part of it.
    let text = std::fs::read_to_string(&web).unwrap();
    std::fs::write(&web, with_desired(&text, 2)).unwrap();
    caught_up(&ctl, &ns, 2, " M web.yaml\n");
    let diff = git(&ctl.dir, &["diff"]);
    assert!(
        diff.contains("+  desiredCapacity: 2") && !diff.contains("status"),
        "{diff}"
    );
    git(&ctl.dir, &["stash", "-q"]);
    caught_up(&ctl, &ns, 3, "");
    git(&ctl.dir, &["stash", "pop", "-q"]);
    caught_up(&ctl, &ns, 2, " M web.yaml\n");

    // Reset --hard drops the edit (and the status block, which comes back).
    git(&ctl.dir, &["reset", "-q", "--hard"]);
    caught_up(&ctl, &ns, 3, "");

    // A local commit rebased onto what the team pushed meanwhile.
    let lc = ctl.dir.join("lc.yaml");
    let mut lc_text = std::fs::read_to_string(&lc).unwrap();
    lc_text.push_str("# pinned by ops\n");
    std::fs::write(&lc, lc_text).unwrap();
    git(&ctl.dir, &["commit", "-qam", "ops: a note"]);
    push_desired(&dev, "main", 2);
    git(&ctl.dir, &["fetch", "-q"]);
    git(&ctl.dir, &["rebase", "-q", "origin/main"]);
    caught_up(&ctl, &ns, 2, "");
    let log = git(&ctl.dir, &["log", "--format=%s", "-2"]);
    assert_eq!(log, "ops: a note\nweb: 2\n");
    // Nothing the controller wrote was ever committed.
    let committed = git(&ctl.dir, &["show", "HEAD:web.yaml"]);
    assert!(!committed.contains("status:"), "{committed}");
}

#[test]
fn a_checkout_without_the_filter_is_named_at_start_up_with_the_command_that_fixes_it() {
    let opts = ControllerOptions::default();
    let mut ctl = Controller::prepare_with(&opts);
    git(&ctl.dir, &["init", "-q"]);
    ctl.spawn(&opts);
    ctl.wait_ready();
    let log = ctl.log();
    assert!(
        log.contains("without the status filter") && log.contains("ms gitops init"),
        "{log}"
    );
}
