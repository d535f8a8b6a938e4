//! What a user does in issue 2, end to end: the built `ms` binary, a real `ms controller` and the
//! real Docker engine (apply, get, describe, the watched directory, status write-back, scale,
//! start/stop, delete, conflicts, refusals and authentication).
//!
//! Every test has its own namespace (so tests running in parallel never see each other's
//! containers) and its own controller. Launch configurations use `stopGracePeriod: 0s` and groups
//! stay small, so a test takes seconds. Waits poll with a timeout; nothing asserts after a fixed
//! sleep except the "nothing changes for a while" checks, which must watch a window by nature.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::Value;

use crate::common::{
    containers, free_port, http_get, output_with_stdin, wait_until, Controller, ControllerOptions,
    DockerContainer, TestNs, TEST_IMAGE,
};

/// How long a group may take to converge before a test fails.
pub(crate) const CONVERGE: Duration = Duration::from_secs(30);
/// Container label holding the group name.
const GROUP_LABEL: &str = "io.microscaler.group";

// ---------------------------------------------------------------------------------------------
// Helpers

/// Exit code, stdout and stderr of one `ms` run.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with the whole run unless it exited 0; returns stdout.
    pub(crate) fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "ms failed: {self:#?}");
        &self.stdout
    }

    /// Panics unless it exited 1 with exactly one `error: ...` line on stderr; returns that line.
    pub(crate) fn one_error_line(&self) -> &str {
        assert_eq!(self.code, 1, "expected exit code 1: {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one line on stderr: {self:#?}");
        assert!(lines[0].starts_with("error: "), "{self:#?}");
        lines[0]
    }
}

/// `ms --server <controller> args...`, isolated from any login stored on this machine.
pub(crate) fn ms(ctl: &Controller, args: &[&str]) -> Run {
    Run::from(
        isolated(ctl, ctl.ms_command(args))
            .output()
            .expect("run ms"),
    )
}

/// [`ms`] with `input` on stdin.
pub(crate) fn ms_stdin(ctl: &Controller, args: &[&str], input: &str) -> Run {
    Run::from(output_with_stdin(
        isolated(ctl, ctl.ms_command(args)),
        input,
    ))
}

fn isolated(ctl: &Controller, mut c: Command) -> Command {
    c.env("XDG_CONFIG_HOME", ctl.tmp_path().join("no-login"))
        .env_remove("MS_TOKEN")
        .env_remove("MS_SERVER");
    c
}

/// A launch configuration running `command` (a YAML flow sequence) in the test image.
pub(crate) fn lc_doc(ns: &TestNs, name: &str, command: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\n\
         kind: LaunchConfiguration\n\
         metadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  image: {TEST_IMAGE}\n  command: {command}\n  stopGracePeriod: 0s\n",
        ns = ns.name
    )
}

/// A launch configuration whose containers just sleep.
pub(crate) fn sleeper(ns: &TestNs, name: &str) -> String {
    lc_doc(ns, name, r#"["sleep", "3600"]"#)
}

/// An autoscaling group document.
pub(crate) fn group_doc(
    ns: &TestNs,
    name: &str,
    lc: &str,
    min: u32,
    max: u32,
    desired: u32,
) -> String {
    format!(
        "apiVersion: microscaler.io/v1\n\
         kind: AutoScalingGroup\n\
         metadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  launchConfiguration: {lc}\n  minSize: {min}\n  maxSize: {max}\n  desiredCapacity: {desired}\n",
        ns = ns.name
    )
}

/// Containers of `group` in the test namespace, in any state.
pub(crate) fn group_containers(ns: &TestNs, group: &str) -> Vec<DockerContainer> {
    containers(ns)
        .into_iter()
        .filter(|c| c.labels.get(GROUP_LABEL).map(String::as_str) == Some(group))
        .collect()
}

/// IDs of the running containers of `group`, sorted.
pub(crate) fn running_ids(ns: &TestNs, group: &str) -> Vec<String> {
    let mut ids: Vec<String> = group_containers(ns, group)
        .into_iter()
        .filter(|c| c.state == "running")
        .map(|c| c.id)
        .collect();
    ids.sort();
    ids
}

/// Waits until `group` has exactly `n` containers and all of them run; returns their IDs.
pub(crate) fn wait_running(ctl: &Controller, ns: &TestNs, group: &str, n: usize) -> Vec<String> {
    let ok = wait_until(CONVERGE, || {
        let all = group_containers(ns, group);
        all.len() == n && all.iter().all(|c| c.state == "running")
    });
    assert!(
        ok,
        "group {group} did not reach {n} running containers within {CONVERGE:?}; it has {:?}\n\
         ms get asgs: {:#?}\nms get problems: {:#?}",
        group_containers(ns, group)
            .iter()
            .map(|c| (&c.name, &c.state))
            .collect::<Vec<_>>(),
        ms(ctl, &["get", "asgs", "-n", &ns.name]),
        ms(ctl, &["get", "problems"]),
    );
    running_ids(ns, group)
}

/// Asserts that the running containers of `group` stay exactly `ids` for `window`.
pub(crate) fn assert_unchanged_for(ns: &TestNs, group: &str, ids: &[String], window: Duration) {
    let changed = wait_until(window, || running_ids(ns, group) != ids);
    assert!(
        !changed,
        "the containers of {group} changed: {ids:?} became {:?}",
        running_ids(ns, group)
    );
}

/// Rows of an `ms get` table as header → cell maps (cells never contain spaces in our tests).
pub(crate) fn table(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let header: Vec<&str> = header.split_whitespace().collect();
    lines
        .map(|l| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(l.split_whitespace().map(str::to_string))
                .collect()
        })
        .collect()
}

