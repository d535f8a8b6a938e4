//! What an operator coming from kubectl does (issue 14), end to end: the built `ms` binary, a
//! real `ms controller` and the real Docker engine: validate in CI, diff, apply --wait (and fail
//! on Degraded), wait, get -w, logs and exec, /metrics, scripting output.
//!
//! Each test has its own namespace and controller; groups are small and launch configurations
//! stop at once, so each test takes seconds.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{group_doc, lc_doc, ms, sleeper, started, table, wait_running, CONVERGE};
use crate::common::{http_get, ControllerOptions, TestNs};

/// A launch configuration that prints one line a second, numbered, with its hostname.
fn ticker(ns: &TestNs, name: &str) -> String {
    lc_doc(
        ns,
        name,
        r#"["sh", "-c", "i=0; while true; do echo \"tick $i from $(hostname)\"; i=$((i+1)); sleep 1; done"]"#,
    )
}

/// `ms` on its own (no controller needed), isolated from any stored login.
fn ms_local(args: &[&str]) -> crate::cli::Run {
    let scratch = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ms"))
        .args(args)
        .env("XDG_CONFIG_HOME", scratch.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run ms");
    crate::cli::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Lines a spawned `ms` prints, as they come.
struct LiveOutput {
    child: std::process::Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl LiveOutput {
    fn spawn(ctl: &crate::common::Controller, args: &[&str]) -> LiveOutput {
        let mut child = ctl
            .ms_command(args)
            .env("XDG_CONFIG_HOME", ctl.tmp_path().join("no-login"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ms");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        LiveOutput { child, lines }
    }

    /// Waits for a line satisfying `f`; returns it and when it arrived.
    fn wait_for(&self, timeout: Duration, f: impl Fn(&str) -> bool) -> Option<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok((t, l)) if f(&l) => return Some((t, l)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for LiveOutput {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// CI: validate, diff, apply --wait

#[test]
fn validate_reports_every_error_of_every_file_without_a_controller() {
    let ns = TestNs::new();
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "{}---\n{}",
        sleeper(&ns, "web"),
        group_doc(&ns, "web", "web", 1, 3, 2)
    );
    std::fs::write(dir.path().join("good.yaml"), &good).unwrap();
    let ok = ms_local(&["validate", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(ok.code, 0, "{ok:#?}");
    assert!(ok.stdout.contains("1 file valid (2 objects)"), "{ok:#?}");

    // Two bad documents in one file (min above max; an unknown field), a wrong kind in another.
    let bad = format!(
        "{}---\n{}",
        group_doc(&ns, "a", "web", 5, 3, 4),
        group_doc(&ns, "b", "web", 1, 3, 2).replace("minSize", "minSiz")
    );
    std::fs::write(dir.path().join("bad.yaml"), &bad).unwrap();
    std::fs::write(
        dir.path().join("kind.yaml"),
        sleeper(&ns, "x").replace("kind: LaunchConfiguration", "kind: LaunchConfig"),
    )
    .unwrap();
    let run = ms_local(&["validate", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:#?}");
    let bad_path = dir.path().join("bad.yaml").display().to_string();
    let kind_path = dir.path().join("kind.yaml").display().to_string();
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("{bad_path}:")))
            .count(),
        2,
        "{run:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{kind_path}:")) && l.contains("LaunchConfig")),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("error: 3 errors in 2 of 3 files"),
        "{run:#?}"
    );

    let json = ms_local(&["validate", "-f", dir.path().to_str().unwrap(), "-o", "json"]);
    assert_eq!(json.code, 1);
    let v: Value = serde_json::from_str(&json.stdout).expect("-o json parses");
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 3, "{v:#}");
    assert!(v["errors"][0]["line"].as_u64().unwrap() > 0);

    // A usage error is exit status 2.
    assert_eq!(ms_local(&["validate"]).code, 2);
}

#[test]
fn diff_shows_changed_fields_and_what_the_controller_would_do() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    let text = format!(
        "{}---\n{}",
        sleeper(&ns, "web"),
        group_doc(&ns, "web", "web", 1, 4, 1)
    );
    std::fs::write(&file, &text).unwrap();
    let f = file.to_str().unwrap();

    let new = ms(&ctl, &["diff", "-f", f]);
    assert_eq!(new.code, 1, "{new:#?}");
    assert!(new.stdout.contains("+ autoscalinggroup/web"), "{new:#?}");
    assert!(new.stdout.contains("would launch 1"), "{new:#?}");

    ms(
        &ctl,
        &[
            "apply",
            "-f",
            f,
            "--wait",
            "--min-ready",
            "0s",
            "--timeout",
            "60s",
        ],
    )
    .ok();
    let same = ms(&ctl, &["diff", "-f", f]);
    assert_eq!(same.code, 0, "no differences after the apply: {same:#?}");
    assert_eq!(same.stdout, "");

    // More capacity and a new command: fields, launches and a rollout.
    let changed = text
        .replace("desiredCapacity: 1", "desiredCapacity: 3")
        .replace(r#"["sleep", "3600"]"#, r#"["sleep", "3601"]"#);
    std::fs::write(&file, &changed).unwrap();
    let run = ms(&ctl, &["diff", "-f", f]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout.contains("spec.desiredCapacity: 1 -> 3"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains(r#"spec.command: ["sleep","3600"] -> ["sleep","3601"]"#),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("would launch 2, roll out 1"),
        "{run:#?}"
    );

    // The controller logged the API write and the launch, with its cause, at INFO.
    let log = ctl.log();
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && l.contains("API write") && l.contains("path=/v1/apply")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("INFO")
            && l.contains("action=Launch")
            && l.contains(&format!("namespace={}", ns.name))
            && l.contains("cause=")),
        "{log}"
    );

    // A file that does not validate is an error (2), not a difference.
    std::fs::write(&file, changed.replace("minSize: 1", "minSize: 9")).unwrap();
    let err = ms(&ctl, &["diff", "-f", f]);
    assert_eq!(err.code, 2, "{err:#?}");
}

#[test]
fn apply_wait_returns_once_ready_and_fails_at_once_on_degraded() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        format!(
            "{}---\n{}",
            sleeper(&ns, "web"),
            group_doc(&ns, "web", "web", 1, 4, 2)
        ),
    )
    .unwrap();
    let started_at = Instant::now();
    let run = ms(
        &ctl,
        &[
            "apply",
            "-f",
            good.to_str().unwrap(),
            "--wait",
            "--min-ready",
            "2s",
            "--timeout",
            "90s",
        ],
    );
    run.ok();
    assert!(
        run.stdout
            .contains("autoscalinggroup/web condition met (Ready)"),
        "{run:#?}"
    );
    assert!(
        started_at.elapsed() >= Duration::from_secs(2),
        "--min-ready was not honoured"
    );
    // Returned ready means running now, as the engine says.
    let rows = table(ms(&ctl, &["get", "instances", "-n", &ns.name]).ok());
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["STATE"] == "running"), "{rows:?}");

    // A crashing image: --wait fails with the reason long before its timeout.
    let crash = dir.path().join("crash.yaml");
    std::fs::write(
        &crash,
        format!(
            "{}---\n{}",
            lc_doc(&ns, "crash", r#"["sh", "-c", "exit 3"]"#),
            group_doc(&ns, "crash", "crash", 1, 2, 1)
        ),
    )
    .unwrap();
    let t = Instant::now();
    let run = ms(
        &ctl,
        &[
            "apply",
            "-f",
            crash.to_str().unwrap(),
            "--wait",
            "--timeout",
            "120s",
        ],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("Degraded: CrashLoop"), "{run:#?}");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );

    let run = ms(
        &ctl,
        &[
            "wait",
            "asg/crash",
            "-n",
            &ns.name,
            "--for=condition=Degraded",
            "--timeout",
            "60s",
        ],
    );
    run.ok();
    // ms wait --for=condition=Ready fails the same way; a timeout is exit 1 too.
    let run = ms(
        &ctl,
        &["wait", "asg/crash", "-n", &ns.name, "--for=condition=Ready"],
    );
    assert_eq!(run.code, 1, "{run:#?}");
    let run = ms(
        &ctl,
        &[
            "wait",
            "asg/nothing",
            "-n",
            &ns.name,
            "--for=condition=Ready",
            "--timeout",
            "1s",
        ],
    );
    assert!(run.stderr.contains("timed out after 1s"), "{run:#?}");

    ms(&ctl, &["delete", "asg", "crash", "-n", &ns.name]).ok();
    ms(
        &ctl,
        &[
            "wait",
            "asg/crash",
            "-n",
            &ns.name,
            "--for=deleted",
            "--timeout",
            "60s",
        ],
    )
    .ok();
    assert_eq!(
        ms(&ctl, &["wait", "asg/x", "--for=condition=Happy"]).code,
        2,
        "a bad --for is a usage error"
    );
}

