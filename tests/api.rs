//! API tests: the real HTTP endpoint on 127.0.0.1:0 over a temporary manifest directory.
//!
//! The watcher is replaced by `Server::reload`, which parses the directory the way the watcher
//! does and publishes the snapshot, so each test controls exactly what the endpoint sees; the
//! tests of a write's wait for its load run the real watcher (`watched`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use microscaler::apply::Context;
use microscaler::client::{Client, ClientError};
use microscaler::config::{Config, TokenConfig};
use microscaler::controller::{Controller, Handle};
use microscaler::manifest::parse_file;
use microscaler::watch::store::{Desired, Entry};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const LC: &str = "\
# the web tier's image
apiVersion: microscaler.io/v1
kind: LaunchConfiguration
metadata:
  name: web
spec:
  image: nginx:1.25   # pinned
";

const GROUP: &str = "\
apiVersion: microscaler.io/v1
kind: AutoScalingGroup
metadata:
  name: web
spec:
  launchConfiguration: web
  minSize: 1
  maxSize: 4
";

/// A running endpoint over a temporary directory.
struct Server {
    url: String,
    dir: tempfile::TempDir,
    tx: watch::Sender<Arc<Desired>>,
    shared: Arc<Context>,
    http: reqwest::Client,
    _controller: Handle,
}

impl Server {
    async fn start(tokens: Vec<TokenConfig>) -> Server {
        Server::start_config(Config {
            tokens,
            ..Config::default()
        })
        .await
    }