/// The text without the top-level `status:` blocks the controller writes (a line `status:` and
/// every indented line after it).
fn strip_status(text: &str) -> String {
    let mut out = String::new();
    let mut in_status = false;
    for line in text.split_inclusive('\n') {
        if in_status && line.starts_with(' ') {
            continue;
        }
        in_status = line.trim_end() == "status:";
        if !in_status {
            out.push_str(line);
        }
    }
    out
}

/// Every YAML document of `text`, parsed.
fn yaml_docs(text: &str) -> Vec<serde_yaml_ng::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).expect("valid YAML"))
        .collect()
}

/// The `status` of the group document named `name` in `text`.
pub(crate) fn status_of(text: &str, name: &str) -> Option<serde_yaml_ng::Value> {
    yaml_docs(text).into_iter().find_map(|d| {
        (d["kind"].as_str() == Some("AutoScalingGroup")
            && d["metadata"]["name"].as_str() == Some(name))
        .then(|| d["status"].clone())
        .filter(|s| !s.is_null())
    })
}

/// Writes `text` to `path` the way editors save: a temp file beside it, then a rename over it.
fn save_like_an_editor(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.swp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// Every file below `dir` and its text.
fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    crate::common::snapshot_files(dir)
        .into_iter()
        .map(|(p, bytes)| (p, String::from_utf8_lossy(&bytes).into_owned()))
        .collect()
}

/// 1-based number of the line of `text` containing `needle`.
pub(crate) fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in:\n{text}"))
        + 1
}

/// Starts a controller and waits until it is ready.
pub(crate) fn started(opts: ControllerOptions) -> Controller {
    let mut ctl = Controller::start_with(opts);
    ctl.wait_ready();
    ctl
}

// ---------------------------------------------------------------------------------------------
// 1. The newcomer walkthrough

#[test]
fn a_newcomer_applies_a_group_and_sees_it_serve_http() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let manifest = ctl.tmp_path().join("web.yaml");
    let mut lc = lc_doc(
        &ns,
        "web",
        r#"["sh", "-c", "echo hello > /tmp/index.html; httpd -f -p 8080 -h /tmp"]"#,
    );
    lc.push_str("  ports:\n    - 8080\n  instanceType: t1.micro\n");
    std::fs::write(
        &manifest,
        format!("{lc}---\n{}", group_doc(&ns, "web", "web", 1, 5, 2)),
    )
    .unwrap();

    let applied = ms(&ctl, &["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(
        applied.ok(),
        "launchconfiguration/web created\nautoscalinggroup/web created\n"
    );

    // `ms get asgs` reports the group and its counts reach 2.
    let mut last = None;
    let converged = wait_until(CONVERGE, || {
        let run = ms(&ctl, &["get", "asgs", "-n", &ns.name]);
        let rows = table(&run.stdout);
        let ok = run.code == 0
            && rows.len() == 1
            && rows[0]["NAME"] == "web"
            && rows[0]["STATE"] == "Started"
            && rows[0]["ZONES"] == "a"
            && ["DESIRED", "CURRENT", "READY"]
                .iter()
                .all(|c| rows[0][*c] == "2");
        last = Some(run);
        ok
    });
    assert!(converged, "ms get asgs never showed 2/2/2: {last:#?}");
    wait_running(&ctl, &ns, "web", 2);

    // `ms get instances` lists both with ports published on 127.0.0.1.
    let run = ms(&ctl, &["get", "instances", "-n", &ns.name]);
    let rows = table(run.ok());
    assert_eq!(rows.len(), 2, "{run:#?}");
    let mut ports = Vec::new();
    for r in &rows {
        assert_eq!(r["GROUP"], "web", "{run:#?}");
        assert_eq!(r["STATE"], "running", "{run:#?}");
        let p = &r["PORTS"];
        assert!(
            p.starts_with("127.0.0.1:") && p.ends_with("->8080/tcp"),
            "{run:#?}"
        );
        let host_port: u16 = p["127.0.0.1:".len()..p.find("->").unwrap()]
            .parse()
            .unwrap();
        ports.push(host_port);
    }
    assert_ne!(ports[0], ports[1]);

    // The published port answers.
    let mut answer = None;
    let served = wait_until(Duration::from_secs(10), || {
        answer = http_get(ports[0], "/index.html");
        matches!(&answer, Some((200, body)) if body.trim() == "hello")
    });
    assert!(served, "GET /index.html on port {}: {answer:?}", ports[0]);

    // `ms describe asg` shows conditions and activities.
    let run = ms(&ctl, &["describe", "asg", "web", "-n", &ns.name]);
    let text = run.ok();
    for expected in [
        "Launch Configuration:  web (image microscaler/busybox:latest, t1.micro)\n",
        "Zones:                 a (the default zone)\n",
        "Min/Max/Desired:       1 / 5 / 2\n",
        "Current/Ready/Updated: 2 / 2 / 2\n",
        "Conditions:\n",
        "Activities:\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let ready = text
        .lines()
        .find(|l| l.trim_start().starts_with("Ready "))
        .unwrap_or_else(|| panic!("no Ready condition:\n{text}"));
    assert!(ready.contains("True"), "{ready}");
    let launches = text.lines().filter(|l| l.contains(" Launch ")).count();
    assert_eq!(launches, 2, "two Launch activities expected:\n{text}");
}

// ---------------------------------------------------------------------------------------------
// 2. Editing the watched directory

#[test]
fn edits_in_the_watched_directory_are_picked_up_whether_written_or_renamed_over() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let lc = sleeper(&ns, "web");
    let path = ctl.write_manifest(
        "web.yaml",
        &format!("{lc}---\n{}", group_doc(&ns, "web", "web", 0, 5, 1)),
    );
    wait_running(&ctl, &ns, "web", 1);

    // A plain write over the file.
    std::fs::write(
        &path,
        format!("{lc}---\n{}", group_doc(&ns, "web", "web", 0, 5, 2)),
    )
    .unwrap();
    wait_running(&ctl, &ns, "web", 2);

    // An editor's save: temp file, then rename over the manifest.
    save_like_an_editor(
        &path,
        &format!("{lc}---\n{}", group_doc(&ns, "web", "web", 0, 5, 3)),
    );
    wait_running(&ctl, &ns, "web", 3);
}