// ---------------------------------------------------------------------------------------------
// Operating: get -w, logs, exec, /metrics

#[test]
fn get_instances_watch_prints_a_line_for_each_change() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let docs = format!(
        "{}---\n{}",
        sleeper(&ns, "web"),
        group_doc(&ns, "web", "web", 1, 4, 1)
    );
    crate::cli::ms_stdin(&ctl, &["apply", "-f", "-"], &docs).ok();
    let first = wait_running(&ctl, &ns, "web", 1);
    assert_eq!(first.len(), 1);

    let watch = LiveOutput::spawn(&ctl, &["get", "instances", "-n", &ns.name, "-w"]);
    assert!(
        watch
            .wait_for(CONVERGE, |l| l.starts_with("NAME"))
            .is_some(),
        "no table header"
    );
    let existing = watch
        .wait_for(CONVERGE, |l| l.contains(" running "))
        .expect("the running instance is listed")
        .1;
    let existing_name = existing.split_whitespace().next().unwrap().to_string();

    let scaled = Instant::now();
    ms(
        &ctl,
        &["scale", "asg", "web", "--desired", "2", "-n", &ns.name],
    )
    .ok();
    let (seen, line) = watch
        .wait_for(CONVERGE, |l| {
            !l.starts_with(&existing_name) && l.contains(&ns.name)
        })
        .expect("a line for the new instance");
    eprintln!(
        "watch latency: new instance line {:?} after the scale command ({line})",
        seen - scaled
    );
    ms(
        &ctl,
        &["scale", "asg", "web", "--desired", "1", "-n", &ns.name],
    )
    .ok();
    assert!(
        watch
            .wait_for(CONVERGE, |l| l.ends_with("(deleted)"))
            .is_some(),
        "no line for the removed instance"
    );

    // -o name lists, then streams names; -w of something that cannot change is a usage error.
    assert_eq!(ms(&ctl, &["get", "problems", "-w"]).code, 2);
}