    /// A server with `config` (its `dir` replaced by a fresh temporary directory), with the
    /// autoscaler's routes (pushed metrics, `/v1/top`) mounted as in a running controller.
    async fn start_config(mut config: Config) -> Server {
        let dir = tempfile::tempdir().unwrap();
        config.dir = dir.path().to_path_buf();
        let (tx, rx) = watch::channel(Arc::new(Desired::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // The controller's wiring with the API alone: no engine, no reconciler, no status files.
        let controller = Controller::builder(config)
            .desired(rx)
            .without_reconciler()
            .without_status_writer()
            .without_autoscaler()
            .serve(listener)
            .spawn(CancellationToken::new());
        Server {
            url,
            dir,
            tx,
            shared: controller.api.clone(),
            http: {
                microscaler::util::crypto::install_provider();
                reqwest::Client::new()
            },
            _controller: controller,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    /// Parses every manifest under the directory and publishes the snapshot (the watcher's job).
    fn reload(&self) {
        let mut desired = Desired {
            loaded: true,
            ..Desired::default()
        };
        for file in yaml_files(self.dir.path()) {
            let text = std::fs::read_to_string(&file).unwrap();
            let parsed = parse_file(&file, &text);
            if !parsed.errors.is_empty() {
                desired.file_errors.insert(file.clone(), parsed.errors);
                continue;
            }
            for o in parsed.objects {
                desired.objects.insert(
                    o.object.key(),
                    Entry::new(o, file.clone(), chrono::Utc::now()),
                );
            }
        }
        self.tx.send_replace(Arc::new(desired));
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn apply(&self, token: Option<&str>, filename: &str, body: &str) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/apply", self.url))
            .header("X-Ms-Filename", filename)
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    async fn get(&self, token: Option<&str>, path: &str) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.url)).json(&body))
            .await
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every file under the directory with its content.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.insert(p.clone(), std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

fn token(t: &str, namespaces: &[&str]) -> TokenConfig {
    TokenConfig {
        token: t.into(),
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test]
async fn health_is_always_ok_and_readiness_waits_for_the_first_load() {
    let s = Server::start(vec![]).await;
    assert_eq!(s.get(None, "/healthz").await.0, 200);
    assert_eq!(s.get(None, "/readyz").await.0, 503);
    s.shared.ready.store(true, Ordering::Release);
    assert_eq!(s.get(None, "/readyz").await.0, 200);
}

#[tokio::test]
async fn applying_new_objects_creates_one_file_each_with_the_users_text() {
    let s = Server::start(vec![]).await;
    let body = format!("{LC}---\n# the group\n{GROUP}");
    let (status, r) = s.apply(None, "web.yaml", &body).await;
    assert_eq!(status, 200, "{r}");
    let actions: Vec<(&str, &str)> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["kind"].as_str().unwrap(), x["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("LaunchConfiguration", "created"),
            ("AutoScalingGroup", "created")
        ]
    );
    assert_eq!(s.read("default/launch-configuration-web.yaml"), LC);
    assert_eq!(
        s.read("default/autoscaling-group-web.yaml"),
        format!("---\n# the group\n{GROUP}")
    );
    // The watcher is told to reload at once.
    tokio::time::timeout(Duration::from_secs(1), s.shared.rescan.notified())
        .await
        .expect("apply asks for a rescan");
}

#[tokio::test]
async fn applying_a_changed_object_replaces_only_its_document_in_its_own_file() {
    let s = Server::start(vec![]).await;
    let head = format!("# shop: everything in one file\n{LC}");
    let tail = "# end of the shop\n";
    let group_doc = format!("{GROUP}status:\n  current: 1\n");
    let original = format!("{head}---\n{group_doc}{tail}");
    s.write("shop.yaml", &original);
    s.reload();

    let changed = GROUP.replace("maxSize: 4", "maxSize: 6");
    let (status, r) = s.apply(None, "group.yaml", &changed).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["results"][0]["action"], "configured");
    assert!(r["results"][0]["file"]
        .as_str()
        .unwrap()
        .ends_with("shop.yaml"));
    let now = s.read("shop.yaml");
    // Everything before the group's document is untouched, byte for byte.
    assert!(now.starts_with(&format!("{head}---\n")), "{now}");
    assert!(now.contains("  maxSize: 6\n"), "{now}");
    assert!(!now.contains("maxSize: 4"), "{now}");
    assert!(now.ends_with(tail), "{now}");
    // No new file was created for it.
    assert_eq!(tree(s.dir.path()).len(), 1);

    // The same spec again changes nothing.
    s.write("shop.yaml", &now);
    s.reload();
    let (status, r) = s.apply(None, "group.yaml", &changed).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["results"][0]["action"], "unchanged");
    assert_eq!(s.read("shop.yaml"), now);
}

#[tokio::test]
async fn one_invalid_document_rejects_the_whole_request_and_writes_nothing() {
    let s = Server::start(vec![]).await;
    s.write("shop.yaml", &format!("{LC}---\n{GROUP}"));
    s.reload();
    let before = tree(s.dir.path());

    let bad = GROUP
        .replace("name: web", "name: api")
        .replace("minSize: 1", "minSize: lots");
    let changed = GROUP.replace("maxSize: 4", "maxSize: 6");
    let body = format!("{changed}---\n{bad}");
    let (status, r) = s.apply(None, "mine.yaml", &body).await;
    assert_eq!(status, 422, "{r}");
    let errors = r["errors"].as_array().expect("errors listed");
    assert!(!errors.is_empty());
    assert_eq!(errors[0]["file"], "mine.yaml", "{r}");
    assert!(errors[0]["line"].as_u64().unwrap() > 9, "{r}");
    assert!(r["error"].as_str().unwrap().contains("mine.yaml"), "{r}");
    assert_eq!(tree(s.dir.path()), before);
}

#[tokio::test]
async fn tokens_are_required_and_limited_to_their_namespaces() {
    let s = Server::start(vec![token("shop-token", &["shop"]), token("root", &["*"])]).await;
    s.write("default/web.yaml", &format!("{LC}---\n{GROUP}"));
    s.write(
        "shop/web.yaml",
        &GROUP.replace("name: web\n", "name: web\n  namespace: shop\n"),
    );
    s.reload();

    let (status, r) = s.get(None, "/v1/asgs").await;
    assert_eq!(status, 401, "{r}");
    assert_eq!(s.get(Some("guess"), "/v1/asgs").await.0, 401);

    // A token sees only its namespaces.
    let (status, r) = s.get(Some("shop-token"), "/v1/asgs").await;
    assert_eq!(status, 200, "{r}");
    let names: Vec<&str> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["namespace"].as_str().unwrap_or("default"))
        .collect();
    assert_eq!(names, ["shop"]);
    let (status, r) = s.get(Some("shop-token"), "/v1/asgs/default/web").await;
    assert_eq!(status, 403, "{r}");
    assert!(r["error"].as_str().unwrap().contains("`default`"), "{r}");

    // ...and changes only its namespaces.
    let before = tree(s.dir.path());
    let (status, r) = s.apply(Some("shop-token"), "lc.yaml", LC).await;
    assert_eq!(status, 403, "{r}");
    assert!(r["error"].as_str().unwrap().contains("`default`"), "{r}");
    assert_eq!(tree(s.dir.path()), before);
    let shop_lc = LC.replace("name: web\n", "name: web\n  namespace: shop\n");
    let (status, r) = s.apply(Some("shop-token"), "lc.yaml", &shop_lc).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["results"][0]["action"], "created");
    assert!(s.path("shop/launch-configuration-web.yaml").exists());