// ---------------------------------------------------------------------------------------------
// 3. Status write-back

#[test]
fn status_write_back_keeps_every_other_byte_and_the_file_mode_and_stays_quiet() {
    let ns = TestNs::new();
    let mut opts = ControllerOptions::default();
    // Frequent resyncs and rescans: a controller that rewrote the file on every pass would do so
    // inside the quiet window checked below.
    opts.extra_config
        .push_str("resyncPeriod: 1s\nrescanPeriod: 1s\n");
    let ctl = started(opts);
    let n = &ns.name;
    let original = format!(
        "# The shop's web tier.   (top comment, trailing spaces)   \n\
         # yaml-language-server: $schema=../schema/launch-configuration.schema.json\n\
         \n\
         apiVersion: \"microscaler.io/v1\"   # quoted on purpose\n\
         kind: 'LaunchConfiguration'\n\
         metadata:\n\
         \x20 name: web\n\
         \x20 namespace: \"{n}\"\n\
         spec:\n\
         \x20 image: '{TEST_IMAGE}'\n\
         \n\
         \x20 # between keys, and a blank line above\n\
         \x20 command: [ sleep,   \"3600\" ]\n\
         \x20 stopGracePeriod: 0s      # stop at once\n\
         ---\n\
         # the web group\n\
         apiVersion: microscaler.io/v1\n\
         kind: AutoScalingGroup\n\
         metadata:\n\
         \x20   name: web            # four-space indent here\n\
         \x20   namespace: {n}\n\
         spec:\n\
         \x20 launchConfiguration: \"web\"\n\
         \x20 minSize: 0\n\
         \n\
         \x20 maxSize: 3  # inline\n\
         \x20 desiredCapacity: 1\n\
         \n\
         # a comment between documents\n\
         --- # the worker group\n\
         apiVersion: microscaler.io/v1\n\
         kind: AutoScalingGroup\n\
         metadata:\n\
         \x20 name: worker\n\
         \x20 namespace: {n}\n\
         spec:\n\
         \x20 launchConfiguration: web\n\
         \x20 minSize: 1\n\
         \x20 maxSize: 2\n\
         \x20 # desiredCapacity defaults to minSize\n\
         \n\
         # the end\n"
    );
    // Mode first, then the file appears at once (as a rename).
    let staged = ctl.tmp_path().join("shop.yaml");
    std::fs::write(&staged, &original).unwrap();
    set_mode(&staged, 0o640);
    let path = ctl.dir.join("shop.yaml");
    std::fs::rename(&staged, &path).unwrap();

    wait_running(&ctl, &ns, "web", 1);
    wait_running(&ctl, &ns, "worker", 1);
    let mut text = String::new();
    let converged = wait_until(CONVERGE, || {
        text = std::fs::read_to_string(&path).unwrap();
        ["web", "worker"].iter().all(|g| {
            status_of(&text, g).is_some_and(|s| {
                s["current"].as_u64() == Some(1)
                    && s["ready"].as_u64() == Some(1)
                    && s["instances"].as_sequence().is_some_and(|i| i.len() == 1)
            })
        })
    });
    assert!(converged, "no converged status blocks in:\n{text}");

    // Every byte outside the status blocks is the user's.
    assert_eq!(strip_status(&text), original, "the file now reads:\n{text}");
    assert_eq!(
        text.lines().filter(|l| *l == "status:").count(),
        2,
        "one status block per group, none for the launch configuration:\n{text}"
    );
    for g in ["web", "worker"] {
        let s = status_of(&text, g).unwrap();
        assert_eq!(s["desiredCapacity"].as_u64(), Some(1), "{text}");
        for key in [
            "observedGeneration",
            "conditions",
            "activities",
            "instances",
        ] {
            assert!(!s[key].is_null(), "status of {g} lacks {key}:\n{text}");
        }
        let conditions: Vec<&str> = s["conditions"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(
            conditions,
            ["Ready", "Progressing", "Degraded", "Invalid"],
            "{text}"
        );
        let instance = &s["instances"][0];
        assert_eq!(instance["state"].as_str(), Some("running"), "{text}");
        assert!(
            instance["containerId"]
                .as_str()
                .is_some_and(|id| running_ids(&ns, g).iter().any(|r| r.starts_with(id))),
            "{text}"
        );
    }
    assert_eq!(mode_of(&path), 0o640, "the file mode changed");

    // Once converged, the file is left alone.
    let stable = wait_until(Duration::from_secs(10), || {
        let before = std::fs::read_to_string(&path).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::read_to_string(&path).unwrap() == before
    });
    assert!(stable, "the status block never settled");
    let mtime = modified(&path);
    let content = std::fs::read_to_string(&path).unwrap();
    let rewritten = wait_until(Duration::from_secs(3), || modified(&path) != mtime);
    assert!(
        !rewritten,
        "the file was rewritten although nothing changed:\nbefore:\n{content}\nafter:\n{}",
        std::fs::read_to_string(&path).unwrap()
    );
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

// ---------------------------------------------------------------------------------------------
// 4. A bad manifest changes nothing

#[test]
fn a_typo_in_a_running_groups_manifest_is_reported_and_scales_nothing() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let lc = sleeper(&ns, "web");
    let good = format!("{lc}---\n{}", group_doc(&ns, "web", "web", 0, 4, 2));
    let web = ctl.write_manifest("web.yaml", &good);
    ctl.write_manifest(
        "api.yaml",
        &format!(
            "{}---\n{}",
            sleeper(&ns, "api"),
            group_doc(&ns, "api", "api", 0, 4, 1)
        ),
    );
    let web_ids = wait_running(&ctl, &ns, "web", 2);
    let api_ids = wait_running(&ctl, &ns, "api", 1);

    let typo = good.replace("desiredCapacity: 2", "desiredCapasity: 0");
    assert_ne!(typo, good);
    std::fs::write(&web, &typo).unwrap();
    let line = line_of(&typo, "desiredCapasity");
    let location = format!("{}:{line}:3", web.display());

    // `ms get problems` names the file, line, column and the fix.
    let mut problems = None;
    let reported = wait_until(CONVERGE, || {
        let run = ms(&ctl, &["get", "problems"]);
        let ok = run.code == 0
            && run.stdout.contains(&web.display().to_string())
            && run.stdout.contains("did you mean `desiredCapacity`");
        problems = Some(run);
        ok
    });
    assert!(reported, "ms get problems: {problems:#?}");
    let rows = table(&problems.unwrap().stdout);
    assert_eq!(rows.len(), 1, "one problem expected: {rows:?}");
    assert_eq!(rows[0]["LOCATION"], location);
    let json = ms(&ctl, &["get", "problems", "-o", "json"]);
    let list: Value = serde_json::from_str(json.ok()).expect("problems parse as JSON");
    let items = &list["items"];
    assert_eq!(items[0]["column"], 3, "{items}");

    // `ms describe` and `ms get asgs` show `file:line:col: field: message`.
    let run = ms(&ctl, &["describe", "asg", "web", "-n", &ns.name]);
    let described = run.ok();
    let error_line = described
        .lines()
        .find(|l| l.contains(&location))
        .unwrap_or_else(|| panic!("no {location} in:\n{described}"));
    assert!(
        error_line.contains("unknown field `desiredCapasity` (did you mean `desiredCapacity`?)"),
        "{error_line}"
    );
    assert!(
        described.contains("Min/Max/Desired:       0 / 4 / 2\n"),
        "the last valid version is shown:\n{described}"
    );
    let run = ms(&ctl, &["get", "asgs", "-n", &ns.name]);
    assert!(
        run.stderr.starts_with("Warning: 1 manifest has errors") && run.stderr.contains(&location),
        "{run:#?}"
    );

    // Nothing moves, and the file stays exactly as the user wrote it.
    assert_unchanged_for(&ns, "web", &web_ids, Duration::from_secs(3));
    assert_eq!(std::fs::read_to_string(&web).unwrap(), typo);
    assert_eq!(running_ids(&ns, "api"), api_ids);
    let api = ms(&ctl, &["describe", "asg", "api", "-n", &ns.name]);
    assert!(
        api.ok().contains("Errors:\n  <none>\n"),
        "the other file's group is unaffected: {api:#?}"
    );

    // Fixing the file resumes normal operation.
    std::fs::write(
        &web,
        good.replace("desiredCapacity: 2", "desiredCapacity: 1"),
    )
    .unwrap();
    wait_running(&ctl, &ns, "web", 1);
    let run = ms(&ctl, &["get", "problems"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.stdout, "", "{run:#?}");
    assert!(run.stderr.contains("No problems found."), "{run:#?}");
    assert_eq!(running_ids(&ns, "api"), api_ids);
}

#[test]
fn ms_apply_reports_each_validation_error_on_one_line_and_writes_nothing() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let bad_path = ctl.tmp_path().join("bad.yaml");
    let bad = group_doc(&ns, "web", "web", 5, 4, 4);
    std::fs::write(&bad_path, &bad).unwrap();
    let before = tree(&ctl.dir);

    let run = ms(&ctl, &["apply", "-f", bad_path.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.stdout, "", "{run:#?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    let file = bad_path.display().to_string();
    let expected = format!(
        "{file}:{}:3: spec.minSize: minSize 5 > maxSize 4",
        line_of(&bad, "minSize")
    );
    let errors: Vec<&&str> = lines.iter().filter(|l| !l.starts_with("error: ")).collect();
    assert!(
        !errors.is_empty() && errors.iter().all(|l| l.starts_with(&format!("{file}:"))),
        "one `file:line:col: field: message` line per error: {run:#?}"
    );
    assert!(
        errors.iter().any(|l| l.starts_with(&expected)),
        "expected a line starting with {expected:?}: {run:#?}"
    );
    assert_eq!(
        lines.last().copied(),
        Some(
            format!(
                "error: {file}: {} error{}, nothing was applied",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            )
            .as_str()
        ),
        "{run:#?}"
    );
    assert_eq!(tree(&ctl.dir), before, "nothing may be written");
    assert!(containers(&ns).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 5. Apply validates everything first; missing references are warnings

#[test]
fn ms_apply_writes_nothing_when_one_document_is_invalid() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let path = ctl.tmp_path().join("mixed.yaml");
    let mixed = format!(
        "{}---\n{}",
        sleeper(&ns, "web"),
        group_doc(&ns, "web", "web", 0, 3, 1).replace("maxSize: 3", "maxSize: lots")
    );
    std::fs::write(&path, &mixed).unwrap();

    let run = ms(&ctl, &["apply", "-f", path.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:#?}");
    let location = format!("{}:{}:", path.display(), line_of(&mixed, "maxSize"));
    assert!(
        run.stderr
            .lines()
            .next()
            .is_some_and(|l| l.starts_with(&location) && l.contains("spec.maxSize")),
        "{run:#?}"
    );
    assert!(run.stderr.contains("nothing was applied"), "{run:#?}");
    assert!(tree(&ctl.dir).is_empty(), "{:?}", tree(&ctl.dir));
    let lcs = ms(&ctl, &["get", "lcs", "-n", &ns.name]);
    assert_eq!(lcs.stdout, "", "{lcs:#?}");
    assert!(containers(&ns).is_empty());
}

#[test]
fn a_group_applied_before_its_launch_configuration_waits_for_it() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let run = ms_stdin(&ctl, &["apply", "-f", "-"], &sleeper(&ns, "worker"));
    assert_eq!(run.ok(), "launchconfiguration/worker created\n");

    // A group naming `workers`, which does not exist yet: a warning with a suggestion.
    let run = ms_stdin(
        &ctl,
        &["apply", "-f", "-"],
        &group_doc(&ns, "jobs", "workers", 0, 3, 2),
    );
    assert_eq!(run.ok(), "autoscalinggroup/jobs created\n");
    assert!(
        run.stderr.starts_with("Warning: ")
            && run
                .stderr
                .contains("launch configuration `workers` does not exist (yet)")
            && run.stderr.contains("(did you mean `worker`?)"),
        "{run:#?}"
    );

    // The group says what it waits for, and runs nothing meanwhile.
    let mut described = None;
    let waiting = wait_until(CONVERGE, || {
        let run = ms(&ctl, &["describe", "asg", "jobs", "-n", &ns.name]);
        let ok = run.stdout.lines().any(|l| {
            l.contains("Ready")
                && l.contains("False")
                && l.contains("WaitingForLaunchConfiguration")
                && l.contains("workers")
        });
        described = Some(run);
        ok
    });
    assert!(waiting, "{described:#?}");
    assert!(group_containers(&ns, "jobs").is_empty());

    // Applying the launch configuration starts the group.
    let run = ms_stdin(&ctl, &["apply", "-f", "-"], &sleeper(&ns, "workers"));
    assert_eq!(run.ok(), "launchconfiguration/workers created\n");
    assert_eq!(run.stderr, "", "{run:#?}");
    wait_running(&ctl, &ns, "jobs", 2);
}

// ---------------------------------------------------------------------------------------------
// 6. Deleting manifests

#[test]
fn deleting_a_manifest_deletes_its_group_but_emptying_the_directory_is_refused() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let a = ctl.write_manifest(
        "a.yaml",
        &format!(
            "{}---\n{}",
            sleeper(&ns, "web"),
            group_doc(&ns, "a", "web", 0, 3, 1)
        ),
    );
    let b = ctl.write_manifest("b.yaml", &group_doc(&ns, "b", "web", 0, 3, 1));
    let a_ids = wait_running(&ctl, &ns, "a", 1);
    wait_running(&ctl, &ns, "b", 1);

    std::fs::remove_file(&b).unwrap();
    assert!(
        wait_until(CONVERGE, || group_containers(&ns, "b").is_empty()),
        "b's container was not removed: {:?}",
        group_containers(&ns, "b")
    );
    assert_eq!(running_ids(&ns, "a"), a_ids);

    // The last manifest goes: refused, reported, and the group keeps running.
    std::fs::remove_file(&a).unwrap();
    let mut problems = None;
    let refused = wait_until(CONVERGE, || {
        let run = ms(&ctl, &["get", "problems"]);
        let ok = run.stdout.contains("defines no autoscaling group")
            && run
                .stdout
                .contains(&format!("`ms delete asg a -n {}`", ns.name))
            && run.stdout.contains("--allow-empty");
        problems = Some(run);
        ok
    });
    assert!(refused, "{problems:#?}");
    assert_unchanged_for(&ns, "a", &a_ids, Duration::from_secs(2));
    let run = ms(&ctl, &["get", "asgs", "-n", &ns.name]);
    assert_eq!(table(run.ok()).len(), 1, "{run:#?}");

    // With --allow-empty, the last manifest's deletion removes its containers.
    let ns2 = TestNs::new();
    let ctl2 = started(ControllerOptions {
        args: vec!["--allow-empty".into()],
        ..Default::default()
    });
    let only = ctl2.write_manifest(
        "only.yaml",
        &format!(
            "{}---\n{}",
            sleeper(&ns2, "web"),
            group_doc(&ns2, "only", "web", 0, 3, 1)
        ),
    );
    wait_running(&ctl2, &ns2, "only", 1);
    std::fs::remove_file(&only).unwrap();
    assert!(
        wait_until(CONVERGE, || group_containers(&ns2, "only").is_empty()),
        "the last group's container was not removed with --allow-empty"
    );
    let run = ms(&ctl2, &["get", "problems"]);
    assert!(!run.stdout.contains("held"), "{run:#?}");
}

// ---------------------------------------------------------------------------------------------
// 7. Conflicts

#[test]
fn the_same_group_in_two_files_is_a_conflict_and_the_first_path_wins() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    ctl.write_manifest("lc.yaml", &sleeper(&ns, "web"));
    let b = ctl.write_manifest("b.yaml", &group_doc(&ns, "web", "web", 0, 3, 2));
    wait_running(&ctl, &ns, "web", 2);

    // a.yaml sorts first: it wins although it arrived later.
    let a = ctl.write_manifest("a.yaml", &group_doc(&ns, "web", "web", 0, 3, 1));
    wait_running(&ctl, &ns, "web", 1);
    let run = ms(&ctl, &["get", "problems"]);
    let rows = table(run.ok());
    assert_eq!(rows.len(), 1, "{run:#?}");
    assert_eq!(rows[0]["LOCATION"], b.display().to_string(), "{run:#?}");
    let line = run.stdout.lines().nth(1).unwrap();
    assert!(
        line.contains(&format!("is already defined in {}", a.display()))
            && line.contains("this definition is ignored"),
        "{run:#?}"
    );
    let run = ms(&ctl, &["describe", "asg", "web", "-n", &ns.name]);
    assert!(
        run.ok()
            .contains(&format!("Source:                {}:1\n", a.display())),
        "{run:#?}"
    );

    // Rewriting the loser changes nothing; removing the winner hands over to it.
    std::fs::write(&b, group_doc(&ns, "web", "web", 0, 3, 3)).unwrap();
    let ids = running_ids(&ns, "web");
    assert_unchanged_for(&ns, "web", &ids, Duration::from_secs(2));
    std::fs::remove_file(&a).unwrap();
    wait_running(&ctl, &ns, "web", 3);
    let run = ms(&ctl, &["get", "problems"]);
    assert_eq!(run.stdout, "", "{run:#?}");
}

// ---------------------------------------------------------------------------------------------
// 8. scale / stop / start edit the manifest

#[test]
fn scale_stop_and_start_edit_only_their_field_and_the_containers_follow() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    let original = format!(
        "{}---\n# the web group\n{}",
        sleeper(&ns, "web"),
        group_doc(&ns, "web", "web", 0, 3, 1).replace("minSize: 0", "minSize: 0   # may be idle")
    );
    let path = ctl.write_manifest("web.yaml", &original);
    wait_running(&ctl, &ns, "web", 1);
    let n = ns.name.as_str();

    let run = ms(&ctl, &["scale", "asg", "web", "--desired", "3", "-n", n]);
    assert_eq!(run.ok(), "autoscalinggroup/web scaled\n");
    let scaled = original.replace("desiredCapacity: 1", "desiredCapacity: 3");
    assert_eq!(
        strip_status(&std::fs::read_to_string(&path).unwrap()),
        scaled
    );
    wait_running(&ctl, &ns, "web", 3);

    let run = ms(&ctl, &["stop", "asg", "web", "-n", n]);
    assert_eq!(run.ok(), "autoscalinggroup/web stopped\n");
    let stopped = scaled.replace(
        "desiredCapacity: 3\n",
        "desiredCapacity: 3\n  state: Stopped\n",
    );
    assert_eq!(
        strip_status(&std::fs::read_to_string(&path).unwrap()),
        stopped
    );
    assert!(
        wait_until(CONVERGE, || group_containers(&ns, "web").is_empty()),
        "a stopped group keeps no container: {:?}",
        group_containers(&ns, "web")
    );
    let run = ms(&ctl, &["get", "asgs", "-n", n]);
    let rows = table(run.ok());
    assert_eq!(rows[0]["STATE"], "Stopped", "{run:#?}");

    let run = ms(&ctl, &["start", "asg", "web", "-n", n]);
    assert_eq!(run.ok(), "autoscalinggroup/web started\n");
    let restarted = stopped.replace("state: Stopped", "state: Started");
    assert_eq!(
        strip_status(&std::fs::read_to_string(&path).unwrap()),
        restarted
    );
    wait_running(&ctl, &ns, "web", 3);

    // Outside [min, max]: one clear line, the file untouched.
    let before = std::fs::read_to_string(&path).unwrap();
    let run = ms(&ctl, &["scale", "asg", "web", "--desired", "4", "-n", n]);
    assert_eq!(
        run.one_error_line(),
        "error: desired capacity 4 is outside [minSize 0, maxSize 3] of autoscaling group `web`"
    );
    assert_eq!(
        strip_status(&std::fs::read_to_string(&path).unwrap()),
        strip_status(&before)
    );
    let run = ms(&ctl, &["scale", "asg", "nope", "--desired", "1", "-n", n]);
    assert_eq!(
        run.one_error_line(),
        format!("error: autoscaling group `nope` not found in namespace `{n}`")
    );
}

// ---------------------------------------------------------------------------------------------
// 9. ms delete

#[test]
fn ms_delete_by_file_and_by_name_removes_groups_and_their_containers() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    // A group of zero keeps the directory from becoming empty (that would be refused).
    ctl.write_manifest(
        "keeper.yaml",
        &format!(
            "{}---\n{}",
            sleeper(&ns, "web"),
            group_doc(&ns, "keeper", "web", 0, 1, 0)
        ),
    );
    let web_file = ctl.tmp_path().join("web.yaml");
    std::fs::write(&web_file, group_doc(&ns, "web", "web", 0, 3, 2)).unwrap();
    let web = web_file.to_str().unwrap();
    assert_eq!(
        ms(&ctl, &["apply", "-f", web]).ok(),
        "autoscalinggroup/web created\n"
    );
    let run = ms_stdin(
        &ctl,
        &["apply", "-f", "-"],
        &group_doc(&ns, "api", "web", 0, 3, 1),
    );
    assert_eq!(run.ok(), "autoscalinggroup/api created\n");
    wait_running(&ctl, &ns, "web", 2);
    let api_ids = wait_running(&ctl, &ns, "api", 1);
    let applied = ctl.dir.join(&ns.name).join("autoscaling-group-web.yaml");
    assert!(applied.exists(), "{:?}", tree(&ctl.dir));

    let run = ms(&ctl, &["delete", "-f", web]);
    assert_eq!(run.ok(), "autoscalinggroup/web deleted\n");
    assert!(!applied.exists(), "the emptied file is removed");
    assert!(
        wait_until(CONVERGE, || group_containers(&ns, "web").is_empty()),
        "web's containers were not removed"
    );
    assert_eq!(running_ids(&ns, "api"), api_ids);

    let run = ms(&ctl, &["delete", "asg", "api", "-n", &ns.name]);
    assert_eq!(run.ok(), "autoscalinggroup/api deleted\n");
    assert_eq!(run.stderr, "", "{run:#?}");
    assert!(
        wait_until(CONVERGE, || group_containers(&ns, "api").is_empty()),
        "api's container was not removed"
    );
    let run = ms(&ctl, &["get", "asgs", "-n", &ns.name]);
    let names: Vec<String> = table(run.ok())
        .into_iter()
        .map(|r| r["NAME"].clone())
        .collect();
    assert_eq!(names, ["keeper"]);
    let run = ms(&ctl, &["delete", "asg", "api", "-n", &ns.name]);
    assert_eq!(
        run.one_error_line(),
        format!(
            "error: autoscaling group `api` not found in namespace `{}`",
            ns.name
        )
    );

    // Deleting the last group explicitly is the confirmation an emptied directory lacks: it goes.
    let run = ms(&ctl, &["delete", "asg", "keeper", "-n", &ns.name]);
    assert_eq!(run.ok(), "autoscalinggroup/keeper deleted\n");
    assert!(
        wait_until(CONVERGE, || {
            let run = ms(&ctl, &["get", "asgs", "-n", &ns.name]);
            table(&run.stdout).is_empty()
        }),
        "the last group was not deleted: {:#?}",
        ms(&ctl, &["get", "problems"])
    );
}

// ---------------------------------------------------------------------------------------------
// 10. Authentication

#[test]
fn tokens_are_required_bound_to_namespaces_and_remembered_by_ms_login() {
    let ns = TestNs::new();
    let other = format!("{}-other", ns.name);
    let mut opts = ControllerOptions::default();
    opts.extra_config.push_str(&format!(
        "tokens:\n  - token: token-one-0123456789\n    namespaces: [{}]\n  - token: token-two-0123456789\n    namespaces: [{other}]\n",
        ns.name
    ));
    let ctl = started(opts);
    let n = ns.name.as_str();

    let run = ms(&ctl, &["get", "asgs", "-n", n]);
    assert_eq!(
        run.one_error_line(),
        "error: a bearer token is required (ms login --token ...)"
    );
    let run = ms(
        &ctl,
        &["--token", "token-two-0123456789", "get", "asgs", "-n", n],
    );
    assert_eq!(
        run.one_error_line(),
        format!("error: this token may not access namespace `{n}`")
    );
    let run = ms_stdin(
        &ctl,
        &["--token", "token-two-0123456789", "apply", "-f", "-"],
        &sleeper(&ns, "web"),
    );
    assert_eq!(
        run.one_error_line(),
        format!("error: this token may not access namespace `{n}`")
    );
    let run = ms(&ctl, &["--token", "nope", "get", "asgs", "-n", n]);
    assert_eq!(run.one_error_line(), "error: unknown token");

    let run = ms_stdin(
        &ctl,
        &["--token", "token-one-0123456789", "apply", "-f", "-"],
        &format!(
            "{}---\n{}",
            sleeper(&ns, "web"),
            group_doc(&ns, "web", "web", 0, 2, 0)
        ),
    );
    assert_eq!(
        run.ok(),
        "launchconfiguration/web created\nautoscalinggroup/web created\n"
    );
    let run = ms(
        &ctl,
        &["--token", "token-one-0123456789", "get", "asgs", "-n", n],
    );
    let rows = table(run.ok());
    assert_eq!(rows.len(), 1, "{run:#?}");
    assert_eq!(rows[0]["NAME"], "web");

    // `ms login` stores target and token; later commands need neither flag.
    let home = tempfile::tempdir().unwrap();
    let plain = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ms"))
            .args(args)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env_remove("MS_TOKEN")
            .env_remove("MS_SERVER")
            .env("NO_COLOR", "1")
            .output()
            .expect("run ms");
        Run::from(out)
    };
    let run = plain(&[
        "login",
        "--target",
        &ctl.url(),
        "--token",
        "token-one-0123456789",
    ]);
    assert!(
        run.ok().starts_with(&format!("Logged in to {}", ctl.url())),
        "{run:#?}"
    );
    let stored = home.path().join("config/microscaler/login.json");
    assert_eq!(mode_of(&stored), 0o600, "the stored token is private");
    let run = plain(&["get", "asgs", "-n", n]);
    let rows = table(run.ok());
    assert_eq!(rows.len(), 1, "{run:#?}");
    assert_eq!(rows[0]["NAME"], "web");
    let run = plain(&["get", "asgs", "-n", &other]);
    assert_eq!(
        run.one_error_line(),
        format!("error: this token may not access namespace `{other}`")
    );
}

