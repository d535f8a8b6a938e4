//! Scenario tests of warm pools: the whole controller over in-memory engines, on paused time
//! (the real-engine tests are `tests/e2e/warm_pool.rs`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::controller::Handle;
use crate::engine::memory::MemoryEngine;
use crate::engine::{labels, warm, ContainerState, Observed};
use crate::manifest::{Kind, ObjectKey};
use crate::status::{GroupStatus, WARM};
use crate::watch::store::Desired;

struct Harness {
    handle: Handle,
    tx: watch::Sender<Arc<Desired>>,
    engines: Vec<MemoryEngine>,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn snapshot(yaml: &str) -> Arc<Desired> {
    Arc::new(crate::watch::store::test_snapshot(yaml))
}

impl Harness {
    async fn start(engines: Vec<MemoryEngine>, yaml: &str) -> Harness {
        Self::start_with_state(engines, yaml, None).await
    }

    /// Like [`Harness::start`], keeping the instance state (drains) in `state_dir`.
    async fn start_with_state(
        engines: Vec<MemoryEngine>,
        yaml: &str,
        state_dir: Option<std::path::PathBuf>,
    ) -> Harness {
        Self::start_configured(engines, yaml, |c| c.state_dir = state_dir).await
    }

    /// Like [`Harness::start`], with `configure` applied to the controller configuration.
    async fn start_configured(
        engines: Vec<MemoryEngine>,
        yaml: &str,
        configure: impl FnOnce(&mut Config),
    ) -> Harness {
        let names: Vec<String> = (0..engines.len())
            .map(|i| ["a", "b", "c"][i].to_string())
            .collect();
        let (tx, rx) = watch::channel(snapshot(yaml));
        let (handle, shutdown) = super::tests::spawn_on_memory(&names, &engines, rx, configure);
        Harness {
            handle,
            tx,
            engines,
            shutdown,
        }
    }

    fn all(&self) -> Vec<Observed> {
        self.engines.iter().flat_map(|e| e.containers()).collect()
    }

    /// Running instances (not pool members).
    fn instances(&self) -> Vec<Observed> {
        self.all()
            .into_iter()
            .filter(|c| c.state == ContainerState::Running && !warm::is_member(c))
            .collect()
    }

    /// Pool members in `state`.
    fn members(&self, state: ContainerState) -> Vec<Observed> {
        self.all()
            .into_iter()
            .filter(|c| c.state == state && warm::is_member(c))
            .collect()
    }

    fn status(&self) -> Option<GroupStatus> {
        self.handle
            .shared
            .status
            .read()
            .unwrap()
            .get(&ObjectKey::new(Kind::AutoScalingGroup, "default", "web"))
            .cloned()
    }

    async fn until(&self, what: &str, cond: impl Fn(&Harness) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            if Instant::now() - start > Duration::from_secs(30) {
                panic!(
                    "timed out waiting for {what}; containers: {:#?}; status: {:#?}",
                    self.all()
                        .iter()
                        .map(|c| (c.name.clone(), c.state))
                        .collect::<Vec<_>>(),
                    self.status()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn manifests(desired: u32, image: &str, zones: &str, pool: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: web}}\nspec:\n  image: {image}\n  stopGracePeriod: 0s\n---\n\
         apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: web}}\nspec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: 10\n  desiredCapacity: {desired}\n  availabilityZones: [{zones}]\n  warmPool: {pool}\n"
    )
}

fn ids(cs: &[Observed]) -> BTreeSet<String> {
    cs.iter().map(|c| c.id.clone()).collect()
}