#[test]
fn logs_of_a_group_interleave_its_instances_and_exec_runs_in_one() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let docs = format!(
        "{}---\n{}",
        ticker(&ns, "web"),
        group_doc(&ns, "web", "web", 1, 4, 2)
    );
    crate::cli::ms_stdin(&ctl, &["apply", "-f", "-"], &docs).ok();
    wait_running(&ctl, &ns, "web", 2);
    let names: Vec<String> = ms(
        &ctl,
        &[
            "get",
            "instances",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.items[*].name}",
        ],
    )
    .ok()
    .split_whitespace()
    .map(str::to_string)
    .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Both instances' lines, each prefixed with its instance.
    let mut got = false;
    crate::common::wait_until(CONVERGE, || {
        let out = ms(&ctl, &["logs", "asg/web", "-n", &ns.name, "--tail", "3"]);
        got = names.iter().all(|n| {
            out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("[{n}] tick ")))
        });
        got
    });
    assert!(got, "both instances' lines expected");
    let one = ms(&ctl, &["logs", &names[0], "-n", &ns.name, "--tail", "1"]);
    assert!(one.ok().starts_with("tick "), "{one:#?}");

    // -f follows every instance as they print.
    let follow = LiveOutput::spawn(
        &ctl,
        &["logs", "asg/web", "-n", &ns.name, "-f", "--tail", "0"],
    );
    for n in &names {
        assert!(
            follow
                .wait_for(CONVERGE, |l| l.starts_with(&format!("[{n}] tick ")))
                .is_some(),
            "no followed line of {n}"
        );
    }

    let run = ms(
        &ctl,
        &[
            "exec",
            &names[1],
            "-n",
            &ns.name,
            "--",
            "sh",
            "-c",
            "hostname; exit 7",
        ],
    );
    assert_eq!(run.code, 7, "{run:#?}");
    // The hostname is the instance name without the namespace prefix.
    let host = run.stdout.trim();
    assert!(!host.is_empty() && names[1].ends_with(host), "{run:#?}");
    assert_eq!(
        ms(&ctl, &["logs", "nothing-here", "-n", &ns.name]).one_error_line(),
        format!(
            "error: instance `nothing-here` not found in namespace `{}`",
            ns.name
        )
    );
}

