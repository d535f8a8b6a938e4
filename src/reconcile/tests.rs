//! Scenario tests of the reconciler against the in-memory engine, on paused time: the whole loop
//! (observers, queue, reconcile, executor) runs; only the engine is fake.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::pass::resolve_count;
use super::*;
use crate::config::Config;
use crate::controller::{Controller, Handle, Shared};
use crate::engine::memory::MemoryEngine;
use crate::engine::observe::fixed_connector;
use crate::engine::{labels, ContainerState, EngineError};
use crate::manifest::{IntOrPercent, Kind};
use crate::status::GroupStatus;
use crate::watch::store::Desired;

/// The controller's own wiring over in-memory engines (one zone per name), the desired state
/// fed through `desired`, status kept in memory, capacities from the specs alone; `configure`
/// adjusts the configuration first. Shared by every scenario harness of the reconciler.
pub(super) fn spawn_on_memory(
    zone_names: &[String],
    engines: &[MemoryEngine],
    desired: watch::Receiver<Arc<Desired>>,
    configure: impl FnOnce(&mut Config),
) -> (Handle, CancellationToken) {
    let mut config = Config::default();
    config.zones = zone_names
        .iter()
        .map(|z| crate::config::ZoneConfig {
            name: z.clone(),
            docker_host: None,
            tls: None,
        })
        .collect();
    config.concurrency = 8;
    configure(&mut config);
    let shutdown = CancellationToken::new();
    let connectors = zone_names
        .iter()
        .zip(engines)
        .map(|(name, e)| (name.clone(), fixed_connector(Arc::new(e.clone()))))
        .collect();
    let handle = Controller::builder(config)
        .desired(desired)
        .zones(connectors)
        .workers(8)
        .without_autoscaler()
        .without_status_writer()
        .spawn(shutdown.clone());
    (handle, shutdown)
}

struct Harness {
    shared: Arc<Shared>,
    tx: watch::Sender<Arc<Desired>>,
    engines: Vec<MemoryEngine>,
    shutdown: CancellationToken,
    _controller: Handle,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn snapshot(yaml: &str) -> Desired {
    crate::watch::store::test_snapshot(yaml)
}

impl Harness {
    async fn start(zone_names: &[&str], yaml: &str) -> Harness {
        let engines: Vec<MemoryEngine> = zone_names
            .iter()
            .enumerate()
            .map(|(i, _)| MemoryEngine::with_id_offset(i as u64 * 1_000_000))
            .collect();
        Self::start_with(zone_names, engines, yaml).await
    }

    /// The controller's own wiring over in-memory engines, the desired state fed by the test,
    /// status kept in memory, capacities from the specs alone.
    async fn start_with(zone_names: &[&str], engines: Vec<MemoryEngine>, yaml: &str) -> Harness {
        let (tx, rx) = watch::channel(Arc::new(snapshot(yaml)));
        let names: Vec<String> = zone_names.iter().map(|z| z.to_string()).collect();
        let (controller, shutdown) = spawn_on_memory(&names, &engines, rx, |_| {});
        Harness {
            shared: controller.shared.clone(),
            tx,
            engines,
            shutdown,
            _controller: controller,
        }
    }

    fn set(&self, yaml: &str) {
        self.tx.send(Arc::new(snapshot(yaml))).unwrap();
    }

    fn running(&self, zone: usize) -> Vec<crate::engine::Observed> {
        self.engines[zone]
            .containers()
            .into_iter()
            .filter(|c| c.state == ContainerState::Running)
            .collect()
    }

    fn total_running(&self) -> usize {
        (0..self.engines.len()).map(|z| self.running(z).len()).sum()
    }

    fn status(&self, group: &str) -> Option<GroupStatus> {
        self.shared
            .status
            .read()
            .unwrap()
            .get(&ObjectKey::new(Kind::AutoScalingGroup, "default", group))
            .cloned()
    }

