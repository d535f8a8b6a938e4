//! DockerEngine against the real engines: create, list, inspect, events, remove, logs, stats and
//! error classification.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use microscaler::engine::docker::DockerEngine;
use microscaler::engine::{
    labels, ContainerSpec, ContainerState, Engine, EngineError, EngineEvent, EventKind,
};
use microscaler::manifest::PortSpec;

use crate::common::{
    containers, containers_on, docker_host_a, docker_host_b, docker_ok, http_get, require_engine,
    wait_until_async, TestNs, NAMESPACE_LABEL, TEST_IMAGE,
};

async fn engine_a() -> DockerEngine {
    let host = docker_host_a();
    require_engine(&host);
    DockerEngine::connect(Some(&host))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {host}: {e}"))
}

/// A spec in the test's namespace running `command` in the test image.
fn spec(ns: &TestNs, suffix: &str, command: &[&str]) -> ContainerSpec {
    ContainerSpec {
        name: ns.container_name(suffix),
        image: TEST_IMAGE.to_string(),
        command: Some(command.iter().map(|s| s.to_string()).collect()),
        labels: BTreeMap::from([
            (NAMESPACE_LABEL.to_string(), ns.name.clone()),
            (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
            (labels::GROUP.to_string(), "web".to_string()),
        ]),
        ..Default::default()
    }
}

/// Collects events until one of `kind` arrives (at most 10 s).
async fn events_until(
    stream: &mut futures::stream::BoxStream<'static, microscaler::engine::Result<EngineEvent>>,
    kind: EventKind,
) -> Vec<EngineEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let ev = match next {
            Ok(Some(Ok(ev))) => ev,
            Ok(Some(Err(e))) => panic!("event stream failed: {e}; seen so far: {seen:?}"),
            Ok(None) => panic!("event stream ended; seen so far: {seen:?}"),
            Err(_) => panic!("no {kind:?} event within 10 s; seen: {seen:?}"),
        };
        let done = ev.kind == kind;
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn create_and_start_runs_a_labelled_limited_container_on_a_loopback_port() {
    let ns = TestNs::new();
    let engine = engine_a().await;
    let mut s = spec(&ns, "web-1", &["httpd", "-f", "-p", "80", "-h", "/www"]);
    s.env = vec![("GREETING".into(), "hello world".into())];
    s.nano_cpus = Some(500_000_000);
    s.memory_bytes = Some(64 << 20);
    s.hostname = Some("web-1".into());
    s.ports = vec![PortSpec {
        container_port: 80,
        host_port: None,
        host_ip: None,
        protocol: None,
    }];
    let created = engine.create_and_start(&s).await.unwrap();
    assert_eq!(created.name, s.name);
    assert_eq!(created.state, ContainerState::Running);
    assert_eq!(created.ports.len(), 1, "{:?}", created.ports);

    let listed = engine.list(&ns.filter()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let c = &listed[0];
    assert_eq!(c.id, created.id);
    assert_eq!(c.name, s.name);
    assert_eq!(c.state, ContainerState::Running);
    assert_eq!(c.labels[labels::GROUP], "web");
    assert_eq!(c.ports, created.ports);
    let port = c.ports[0]
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.strip_suffix("->80/tcp"))
        .unwrap_or_else(|| panic!("not a loopback binding of port 80: {}", c.ports[0]))
        .parse::<u16>()
        .unwrap();
    let reached = wait_until_async(Duration::from_secs(5), || async {
        matches!(http_get(port, "/"), Some((200, _)))
    })
    .await;
    assert!(reached, "the published port {port} does not serve");

    let seen = &containers(&ns)[0];
    assert!(
        seen.env.contains(&"GREETING=hello world".to_string()),
        "{:?}",
        seen.env
    );
    assert_eq!(seen.nano_cpus, 500_000_000);
    assert_eq!(seen.memory, 64 << 20);

    // A filter that does not match finds nothing: the label filter is applied by the engine.
    let other = vec![(NAMESPACE_LABEL.to_string(), format!("{}-other", ns.name))];
    assert!(engine.list(&other).await.unwrap().is_empty());
}

#[tokio::test]
async fn events_report_start_then_die_after_docker_kill() {
    let ns = TestNs::new();
    let engine = engine_a().await;
    // Subscribe before acting: the stream must see everything that happens afterwards.
    let mut events = engine.events(&ns.filter()).await.unwrap();
    let c = engine
        .create_and_start(&spec(&ns, "victim", &["sleep", "600"]))
        .await
        .unwrap();
    let started = events_until(&mut events, EventKind::Start).await;
    assert!(
        started.iter().any(|e| e.kind == EventKind::Create),
        "{started:?}"
    );
    docker_ok(&docker_host_a(), &["kill", &c.id]);
    let rest = events_until(&mut events, EventKind::Die).await;
    let die = rest.last().unwrap();
    assert_eq!(die.id, c.id);
    assert_eq!(die.exit_code, Some(137));
    assert_eq!(die.labels[NAMESPACE_LABEL], ns.name);
    assert_eq!(die.labels[labels::GROUP], "web");
    assert!(!die.labels.contains_key("name"), "{:?}", die.labels);
    assert!(rest.iter().any(|e| e.kind == EventKind::Kill), "{rest:?}");
    let age = chrono::Utc::now() - die.time;
    assert!(
        age < chrono::TimeDelta::seconds(30),
        "event time {}",
        die.time
    );
}

#[tokio::test]
async fn inspect_gives_the_start_time_and_later_the_exit_code() {
    let ns = TestNs::new();
    let engine = engine_a().await;
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(5);
    let c = engine
        .create_and_start(&spec(&ns, "inspected", &["sleep", "600"]))
        .await
        .unwrap();
    let seen = engine.inspect(&c.id).await.unwrap();
    assert_eq!(seen.state, ContainerState::Running);
    assert_eq!(seen.exit_code, None);
    let started = seen
        .started_at
        .expect("a running container has a start time");
    assert!(started > before, "started_at {started}");
    assert!(seen.created <= started);
    assert_eq!(seen.labels[NAMESPACE_LABEL], ns.name);

    docker_ok(&docker_host_a(), &["kill", &c.id]);
    let exited = wait_until_async(Duration::from_secs(10), || async {
        engine.inspect(&c.id).await.unwrap().state == ContainerState::Exited
    })
    .await;
    assert!(exited);
    let seen = engine.inspect(&c.id).await.unwrap();
    assert_eq!(seen.exit_code, Some(137));
    assert!(seen.state.is_failed());
}

#[tokio::test]
async fn remove_with_zero_grace_kills_at_once_and_a_missing_container_is_fine() {
    let ns = TestNs::new();
    let engine = engine_a().await;
    // `sleep` as PID 1 ignores SIGTERM: only SIGKILL ends it, so a slow remove would show.
    let c = engine
        .create_and_start(&spec(&ns, "doomed", &["sleep", "600"]))
        .await
        .unwrap();
    let t = Instant::now();
    engine.remove(&c.id, Duration::ZERO).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(containers(&ns).is_empty());
    assert!(engine.list(&ns.filter()).await.unwrap().is_empty());
    engine.remove(&c.id, Duration::ZERO).await.unwrap();
    engine.remove(&c.id, Duration::from_secs(1)).await.unwrap();
    assert!(matches!(
        engine.inspect(&c.id).await,
        Err(EngineError::NotFound(_))
    ));
}

#[tokio::test]
async fn remove_with_grace_stops_then_removes() {
    let ns = TestNs::new();
    let engine = engine_a().await;
    let c = engine
        .create_and_start(&spec(&ns, "graceful", &["sleep", "600"]))
        .await
        .unwrap();
    let t = Instant::now();
    engine.remove(&c.id, Duration::from_secs(1)).await.unwrap();
    // SIGTERM is ignored by PID 1, so the engine waits the grace and then kills.
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(containers(&ns).is_empty());
}

#[tokio::test]
async fn a_missing_image_is_not_found_with_the_engines_message() {
    let ns = TestNs::new();
    let engine = engine_a().await;
    let mut s = spec(&ns, "ghost", &["sleep", "1"]);
    s.image = "microscaler/no-such-image:latest".into();
    // Never: the engine's own answer.
    s.pull_policy = microscaler::manifest::ImagePullPolicy::Never;
    let err = engine.create_and_start(&s).await.unwrap_err();
    match err {
        EngineError::NotFound(m) => assert!(
            m.contains("No such image: microscaler/no-such-image:latest"),
            "{m}"
        ),
        e => panic!("expected NotFound, got {e:?}"),
    }
    // IfNotPresent (the default): the engine tries its registry, and that answer comes back
    // (here, with no registry reachable, the failed lookup).
    s.pull_policy = microscaler::manifest::ImagePullPolicy::IfNotPresent;
    let err = engine.create_and_start(&s).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::Other(m) if m.contains("cannot pull `microscaler/no-such-image:latest`")),
        "{err:?}"
    );
    assert!(containers(&ns).is_empty());
}

