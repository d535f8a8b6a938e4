//! The watch stream (`GET /v1/watch`) of the real HTTP endpoint on 127.0.0.1:0: the current
//! state, `SYNCED`, then each change; the namespaces a token may watch; how fast a change
//! reaches a watcher.
//!
//! As in `tests/api.rs`, the watcher is replaced by publishing desired-state snapshots directly,
//! so each test controls exactly what the endpoint sees (and when).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use microscaler::client::{Client, ClientError};
use microscaler::config::{Config, TokenConfig};
use microscaler::controller::{Controller, Handle};
use microscaler::manifest::parse_file;
use microscaler::watch::store::{Desired, Entry};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn lc(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  image: nginx\n"
    )
}

/// A snapshot holding the objects of `texts`.
fn desired(texts: &[String]) -> Arc<Desired> {
    let mut d = Desired {
        loaded: true,
        ..Desired::default()
    };
    for (i, t) in texts.iter().enumerate() {
        let file = Path::new("/manifests").join(format!("{i}.yaml"));
        for o in parse_file(&file, t).objects {
            d.objects.insert(
                o.object.key(),
                Entry::new(o, file.clone(), chrono::Utc::now()),
            );
        }
    }
    Arc::new(d)
}

async fn start(tokens: Vec<TokenConfig>) -> (String, watch::Sender<Arc<Desired>>, Handle) {
    let (tx, rx) = watch::channel(Arc::new(Desired::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = Controller::builder(Config {
        tokens,
        ..Config::default()
    })
    .desired(rx)
    .without_reconciler()
    .without_status_writer()
    .without_autoscaler()
    .serve(listener)
    .spawn(CancellationToken::new());
    (url, tx, handle)
}

/// Reads JSON lines of `stream` into a channel, from a task.
fn pump(mut stream: microscaler::client::Stream) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _ = stream
            .lines(|l| {
                if l.trim().is_empty() {
                    return true;
                }
                tx.send(serde_json::from_str(l).unwrap_or(Value::Null))
                    .is_ok()
            })
            .await;
    });
    rx
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("the stream is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sends_the_state_then_synced_then_each_change() {
    let (url, tx, _h) = start(vec![]).await;
    tx.send_replace(desired(&[lc("shop", "web")]));
    let client = Client::new(&url, None);
    let mut rx = pump(client.watch("lcs", Some("shop")).await.unwrap());
    let first = next(&mut rx).await;
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["kind"], "LaunchConfiguration");
    assert_eq!(first["object"]["metadata"]["name"], "web");
    assert_eq!(next(&mut rx).await["type"], "SYNCED");

    // Measure: from publishing a snapshot to the watcher reading its event.
    let mut latencies = Vec::new();
    for i in 0..10 {
        let mut texts = vec![lc("shop", "web"), lc("other", "not-mine")];
        texts.extend((0..=i).map(|j| lc("shop", &format!("api{j}"))));
        let t = Instant::now();
        tx.send_replace(desired(&texts));
        let ev = next(&mut rx).await;
        latencies.push(t.elapsed());
        assert_eq!(ev["type"], "ADDED", "{ev}");
        assert_eq!(ev["object"]["metadata"]["name"], format!("api{i}"), "{ev}");
    }
    latencies.sort();
    eprintln!(
        "watch latency (snapshot published -> event read), 10 changes: median {:?}, max {:?}",
        latencies[5], latencies[9]
    );

    tx.send_replace(desired(&[]));
    let mut deleted = 0;
    while deleted < 11 {
        let ev = next(&mut rx).await;
        assert_eq!(ev["type"], "DELETED", "{ev}");
        assert_ne!(ev["object"]["metadata"]["namespace"], "other");
        deleted += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_is_a_modified_group_and_its_instances_come_and_go() {
    use microscaler::status::{GroupStatus, InstanceStatus};
    use microscaler::util::unpoisoned::RwLockExt;
    let (url, tx, h) = start(vec![]).await;
    let d = desired(&[
        lc("shop", "web"),
        group("shop", "web"),
        group("shop", "api"),
    ]);
    let key = d
        .objects
        .keys()
        .find(|k| k.name == "web" && k.kind.as_str() == "AutoScalingGroup")
        .unwrap()
        .clone();
    tx.send_replace(d);
    let mut rx = pump(
        Client::new(&url, None)
            .watch("asgs,instances", Some("shop"))
            .await
            .unwrap(),
    );
    let mut initial = 0;
    while next(&mut rx).await["type"] != "SYNCED" {
        initial += 1;
    }
    assert_eq!(initial, 2, "two groups, no instance yet");
    let instance = |name: &str| InstanceStatus {
        name: name.into(),
        container_id: "0123456789ab".into(),
        zone: "a".into(),
        state: "running".into(),
        started_at: None,
        ports: vec![],
        up_to_date: true,
        image_id: None,
        ready: true,
        health: None,
        protected_until: None,
    };
    let publish = |names: &[&str]| {
        h.api.status.write_locked().insert(
            key.clone(),
            GroupStatus {
                current: names.len() as u32,
                instances: names.iter().map(|n| instance(n)).collect(),
                ..GroupStatus::default()
            },
        );
    };
    publish(&["web-1"]);
    let mut got: Vec<(String, String, String)> = Vec::new();
    for _ in 0..2 {
        let ev = next(&mut rx).await;
        let name = ev["object"]["metadata"]["name"]
            .as_str()
            .or(ev["object"]["name"].as_str())
            .unwrap()
            .to_string();
        got.push((
            ev["type"].as_str().unwrap().into(),
            ev["kind"].as_str().unwrap().into(),
            name,
        ));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("ADDED".into(), "Instance".into(), "web-1".into()),
            ("MODIFIED".into(), "AutoScalingGroup".into(), "web".into()),
        ]
    );
    publish(&["web-2"]);
    let mut types: Vec<String> = Vec::new();
    for _ in 0..3 {
        let ev = next(&mut rx).await;
        types.push(format!(
            "{} {}",
            ev["type"].as_str().unwrap(),
            ev["object"]["name"].as_str().unwrap_or("group")
        ));
    }
    types.sort();
    assert_eq!(types, ["ADDED web-2", "DELETED web-1", "MODIFIED group"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_watches_only_its_namespaces() {
    let tokens = vec![
        TokenConfig {
            token: "admin".into(),
            namespaces: vec!["*".into()],
        },
        TokenConfig {
            token: "shop".into(),
            namespaces: vec!["shop".into()],
        },
    ];
    let (url, tx, _h) = start(tokens).await;
    tx.send_replace(desired(&[lc("shop", "web"), lc("other", "x")]));
    let shop = Client::new(&url, Some("shop".into()));
    match shop.watch("lcs", None).await {
        Err(ClientError::Api {
            status: 403,
            message,
            ..
        }) => {
            assert!(message.contains("?namespace=NS"), "{message}")
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        shop.watch("lcs", Some("other")).await,
        Err(ClientError::Api { status: 403, .. })
    ));
    let mut rx = pump(shop.watch("lcs", Some("shop")).await.unwrap());
    assert_eq!(next(&mut rx).await["object"]["metadata"]["name"], "web");
    assert_eq!(next(&mut rx).await["type"], "SYNCED");

    let admin = Client::new(&url, Some("admin".into()));
    let mut rx = pump(admin.watch("lcs", None).await.unwrap());
    let mut names = Vec::new();
    loop {
        let ev = next(&mut rx).await;
        if ev["type"] == "SYNCED" {
            break;
        }
        names.push(
            ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    names.sort();
    assert_eq!(names, ["web", "x"]);
    assert!(matches!(
        Client::new(&url, None).watch("lcs", None).await,
        Err(ClientError::Api { status: 401, .. })
    ));
}

fn group(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  launchConfiguration: web\n  minSize: 1\n  maxSize: 10\n  desiredCapacity: 5\n"
    )
}

/// CPU the watch hub costs while a watcher is connected and nothing changes, and the time of a
/// `/metrics` scrape, with `groups` groups of 5 instances each
/// (`cargo test --release --test watch_api -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_the_cost_of_an_idle_watch() {
    use microscaler::status::{GroupStatus, InstanceStatus};
    use microscaler::util::unpoisoned::RwLockExt;
    for groups in [100usize, 1000, 3000] {
        let (url, tx, h) = start(vec![]).await;
        let texts: Vec<String> = (0..groups)
            .map(|i| group("bench", &format!("g{i}")))
            .collect();
        let d = desired(&texts);
        {
            let mut board = h.api.status.write_locked();
            for key in d.objects.keys() {
                let instances = (0..5)
                    .map(|j| InstanceStatus {
                        name: format!("{}-{j}", key.name),
                        container_id: "0123456789ab".into(),
                        zone: "a".into(),
                        state: "running".into(),
                        started_at: Some(chrono::Utc::now()),
                        ports: vec!["127.0.0.1:30000->80/tcp".into()],
                        up_to_date: true,
                        image_id: None,
                        ready: true,
                        health: None,
                        protected_until: None,
                    })
                    .collect();
                board.insert(
                    key.clone(),
                    GroupStatus {
                        desired_capacity: 5,
                        current: 5,
                        ready: 5,
                        instances,
                        ..GroupStatus::default()
                    },
                );
            }
        }
        tx.send_replace(d);
        let mut rx = pump(
            Client::new(&url, None)
                .watch("asgs,instances", None)
                .await
                .unwrap(),
        );
        while next(&mut rx).await["type"] != "SYNCED" {}
        let cpu = || {
            let mut u: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
            Duration::from_secs(u.ru_utime.tv_sec as u64 + u.ru_stime.tv_sec as u64)
                + Duration::from_micros(u.ru_utime.tv_usec as u64 + u.ru_stime.tv_usec as u64)
        };
        let (c0, t0) = (cpu(), Instant::now());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let used = cpu() - c0;
        eprintln!(
            "idle watch, {groups} groups x 5 instances: {:.1}% of one core",
            100.0 * used.as_secs_f64() / t0.elapsed().as_secs_f64()
        );
        drop(rx);
        microscaler::util::crypto::install_provider();
        let http = reqwest::Client::new();
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..5 {
            bytes = http
                .get(format!("{url}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .len();
        }
        eprintln!(
            "/metrics, {groups} groups x 5 instances: {:?} per scrape, {bytes} bytes",
            t.elapsed() / 5
        );
    }
}