    assert_eq!(
        s.get(Some("root"), "/v1/asgs").await.1["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn scaling_outside_the_bounds_is_refused_and_inside_is_written_to_the_file() {
    let s = Server::start(vec![]).await;
    s.write("shop.yaml", &format!("{LC}---\n{GROUP}"));
    s.reload();
    let before = s.read("shop.yaml");

    let (status, r) = s
        .post_json("/v1/asgs/default/web/scale", json!({"desired": 9}))
        .await;
    assert_eq!(status, 422, "{r}");
    assert!(r["error"].as_str().unwrap().contains("maxSize 4"), "{r}");
    assert_eq!(s.read("shop.yaml"), before);

    let (status, r) = s
        .post_json("/v1/asgs/default/web/scale", json!({"desired": 3}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["results"][0]["action"], "scaled");
    let now = s.read("shop.yaml");
    assert!(now.contains("  desiredCapacity: 3\n"), "{now}");
    assert!(now.starts_with(LC), "{now}");

    let (status, r) = s
        .post_json("/v1/asgs/default/nope/scale", json!({"desired": 1}))
        .await;
    assert_eq!(status, 404, "{r}");
    assert_eq!(
        r["error"],
        "autoscaling group `nope` not found in namespace `default`"
    );
}

#[tokio::test]
async fn stopping_a_group_sets_its_state_in_the_file() {
    let s = Server::start(vec![]).await;
    s.write("shop.yaml", &format!("{LC}---\n{GROUP}"));
    s.reload();
    let (status, r) = s.post_json("/v1/asgs/default/web/stop", json!({})).await;
    assert_eq!(status, 200, "{r}");
    assert!(s.read("shop.yaml").contains("  state: Stopped\n"));
}

#[tokio::test]
async fn deleting_removes_the_document_and_then_the_emptied_file() {
    let s = Server::start(vec![]).await;
    s.write("shop.yaml", &format!("{LC}---\n{GROUP}"));
    s.reload();

    let del = |path: &str| s.http.delete(format!("{}{path}", s.url));
    let (status, r) = s.send(del("/v1/asg/default/web")).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["results"][0]["action"], "deleted");
    assert_eq!(s.read("shop.yaml"), LC);
    // The watcher refuses to drop the last group at once when a directory empties, but an
    // explicit delete of the last group is the confirmation it waits for.
    assert!(
        s.shared
            .confirmations
            .is_confirmed(&microscaler::manifest::ObjectKey::new(
                microscaler::manifest::Kind::AutoScalingGroup,
                "default",
                "web"
            )),
        "{r}"
    );
    assert_eq!(r["warnings"].as_array().map(Vec::len), Some(0), "{r}");

    s.reload();
    let (status, r) = s.send(del("/v1/lc/default/web")).await;
    assert_eq!(status, 200, "{r}");
    assert!(!s.path("shop.yaml").exists());

    s.reload();
    let (status, r) = s.send(del("/v1/lc/default/web")).await;
    assert_eq!(status, 404, "{r}");
    assert_eq!(
        r["error"],
        "launch configuration `web` not found in namespace `default`"
    );
}

#[tokio::test]
async fn reads_carry_source_status_and_the_errors_of_the_objects_file() {
    let s = Server::start(vec![]).await;
    s.write("shop.yaml", &format!("{LC}---\n{GROUP}"));
    s.reload();
    // The file breaks: the group keeps running its last valid version, and says so.
    let mut desired = (**s.shared.desired.borrow()).clone();
    let broken = parse_file(&s.path("shop.yaml"), "kind: [");
    desired
        .file_errors
        .insert(s.path("shop.yaml"), broken.errors.clone());
    s.tx.send_replace(Arc::new(desired));

    let (status, r) = s.get(None, "/v1/asgs/default/web").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["spec"]["maxSize"], 4);
    // LC is 7 lines, then `---`: the group starts on line 9.
    assert_eq!(r["source"]["line"], 9, "{r}");
    assert!(r["status"].is_null());
    assert_eq!(r["errors"].as_array().unwrap().len(), broken.errors.len());
    let (_, p) = s.get(None, "/v1/problems").await;
    assert!(!p["fileErrors"].as_array().unwrap().is_empty(), "{p}");
    let (_, t) = s.get(None, "/v1/instancetypes").await;
    assert_eq!(t["items"][0]["name"], "t1.micro");
}

#[tokio::test]
async fn the_client_reports_manifest_errors_and_a_missing_reference_warning() {
    let s = Server::start(vec![]).await;
    let client = Client::new(&s.url, None);
    let err = client
        .apply(
            "bad.yaml",
            GROUP.replace("minSize: 1", "minSize: -1"),
            false,
        )
        .await
        .unwrap_err();
    match err {
        ClientError::Api { status, errors, .. } => {
            assert_eq!(status, 422);
            assert_eq!(errors[0].file, PathBuf::from("bad.yaml"));
        }
        other => panic!("unexpected {other}"),
    }
    // A group before its launch configuration is accepted, with a warning.
    let r = client
        .apply("g.yaml", GROUP.to_string(), false)
        .await
        .unwrap();
    assert_eq!(r.results[0].action, "created");
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert_eq!(r.warnings[0].field, "spec.launchConfiguration");

    // Dry run writes nothing.
    let r = client.apply("lc.yaml", LC.to_string(), true).await.unwrap();
    assert_eq!(r.results[0].action, "created");
    assert!(!s.path("default/launch-configuration-web.yaml").exists());
}

/// Runs the `ms` binary against the test server; returns (exit code, stdout, stderr).
async fn ms(s: &Server, args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ms"));
    cmd.arg("--server")
        .arg(&s.url)
        .args(args)
        // No stored login may leak in from the machine running the tests.
        .env("XDG_CONFIG_HOME", s.dir.path().join(".no-login"))
        .env_remove("MS_TOKEN");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_describes_and_reports_errors_one_line_each() {
    use microscaler::manifest::{Kind, ObjectKey};
    use microscaler::status::{GroupStatus, InstanceStatus};

    let s = Server::start(vec![]).await;
    s.write("shop.yaml", &format!("{LC}---\n{GROUP}"));
    s.reload();
    s.shared.status.write().unwrap().insert(
        ObjectKey::new(Kind::AutoScalingGroup, "default", "web"),
        GroupStatus {
            desired_capacity: 1,
            current: 1,
            ready: 1,
            updated: 1,
            instances: vec![InstanceStatus {
                name: "web-x1".into(),
                container_id: "0123456789ab".into(),
                zone: "local".into(),
                state: "running".into(),
                started_at: None,
                ports: vec![],
                up_to_date: true,
                image_id: None,
            }],
            ..GroupStatus::default()
        },
    );

    let (code, out, err) = ms(&s, &["get", "asgs"]).await;
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        "NAME   STATE     ZONES   MIN   MAX   DESIRED   CURRENT   READY   AGE"
    );
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("web    Started   -       1     4     1         1         1       "),
        "{out}"
    );

