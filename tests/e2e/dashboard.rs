//! The web dashboard in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`) driven over the DevTools protocol, against a controller on 127.0.0.1 with the real
//! engine. A missing Chromium fails the test; it never passes without a browser.
//!
//! Set `MS_SCREENSHOT_DIR=docs` to keep the screenshots (`scripts/dashboard-screenshots`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::types::Bounds;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;

use crate::common::*;

const TOKEN_A: &str = "dashboard-a-token-0123456789";
const TOKEN_B: &str = "dashboard-b-token-0123456789";
/// The browser's time zone: the page must show times in it.
const BROWSER_TZ: &str = "America/New_York";

/// Chromium: `MS_CHROMIUM`, else Debian's.
fn chromium() -> PathBuf {
    let path = PathBuf::from(std::env::var("MS_CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "no Chromium at {}: apt-get install chromium (.ci/run installs it), or set MS_CHROMIUM",
        path.display()
    );
    path
}

fn browser(chromium: PathBuf) -> Browser {
    let no_sandbox = OsStr::new("--no-sandbox"); // the tests run as root
                                                 // Nothing but 127.0.0.1: no component downloads (background networking is off already).
    let no_updates = OsStr::new("--disable-component-update");
    let opts = LaunchOptions::default_builder()
        .path(Some(chromium))
        .headless(true)
        .sandbox(false)
        .window_size(Some((1280, 1400)))
        .idle_browser_timeout(Duration::from_secs(180))
        .args(vec![no_sandbox, no_updates])
        .process_envs(Some(HashMap::from([(
            "TZ".to_string(),
            BROWSER_TZ.to_string(),
        )])))
        .build()
        .expect("launch options");
    Browser::new(opts).expect("start headless Chromium")
}

/// The value of a JS expression in the page (through JSON).
fn js(tab: &Tab, expr: &str) -> Value {
    let wrapped = format!("JSON.stringify((() => {{ return ({expr}); }})() ?? null)");
    let r = tab.evaluate(&wrapped, false).expect("evaluate in the page");
    r.value
        .and_then(|v| {
            v.as_str()
                .map(|s| serde_json::from_str(s).unwrap_or(Value::Null))
        })
        .unwrap_or(Value::Null)
}

/// The value of an async JS expression (a promise) in the page.
fn js_async(tab: &Tab, expr: &str) -> Value {
    let wrapped = format!("(async () => JSON.stringify(await ({expr})))()");
    let r = tab.evaluate(&wrapped, true).expect("evaluate in the page");
    r.value
        .and_then(|v| {
            v.as_str()
                .map(|s| serde_json::from_str(s).unwrap_or(Value::Null))
        })
        .unwrap_or(Value::Null)
}

/// Waits until `expr` is true in the page; how long it took. Panics with `what` and the page's
/// text otherwise.
#[track_caller]
fn wait_page(tab: &Tab, expr: &str, timeout: Duration, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if js(tab, expr) == Value::Bool(true) {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            panic!(
                "the page did not show {what} within {timeout:?} ({expr}); it shows:\n{}",
                js(tab, "document.body.innerText")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn screenshot(tab: &Tab, name: &str) {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if let Ok(dir) = std::env::var("MS_SCREENSHOT_DIR") {
        let path = PathBuf::from(dir).join(name);
        std::fs::write(&path, &png).expect("write the screenshot");
        eprintln!("screenshot: {} ({} bytes)", path.display(), png.len());
    }
}

/// `ms --token TOKEN args...`, without a stored login.
fn ms_as(ctl: &Controller, token: &str, args: &[&str]) -> Command {
    let mut full = vec!["--token", token];
    full.extend_from_slice(args);
    let mut cmd = ctl.ms_command(&full);
    cmd.env("XDG_CONFIG_HOME", ctl.tmp_path().join("no-login"))
        .env_remove("MS_TOKEN")
        .env_remove("MS_SERVER");
    cmd
}

fn apply_as(ctl: &Controller, token: &str, yaml: &str) {
    assert_success(&output_with_stdin(
        ms_as(ctl, token, &["apply", "-f", "-"]),
        yaml,
    ));
}

fn manifests(ns: &str, web: u32) -> String {
    format!(
        "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  image: {TEST_IMAGE}\n  command: [sleep, \"3600\"]\n  ports: [80]\n  stopGracePeriod: 0s\n\
         ---\napiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: 5\n  desiredCapacity: {web}\n\
         ---\napiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: burn, namespace: {ns}}}\nspec:\n  image: {TEST_IMAGE}\n  command: [sh, -c, \"while :; do :; done\"]\n  resources: {{cpus: 0.05}}\n  stopGracePeriod: 0s\n\
         ---\napiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: burn, namespace: {ns}}}\nspec:\n  launchConfiguration: burn\n  minSize: 1\n  maxSize: 3\n  scaleOutCooldown: 3s\n  scaleInCooldown: 3s\n  healthCheckGracePeriod: 1s\n\
         ---\napiVersion: microscaler.io/v1\nkind: ScalingPolicy\nmetadata: {{name: cpu-target, namespace: {ns}}}\nspec:\n  autoScalingGroup: burn\n  type: TargetTracking\n  metric: CPU\n  targetValue: 50\n  samplingWindow: 3s\n  scaleInStabilization: 10m\n\
         ---\napiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: queue, namespace: {ns}}}\nspec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: 1\n  desiredCapacity: 0\n\
         ---\napiVersion: microscaler.io/v1\nkind: ScalingPolicy\nmetadata: {{name: depth, namespace: {ns}}}\nspec:\n  autoScalingGroup: queue\n  pushedMetric: queue_depth\n  samplingWindow: 2s\n  upperThreshold: 10\n  lowerThreshold: 1\n  scaleOutStep: 1\n  scaleInStep: 1\n"
    )
}

fn secret(ns: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: secret, namespace: {ns}}}\nspec:\n  image: {TEST_IMAGE}\n  command: [sleep, \"3600\"]\n  stopGracePeriod: 0s\n\
         ---\napiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: secret, namespace: {ns}}}\nspec:\n  launchConfiguration: secret\n  minSize: 0\n  maxSize: 2\n  desiredCapacity: 1\n"
    )
}

#[test]
fn the_dashboard_shows_a_tokens_groups_live_with_charts_and_never_another_namespace() {
    let chromium = chromium(); // before anything starts: no browser, no test
    let (a, b) = (TestNs::new(), TestNs::new());
    let opts = ControllerOptions {
        extra_config: format!(
            "metricsPeriod: 1s\ntokens:\n  - token: {TOKEN_A}\n    namespaces: [{}]\n  - token: {TOKEN_B}\n    namespaces: [{}]\n",
            a.name, b.name
        ),
        ..Default::default()
    };
    let mut ctl = Controller::start_with(opts.clone());
    ctl.wait_ready();
    apply_as(&ctl, TOKEN_A, &manifests(&a.name, 1));
    apply_as(&ctl, TOKEN_B, &secret(&b.name));
    // A manifest with an error in namespace A's directory: a problem A's token sees.
    std::fs::create_dir_all(ctl.dir.join(&a.name)).unwrap();
    std::fs::write(
        ctl.dir.join(&a.name).join("broken.yaml"),
        format!("apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: broken, namespace: {}}}\nspec:\n  launchConfiguration: web\n  minSize: 3\n  maxSize: 1\n", a.name),
    )
    .unwrap();

    // The page's weight: everything it loads.
    let weight: usize = ["/", "/ui/app.js", "/ui/app.css", "/ui/icon.svg"]
        .iter()
        .map(|p| {
            let (code, body) = http_get(ctl.port, p).expect("the page is served");
            assert_eq!(code, 200, "{p}");
            body.len()
        })
        .sum();
    eprintln!("page weight: {weight} bytes");
    assert!(weight < 200 * 1024, "the page weighs {weight} bytes");

    let browser = browser(chromium);
    let tab: Arc<Tab> = browser.new_tab().expect("a tab");
    tab.set_default_timeout(Duration::from_secs(30));
    tab.navigate_to(&format!("{}/", ctl.url()))
        .expect("open the dashboard");
    tab.wait_until_navigated().expect("the page loads");

    // Any script error from here on fails the test.
    js(
        &tab,
        "(window.__errors = [], addEventListener('error', e => __errors.push(String(e.message))), addEventListener('unhandledrejection', e => __errors.push(String(e.reason))), true)",
    );

    // The login form, by keyboard.
    tab.wait_for_element("#token")
        .expect("a login form")
        .click()
        .unwrap();
    tab.type_str(TOKEN_A).unwrap().press_key("Enter").unwrap();
    let ka = format!("{}/web", a.name);
    let cell = |key: &str, col: &str| {
        format!("document.querySelector('#groups tr[data-group=\"{key}\"] td[data-col=\"{col}\"]')")
    };
    let row = |key: &str, col: &str| match col {
        "desired" => format!("{}?.querySelector('[data-v]')?.textContent", cell(key, col)),
        _ => format!("{}?.textContent", cell(key, col)),
    };
    wait_page(
        &tab,
        &format!("{} === '1'", row(&ka, "ready")),
        Duration::from_secs(60),
        "group web with 1 ready instance",
    );
    wait_page(
        &tab,
        &format!(
            "!!document.querySelector('#groups tr[data-group=\"{}/burn\"]')",
            a.name
        ),
        Duration::from_secs(10),
        "group burn",
    );
    assert_eq!(
        js(
            &tab,
            "document.getElementById('login').offsetParent === null"
        ),
        Value::Bool(true),
        "the login form is gone once logged in"
    );
    assert_eq!(
        js(&tab, "document.getElementById('tz').textContent"),
        Value::String(format!("Times in {BROWSER_TZ}")),
        "times are shown in the browser's zone"
    );

    // Namespace B never reaches the page: not in its text, not in what it holds, and the
    // controller refuses A's token for B however the page would ask.
    let text = js(&tab, "document.body.innerText").to_string();
    assert!(
        !text.contains(&b.name),
        "the page shows namespace B:\n{text}"
    );
    let held = js(
        &tab,
        "[...S.store.groups.keys(), ...S.store.instances.keys(), ...S.store.lcs.keys(), ...S.store.policies.keys()]",
    );
    let held: Vec<String> = serde_json::from_value(held).unwrap();
    assert!(!held.is_empty());
    assert!(
        held.iter().all(|k| k.starts_with(&format!("{}/", a.name))),
        "the page holds objects of another namespace: {held:?}"
    );
    for path in [
        format!("/v1/watch?namespace={}", b.name),
        format!("/v1/watch?namespace={},{}", a.name, b.name),
        "/v1/watch".to_string(),
        format!("/v1/history/{}/secret", b.name),
        format!("/v1/asgs?namespace={}", b.name),
    ] {
        let status = js_async(
            &tab,
            &format!("fetch('{path}', {{ headers: {{ Authorization: 'Bearer {TOKEN_A}' }} }}).then(r => r.status)"),
        );
        assert_eq!(status, Value::from(403), "{path} with A's token");
    }
    screenshot(&tab, "dashboard-groups.png");

    // Keyboard: from the filter box, Tab reaches the first group's link and Enter opens it.
    js(&tab, "document.getElementById('filter').focus()");
    tab.press_key("Tab").unwrap();
    assert_eq!(
        js(&tab, "document.activeElement.getAttribute('href')"),
        Value::String(format!("#/g/{}/burn", a.name))
    );
    tab.press_key("Enter").unwrap();
    wait_page(
        &tab,
        "!!document.getElementById('chart-capacity')",
        Duration::from_secs(10),
        "the group page after Enter",
    );
    js(&tab, "location.hash = '#/'");
    wait_page(
        &tab,
        "!!document.getElementById('groups')",
        Duration::from_secs(10),
        "the groups table again",
    );

    // `ms scale` shows on the page as soon as the controller has it.
    let started = Instant::now();
    let mut scale = ms_as(
        &ctl,
        TOKEN_A,
        &["scale", "asg", "web", "--desired", "3", "-n", &a.name],
    );
    let command = std::thread::spawn(move || {
        let out = scale.output().expect("run ms scale");
        (out, started.elapsed())
    });
    // The manifest's change first (the reconciler has not taken it yet), then the status's
    // (published by the pass that takes it, before its launches).
    wait_page(
        &tab,
        &format!(
            "{} === '3' || {}?.querySelector('[data-manifest]')?.dataset.manifest === '3'",
            row(&ka, "desired"),
            cell(&ka, "desired")
        ),
        Duration::from_secs(30),
        "the manifest's new desired capacity",
    );
    let to_page = started.elapsed();
    wait_page(
        &tab,
        &format!("{} === '3'", row(&ka, "desired")),
        Duration::from_secs(30),
        "the new desired capacity in the status",
    );
    let to_status = started.elapsed();
    let (out, command_took) = command.join().expect("ms scale's thread");
    assert_success(&out);
    eprintln!(
        "ms scale -> page: manifest {} ms, status {} ms (ms scale itself returned after {} ms)",
        to_page.as_millis(),
        to_status.as_millis(),
        command_took.as_millis()
    );
    wait_page(
        &tab,
        &format!("{} === '3'", row(&ka, "ready")),
        Duration::from_secs(60),
        "3 ready instances",
    );

    // The group page: instances per zone, activities, and a chart with the steps.
    js(&tab, &format!("location.hash = '#/g/{}/web'", a.name));
    wait_page(
        &tab,
        "Number(document.querySelector('#chart-capacity path[data-series=\"desired\"]')?.dataset.points) >= 2",
        Duration::from_secs(15),
        "a capacity chart with the scale's steps",
    );
    let points = js(
        &tab,
        "document.querySelectorAll('#chart-capacity circle.pt.s-desired').length",
    );
    assert!(points.as_u64().unwrap_or(0) >= 2, "data points: {points}");
    wait_page(
        &tab,
        "document.querySelectorAll('table.instances[data-zone=\"a\"] tbody tr').length === 3",
        Duration::from_secs(10),
        "3 instances in zone a",
    );
    wait_page(
        &tab,
        "[...document.querySelectorAll('#activities tbody tr')].filter(r => r.innerText.includes('Launch')).length >= 3",
        Duration::from_secs(10),
        "3 launch activities",
    );
    // Each step's cause is one key (or click) away: the step's mark on the chart opens it.
    js(
        &tab,
        "document.querySelector('#chart-capacity circle.step').focus()",
    );
    tab.press_key("Enter").unwrap();
    wait_page(
        &tab,
        "[...document.querySelectorAll('#steps details[open]')].some(d => d.innerText.includes('1 → 3') && d.innerText.includes('desired capacity raised from 1 to 3'))",
        Duration::from_secs(5),
        "the cause of the step from 1 to 3",
    );
    screenshot(&tab, "dashboard-group.png");

    // The CPU-driven group: its metric chart against the target.
    js(&tab, &format!("location.hash = '#/g/{}/burn'", a.name));
    wait_page(
        &tab,
        "Number(document.querySelector('#chart-cpu-target path[data-series]')?.dataset.points) >= 1",
        Duration::from_secs(40),
        "the CPU chart with data",
    );
    let _ = wait_until(Duration::from_secs(40), || {
        js(
            &tab,
            &format!(
                "S.store.groups.get('{}/burn')?.status?.desiredCapacity >= 3",
                a.name
            ),
        ) == Value::Bool(true)
    });
    std::thread::sleep(Duration::from_secs(2));
    // The newest step's cause open, as a user would click it.
    js(
        &tab,
        "[...document.querySelectorAll('#chart-capacity circle.step')].pop()?.dispatchEvent(new MouseEvent('click'))",
    );
    std::thread::sleep(Duration::from_millis(300));
    screenshot(&tab, "dashboard-autoscale.png");

    // A pushed metric against a step policy's thresholds (the value within them: no launch).
    assert_success(
        &ms_as(
            &ctl,
            TOKEN_A,
            &["push-metric", "queue", "queue_depth", "5", "-n", &a.name],
        )
        .output()
        .expect("run ms push-metric"),
    );
    js(&tab, &format!("location.hash = '#/g/{}/queue'", a.name));
    wait_page(
        &tab,
        "Number(document.querySelector('#chart-depth path[data-series=\"queue_depth\"]')?.dataset.points) >= 1 && [...document.querySelectorAll('#chart-depth .ref-label')].map(t => t.textContent).join() === 'upper 10,lower 1'",
        Duration::from_secs(20),
        "the pushed metric's chart with its thresholds",
    );

    // The problems list: the broken manifest, file:line:col.
    js(&tab, "location.hash = '#/problems'");
    wait_page(
        &tab,
        "document.getElementById('problems')?.innerText.includes('broken.yaml:')",
        Duration::from_secs(15),
        "the broken manifest among the problems",
    );
    // A manifest broken while the page is open shows at once (the stream says the manifests
    // were loaded again).
    let started = Instant::now();
    std::fs::write(
        ctl.dir.join(&a.name).join("typo.yaml"),
        format!("apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: typo, namespace: {}}}\nspec:\n  launchConfiguration: web\n  minSize: 1\n  maxSize: 2\n  desiredCapacty: 1\n", a.name),
    )
    .unwrap();
    wait_page(
        &tab,
        "document.getElementById('problems')?.innerText.includes('typo.yaml:')",
        Duration::from_secs(15),
        "a manifest broken while the page is open",
    );
    eprintln!(
        "broken manifest written -> problems page: {} ms",
        started.elapsed().as_millis()
    );
    let text = js(&tab, "document.body.innerText").to_string();
    assert!(
        !text.contains(&b.name),
        "the problems show namespace B:\n{text}"
    );
    screenshot(&tab, "dashboard-problems.png");

    // Narrow: the page never scrolls sideways (a wide table scrolls inside its box).
    js(&tab, "location.hash = '#/'");
    tab.set_bounds(Bounds::Normal {
        left: None,
        top: None,
        width: Some(400.0),
        height: Some(900.0),
    })
    .expect("a narrow window");
    wait_page(
        &tab,
        "window.innerWidth <= 420 && !!document.getElementById('groups')",
        Duration::from_secs(10),
        "the groups in a narrow window",
    );
    assert_eq!(
        js(
            &tab,
            "document.documentElement.scrollWidth <= window.innerWidth"
        ),
        Value::Bool(true),
        "the page scrolls sideways at {} px",
        js(&tab, "window.innerWidth")
    );
    screenshot(&tab, "dashboard-narrow.png");

    // The measurement: more `ms scale`s, each timed to its manifest's change on the page.
    let (mut took, mut took_status) = (Vec::new(), Vec::new());
    for desired in [4, 3, 4, 3, 4] {
        let started = Instant::now();
        let out = ms_as(
            &ctl,
            TOKEN_A,
            &[
                "scale",
                "asg",
                "web",
                "--desired",
                &desired.to_string(),
                "-n",
                &a.name,
            ],
        )
        .output()
        .expect("run ms scale");
        assert_success(&out);
        wait_page(
            &tab,
            &format!(
                "{} === '{desired}' || {}?.querySelector('[data-manifest]')?.dataset.manifest === '{desired}'",
                row(&ka, "desired"),
                cell(&ka, "desired")
            ),
            Duration::from_secs(30),
            "the manifest's new desired capacity",
        );
        took.push(started.elapsed().as_millis());
        wait_page(
            &tab,
            &format!("{} === '{desired}'", row(&ka, "desired")),
            Duration::from_secs(30),
            "the new desired capacity in the status",
        );
        took_status.push(started.elapsed().as_millis());
    }
    assert_eq!(
        js(&tab, "window.__errors"),
        serde_json::json!([]),
        "script errors"
    );

    // Log out: the token is forgotten and the data gone.
    js(&tab, "document.getElementById('logout').click()");
    wait_page(
        &tab,
        "document.getElementById('login').offsetParent !== null && !document.getElementById('groups')",
        Duration::from_secs(5),
        "the login form after logging out",
    );
    assert_eq!(js(&tab, "sessionStorage.length"), Value::from(0));

    // Namespace B's token, in another tab: its group, and nothing of namespace A.
    let tab_b = browser.new_tab().expect("a second tab");
    tab_b.set_default_timeout(Duration::from_secs(30));
    tab_b.navigate_to(&format!("{}/", ctl.url())).unwrap();
    tab_b.wait_until_navigated().unwrap();
    tab_b.wait_for_element("#token").unwrap().click().unwrap();
    tab_b.type_str(TOKEN_B).unwrap().press_key("Enter").unwrap();
    wait_page(
        &tab_b,
        &format!(
            "document.querySelector('#groups tr[data-group=\"{}/secret\"] td[data-col=\"ready\"]')?.textContent === '1'",
            b.name
        ),
        Duration::from_secs(30),
        "B's group",
    );
    let text = js(&tab_b, "document.body.innerText").to_string();
    assert!(
        !text.contains(&a.name),
        "B's page shows namespace A:\n{text}"
    );

    // The controller restarts: the page says so, follows again by itself, and is live.
    ctl.restart(&opts);
    wait_page(
        &tab_b,
        "document.getElementById('conn').classList.contains('down')",
        Duration::from_secs(15),
        "that the stream broke",
    );
    ctl.wait_ready();
    wait_page(
        &tab_b,
        &format!(
            "document.getElementById('conn').classList.contains('live') && !!document.querySelector('#groups tr[data-group=\"{}/secret\"]')",
            b.name
        ),
        Duration::from_secs(40),
        "the page live again after the restart",
    );
    // The measurement of the page's own cost: redraws of the groups table with 1,000 groups
    // (made up in the page, after every check): the first, then one after a group changed.
    let redraw = js(
        &tab_b,
        "(() => { const g = [...S.store.groups.values()][0]; for (let i = 0; i < 1000; i++) { const c = structuredClone(g); c.metadata.name = 'g' + i; S.store.groups.set(keyOf(c), c); } let t = performance.now(); draw(); const first = performance.now() - t; const c = structuredClone(g); c.metadata.name = 'g7'; S.store.groups.set(keyOf(c), c); t = performance.now(); draw(); return [Math.round(first), Math.round(performance.now() - t), document.querySelectorAll('#groups tbody tr').length]; })()",
    );
    eprintln!("redraw of the groups table with 1,000 groups: [first ms, after one change ms, rows] = {redraw}");
    for (what, took) in [("manifest", &mut took), ("status", &mut took_status)] {
        took.sort();
        eprintln!(
            "ms scale -> page ({what}'s desired) over {} scales: min {} ms, median {} ms, max {} ms",
            took.len(),
            took[0],
            took[took.len() / 2],
            took[took.len() - 1]
        );
    }
}