#[test]
fn listening_beyond_loopback_without_tokens_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ms"))
        .arg("controller")
        .arg("--listen")
        .arg(format!("0.0.0.0:{port}"))
        .arg("--dir")
        .arg(dir.path().join("manifests"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ms controller");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ms controller --listen 0.0.0.0:{port} without tokens kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        line.starts_with(&format!(
            "error: refusing to listen on 0.0.0.0:{port} without tokens"
        )) && line.contains("tokens:"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("manifests").exists(),
        "refused before touching anything"
    );
}

// ---------------------------------------------------------------------------------------------
// 11. Health, instance types, output formats, no controller

#[test]
fn health_instance_types_output_formats_and_an_unreachable_controller() {
    let ns = TestNs::new();
    let ctl = started(ControllerOptions::default());
    assert_eq!(http_get(ctl.port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(ctl.port, "/readyz").map(|r| r.0), Some(200));

    let run = ms(&ctl, &["get", "instancetypes"]);
    let rows = table(run.ok());
    assert_eq!(rows.first().map(|r| r["NAME"].as_str()), Some("t1.micro"));
    assert_eq!(rows.last().map(|r| r["NAME"].as_str()), Some("hs1.8xlarge"));
    assert!(
        rows.iter()
            .any(|r| r["NAME"] == "m1.small" && r["CPUS"] == "1" && r["MEMORY(MiB)"] == "1024"),
        "{run:#?}"
    );

    ctl.write_manifest(
        "web.yaml",
        &format!(
            "{}---\n{}",
            sleeper(&ns, "web"),
            group_doc(&ns, "web", "web", 0, 2, 1)
        ),
    );
    wait_running(&ctl, &ns, "web", 1);
    assert!(
        wait_until(CONVERGE, || {
            let run = ms(&ctl, &["get", "asgs", "-n", &ns.name]);
            table(&run.stdout)
                .first()
                .is_some_and(|r| r["READY"] == "1")
        }),
        "the group never reported 1 ready"
    );

    let run = ms(&ctl, &["get", "asgs", "-n", &ns.name, "-o", "json"]);
    let json: Value = serde_json::from_str(run.ok()).expect("-o json parses");
    assert_eq!(json["kind"], "List", "a list object, as kubectl's");
    let items = json["items"].as_array().expect("a JSON array of items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["name"], "web");
    assert_eq!(items[0]["spec"]["desiredCapacity"], 1);
    assert_eq!(items[0]["status"]["ready"], 1);
    let run = ms(&ctl, &["get", "asg", "web", "-n", &ns.name, "-o", "json"]);
    let one: Value = serde_json::from_str(run.ok()).expect("-o json of one parses");
    assert_eq!(one["kind"], "AutoScalingGroup");

    let run = ms(&ctl, &["get", "lcs", "-n", &ns.name, "-o", "yaml"]);
    let docs = yaml_docs(run.ok());
    assert_eq!(docs.len(), 1, "{run:#?}");
    assert_eq!(docs[0]["kind"].as_str(), Some("LaunchConfiguration"));
    assert_eq!(docs[0]["spec"]["image"].as_str(), Some(TEST_IMAGE));
    let run = ms(&ctl, &["get", "asgs", "-n", &ns.name, "-o", "yaml"]);
    let yaml = run.ok().to_string();
    let docs = yaml_docs(&yaml);
    assert_eq!(docs.len(), 1, "{run:#?}");
    assert_eq!(docs[0]["status"]["ready"].as_u64(), Some(1), "{yaml}");
    // What `-o yaml` prints, `ms apply` takes back unchanged.
    let run = ms_stdin(&ctl, &["apply", "-f", "-"], &yaml);
    assert_eq!(run.ok(), "autoscalinggroup/web unchanged\n");

    // No controller: one line and exit 1.
    let port = free_port();
    let out = isolated(&ctl, Command::new(env!("CARGO_BIN_EXE_ms")))
        .args([
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "get",
            "asgs",
        ])
        .output()
        .unwrap();
    let run = Run::from(out);
    assert!(
        run.one_error_line().starts_with(&format!(
            "error: cannot reach the controller at http://127.0.0.1:{port}"
        )),
        "{run:#?}"
    );
}