    let (code, out, _) = ms(&s, &["get", "instances", "-A"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("default     web-x1   web     local   running   0123456789ab"),
        "{out}"
    );

    let (code, out, err) = ms(&s, &["describe", "asg", "web"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Launch Configuration:  web (image nginx:1.25)\n"),
        "{out}"
    );
    assert!(out.contains("Current/Ready/Updated: 1 / 1 / 1\n"), "{out}");

    let (code, _, err) = ms(&s, &["describe", "asg", "nope"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: autoscaling group `nope` not found in namespace `default`\n"
    );

    let bad = s.path("bad.yml");
    std::fs::write(&bad, GROUP.replace("minSize: 1", "minSize: lots")).unwrap();
    let (code, out, err) = ms(&s, &["apply", "-f", bad.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert_eq!(out, "");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!("{}:7:", bad.display())) && lines[0].contains("spec.minSize"),
        "{err}"
    );
    assert_eq!(
        lines[1],
        format!("error: {}: 1 error, nothing was applied", bad.display())
    );

    let (code, out, err) = ms(&s, &["scale", "asg", "web", "--desired", "2"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "autoscalinggroup/web scaled\n"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Two tenants (issue 9): every hostile input is a clear refusal naming the limit and where it
// is configured, and nothing one tenant does reaches the other.

const TOKEN_A: &str = "team-a-token-0123456789";
const TOKEN_B: &str = "team-b-token-0123456789";

async fn tenants(namespaces_yaml: &str, api_yaml: &str) -> Server {
    let mut config: Config = serde_yaml_ng::from_str(&format!(
        "tokens:\n  - token: {TOKEN_A}\n    namespaces: [team-a]\n  - token: {TOKEN_B}\n    namespaces: [team-b]\nnamespaces: {namespaces_yaml}\napi: {api_yaml}\n"
    ))
    .unwrap();
    config.source = Some("/etc/microscaler.yaml".into());
    config.validate().unwrap();
    Server::start_config(config).await
}

fn lc_in(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  image: microscaler/busybox:latest\n{spec}"
    )
}

fn group_in(ns: &str, name: &str, min: u32, max: u32, desired: u32) -> String {
    format!(
        "apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  launchConfiguration: {name}\n  minSize: {min}\n  maxSize: {max}\n  desiredCapacity: {desired}\n"
    )
}

/// The error text of a refused request (message and every manifest error).
fn refusal(body: &Value) -> String {
    let mut out = body["error"].as_str().unwrap_or_default().to_string();
    for e in body["errors"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n{}: {}",
            e["field"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        ));
    }
    out
}

#[tokio::test]
async fn absurd_numbers_are_a_422_naming_the_field_never_a_dropped_connection() {
    let s = tenants("{}", "{}").await;
    for grace in [
        "\"1e30\"",
        "99999999999999999999d",
        "18446744073709551615s1s",
    ] {
        let (status, body) = s
            .apply(
                Some(TOKEN_A),
                "lc.yaml",
                &lc_in("team-a", "web", &format!("  stopGracePeriod: {grace}\n")),
            )
            .await;
        assert_eq!(status, 422, "{grace}: {body}");
        assert!(
            refusal(&body).contains("spec.stopGracePeriod: duration"),
            "{grace}: {body}"
        );
    }
    let policy = "apiVersion: microscaler.io/v1\nkind: ScalingPolicy\nmetadata: {name: cpu, namespace: team-a}\nspec:\n  autoScalingGroup: web\n  metric: CPU\n  samplingWindow: 10000000000000\n  upperThreshold: 80\n  lowerThreshold: 30\n  scaleOutStep: 1\n  scaleInStep: 1\n";
    let (status, body) = s.apply(Some(TOKEN_A), "policy.yaml", policy).await;
    assert_eq!(status, 422, "{body}");
    assert!(refusal(&body).contains("spec.samplingWindow"), "{body}");
    assert!(tree(s.dir.path()).is_empty(), "nothing was written");
}

#[tokio::test]
async fn host_access_is_refused_by_default_and_granted_per_namespace() {
    let s = tenants(
        "{team-b: {allowHostNetwork: true, allowedHostIps: [0.0.0.0], hostPortRange: 8000-8999}}",
        "{}",
    )
    .await;
    let cases = [
        (
            "  network: host\n",
            "spec.network: network `host` is not allowed in namespace `team-a`",
            "`namespaces.team-a.allowHostNetwork` in /etc/microscaler.yaml",
        ),
        (
            "  network: container:0123abcd\n",
            "network `container:0123abcd` is not allowed",
            "allowContainerNetwork",
        ),
        (
            "  ports: [{containerPort: 80, hostIp: 0.0.0.0}]\n",
            "spec.ports[0].hostIp: hostIp 0.0.0.0 is not allowed in namespace `team-a`",
            "allowedHostIps",
        ),
        (
            "  ports: [{containerPort: 80, hostPort: 8080}]\n",
            "spec.ports[0].hostPort: hostPort 8080 is outside the range 30000-32767",
            "hostPortRange",
        ),
        (
            "  ports: [{containerPort: 80, hostPort: 56785}]\n",
            "hostPort 56785 is the controller's own port",
            "",
        ),
    ];
    for (spec, what, wher) in cases {
        let (status, body) = s
            .apply(Some(TOKEN_A), "lc.yaml", &lc_in("team-a", "web", spec))
            .await;
        assert_eq!(status, 422, "{spec}: {body}");
        let text = refusal(&body);
        assert!(text.contains(what) && text.contains(wher), "{spec}: {text}");
    }
    // The administrator granted team-b host networking, any address and ports 8000-8999.
    let (status, body) = s
        .apply(
            Some(TOKEN_B),
            "lc.yaml",
            &lc_in(
                "team-b",
                "web",
                "  network: host\n  ports: [{containerPort: 80, hostIp: 0.0.0.0, hostPort: 8080}]\n",
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn namespace_quotas_refuse_objects_and_capacity_beyond_them() {
    let s = tenants(
        "{team-a: {maxObjects: 3, maxContainers: 4, maxCpus: 2}}",
        "{}",
    )
    .await;
    // 3 containers of 0.5 CPU: within 4 containers and 2 CPUs.
    let ok = format!(
        "{}---\n{}",
        lc_in("team-a", "web", "  resources: {cpus: 0.5, memoryMiB: 64}\n"),
        group_in("team-a", "web", 1, 10, 3)
    );
    let (status, body) = s.apply(Some(TOKEN_A), "web.yaml", &ok).await;
    assert_eq!(status, 200, "{body}");
    s.reload();
    // 5 containers would exceed maxContainers 4.
    let (status, body) = s
        .send(
            s.http
                .post(format!("{}/v1/asgs/team-a/web/scale", s.url))
                .bearer_auth(TOKEN_A)
                .json(&json!({"desired": 5})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        refusal(&body).contains("namespace `team-a` may run at most 4 containers (maxContainers, set by `namespaces.team-a.maxContainers` in /etc/microscaler.yaml)"),
        "{body}"
    );
    // 4 containers of 0.6 CPU would exceed maxCpus 2.
    let more_cpu = lc_in(
        "team-a",
        "web",
        "  resources: {cpus: 0.75, memoryMiB: 64}\n",
    );
    let (status, body) = s.apply(Some(TOKEN_A), "web.yaml", &more_cpu).await;
    assert_eq!(status, 422, "{body}");
    assert!(refusal(&body).contains("at most 2 CPUs (maxCpus"), "{body}");
    // Two more objects would make 4 > maxObjects 3.
    let two = format!(
        "{}---\n{}",
        lc_in("team-a", "api", ""),
        lc_in("team-a", "db", "")
    );
    let (status, body) = s.apply(Some(TOKEN_A), "more.yaml", &two).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        refusal(&body).contains("may hold at most 3 objects (maxObjects"),
        "{body}"
    );
    // The other tenant's namespace has its own (default) quotas.
    let (status, body) = s
        .apply(Some(TOKEN_B), "web.yaml", &ok.replace("team-a", "team-b"))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn pushed_metric_names_are_capped_per_namespace() {
    let s = tenants("{team-a: {maxMetricNames: 2}}", "{}").await;
    let web = format!(
        "{}---\n{}",
        lc_in("team-a", "web", ""),
        group_in("team-a", "web", 0, 3, 0)
    );
    assert_eq!(s.apply(Some(TOKEN_A), "web.yaml", &web).await.0, 200);
    s.reload();
    let push = |name: &str| {
        s.http
            .post(format!("{}/v1/metrics/team-a/web", s.url))
            .bearer_auth(TOKEN_A)
            .json(&json!({"name": name, "value": 1.0}))
    };
    assert_eq!(s.send(push("q1")).await.0, 200);
    assert_eq!(s.send(push("q2")).await.0, 200);
    assert_eq!(s.send(push("q1")).await.0, 200, "a known name is fine");
    let (status, body) = s.send(push("q3")).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        refusal(&body).contains(
            "maxMetricNames 2, set by `namespaces.team-a.maxMetricNames` in /etc/microscaler.yaml"
        ),
        "{body}"
    );
}

#[tokio::test]
async fn writes_are_rate_limited_per_token() {
    let s = tenants("{}", "{writesPerSecond: 0.1, writeBurst: 2}").await;
    for i in 0..2 {
        let lc = lc_in("team-a", &format!("w{i}"), "");
        assert_eq!(s.apply(Some(TOKEN_A), "lc.yaml", &lc).await.0, 200);
    }
    let (status, body) = s
        .apply(Some(TOKEN_A), "lc.yaml", &lc_in("team-a", "w3", ""))
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        refusal(&body).contains("at most 0.1 per second, 2 at once, a change costing one per 64 KiB (api.writesPerSecond, api.writeBurst in /etc/microscaler.yaml)"),
        "{body}"
    );
    // The other tenant's token has its own budget, and reads are not limited.
    let (status, body) = s
        .apply(Some(TOKEN_B), "lc.yaml", &lc_in("team-b", "w", ""))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.get(Some(TOKEN_A), "/v1/lcs").await.0, 200);
}

#[tokio::test]
async fn one_tenants_pending_write_never_holds_up_anothers() {
    let s = tenants("{}", "{}").await;
    let b = format!(
        "{}---\n{}",
        lc_in("team-b", "web", ""),
        group_in("team-b", "web", 0, 5, 1)
    );
    assert_eq!(s.apply(Some(TOKEN_B), "web.yaml", &b).await.0, 200);
    s.reload();
    // Team A's edits are stuck (as behind a slow, large apply): team B still scales at once.
    let held = s.shared.write_locks.lock(["team-a"]).await;
    let a = tokio::spawn({
        let (http, url) = (s.http.clone(), s.url.clone());
        async move {
            http.post(format!("{url}/v1/apply"))
                .bearer_auth(TOKEN_A)
                .body(lc_in("team-a", "web", ""))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let scale = s.send(
        s.http
            .post(format!("{}/v1/asgs/team-b/web/scale", s.url))
            .bearer_auth(TOKEN_B)
            .json(&json!({"desired": 3})),
    );
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), scale)
        .await
        .expect("team b's scale does not wait for team a's write");
    assert_eq!(status, 200, "{body}");
    assert!(
        !a.is_finished(),
        "team a's apply waits for its own namespace"
    );
    drop(held);
    assert_eq!(a.await.unwrap(), 200);
}

#[tokio::test]
async fn every_read_needs_a_token_and_health_reports_stalled_loops() {
    let s = tenants("{}", "{}").await;
    for path in [
        "/v1/top",
        "/v1/asgs",
        "/v1/instances",
        "/v1/problems",
        "/v1/instancetypes",
    ] {
        assert_eq!(s.get(None, path).await.0, 401, "{path}");
        assert_eq!(
            s.get(Some("team-a-token-0123456780"), path).await.0,
            401,
            "{path}"
        );
        assert_eq!(s.get(Some("x"), path).await.0, 401, "{path}");
        assert_eq!(s.get(Some(TOKEN_A), path).await.0, 200, "{path}");
    }
    // Liveness follows the loops: one silent past its bound fails /healthz, by name.
    let beat = s
        .shared
        .liveness
        .beat("zone a observer", Duration::from_millis(50));
    beat.touch();
    let (status, body) = s.get(None, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.as_str().unwrap().contains("zone a observer: ok"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (status, body) = s.get(None, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.as_str()
            .unwrap()
            .contains("zone a observer: NOT LIVE (no progress for"),
        "{body}"
    );
}

#[tokio::test]
async fn stopping_a_group_waits_for_its_own_file_not_for_its_namespace() {
    let s = tenants("{}", "{}").await;
    let a = format!(
        "{}---\n{}",
        lc_in("team-a", "web", ""),
        group_in("team-a", "web", 0, 5, 1)
    );
    assert_eq!(s.apply(Some(TOKEN_A), "web.yaml", &a).await.0, 200);
    s.reload();
    let stop = |verb: &'static str| {
        let (http, url) = (s.http.clone(), s.url.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/v1/asgs/team-a/web/{verb}"))
                .bearer_auth(TOKEN_A)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // Team A's namespace is held (as by a slow apply of other files, whose quota check needs
    // it): stopping, which checks no quota, edits the group's file at once.
    let namespace = s.shared.write_locks.lock(["team-a"]).await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), stop("stop"))
        .await
        .expect("a stop does not wait for the namespace");
    assert_eq!(stopped.unwrap(), 200);
    drop(namespace);
    assert!(s
        .read("team-a/autoscaling-group-web.yaml")
        .contains("state: Stopped"));
    s.reload();
    // The group's file is held by another edit: the start waits for it.
    let file = s.path("team-a/autoscaling-group-web.yaml");
    let held = s.shared.file_locks.lock([file.as_path()]).await;
    let started = stop("start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!started.is_finished(), "an edit of a held file waits");
    drop(held);
    assert_eq!(started.await.unwrap(), 200);
    assert!(s
        .read("team-a/autoscaling-group-web.yaml")
        .contains("state: Started"));
}

/// A controller with the API and the real directory watcher (no engines, no reconciler).
async fn watched(dir: &Path) -> (String, Handle) {
    let config = Config {
        dir: dir.to_path_buf(),
        debounce: microscaler::manifest::DurationSpec(Duration::from_millis(1)),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let controller = Controller::builder(config)
        .without_reconciler()
        .without_status_writer()
        .without_autoscaler()
        .serve(listener)
        .spawn(CancellationToken::new());
    let mut desired = controller.api.desired.clone();
    tokio::time::timeout(Duration::from_secs(30), desired.wait_for(|d| d.loaded))
        .await
        .expect("the first load")
        .unwrap();
    // Without the change feed, readiness is the caller's to set.
    controller.api.ready.store(true, Ordering::Release);
    (url, controller)
}

#[tokio::test]
async fn a_write_answers_once_the_watcher_loaded_it_even_while_other_files_keep_changing() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _controller) = watched(dir.path()).await;
    // Another file changes all the time, so the watcher keeps loading and publishing: a load
    // that began before a write publishes after it, and must not count as the write's.
    let churning = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let churn = {
        let (churning, path) = (churning.clone(), dir.path().join("churn.yaml"));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while churning.load(Ordering::Relaxed) {
                i += 1;
                let spec = format!("  env: {{N: \"{i}\"}}\n");
                std::fs::write(&path, lc_in("churn", "churn", &spec)).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    microscaler::util::crypto::install_provider();
    let http = reqwest::Client::new();
    for i in 0..20 {
        let applied = http
            .post(format!("{url}/v1/apply"))
            .body(lc_in("default", &format!("web-{i}"), ""))
            .send()
            .await
            .unwrap();
        assert_eq!(applied.status().as_u16(), 200);
        let got = http
            .get(format!("{url}/v1/lcs/default/web-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.status().as_u16(),
            200,
            "write {i} was answered before the watcher had loaded it"
        );
    }
    churning.store(false, Ordering::Relaxed);
    churn.join().unwrap();
}

#[tokio::test]
async fn the_dashboard_is_public_and_its_data_follows_the_token() {
    use microscaler::manifest::{Kind, ObjectKey};
    use microscaler::status::GroupStatus;

    let s = Server::start(vec![token("shop-token", &["shop"]), token("root", &["*"])]).await;
    s.write("default/web.yaml", &format!("{LC}---\n{GROUP}"));
    s.write(
        "shop/web.yaml",
        &GROUP.replace("name: web\n", "name: web\n  namespace: shop\n"),
    );
    s.reload();

    // The page itself carries no data: no token needed, nothing loaded from elsewhere.
    let page = s.http.get(format!("{}/", s.url)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
    assert!(page.text().await.unwrap().contains("src=\"ui/app.js\""));

    // What the token may see.
    assert_eq!(s.get(None, "/v1/whoami").await.0, 401);
    let (status, who) = s.get(Some("shop-token"), "/v1/whoami").await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["allNamespaces"], false);
    assert_eq!(who["namespaces"], json!(["shop"]));
    assert_eq!(
        s.get(Some("root"), "/v1/whoami").await.1["allNamespaces"],
        true
    );

    // A group's history: what its published status said, for its namespace's tokens only.
    let key = ObjectKey::new(Kind::AutoScalingGroup, "shop", "web");
    s._controller.status.publish(
        &key,
        GroupStatus {
            desired_capacity: 3,
            current: 2,
            ready: 1,
            ..GroupStatus::default()
        },
    );
    let (status, h) = s
        .get(Some("shop-token"), "/v1/history/shop/web?hours=1")
        .await;
    assert_eq!(status, 200, "{h}");
    let last = h["items"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(
        (&last["desired"], &last["current"], &last["ready"]),
        (&json!(3), &json!(2), &json!(1))
    );
    assert_eq!(
        s.get(Some("shop-token"), "/v1/history/default/web").await.0,
        403
    );
    assert_eq!(
        s.get(Some("shop-token"), "/v1/history/shop/nope").await.0,
        404
    );

    // One watch over several namespaces: each is checked.
    let watch = |t: &'static str| {
        s.http
            .get(format!(
                "{}/v1/watch?namespace=shop,default&kind=asgs",
                s.url
            ))
            .bearer_auth(t)
            .send()
    };
    assert_eq!(watch("shop-token").await.unwrap().status().as_u16(), 403);
    let mut resp = watch("root").await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut text = String::new();
    while !text.contains("SYNCED") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("the current state within 10 s")
            .unwrap()
            .expect("the stream goes on");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let namespaces: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "ADDED")
        .map(|e| {
            e["object"]["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        })
        .collect();
    assert_eq!(namespaces, ["default", "shop"]);

    // A controller without tokens (loopback only) needs no login.
    let open = Server::start(vec![]).await;
    let (status, who) = open.get(None, "/v1/whoami").await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(
        (&who["allNamespaces"], &who["tokenRequired"]),
        (&json!(true), &json!(false))
    );
}

#[tokio::test]
async fn every_metrics_series_has_a_panel_in_the_grafana_dashboard() {
    let s = Server::start(vec![]).await;
    let text = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json"),
    )
    .unwrap();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 8, "{text}");
    // Series without samples yet are not in a scrape: the documented table lists them all
    // (`microscaler_group_min_size`, `_max_size` shares the first two words).
    let operations =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .unwrap();
    for row in operations
        .lines()
        .filter(|l| l.starts_with("| `microscaler_"))
    {
        let cell = row.split('|').nth(1).unwrap_or_default();
        let listed: Vec<&str> = cell.split('`').skip(1).step_by(2).collect();
        let first = listed[0];
        let prefix: String = first.split('_').take(2).collect::<Vec<_>>().join("_");
        for n in listed {
            names.push(if n.starts_with('_') {
                format!("{prefix}{n}")
            } else {
                n.to_string()
            });
        }
    }
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !dashboard.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "series without a panel in docs/grafana-dashboard.json: {missing:?}"
    );
}