fn engines(n: usize) -> Vec<MemoryEngine> {
    (0..n)
        .map(|i| MemoryEngine::with_id_offset(i as u64 * 1_000_000))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_killed_instance_is_replaced_by_a_pool_member_and_the_pool_refilled() {
    let h = Harness::start(
        engines(2),
        &manifests(2, "img", "a, b", "{minSize: 2, maxPrepared: 2}"),
    )
    .await;
    h.until("2 instances and 2 paused spares", |h| {
        h.instances().len() == 2 && h.members(ContainerState::Paused).len() == 2
    })
    .await;
    // Spread like instances: one spare per zone.
    let spares = h.members(ContainerState::Paused);
    let zones: BTreeSet<&str> = spares
        .iter()
        .map(|c| c.labels[labels::ZONE].as_str())
        .collect();
    assert_eq!(zones.len(), 2, "{spares:?}");
    // Never counted: the status says 2 instances, and lists the spares as warm.
    h.until("status", |h| h.status().is_some_and(|s| s.ready == 2))
        .await;
    let s = h.status().unwrap();
    assert_eq!((s.current, s.ready), (2, 2));
    assert_eq!(s.instances.iter().filter(|i| i.state == WARM).count(), 2);
    let pool = s.warm_pool.unwrap();
    assert_eq!(
        (pool.size, pool.ready, pool.state.as_str()),
        (2, 2, "Paused")
    );
    assert!(pool.memory_bytes.is_some_and(|m| m > 0));

    // Kill the instance in zone b: the spare of zone b takes its place.
    let victim = h
        .instances()
        .into_iter()
        .find(|c| c.labels[labels::ZONE] == "b")
        .unwrap();
    let spare_b = spares
        .iter()
        .find(|c| c.labels[labels::ZONE] == "b")
        .unwrap()
        .clone();
    let creates = h.engines[1].calls().create;
    h.engines[1].kill(&victim.id).unwrap();
    h.until("the spare of b serves", |h| {
        h.instances().iter().any(|c| c.id == spare_b.id)
    })
    .await;
    let taken = h
        .instances()
        .into_iter()
        .find(|c| c.id == spare_b.id)
        .unwrap();
    assert_eq!(
        Some(taken.name.as_str()),
        warm::instance_name(&spare_b.name)
    );
    // Refilled in the background.
    h.until("pool refilled", |h| {
        h.members(ContainerState::Paused).len() == 2 && h.instances().len() == 2
    })
    .await;
    assert_eq!(
        h.engines[1].calls().create,
        creates + 1,
        "one refill, no cold launch"
    );
    h.until("activity", |h| {
        h.status().is_some_and(|s| {
            s.activities
                .iter()
                .any(|a| a.cause.contains("replaced from warm pool"))
        })
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn scale_out_takes_every_spare_before_launching_cold() {
    let h = Harness::start(engines(1), &manifests(0, "img", "a", "{minSize: 5}")).await;
    h.until("5 spares", |h| h.members(ContainerState::Paused).len() == 5)
        .await;
    let spares = ids(&h.members(ContainerState::Paused));
    let creates = h.engines[0].calls().create;
    h.tx.send(snapshot(&manifests(7, "img", "a", "{minSize: 5}")))
        .unwrap();
    h.until("7 instances", |h| h.instances().len() == 7).await;
    let instances = ids(&h.instances());
    assert!(spares.is_subset(&instances), "every spare serves");
    // Two cold launches; the pool's cap (maxSize 10 − 7) allows 3 new spares.
    h.until("3 spares", |h| h.members(ContainerState::Paused).len() == 3)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.engines[0].calls().create, creates + 2 + 3);
    assert_eq!(h.instances().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_new_launch_configuration_replaces_the_pool() {
    let pool = "{minSize: 2, maxPrepared: 2}";
    let h = Harness::start(engines(1), &manifests(1, "img", "a", pool)).await;
    h.until("2 spares", |h| h.members(ContainerState::Paused).len() == 2)
        .await;
    let old = ids(&h.members(ContainerState::Paused));
    h.tx.send(snapshot(&manifests(1, "img:2", "a", pool)))
        .unwrap();
    h.until("2 new spares and a new instance", |h| {
        let now = h.members(ContainerState::Paused);
        now.len() == 2
            && ids(&now).is_disjoint(&old)
            && h.instances().len() == 1
            && h.instances()
                .iter()
                .all(|c| h.engines[0].image_of(&c.id).as_deref() == Some("img:2"))
    })
    .await;
    for c in h.members(ContainerState::Paused) {
        assert_eq!(h.engines[0].image_of(&c.id).as_deref(), Some("img:2"));
    }
    // The old spares are gone, not kept.
    h.until("old spares removed", |h| {
        h.all().iter().all(|c| !old.contains(&c.id))
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_controller_tells_spares_from_instances_by_what_the_engine_shows() {
    let engine = MemoryEngine::new();
    let yaml = manifests(2, "img", "a", "{minSize: 2, maxPrepared: 2}");
    let first = Harness::start(vec![engine.clone()], &yaml).await;
    first
        .until("converged", |h| {
            h.instances().len() == 2 && h.members(ContainerState::Paused).len() == 2
        })
        .await;
    drop(first);
    let before = ids(&engine.containers());
    let creates = engine.calls().create;
    let second = Harness::start(vec![engine.clone()], &yaml).await;
    second
        .until("status", |h| {
            h.status()
                .is_some_and(|s| s.ready == 2 && s.warm_pool.is_some_and(|p| p.ready == 2))
        })
        .await;
    // What the spares hold is measured again (8 MiB each on the memory engine), at once: not
    // at the next resync.
    let restarted = Instant::now();
    second
        .until("memory measured", |h| {
            h.status()
                .and_then(|s| s.warm_pool)
                .is_some_and(|p| p.memory_bytes == Some(2 * (8 << 20)))
        })
        .await;
    assert!(
        restarted.elapsed() < Duration::from_secs(2),
        "{:?}",
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(engine.calls().create, creates, "nothing new");
    assert_eq!(ids(&engine.containers()), before, "nothing removed");
    // A member left running by a controller killed mid-take is paused again.
    let spare = second.members(ContainerState::Paused)[0].clone();
    use crate::engine::{Engine, Transition};
    engine
        .transition(&spare.id, Transition::Unpause)
        .await
        .unwrap();
    second
        .until("paused again", |h| {
            h.members(ContainerState::Paused).len() == 2
        })
        .await;
    assert_eq!(second.instances().len(), 2, "not counted as an instance");
}

#[tokio::test(start_paused = true)]
async fn scale_in_returns_instances_to_the_pool_with_reuse_on_scale_in() {
    let pool = "{minSize: 2, maxPrepared: 2, reuseOnScaleIn: true}";
    let h = Harness::start(engines(1), &manifests(3, "img", "a", pool)).await;
    h.until("3 + 2", |h| {
        h.instances().len() == 3 && h.members(ContainerState::Paused).len() == 2
    })
    .await;
    // Scale in by one while the pool grows by one: the scaled-in instance fills it.
    let instances = ids(&h.instances());
    let creates = h.engines[0].calls().create;
    let bigger = "{minSize: 3, maxPrepared: 3, reuseOnScaleIn: true}";
    h.tx.send(snapshot(&manifests(2, "img", "a", bigger)))
        .unwrap();
    h.until("2 instances, 3 spares", |h| {
        h.instances().len() == 2 && h.members(ContainerState::Paused).len() == 3
    })
    .await;
    let spares = ids(&h.members(ContainerState::Paused));
    assert_eq!(
        spares.intersection(&instances).count(),
        1,
        "the scaled-in instance is a spare now"
    );
    assert_eq!(
        h.engines[0].calls().create,
        creates,
        "nothing new was prepared"
    );
    let s = h.status().unwrap();
    assert!(
        s.activities
            .iter()
            .any(|a| a.cause.contains("returned to the warm pool")),
        "{:?}",
        s.activities
    );
}

#[tokio::test(start_paused = true)]
async fn a_spare_waits_its_prepare_time_and_failed_preparations_back_off() {
    let engine = MemoryEngine::new();
    let h = Harness::start(
        vec![engine.clone()],
        &manifests(0, "img", "a", "{minSize: 1, prepareTime: 5s}"),
    )
    .await;
    h.until("a spare started", |h| h.all().iter().any(warm::is_member))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        h.members(ContainerState::Paused).is_empty(),
        "paused before its prepare time"
    );
    assert!(
        h.instances().is_empty(),
        "a spare being prepared is no instance"
    );
    let pool = h.status().and_then(|s| s.warm_pool).expect("pool status");
    assert_eq!(
        (pool.ready, pool.preparing),
        (0, 1),
        "one spare in preparation"
    );
    h.until("paused after 5 s", |h| {
        h.members(ContainerState::Paused).len() == 1
    })
    .await;

    // A spec whose containers die at once: preparations fail and back off, visibly.
    engine.crash_on_start("bad", 1);
    h.tx.send(snapshot(&manifests(0, "bad", "a", "{minSize: 1}")))
        .unwrap();
    h.until("the failure is shown", |h| {
        h.status()
            .and_then(|s| s.warm_pool)
            .and_then(|p| p.message)
            .is_some_and(|m| m.contains("preparing a spare failed"))
    })
    .await;
    let creates = engine.calls().create;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let more = engine.calls().create - creates;
    assert!(
        (1..=4).contains(&more),
        "{more} preparations in 20 s: the backoff does not hold"
    );
}

/// The manifests of [`manifests`] with the group's `drainTimeout` set.
fn manifests_draining(desired: u32, pool: &str, drain: &str) -> String {
    format!(
        "{}  drainTimeout: {drain}\n",
        manifests(desired, "img", "a", pool)
    )
}

#[tokio::test(start_paused = true)]
async fn a_give_back_drains_for_the_drain_timeout_before_joining_the_pool() {
    let pool = "{minSize: 2, maxPrepared: 2, reuseOnScaleIn: true}";
    let h = Harness::start(engines(1), &manifests_draining(3, pool, "10s")).await;
    h.until("3 + 2", |h| {
        h.instances().len() == 3 && h.members(ContainerState::Paused).len() == 2
    })
    .await;
    let instances = ids(&h.instances());
    let creates = h.engines[0].calls().create;
    let bigger = "{minSize: 3, maxPrepared: 3, reuseOnScaleIn: true}";
    let began = Instant::now();
    h.tx.send(snapshot(&manifests_draining(2, bigger, "10s")))
        .unwrap();
    // Out of service at once: shown `draining`, not counted, still running under its name.
    h.until("one instance draining", |h| {
        h.status()
            .is_some_and(|s| s.current == 2 && s.instances.iter().any(|i| i.state == "draining"))
    })
    .await;
    let draining = h
        .status()
        .unwrap()
        .instances
        .into_iter()
        .find(|i| i.state == "draining")
        .unwrap();
    let id = h
        .instances()
        .into_iter()
        .find(|c| c.name == draining.name)
        .expect("still running under its instance name")
        .id;
    assert!(instances.contains(&id));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = h.status().unwrap();
    assert_eq!(s.current, 2, "a draining instance is not counted");
    assert!(
        s.instances
            .iter()
            .any(|i| i.name == draining.name && i.state == "draining"),
        "still draining half way: {:?}",
        s.instances
    );
    assert_eq!(h.instances().len(), 3, "not paused during its drain");
    assert_eq!(
        h.members(ContainerState::Paused).len(),
        2,
        "not a member yet"
    );
    assert_eq!(
        h.engines[0].calls().create,
        creates,
        "its place in the pool is held: no refill"
    );
    // Then a warm member: renamed and paused, no longer an instance.
    h.until("2 instances, 3 spares", |h| {
        h.instances().len() == 2 && h.members(ContainerState::Paused).len() == 3
    })
    .await;
    assert!(began.elapsed() >= Duration::from_secs(10), "drained 10 s");
    let spare = h
        .members(ContainerState::Paused)
        .into_iter()
        .find(|c| c.id == id)
        .expect("the drained instance is a spare now");
    assert_eq!(spare.name, warm::member_name(&draining.name));
    assert_eq!(h.engines[0].calls().create, creates, "nothing new prepared");
    let s = h.status().unwrap();
    assert!(s.instances.iter().all(|i| i.state != "draining"));
    assert!(
        s.activities
            .iter()
            .any(|a| a.cause.contains("after a drain of 10 s")),
        "{:?}",
        s.activities
    );
}

#[tokio::test(start_paused = true)]
async fn a_give_back_without_drain_timeout_is_immediate() {
    let pool = "{minSize: 2, maxPrepared: 2, reuseOnScaleIn: true}";
    let h = Harness::start(engines(1), &manifests_draining(3, pool, "0s")).await;
    h.until("3 + 2", |h| {
        h.instances().len() == 3 && h.members(ContainerState::Paused).len() == 2
    })
    .await;
    let bigger = "{minSize: 3, maxPrepared: 3, reuseOnScaleIn: true}";
    let began = Instant::now();
    h.tx.send(snapshot(&manifests_draining(2, bigger, "0s")))
        .unwrap();
    let start = Instant::now();
    while !(h.instances().len() == 2 && h.members(ContainerState::Paused).len() == 3) {
        assert!(
            h.status()
                .is_none_or(|s| s.instances.iter().all(|i| i.state != "draining")),
            "never draining with drainTimeout 0"
        );
        assert!(start.elapsed() < Duration::from_secs(30), "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(began.elapsed() < Duration::from_secs(2), "at once");
}

#[tokio::test(start_paused = true)]
async fn a_give_back_interrupted_by_a_restart_resumes_its_drain_then_joins_the_pool() {
    use crate::reconcile::instance_state::{state_path, Drain, InstanceState};
    let dir = tempfile::tempdir().unwrap();
    let engine = MemoryEngine::new();
    let pool = "{minSize: 2, maxPrepared: 2, reuseOnScaleIn: true}";
    let first = Harness::start(vec![engine.clone()], &manifests_draining(3, pool, "10s")).await;
    first
        .until("3 + 2", |h| {
            h.instances().len() == 3 && h.members(ContainerState::Paused).len() == 2
        })
        .await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A controller killed (kill -9) 3 s into a give-back's drain left its record, and the
    // instance running under its instance name.
    let victim = engine
        .containers()
        .into_iter()
        .find(|c| c.state == ContainerState::Running && !warm::is_member(c))
        .unwrap();
    let path = state_path(dir.path(), &Config::default().controller_name);
    let state = InstanceState::open(&path).unwrap();
    state.drain_started(
        &victim.id,
        Drain {
            namespace: "default".into(),
            group: "web".into(),
            name: victim.name.clone(),
            zone: "a".into(),
            cause: "desired capacity lowered to 2".into(),
            reason: "GiveBack".into(),
            since: chrono::Utc::now() - chrono::Duration::seconds(3),
            drain_secs: 10,
        },
    );
    state.flush();
    drop(state);
    let creates = engine.calls().create;
    let began = Instant::now();
    let bigger = manifests_draining(
        2,
        "{minSize: 3, maxPrepared: 3, reuseOnScaleIn: true}",
        "10s",
    );
    let second = Harness::start_with_state(
        vec![engine.clone()],
        &bigger,
        Some(dir.path().to_path_buf()),
    )
    .await;
    second
        .until("draining again", |h| {
            h.status().is_some_and(|s| {
                s.current == 2
                    && s.instances
                        .iter()
                        .any(|i| i.name == victim.name && i.state == "draining")
            })
        })
        .await;
    second
        .until("2 instances, 3 spares", |h| {
            h.instances().len() == 2 && h.members(ContainerState::Paused).len() == 3
        })
        .await;
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_secs(6) && waited < Duration::from_secs(9),
        "what was left of the drain: {waited:?}"
    );
    let spare = second
        .members(ContainerState::Paused)
        .into_iter()
        .find(|c| c.id == victim.id)
        .expect("given back, not removed");
    assert_eq!(spare.name, warm::member_name(&victim.name));
    assert_eq!(engine.calls().create, creates, "nothing new prepared");
}

mod quota_tests;
