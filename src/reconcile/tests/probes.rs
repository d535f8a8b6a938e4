//! Scenarios of `healthCheck` on the whole loop (probe runner, reconciler, in-memory engine's
//! exec): an instance failing liveness is replaced and says why; a check that fails every
//! instance is held back by the crash backoff.

use super::*;

fn with_check(desired: u32, grace: &str) -> String {
    format!(
        "{}  healthCheckGracePeriod: {grace}\n  healthCheck:\n    type: Exec\n    command: [cat, /tmp/ok]\n    interval: 1s\n    timeout: 500ms\n    unhealthyThreshold: 2\n",
        manifests(desired, "img", "a")
    )
}

#[tokio::test(start_paused = true)]
async fn an_instance_failing_liveness_is_replaced_and_the_status_says_why() {
    let h = Harness::start(&["a"], &with_check(2, "0s")).await;
    h.until("2 ready, probed", SECS(10), |h| {
        h.status("web").is_some_and(|s| {
            s.ready == 2
                && s.instances.iter().all(|i| {
                    i.ready && i.health.as_deref() == Some("ready: exec cat /tmp/ok exited 0")
                })
        })
    })
    .await;
    let sick = h.running(0).remove(0);
    h.engines[0]
        .set_exec(&sick.id, 1, "cat: can't open '/tmp/ok': No such file")
        .unwrap();
    h.until("the sick one replaced", SECS(10), |h| {
        let r = h.running(0);
        r.len() == 2 && r.iter().all(|c| c.id != sick.id)
    })
    .await;
    h.until("2 ready again", SECS(10), |h| {
        h.status("web").is_some_and(|s| s.ready == 2)
    })
    .await;
    let s = h.status("web").unwrap();
    let terminate = s
        .activities
        .iter()
        .find(|a| a.action == "Terminate" && a.instance == sick.name)
        .expect("a Terminate activity");
    assert_eq!(
        terminate.cause,
        "liveness failed 2 times in a row: exec cat /tmp/ok exited 1: cat: can't open '/tmp/ok': No such file; it is replaced"
    );
    assert!(
        s.activities
            .iter()
            .any(|a| a.action == "Launch" && a.cause.contains(&sick.name)),
        "{:#?}",
        s.activities
    );
    let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "Unhealthy");
}

#[tokio::test(start_paused = true)]
async fn a_check_that_fails_every_instance_is_held_back_by_the_backoff() {
    let h = Harness::start(&["a"], &with_check(1, "0s")).await;
    h.until("1 running", SECS(5), |h| h.total_running() == 1)
        .await;
    h.engines[0].reset_calls();
    // Every instance fails its check from its start, for a minute.
    let start = Instant::now();
    while Instant::now() - start < SECS(60) {
        for c in h.running(0) {
            let _ = h.engines[0].set_exec(&c.id, 1, "broken");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let launches = h.engines[0].calls().create;
    // Without a backoff: one replacement every ~2 s (2 failures at 1 s), ~30 in a minute.
    // With it (1, 2, 4, 8, 16, 32 s between replacements): at most 8.
    assert!(
        (3..=8).contains(&launches),
        "{launches} launches in a minute"
    );
}

#[tokio::test(start_paused = true)]
async fn a_readiness_probe_gates_the_ready_count_until_it_passes() {
    let h = Harness::start(&["a"], &with_check(1, "1h")).await;
    h.until("1 running", SECS(5), |h| h.total_running() == 1)
        .await;
    let c = h.running(0).remove(0);
    h.engines[0].set_exec(&c.id, 1, "not yet").unwrap();
    tokio::time::sleep(SECS(3)).await;
    let s = h.status("web").unwrap();
    assert_eq!(s.ready, 0, "{s:#?}");
    assert!(!s.instances[0].ready);
    // The grace period (1h) holds any liveness verdict: it is not replaced.
    assert_eq!(h.running(0)[0].id, c.id);
    h.engines[0].set_exec(&c.id, 0, "").unwrap();
    h.until("ready", SECS(5), |h| {
        h.status("web").is_some_and(|s| s.ready == 1)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_group_check_on_an_unpublished_port_degrades_the_group_and_replaces_nothing() {
    let yaml = format!(
        "{}  healthCheckGracePeriod: 0s\n  healthCheck: {{type: TCP, port: 8080, interval: 1s, unhealthyThreshold: 1}}\n",
        manifests(1, "img", "a")
    );
    let h = Harness::start(&["a"], &yaml).await;
    h.until("1 running", SECS(5), |h| h.total_running() == 1)
        .await;
    let first = h.running(0).remove(0);
    h.until("InvalidHealthCheck", SECS(5), |h| {
        h.status("web").is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Degraded"
                    && c.reason == "InvalidHealthCheck"
                    && c.message.contains("add `ports: [8080]`")
            })
        })
    })
    .await;
    tokio::time::sleep(SECS(5)).await;
    assert_eq!(h.running(0)[0].id, first.id, "never replaced for it");
    let s = h.status("web").unwrap();
    assert_eq!(s.ready, 0, "not ready: its readiness cannot be probed");
}

#[tokio::test(start_paused = true)]
async fn an_instance_ready_before_a_restart_stays_ready_until_its_probe_says_otherwise() {
    use crate::reconcile::memory::GroupMemory;
    let mut mem = GroupMemory::default();
    let prev = serde_json::json!({
        "observedGeneration": "x", "desiredCapacity": 2, "current": 2, "ready": 2,
        "instances": [
            {"name": "web-old", "containerId": "1", "zone": "a", "state": "running", "ready": true},
            {"name": "web-bad", "containerId": "2", "zone": "a", "state": "running", "ready": false}
        ]
    });
    let key = ObjectKey::new(Kind::AutoScalingGroup, "default", "web");
    mem.begin(&key, || Some(prev), Some("h"));
    assert_eq!(mem.ready_before.get("web-old"), Some(&true));
    assert_eq!(mem.ready_before.get("web-bad"), Some(&false));
}