    /// Waits (on paused time) until `cond` holds, failing after `max` of virtual time.
    async fn until(&self, what: &str, max: Duration, cond: impl Fn(&Harness) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            if Instant::now() - start > max {
                panic!(
                    "timed out waiting for {what}; status: {:#?}",
                    self.status("web")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn manifests(desired: u32, image: &str, zones: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: web}}\nspec:\n  image: {image}\n  stopGracePeriod: 0s\n---\n\
         apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: web}}\nspec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: 10\n  desiredCapacity: {desired}\n  availabilityZones: [{zones}]\n"
    )
}

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test(start_paused = true)]
async fn a_group_scales_out_to_its_desired_capacity() {
    let h = Harness::start(&["a"], &manifests(3, "img", "a")).await;
    h.until("3 running", SECS(5), |h| h.total_running() == 3)
        .await;
    h.until("status ready", SECS(5), |h| {
        h.status("web").is_some_and(|s| s.ready == 3)
    })
    .await;
    let s = h.status("web").unwrap();
    assert_eq!(s.desired_capacity, 3);
    assert_eq!(s.instances.len(), 3);
    assert!(s.activities.iter().all(|a| a.action == "Launch"));
    assert!(
        s.activities[0].cause.contains("desired capacity 3"),
        "{:?}",
        s.activities[0]
    );
    assert!(s.last_scale_out.is_some());
    // Each container carries the ownership labels.
    let c = &h.running(0)[0];
    for k in [
        labels::MANAGED_BY,
        labels::NAMESPACE,
        labels::GROUP,
        labels::LAUNCH_CONFIGURATION,
        labels::SPEC_HASH,
        labels::ZONE,
    ] {
        assert!(c.labels.contains_key(k), "missing label {k}");
    }
}