#[tokio::test]
async fn a_container_that_cannot_start_leaves_nothing_behind() {
    let ns = TestNs::new();
    let engine = engine_a().await;
    let err = engine
        .create_and_start(&spec(&ns, "broken", &["/bin/no-such-program"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no-such-program"),
        "the engine's reason should be kept: {err}"
    );
    assert!(containers(&ns).is_empty(), "{:?}", containers(&ns));
}

#[tokio::test]
async fn a_reused_name_is_a_conflict() {
    let ns = TestNs::new();
    let engine = engine_a().await;
    let s = spec(&ns, "twin", &["sleep", "600"]);
    engine.create_and_start(&s).await.unwrap();
    let err = engine.create_and_start(&s).await.unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err:?}");
}

#[tokio::test]
async fn logs_tail_returns_the_last_lines_of_stdout_and_stderr() {
    let ns = TestNs::new();
    let engine = engine_a().await;
    let c = engine
        .create_and_start(&spec(
            &ns,
            "chatty",
            &[
                "sh",
                "-c",
                // Docker copies stdout and stderr separately: the pause orders them in the log.
                "for i in 1 2 3 4 5; do echo line$i; done; sleep 0.5; echo oops >&2; sleep 600",
            ],
        ))
        .await
        .unwrap();
    let printed = wait_until_async(Duration::from_secs(10), || async {
        engine.logs_tail(&c.id, 10).await.unwrap().contains("oops")
    })
    .await;
    assert!(printed, "{:?}", engine.logs_tail(&c.id, 10).await);
    let tail = engine.logs_tail(&c.id, 2).await.unwrap();
    assert!(tail.contains("line5") && tail.contains("oops"), "{tail:?}");
    assert!(!tail.contains("line4"), "{tail:?}");
}

#[tokio::test]
async fn stats_returns_a_sample_with_memory_in_use() {
    let ns = TestNs::new();
    let engine = engine_a().await;
    let mut s = spec(&ns, "measured", &["sh", "-c", "yes > /dev/null"]);
    s.memory_bytes = Some(128 << 20);
    let c = engine.create_and_start(&s).await.unwrap();
    let sample = engine.stats(&c.id).await.unwrap();
    assert!(sample.memory_used_bytes > 0, "{sample:?}");
    assert_eq!(sample.memory_limit_bytes, 128 << 20, "{sample:?}");
    assert!(sample.online_cpus > 0, "{sample:?}");
    assert!(sample.system_cpu_ns > 0, "{sample:?}");
    // `yes` spins: the container's CPU time grows between two samples.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = engine.stats(&c.id).await.unwrap();
    assert!(
        later.cpu_total_ns > sample.cpu_total_ns,
        "{sample:?} then {later:?}"
    );
}

#[tokio::test]
async fn the_hot_path_create_and_start_is_fast() {
    let ns = TestNs::new();
    let engine = engine_a().await;
    // Warm up the connection and the image's layers.
    engine
        .create_and_start(&spec(&ns, "warm", &["sleep", "600"]))
        .await
        .unwrap();
    let t = Instant::now();
    let c = engine
        .create_and_start(&spec(&ns, "hot", &["sleep", "600"]))
        .await
        .unwrap();
    let took = t.elapsed();
    eprintln!("create_and_start took {took:?}");
    assert_eq!(c.state, ContainerState::Running);
    assert!(c.started_at.is_some());
    // Generous for a loaded 2-core CI machine; typically ~0.1 s.
    assert!(
        took < Duration::from_secs(2),
        "create_and_start took {took:?}"
    );
}

#[tokio::test]
async fn ping_works_and_the_api_version_is_negotiated_down() {
    let engine = engine_a().await;
    engine.ping().await.unwrap();
    let version = docker_ok(
        &docker_host_a(),
        &["version", "--format", "{{.Server.APIVersion}}"],
    );
    assert_eq!(engine.api_version(), version.trim());
}

#[tokio::test]
async fn a_missing_socket_is_unreachable() {
    let err = DockerEngine::connect(Some("unix:///tmp/microscaler-no-such.sock"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Unreachable(ref m) if m.contains("microscaler-no-such.sock")),
        "{err:?}"
    );
    let err = DockerEngine::connect(Some("tcp://127.0.0.1:1"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Unreachable(_)), "{err:?}");
}

// Holding zone b's lock across awaits is the point: no other test may restart it meanwhile.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn zone_b_is_a_separate_engine() {
    let _b = crate::common::zone_b_lock();
    let ns = TestNs::new();
    let host_b = docker_host_b();
    require_engine(&host_b);
    let a = engine_a().await;
    let b = DockerEngine::connect(Some(&host_b)).await.unwrap();
    let c = b
        .create_and_start(&spec(&ns, "in-b", &["sleep", "600"]))
        .await
        .unwrap();
    assert_eq!(b.list(&ns.filter()).await.unwrap().len(), 1);
    assert!(a.list(&ns.filter()).await.unwrap().is_empty());
    assert_eq!(containers_on(&host_b, &ns.name)[0].id, c.id);
    // Dropping the namespace cleans zone b too (checked by the next test run's emptiness).
}
