//! The runner against the in-memory engine (observed through a real observer) and real HTTP
//! servers on 127.0.0.1: thresholds, grace, bounded concurrency, forgetting gone instances.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::*;
use crate::engine::memory::MemoryEngine;
use crate::engine::observe::{fixed_connector, observe};
use crate::engine::{labels, ContainerSpec, Engine};
use crate::manifest::{Kind, PortSpec};

/// Records the groups the runner enqueues.
#[derive(Default)]
struct Recorder(Mutex<Vec<ObjectKey>>);

impl Enqueue for Recorder {
    fn enqueue(&self, key: ObjectKey) {
        self.0.lock().unwrap().push(key);
    }
}

/// An HTTP server on 127.0.0.1 answering with the status in `status` (read per request); it
/// counts connections open at once in `open`/`max_open`, holding each for `hold`.
struct Server {
    port: u16,
    status: Arc<AtomicU16>,
    max_open: Arc<AtomicUsize>,
}

async fn server(hold: Duration) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let status = Arc::new(AtomicU16::new(200));
    let open = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let (st, op, mx) = (status.clone(), open.clone(), max_open.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (st, op, mx) = (st.clone(), op.clone(), mx.clone());
            tokio::spawn(async move {
                let now = op.fetch_add(1, Ordering::SeqCst) + 1;
                mx.fetch_max(now, Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(hold).await;
                let code = st.load(Ordering::SeqCst);
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\n\r\n").as_bytes())
                    .await;
                op.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Server {
        port,
        status,
        max_open,
    }
}

fn manifests(health_check: &str, grace: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1
kind: LaunchConfiguration
metadata: {{name: web}}
spec:
  image: img
  ports: [80]
---
apiVersion: microscaler.io/v1
kind: AutoScalingGroup
metadata: {{name: web}}
spec:
  launchConfiguration: web
  minSize: 1
  maxSize: 50
  healthCheckGracePeriod: {grace}
  healthCheck:
{health_check}"
    )
}

fn key() -> ObjectKey {
    ObjectKey::new(Kind::AutoScalingGroup, "default", "web")
}

struct Rig {
    engine: MemoryEngine,
    verdicts: Arc<Verdicts>,
    queue: Arc<Recorder>,
    _desired: watch::Sender<Arc<Desired>>,
    shutdown: CancellationToken,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn rig(yaml: &str, concurrency: usize) -> Rig {
    let engine = MemoryEngine::new();
    let zone = Arc::new(Zone::new("a"));
    let queue = Arc::new(Recorder::default());
    let shutdown = CancellationToken::new();
    let (tx, rx) = watch::channel(Arc::new(crate::watch::store::test_snapshot(yaml)));
    tokio::spawn(observe(
        zone.clone(),
        fixed_connector(Arc::new(engine.clone())),
        Duration::from_secs(60),
        queue.clone(),
        Arc::new(Vec::new),
        shutdown.clone(),
    ));
    zone.observed().await;
    let verdicts = Arc::new(Verdicts::default());
    let runner = ProbeRunner::new(
        rx,
        vec![zone],
        queue.clone(),
        verdicts.clone(),
        Settings {
            concurrency,
            rescan: Duration::from_millis(50),
            hosts: HashMap::new(),
        },
    );
    tokio::spawn(runner.run(Beat::detached(), shutdown.clone()));
    Rig {
        engine,
        verdicts,
        queue,
        _desired: tx,
        shutdown,
    }
}

/// Starts an instance of group `web` whose port 80 is published on `host_port`.
async fn instance(engine: &MemoryEngine, n: usize, host_port: u16) -> String {
    let labels = BTreeMap::from([
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (labels::NAMESPACE.to_string(), "default".to_string()),
        (labels::GROUP.to_string(), "web".to_string()),
    ]);
    engine
        .create_and_start(&ContainerSpec {
            name: format!("web-{n}"),
            image: "img".into(),
            labels,
            ports: vec![PortSpec {
                container_port: 80,
                host_port: Some(host_port),
                host_ip: None,
                protocol: None,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .id
}

/// Waits up to `within` for `id`'s verdict to satisfy `want`.
async fn until(
    verdicts: &Verdicts,
    id: &str,
    within: Duration,
    want: impl Fn(&Verdict) -> bool,
) -> Verdict {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = verdicts.get(id) {
            if want(&v) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "verdict of {id} not reached within {within:?}: {:?}",
            verdicts.get(id)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn http_readiness_and_liveness_follow_the_thresholds_and_enqueue_the_group() {
    let s = server(Duration::ZERO).await;
    let hc = "    type: HTTP\n    port: 80\n    path: /healthz\n    interval: 1s\n    timeout: 500ms\n    unhealthyThreshold: 2\n";
    let r = rig(&manifests(hc, "0s"), 8).await;
    let id = instance(&r.engine, 1, s.port).await;
    let v = until(&r.verdicts, &id, Duration::from_secs(3), |v| {
        v.ready == Some(true)
    })
    .await;
    assert_eq!(v.summary, "ready: HTTP 200 from GET /healthz");
    assert!(r.queue.0.lock().unwrap().contains(&key()));
    r.queue.0.lock().unwrap().clear();

    // The app breaks: two failures in a row make it not ready and failed (final).
    s.status.store(500, Ordering::SeqCst);
    let broke = Instant::now();
    let v = until(&r.verdicts, &id, Duration::from_secs(4), |v| {
        v.liveness_failed
    })
    .await;
    assert!(
        broke.elapsed() < Duration::from_millis(2 * 1000 + 500),
        "{:?}",
        broke.elapsed()
    );
    assert_eq!(v.ready, Some(false));
    assert_eq!(
        v.summary,
        "liveness failed 2 times in a row: HTTP 500 from GET /healthz"
    );
    assert!(r.queue.0.lock().unwrap().contains(&key()));
    // It stays failed even when the app answers again.
    s.status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(r.verdicts.get(&id).unwrap().liveness_failed);
}

#[tokio::test]
async fn no_liveness_verdict_before_the_grace_period_ends() {
    let s = server(Duration::ZERO).await;
    s.status.store(503, Ordering::SeqCst);
    let hc = "    liveness:\n      type: HTTP\n      port: 80\n      interval: 1s\n      timeout: 500ms\n      unhealthyThreshold: 1\n";
    let r = rig(&manifests(hc, "3s"), 8).await;
    let started = Instant::now();
    let id = instance(&r.engine, 1, s.port).await;
    let v = until(&r.verdicts, &id, Duration::from_secs(6), |v| {
        v.liveness_failed
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "failed after {:?}, inside the grace period",
        started.elapsed()
    );
    assert_eq!(v.ready, None, "no readiness probe");
}

#[tokio::test]
async fn probes_in_flight_never_exceed_the_concurrency() {
    // Each answer takes 300 ms; 12 instances at a 1 s interval want 12 probes at once.
    let s = server(Duration::from_millis(300)).await;
    let hc = "    type: HTTP\n    port: 80\n    interval: 1s\n    timeout: 900ms\n";
    let r = rig(&manifests(hc, "0s"), 3).await;
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(instance(&r.engine, n, s.port).await);
    }
    for id in &ids {
        until(&r.verdicts, id, Duration::from_secs(10), |v| {
            v.ready == Some(true)
        })
        .await;
    }
    let max = s.max_open.load(Ordering::SeqCst);
    assert!((1..=3).contains(&max), "{max} probes at once");
}

#[tokio::test]
async fn gone_instances_are_forgotten_and_unpublished_ports_give_no_verdict() {
    let hc = "    type: TCP\n    port: 8080\n    interval: 1s\n    unhealthyThreshold: 1\n";
    let r = rig(&manifests(hc, "0s"), 8).await;
    let id = instance(&r.engine, 1, 40000).await;
    let v = until(&r.verdicts, &id, Duration::from_secs(3), |v| {
        v.summary.starts_with("not probed:")
    })
    .await;
    assert!(
        v.summary.contains("container port 8080 is not published"),
        "{}",
        v.summary
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = r.verdicts.get(&id).unwrap();
    assert!(
        !v.liveness_failed,
        "the controller's trouble never fails an instance"
    );
    assert_eq!(v.ready, Some(false));
    r.engine.remove_by_hand(&id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while r.verdicts.get(&id).is_some() {
        assert!(Instant::now() < deadline, "a gone instance is still probed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exec_and_docker_checks_give_verdicts() {
    let hc = "    type: Exec\n    command: [cat, /tmp/ok]\n    interval: 1s\n    unhealthyThreshold: 1\n";
    let r = rig(&manifests(hc, "0s"), 8).await;
    let id = instance(&r.engine, 1, 40001).await;
    until(&r.verdicts, &id, Duration::from_secs(3), |v| {
        v.ready == Some(true)
    })
    .await;
    r.engine
        .set_exec(&id, 1, "cat: can't open '/tmp/ok'")
        .unwrap();
    let v = until(&r.verdicts, &id, Duration::from_secs(3), |v| {
        v.liveness_failed
    })
    .await;
    assert!(
        v.summary
            .ends_with("exec cat /tmp/ok exited 1: cat: can't open '/tmp/ok'"),
        "{}",
        v.summary
    );

    let r = rig(&manifests("    type: Docker\n", "0s"), 8).await;
    let id = instance(&r.engine, 1, 40002).await;
    r.engine.set_health(&id, Health::Healthy).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!r.verdicts.get(&id).unwrap().liveness_failed);
    r.engine.set_health(&id, Health::Unhealthy).unwrap();
    let v = until(&r.verdicts, &id, Duration::from_secs(2), |v| {
        v.liveness_failed
    })
    .await;
    assert_eq!(v.ready, None, "Docker health gates readiness by itself");
    assert_eq!(
        v.summary,
        "liveness failed: the image's HEALTHCHECK reports unhealthy"
    );
}

#[tokio::test]
async fn a_changed_check_keeps_the_readiness_until_its_own_results_move_it() {
    let s = server(Duration::ZERO).await;
    let hc = |path: &str| {
        format!("    type: HTTP\n    port: 80\n    path: {path}\n    interval: 1s\n    timeout: 500ms\n    unhealthyThreshold: 2\n")
    };
    let r = rig(&manifests(&hc("/a"), "0s"), 8).await;
    let id = instance(&r.engine, 1, s.port).await;
    until(&r.verdicts, &id, Duration::from_secs(3), |v| {
        v.ready == Some(true)
    })
    .await;
    // The check changes (and now fails): ready all along until 2 failures of the new one.
    s.status.store(500, Ordering::SeqCst);
    r._desired
        .send(Arc::new(crate::watch::store::test_snapshot(&manifests(
            &hc("/b"),
            "0s",
        ))))
        .unwrap();
    let started = Instant::now();
    loop {
        let v = r.verdicts.get(&id).unwrap();
        if v.ready == Some(false) {
            assert!(
                started.elapsed() >= Duration::from_millis(900),
                "dropped after {:?}",
                started.elapsed()
            );
            assert!(v.summary.contains("GET /b"), "{}", v.summary);
            break;
        }
        assert_eq!(v.ready, Some(true), "{v:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never judged by the new check"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