#[tokio::test(start_paused = true)]
async fn killed_and_removed_instances_are_replaced() {
    let h = Harness::start(&["a"], &manifests(2, "img", "a")).await;
    h.until("2 running", SECS(5), |h| h.total_running() == 2)
        .await;
    let victim = h.running(0)[0].id.clone();
    h.engines[0].kill(&victim).unwrap();
    h.until("replacement", SECS(2), |h| {
        h.total_running() == 2 && h.running(0).iter().all(|c| c.id != victim)
    })
    .await;
    let other = h.running(0)[0].id.clone();
    h.engines[0].remove_by_hand(&other).unwrap();
    h.until("replacement after rm", SECS(2), |h| {
        h.total_running() == 2 && h.running(0).iter().all(|c| c.id != other)
    })
    .await;
    // The exited container is cleaned up too.
    h.until("exited removed", SECS(2), |h| {
        h.engines[0].containers().len() == 2
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_labelled_container_started_by_hand_is_removed() {
    let h = Harness::start(&["a"], &manifests(1, "img", "a")).await;
    h.until("1 running", SECS(5), |h| h.total_running() == 1)
        .await;
    let mine = h.running(0)[0].id.clone();
    let foreign = h.engines[0].add_foreign(&[
        (labels::MANAGED_BY, labels::MANAGER),
        (labels::NAMESPACE, "default"),
        (labels::GROUP, "web"),
    ]);
    h.until("foreign removed", SECS(5), |h| {
        h.engines[0].containers().iter().all(|c| c.id != foreign)
    })
    .await;
    assert_eq!(
        h.running(0)
            .iter()
            .map(|c| c.id.clone())
            .collect::<Vec<_>>(),
        vec![mine],
        "ours must stay"
    );
}

#[tokio::test(start_paused = true)]
async fn stopping_scaling_in_and_deleting_remove_containers() {
    let h = Harness::start(&["a"], &manifests(3, "img", "a")).await;
    h.until("3 running", SECS(5), |h| h.total_running() == 3)
        .await;
    h.set(&manifests(1, "img", "a"));
    h.until("scaled in to 1", SECS(5), |h| {
        h.engines[0].containers().len() == 1
    })
    .await;
    let s = h.status("web").unwrap();
    assert!(
        s.activities
            .iter()
            .any(|a| a.action == "Terminate" && a.cause.contains("lowered from 3 to 1")),
        "{:?}",
        s.activities
    );
    h.set(
        &manifests(1, "img", "a")
            .replace("desiredCapacity: 1", "desiredCapacity: 1\n  state: Stopped"),
    );
    h.until("stopped", SECS(5), |h| h.engines[0].containers().is_empty())
        .await;
    h.set(&manifests(2, "img", "a"));
    h.until("restarted", SECS(5), |h| h.total_running() == 2)
        .await;
    // Deleting the group (only the launch configuration remains) removes its containers.
    h.set(manifests(2, "img", "a").split("---").next().unwrap());
    h.until("deleted", SECS(5), |h| h.engines[0].containers().is_empty())
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_backs_off_and_reports_the_engine_error() {
    let engine = MemoryEngine::new();
    engine.missing_image("ghost:1");
    let h = Harness::start_with(&["a"], vec![engine], &manifests(5, "ghost:1", "a")).await;
    h.until("degraded", SECS(5), |h| {
        h.status("web").is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.status == "True")
        })
    })
    .await;
    // 30 s of virtual time: with backoff 1, 2, 4, 8, 16 s that is at most ~6 attempts, never 5 per pass.
    tokio::time::sleep(SECS(30)).await;
    let creates = h.engines[0].calls().create;
    assert!(
        creates <= 7,
        "{creates} create attempts in 30 s: no backoff"
    );
    let s = h.status("web").unwrap();
    let d = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(d.reason, "LaunchFailed");
    assert!(d.message.contains("ghost:1"), "{}", d.message);
    // Fixing the launch configuration recovers at once.
    h.set(&manifests(5, "img", "a"));
    h.until("5 running", SECS(70), |h| h.total_running() == 5)
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_crashing_container_does_not_hot_loop() {
    let engine = MemoryEngine::new();
    engine.crash_on_start_with_log("crash:1", 3, "panic: config missing");
    let h = Harness::start_with(&["a"], vec![engine], &manifests(1, "crash:1", "a")).await;
    tokio::time::sleep(SECS(30)).await;
    let creates = h.engines[0].calls().create;
    assert!((2..=8).contains(&creates), "{creates} creations in 30 s");
    let s = h.status("web").unwrap();
    let d = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(d.status, "True");
    assert_eq!(d.reason, "CrashLoop");
    assert!(
        d.message.contains("code 3") && d.message.contains("panic: config missing"),
        "{}",
        d.message
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_launch_configuration_rolls_out_without_losing_capacity() {
    let h = Harness::start(&["a"], &manifests(4, "img:1", "a")).await;
    h.until("4 running", SECS(5), |h| h.total_running() == 4)
        .await;
    h.set(&manifests(4, "img:2", "a"));
    let start = Instant::now();
    let mut max_total = 0;
    loop {
        let running = h.running(0);
        let total = h.engines[0].containers().len();
        max_total = max_total.max(total);
        assert!(
            running.len() >= 4,
            "capacity dropped to {} during the rollout",
            running.len()
        );
        if running.len() == 4
            && total == 4
            && running
                .iter()
                .all(|c| h.engines[0].image_of(&c.id).as_deref() == Some("img:2"))
        {
            break;
        }
        assert!(Instant::now() - start < SECS(30), "rollout did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(max_total <= 5, "surge exceeded 1: {max_total}");
    h.until("status updated", SECS(5), |h| {
        h.status("web")
            .is_some_and(|s| s.updated == 4 && s.current == 4)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn zones_are_balanced_and_an_unreachable_zone_is_made_up_then_rebalanced() {
    let h = Harness::start(&["a", "b"], &manifests(4, "img", "a, b")).await;
    h.until("2+2", SECS(5), |h| {
        h.running(0).len() == 2 && h.running(1).len() == 2
    })
    .await;
    h.engines[1].set_unreachable(true);
    h.until("capacity made up in a", SECS(20), |h| {
        h.running(0).len() == 4
    })
    .await;
    h.until("status reports b", SECS(5), |h| {
        h.status("web")
            .is_some_and(|s| s.unreachable_zones == vec!["b".to_string()])
    })
    .await;
    h.engines[1].set_unreachable(false);
    // b returns with its two old containers: scale in from a (the fullest), back to 2+2.
    let start = Instant::now();
    loop {
        let total = h.total_running();
        assert!(total <= 6, "more than before the return: {total}");
        if h.running(0).len() == 2 && h.running(1).len() == 2 {
            break;
        }
        assert!(
            Instant::now() - start < SECS(30),
            "not rebalanced: a={} b={}",
            h.running(0).len(),
            h.running(1).len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_restarted_controller_adopts_existing_containers() {
    let engine = MemoryEngine::new();
    let first = Harness::start_with(&["a"], vec![engine.clone()], &manifests(3, "img", "a")).await;
    first
        .until("3 running", SECS(5), |h| h.total_running() == 3)
        .await;
    drop(first);
    let before: Vec<String> = engine.containers().into_iter().map(|c| c.id).collect();
    let creates = engine.calls().create;
    let second = Harness::start_with(&["a"], vec![engine.clone()], &manifests(3, "img", "a")).await;
    second
        .until("status", SECS(5), |h| {
            h.status("web").is_some_and(|s| s.ready == 3)
        })
        .await;
    tokio::time::sleep(SECS(2)).await;
    assert_eq!(engine.calls().create, creates, "adoption must not create");
    let after: Vec<String> = engine.containers().into_iter().map(|c| c.id).collect();
    assert_eq!(before, after);
}

#[tokio::test(start_paused = true)]
async fn a_group_waits_for_its_launch_configuration() {
    let yaml =
        manifests(2, "img", "a").replace("launchConfiguration: web", "launchConfiguration: webb");
    let h = Harness::start(&["a"], &yaml).await;
    h.until("status", SECS(5), |h| h.status("web").is_some())
        .await;
    let s = h.status("web").unwrap();
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "WaitingForLaunchConfiguration");
    assert!(
        ready.message.contains("`webb`") && ready.message.contains("did you mean `web`"),
        "{}",
        ready.message
    );
    assert_eq!(h.total_running(), 0);
}

#[tokio::test(start_paused = true)]
async fn no_group_is_reconciled_before_every_zone_has_been_listed_once() {
    // Zone b answers its first list after 3 s. Until then the view is partial (an unlisted zone
    // looks like "nothing runs there"), so the runner starts no pass, not even for a group
    // that lives in zone a only.
    let slow = MemoryEngine::with_id_offset(1_000_000);
    slow.set_latencies(crate::engine::memory::Latencies {
        list_base: SECS(3),
        ..Default::default()
    });
    let engines = vec![MemoryEngine::new(), slow];
    let h = Harness::start_with(&["a", "b"], engines, &manifests(2, "img", "a")).await;
    tokio::time::sleep(SECS(2)).await;
    assert_eq!(h.total_running(), 0, "launched on a partial view");
    assert!(h.status("web").is_none(), "a pass ran on a partial view");
    h.until("2 running once zone b is listed", SECS(5), |h| {
        h.total_running() == 2
    })
    .await;
    assert_eq!(h.running(0).len(), 2);
}

#[test]
fn surge_and_unavailable_resolve_from_counts_and_percentages() {
    assert_eq!(resolve_count(None, 10, 25, true), 3);
    assert_eq!(resolve_count(None, 1, 25, true), 1);
    assert_eq!(
        resolve_count(Some(&IntOrPercent::Percent("50%".into())), 5, 25, false),
        2
    );
    assert_eq!(resolve_count(Some(&IntOrPercent::Int(2)), 5, 25, true), 2);
    assert_eq!(resolve_count(None, 10, 0, false), 0);
}

#[test]
fn engine_errors_name_the_image() {
    let e = EngineError::NotFound("No such image: ghost:1".into());
    assert!(e.to_string().contains("ghost:1"));
}

async fn time_to_8(h: &Harness) -> Duration {
    let t0 = Instant::now();
    h.until("8 running", SECS(10), |h| h.total_running() >= 8)
        .await;
    Instant::now() - t0
}

#[tokio::test(start_paused = true)]
async fn a_spec_that_just_started_a_container_skips_the_slow_start() {
    let engine = MemoryEngine::new();
    engine.set_latencies(crate::engine::memory::Latencies {
        create: Duration::from_millis(100),
        ..Default::default()
    });
    // Launches of 8 at once take one round trip; slow start (1, 2, 4, 1) takes four.
    let h = Harness::start_with(&["a"], vec![engine.clone()], &manifests(8, "img", "a")).await;
    let cold = time_to_8(&h).await;
    // Scale in to 0 and out again: the spec has proven itself, so all 8 go at once.
    h.set(&manifests(0, "img", "a"));
    h.until("0 running", SECS(10), |h| h.total_running() == 0)
        .await;
    h.set(&manifests(8, "img", "a"));
    let warm = time_to_8(&h).await;
    assert!(
        cold >= Duration::from_millis(400),
        "cold start took {cold:?}: no slow start?"
    );
    assert!(
        warm <= Duration::from_millis(250),
        "warm start took {warm:?}: slow start not skipped"
    );
}

/// Replacements of a spec whose instances run (past the crash window) go at full speed, even
/// when this controller never launched the spec (a restart): it works, slow start has nothing
/// to find out.
#[tokio::test(start_paused = true)]
async fn replacements_of_a_running_spec_skip_the_slow_start() {
    let engine = MemoryEngine::new();
    let first = Harness::start_with(&["a"], vec![engine.clone()], &manifests(8, "img", "a")).await;
    first
        .until("8 running", SECS(10), |h| h.total_running() == 8)
        .await;
    drop(first);
    engine.backdate(SECS(3600));
    let h = Harness::start_with(&["a"], vec![engine.clone()], &manifests(8, "img", "a")).await;
    h.until("the restarted controller sees them", SECS(5), |h| {
        h.status("web").is_some_and(|s| s.current == 8)
    })
    .await;
    engine.set_latencies(crate::engine::memory::Latencies {
        create: Duration::from_millis(100),
        ..Default::default()
    });
    for c in h.running(0).iter().take(6) {
        engine.kill(&c.id).unwrap();
    }
    let took = time_to_8(&h).await;
    // Slow start (1, 2, 3) would take three round trips.
    assert!(
        took <= Duration::from_millis(250),
        "6 replacements took {took:?}: slow start not skipped"
    );
}

/// A second controller process over the same engine, after `first` ran `yaml` to 3 instances.
async fn restart_over(engine: &MemoryEngine, yaml: &str) -> Harness {
    let first = Harness::start_with(&["a"], vec![engine.clone()], &manifests(3, "img", "a")).await;
    first
        .until("3 running", SECS(5), |h| h.total_running() == 3)
        .await;
    drop(first);
    Harness::start_with(&["a"], vec![engine.clone()], yaml).await
}

fn web_key() -> ObjectKey {
    ObjectKey::new(Kind::AutoScalingGroup, "default", "web")
}

#[tokio::test(start_paused = true)]
async fn a_restart_over_an_empty_directory_deletes_nothing_until_confirmed() {
    let engine = MemoryEngine::new();
    let lc_only = manifests(3, "img", "a")
        .split("---")
        .next()
        .unwrap()
        .to_string();
    let h = restart_over(&engine, &lc_only).await;
    h.until("reported", SECS(5), |h| {
        h.shared.prune_report.contains(&web_key())
    })
    .await;
    tokio::time::sleep(SECS(30)).await;
    assert_eq!(h.total_running(), 3, "nothing may be removed");
    let message = &h.shared.prune_report.all()[&web_key()];
    assert!(
        message.contains("defines no autoscaling group"),
        "{message}"
    );
    assert!(
        message.contains("ms delete asg web -n default"),
        "{message}"
    );
    // `ms delete asg web` confirms: the containers go.
    h.shared.confirmations.confirm(&web_key());
    h.until("removed", SECS(5), |h| h.engines[0].containers().is_empty())
        .await;
    h.until("report cleared", SECS(5), |h| {
        !h.shared.prune_report.contains(&web_key())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_while_a_manifest_has_errors_deletes_nothing_until_it_loads() {
    let engine = MemoryEngine::new();
    // Another group is defined; web's own file has a typo, so web is not.
    let other = manifests(0, "img", "a").replace(
        "name: web}\nspec:\n  launchConfiguration",
        "name: api}\nspec:\n  launchConfiguration",
    );
    let h = restart_over(&engine, &other).await;
    let mut broken = snapshot(&other);
    broken.file_errors.insert(
        "web.yaml".into(),
        vec![crate::manifest::ManifestError {
            file: "web.yaml".into(),
            line: 3,
            column: 3,
            field: "spec.desiredCapasity".into(),
            message: "unknown field".into(),
        }],
    );
    h.tx.send(Arc::new(broken)).unwrap();
    h.until("reported", SECS(5), |h| {
        h.shared.prune_report.contains(&web_key())
    })
    .await;
    tokio::time::sleep(SECS(30)).await;
    assert_eq!(h.total_running(), 3, "a typo must not delete its group");
    assert!(h.shared.prune_report.all()[&web_key()].contains("web.yaml"));
    // The file loads again without web (the user really removed it): now it goes.
    h.set(&other);
    h.until("removed", SECS(10), |h| h.total_running() == 0)
        .await;
}

#[tokio::test(start_paused = true)]
async fn failed_removals_back_off_and_the_group_is_not_ready_while_they_run() {
    let h = Harness::start(&["a"], &manifests(2, "img", "a")).await;
    h.until("2 running", SECS(5), |h| h.total_running() == 2)
        .await;
    h.engines[0].fail_removals(Some("engine answered 500: device busy"));
    h.engines[0].reset_calls();
    h.set(&manifests(0, "img", "a"));
    tokio::time::sleep(SECS(30)).await;
    let calls = h.engines[0].calls().remove;
    // Two containers, backoff 1, 2, 4, 8, 16 s: a handful of attempts, not a hot loop.
    assert!(
        (2..=16).contains(&calls),
        "{calls} removal attempts in 30 s"
    );
    let s = h.status("web").unwrap();
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False", "{s:#?}");
    let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "RemovalFailed", "{s:#?}");
    assert!(
        degraded.message.contains("device busy"),
        "{}",
        degraded.message
    );
    assert_eq!(h.total_running(), 2);
    // The engine recovers: the removals go through at the next attempt, and the group is Ready.
    h.engines[0].fail_removals(None);
    h.until("removed", SECS(70), |h| {
        h.engines[0].containers().is_empty()
    })
    .await;
    h.until("ready", SECS(5), |h| {
        h.status("web").is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Degraded" && c.status == "False")
        })
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_fixed_launch_configuration_does_not_wait_out_the_old_backoff() {
    let engine = MemoryEngine::new();
    engine.crash_on_start("broken:1", 1);
    let h = Harness::start_with(&["a"], vec![engine], &manifests(2, "broken:1", "a")).await;
    // Let the crash loop build up a long backoff.
    tokio::time::sleep(SECS(40)).await;
    let s = h.status("web").unwrap();
    let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "CrashLoop", "{s:#?}");
    // The fix: a new image, a new spec hash.
    let fixed_at = Instant::now();
    h.set(&manifests(2, "good:1", "a"));
    h.until("converged and healthy", SECS(60), |h| {
        h.total_running() == 2
            && h.status("web").is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Degraded" && c.status == "False")
            })
    })
    .await;
    assert!(
        fixed_at.elapsed() < SECS(3),
        "healed {:?} after the fix",
        fixed_at.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_group_whose_containers_vanish_is_no_longer_reported() {
    let engine = MemoryEngine::new();
    let lc_only = manifests(3, "img", "a")
        .split("---")
        .next()
        .unwrap()
        .to_string();
    let h = restart_over(&engine, &lc_only).await;
    h.until("reported", SECS(5), |h| {
        h.shared.prune_report.contains(&web_key())
    })
    .await;
    for c in engine.containers() {
        engine.remove_by_hand(&c.id).unwrap();
    }
    h.until("cleared", SECS(10), |h| {
        !h.shared.prune_report.contains(&web_key())
    })
    .await;
}

/// A group of `desired` whose launch configuration has a preStop `command` and whose group
/// drains for `drain`.
fn draining_manifests(desired: u32, drain: &str, command: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: web}}\nspec:\n  image: img\n  stopGracePeriod: 0s\n  lifecycle:\n    preStop:\n      exec: {{command: [{command}]}}\n---\n\
         apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: web}}\nspec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: 10\n  desiredCapacity: {desired}\n  drainTimeout: {drain}\n  terminationPolicies: [NewestInstance]\n"
    )
}

#[tokio::test(start_paused = true)]
async fn a_scale_in_drains_out_of_service_then_hooks_and_stops_without_holding_the_group() {
    let h = Harness::start(&["a"], &draining_manifests(3, "10s", "echo, bye")).await;
    h.until("3 running", SECS(5), |h| h.total_running() == 3)
        .await;
    let mut all = h.running(0);
    all.sort_by_key(|c| c.created);
    let newest = all[2].name.clone();
    h.set(&draining_manifests(2, "10s", "echo, bye"));
    // At once: the victim (NewestInstance) is draining, out of the counts, still running.
    h.until("draining", SECS(2), |h| {
        h.status("web").is_some_and(|s| {
            s.current == 2
                && s.instances
                    .iter()
                    .any(|i| i.name == newest && i.state == DRAINING)
        })
    })
    .await;
    let t0 = Instant::now();
    // The group is not held up by the drain: a scale-out meanwhile happens at once.
    h.set(&draining_manifests(3, "10s", "echo, bye"));
    h.until("scaled out during the drain", SECS(2), |h| {
        h.total_running() == 4
    })
    .await;
    assert!(Instant::now() - t0 < SECS(2));
    h.until("victim gone", SECS(12), |h| {
        h.engines[0].containers().iter().all(|c| c.name != newest)
    })
    .await;
    assert!(Instant::now() - t0 >= SECS(9), "the drain was cut short");
    h.until("stopped activity", SECS(2), |h| {
        h.status("web").is_some_and(|s| {
            s.activities.iter().any(|a| {
                a.action == "Stopped"
                    && a.instance == newest
                    && a.cause
                        .starts_with("drained 10 s, preStop ok (exit 0), stopped in")
            })
        })
    })
    .await;
    assert_eq!(h.total_running(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_failing_pre_stop_is_recorded_and_the_stop_goes_on() {
    let h = Harness::start(&["a"], &draining_manifests(1, "0s", "\"false\"")).await;
    h.until("1 running", SECS(5), |h| h.total_running() == 1)
        .await;
    h.set(&draining_manifests(0, "0s", "\"false\""));
    h.until("stopped", SECS(5), |h| {
        h.status("web").is_some_and(|s| {
            s.activities.iter().any(|a| {
                a.action == "Stopped"
                    && a.cause.starts_with("preStop failed: `false` exited with 1")
            })
        })
    })
    .await;
    assert!(h.engines[0].containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_rollout_pulls_its_image_on_every_zone_before_it_replaces_anything() {
    let h = Harness::start(&["a", "b"], &manifests(4, "img:1", "a, b")).await;
    h.until("4 running", SECS(5), |h| h.total_running() == 4)
        .await;
    // Zone b's registry refuses the new image: zone a must not start rolling out either.
    h.engines[1].fail_image("img:2", EngineError::Other, "pull access denied for img:2");
    h.set(&manifests(4, "img:2", "a, b"));
    h.until("degraded by the pre-pull", SECS(10), |h| {
        h.status("web").is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Degraded"
                    && c.status == "True"
                    && c.message.contains("pull access denied")
            })
        })
    })
    .await;
    tokio::time::sleep(SECS(20)).await;
    for z in 0..2 {
        let images: Vec<Option<String>> = h.engines[z]
            .containers()
            .iter()
            .map(|c| h.engines[z].image_of(&c.id))
            .collect();
        assert!(
            images.iter().all(|i| i.as_deref() == Some("img:1")) && images.len() == 2,
            "zone {z} changed before the image was everywhere: {images:?}"
        );
    }
    let asked = h.engines[1].calls().ensure_image;
    assert!(
        (1..=6).contains(&asked),
        "{asked} pre-pulls in 20 s: no backoff"
    );
    assert!(h.engines[0].calls().ensure_image >= 1, "zone a pulled too");
    // The registry lets it through: the rollout runs to the end.
    h.engines[1].heal_image("img:2");
    h.until("rolled out", SECS(90), |h| {
        h.total_running() == 4
            && (0..2).all(|z| {
                h.engines[z]
                    .containers()
                    .iter()
                    .all(|c| h.engines[z].image_of(&c.id).as_deref() == Some("img:2"))
            })
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn rebalancing_waits_for_each_drain_so_it_never_runs_more_than_one_extra() {
    let group = |zones: &str| {
        format!(
            "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: web}}\nspec:\n  image: img\n  stopGracePeriod: 0s\n---\n\
             apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: web}}\nspec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: 10\n  desiredCapacity: 4\n  drainTimeout: 10s\n  availabilityZones: [{zones}]\n"
        )
    };
    let h = Harness::start(&["a", "b"], &group("a")).await;
    h.until("4 in a", SECS(5), |h| h.running(0).len() == 4)
        .await;
    // Zone b added: 4 + 0 is uneven; each rebalance step launches one into b and drains one in
    // a for 10 s. Never more than desired + 1 running (draining ones included).
    h.set(&group("a, b"));
    let start = Instant::now();
    while !(h.running(0).len() == 2 && h.running(1).len() == 2) {
        assert!(
            h.total_running() <= 5,
            "{} + {} running",
            h.running(0).len(),
            h.running(1).len()
        );
        assert!(Instant::now() - start < SECS(120), "not rebalanced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_launch_waiting_on_a_pull_shows_it_in_the_status_until_it_ends() {
    let engine = MemoryEngine::new();
    engine.slow_pull("big:1", SECS(8));
    let h = Harness::start_with(&["a"], vec![engine], &manifests(1, "big:1", "a")).await;
    // Shown within the report period, before anything runs (the group's first pass).
    h.until("the pull in the status", SECS(3), |h| {
        h.status("web")
            .is_some_and(|s| s.pulls.len() == 1 && s.pulls[0].zone == "a" && s.current == 0)
    })
    .await;
    let s = h.status("web").unwrap();
    assert_eq!(s.pulls[0].image, "big:1");
    assert_eq!(s.desired_capacity, 1, "the first status knows the target");
    h.until("running, the pull gone", SECS(15), |h| {
        h.total_running() == 1 && h.status("web").is_some_and(|s| s.pulls.is_empty())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn watchers_see_the_new_capacity_and_the_launches_before_the_launches_end() {
    let engine = MemoryEngine::new();
    let h = Harness::start_with(&["a"], vec![engine.clone()], &manifests(1, "img", "a")).await;
    let progressing = |s: &GroupStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == crate::status::PROGRESSING)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
            .unwrap_or_default()
    };
    h.until("1 ready, converged", SECS(5), |h| {
        h.status("web")
            .is_some_and(|s| s.ready == 1 && progressing(&s).1 == "Converged")
    })
    .await;
    // Every launch now takes 3 s (a loaded engine, a registry).
    engine.set_latencies(crate::engine::memory::Latencies {
        create: SECS(3),
        ..Default::default()
    });
    h.set(&manifests(3, "img", "a"));
    let t0 = Instant::now();
    h.until("the new desired capacity in the status", SECS(1), |h| {
        h.status("web").is_some_and(|s| s.desired_capacity == 3)
    })
    .await;
    assert!(Instant::now() - t0 < SECS(1));
    let s = h.status("web").unwrap();
    assert_eq!(h.total_running(), 1, "published before the launches ended");
    assert_eq!((s.current, s.ready, s.instances.len()), (1, 1, 1), "{s:#?}");
    assert_eq!(
        progressing(&s),
        (
            "True".into(),
            "ScalingOut".into(),
            "1 of 3 instances running; launching 2".into()
        )
    );
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.message.as_str()),
        ("False", "1 of 3 instances ready")
    );
    // Still the same while the launches run: nothing made up in between.
    tokio::time::sleep(SECS(2)).await;
    assert_eq!(h.status("web").unwrap(), s);
    // Then the status after the launches, as before: no word of launching left.
    h.until("3 ready, converged", SECS(10), |h| {
        h.status("web").is_some_and(|s| {
            s.ready == 3
                && progressing(&s)
                    == (
                        "False".into(),
                        "Converged".into(),
                        "the group matches its spec".into(),
                    )
        })
    })
    .await;
    let s = h.status("web").unwrap();
    assert_eq!(
        s.activities.iter().filter(|a| a.action == "Launch").count(),
        3
    );
    // Converged, idle resyncs publish nothing new.
    tokio::time::sleep(SECS(30)).await;
    assert_eq!(h.status("web").unwrap(), s);
}

mod probes;