#[test]
fn metrics_are_served_in_prometheus_text_and_scripts_get_names_and_lists() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let docs = format!(
        "{}---\n{}",
        sleeper(&ns, "web"),
        group_doc(&ns, "web", "web", 1, 4, 2)
            .replace("metadata:\n", "metadata:\n  labels: {app: web}\n")
    );
    crate::cli::ms_stdin(&ctl, &["apply", "-f", "-"], &docs).ok();
    wait_running(&ctl, &ns, "web", 2);

    let labels = format!("namespace=\"{}\",group=\"web\"", ns.name);
    let mut body = String::new();
    let scraped = crate::common::wait_until(CONVERGE, || {
        body = http_get(ctl.port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        body.contains(&format!("microscaler_group_ready_instances{{{labels}}} 2"))
            && series_sum(&body, "microscaler_status_writes_total") >= 1.0
    });
    assert!(scraped, "{body}");
    // Recorded where they happen: passes, engine calls (by operation and zone), status writes.
    let passes = series_sum(&body, "microscaler_reconcile_duration_seconds_count");
    let took = series_sum(&body, "microscaler_reconcile_duration_seconds_sum");
    assert!(
        passes >= 1.0 && took > 0.0 && took < passes * 60.0,
        "{body}"
    );
    let creates = series_sum(
        &body,
        "microscaler_engine_request_duration_seconds_count{operation=\"create_and_start\"",
    );
    assert!(creates >= 2.0, "{body}");
    let lists = series_sum(
        &body,
        "microscaler_engine_request_duration_seconds_count{operation=\"list\",zone=\"a\"}",
    );
    assert!(lists >= 1.0, "{body}");
    // (`reconcile_errors` has no series until a pass fails: the unit test covers it.)
    for head in [
        "# TYPE microscaler_reconcile_duration_seconds histogram",
        "# TYPE microscaler_engine_request_duration_seconds histogram",
        "# TYPE microscaler_status_write_failures counter",
    ] {
        assert!(body.lines().any(|l| l == head), "`{head}` not in:\n{body}");
    }
    for line in [
        format!("microscaler_group_desired_capacity{{{labels}}} 2"),
        format!("microscaler_group_instances{{{labels},state=\"running\"}} 2"),
        format!("microscaler_group_condition{{{labels},condition=\"Ready\"}} 1"),
        format!("microscaler_instance_launches_total{{{labels},cause=\"scale\"}} 2"),
        "microscaler_zone_reachable{zone=\"a\"} 1".to_string(),
        "# TYPE microscaler_build_info gauge".to_string(),
    ] {
        assert!(body.lines().any(|l| l == line), "`{line}` not in:\n{body}");
    }
    let t = Instant::now();
    for _ in 0..20 {
        http_get(ctl.port, "/metrics").expect("scrape");
    }
    eprintln!(
        "metrics scrape: {:?} per scrape (20 scrapes, 1 group)",
        t.elapsed() / 20
    );

    // Scripting: kind/name, -o name, -l, --no-headers, -o json as a list, MS_NAMESPACE.
    let names = ms(&ctl, &["get", "asgs", "-n", &ns.name, "-o", "name"]);
    assert_eq!(names.ok(), "autoscalinggroup/web\n");
    let sel = ms(
        &ctl,
        &[
            "get",
            "asgs",
            "-n",
            &ns.name,
            "-l",
            "app=web",
            "--no-headers",
        ],
    );
    assert!(sel.ok().starts_with("web "), "{sel:#?}");
    let none = ms(
        &ctl,
        &[
            "get", "asgs", "-n", &ns.name, "-l", "app!=web", "-o", "name",
        ],
    );
    assert_eq!(none.ok(), "");
    let list: Value =
        serde_json::from_str(ms(&ctl, &["get", "asgs", "-n", &ns.name, "-o", "json"]).ok())
            .unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
    let one = ms(
        &ctl,
        &[
            "get",
            "asg/web",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.status.ready}",
        ],
    );
    assert_eq!(one.ok(), "2\n");
    let via_env = ctl
        .ms_command(&["get", "asgs", "-o", "name"])
        .env("XDG_CONFIG_HOME", ctl.tmp_path().join("no-login"))
        .env("MS_NAMESPACE", &ns.name)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&via_env.stdout),
        "autoscalinggroup/web\n"
    );
    let described = ms(&ctl, &["describe", "asg/web", "-n", &ns.name]);
    assert!(described.ok().contains("web"), "{described:#?}");
}

/// The sum of the values of every series whose line starts with `prefix` (a name, or a name and
/// the first labels).
fn series_sum(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The controller's own logs

/// Starts `ms controller` with `extra` arguments, stderr into a file, no NO_COLOR; returns its
/// log once it was ready and stopped.
fn controller_log(extra: &[&str]) -> String {
    let ctl = crate::common::Controller::prepare_with(&ControllerOptions::default());
    let log = ctl.tmp_path().join("own.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ms"))
        .arg("controller")
        .args(extra)
        // The flags from the environment, as a systemd unit sets them.
        .env("MS_DIR", &ctl.dir)
        .env("MS_CONFIG", &ctl.config_path)
        .env("MS_LISTEN", format!("127.0.0.1:{}", ctl.port))
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn ms controller");
    let ready = crate::common::wait_until(CONVERGE, || {
        matches!(http_get(ctl.port, "/readyz"), Some((200, _)))
    });
    // SIGTERM: the controller stops cleanly.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(ready, "not ready from MS_DIR/MS_CONFIG/MS_LISTEN: {text}");
    assert!(status.success(), "{status:?}: {text}");
    text
}

#[test]
fn controller_logs_are_plain_text_in_a_file_or_json_and_name_the_version() {
    let text = controller_log(&[]);
    assert!(
        !text.contains('\x1b'),
        "colour codes in a redirected log:\n{text}"
    );
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        text.lines().next().unwrap_or("").contains(&version),
        "{text}"
    );

    let json = controller_log(&["--log-format", "json"]);
    let mut lines = 0;
    for line in json.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        lines += 1;
    }
    assert!(lines >= 2, "{json}");
    let first: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["fields"]["version"], env!("CARGO_PKG_VERSION"));
}
