//! Scenario tests of warm pools against namespace quotas: a stopped spare's start and a
//! give-back's drain never bring a namespace over its `maxContainers`, and neither does an
//! ordinary scale-in's drain (the container still runs until it is removed).

use std::time::Duration;

use tokio::time::Instant;

use super::{engines, manifests, manifests_draining, snapshot, Harness};
use crate::config::tenancy::NamespaceLimits;
use crate::config::Config;
use crate::engine::{labels, ContainerState, Observed};
use crate::manifest::{Kind, ObjectKey};
use crate::status::GroupStatus;

/// Namespace `default` may run at most `n` containers.
fn at_most(n: u32) -> impl FnOnce(&mut Config) {
    move |c| {
        c.namespaces.insert(
            "default".into(),
            NamespaceLimits {
                max_containers: Some(n),
                ..NamespaceLimits::default()
            },
        );
    }
}

/// What the namespace's quota counts now: every container that has not failed (running,
/// paused, created), instances and spares alike, of every group.
fn held(h: &Harness) -> Vec<(String, ContainerState)> {
    h.all()
        .into_iter()
        .filter(|c| !c.state.is_failed())
        .map(|c| (c.name, c.state))
        .collect()
}

fn of_group<'a>(cs: &'a [Observed], group: &'a str) -> impl Iterator<Item = &'a Observed> {
    cs.iter()
        .filter(move |c| c.labels.get(labels::GROUP).map(String::as_str) == Some(group))
}

fn status_of(h: &Harness, group: &str) -> Option<GroupStatus> {
    h.handle
        .shared
        .status
        .read()
        .unwrap()
        .get(&ObjectKey::new(Kind::AutoScalingGroup, "default", group))
        .cloned()
}

/// The `Degraded` condition's reason and message, when it is `True`.
fn degraded(s: &GroupStatus) -> Option<(String, String)> {
    s.conditions
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// Waits for `cond` (30 s at most), checking all along that the namespace holds at most `cap`.
async fn until_within(h: &Harness, cap: usize, what: &str, cond: impl Fn(&Harness) -> bool) {
    let start = Instant::now();
    loop {
        let now = held(h);
        assert!(
            now.len() <= cap,
            "over the quota of {cap} ({what}): {now:?}"
        );
        if cond(h) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}; held: {now:?}; status: {:#?}",
            h.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks for `d` that the namespace holds at most `cap`.
async fn stays_within(h: &Harness, cap: usize, d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        let now = held(h);
        assert!(now.len() <= cap, "over the quota of {cap}: {now:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn taking_stopped_spares_never_brings_a_namespace_over_its_max_containers() {
    let pool = "{state: Stopped, minSize: 3, maxPrepared: 3}";
    let h =
        Harness::start_configured(engines(1), &manifests(0, "img", "a", pool), at_most(2)).await;
    // Prepared two at a time within the quota, then stopped: exited spares are not counted.
    until_within(&h, 2, "3 stopped spares", |h| {
        h.members(ContainerState::Exited).len() == 3
    })
    .await;
    // Two instances from the pool: each start reserved, both fit.
    h.tx.send(snapshot(&manifests(2, "img", "a", pool)))
        .unwrap();
    until_within(&h, 2, "2 instances", |h| {
        h.instances().len() == 2 && h.members(ContainerState::Exited).len() == 1
    })
    .await;
    // At the limit, a scale-out may not start the last spare: refused, visibly, and the
    // group keeps its instances.
    h.tx.send(snapshot(&manifests(3, "img", "a", pool)))
        .unwrap();
    until_within(&h, 2, "QuotaExceeded", |h| {
        h.status()
            .and_then(|s| degraded(&s))
            .is_some_and(|(reason, _)| reason == "QuotaExceeded")
    })
    .await;
    let (_, message) = degraded(&h.status().unwrap()).unwrap();
    assert!(message.contains("at most 2 containers"), "{message}");
    stays_within(&h, 2, Duration::from_secs(5)).await;
    assert_eq!(h.instances().len(), 2, "never scaled down");
    let spare = h.members(ContainerState::Exited);
    assert_eq!(spare.len(), 1, "the spare waits, not started");
    // A kill frees a place: the spare replaces the instance (self-heal at the limit still
    // works), and the scale-out beyond the quota still waits.
    let victim = h.instances().remove(0);
    h.engines[0].kill(&victim.id).unwrap();
    until_within(&h, 2, "the spare serves", |h| {
        h.instances().iter().any(|c| c.id == spare[0].id)
    })
    .await;
    stays_within(&h, 2, Duration::from_secs(5)).await;
    assert_eq!(h.instances().len(), 2);
    let s = h.status().unwrap();
    assert_eq!(
        degraded(&s).map(|(r, _)| r).as_deref(),
        Some("QuotaExceeded")
    );
    assert!(
        s.activities
            .iter()
            .any(|a| a.cause.contains("replaced from warm pool")),
        "{:?}",
        s.activities
    );
}

#[tokio::test(start_paused = true)]
async fn an_instance_draining_back_to_the_pool_keeps_its_place_in_the_quota() {
    let pool = "{minSize: 2, maxPrepared: 2, reuseOnScaleIn: true}";
    let other = |n: u32| {
        format!(
            "---\napiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: other}}\nspec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: 10\n  desiredCapacity: {n}\n  availabilityZones: [a]\n"
        )
    };
    let yaml = format!("{}{}", manifests_draining(3, pool, "10s"), other(0));
    let h = Harness::start_configured(engines(1), &yaml, at_most(5)).await;
    until_within(&h, 5, "3 + 2 paused", |h| {
        h.instances().len() == 3 && h.members(ContainerState::Paused).len() == 2
    })
    .await;
    // `web` gives an instance back (10 s drain) while `other` asks for a container: the
    // draining instance still runs, and then holds a paused spare's place.
    let bigger = "{minSize: 3, maxPrepared: 3, reuseOnScaleIn: true}";
    let yaml = format!("{}{}", manifests_draining(2, bigger, "10s"), other(1));
    h.tx.send(snapshot(&yaml)).unwrap();
    until_within(&h, 5, "2 instances, 3 spares", |h| {
        h.instances().len() == 2 && h.members(ContainerState::Paused).len() == 3
    })
    .await;
    stays_within(&h, 5, Duration::from_secs(3)).await;
    let all = h.all();
    assert_eq!(of_group(&all, "other").count(), 0, "no room for `other`");
    let s = status_of(&h, "other").expect("status of other");
    let (reason, message) = degraded(&s).expect("other is Degraded");
    assert_eq!(reason, "QuotaExceeded");
    assert!(message.contains("at most 5 containers"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn a_spare_being_prepared_is_counted_once_not_twice() {
    let pool = "{minSize: 2, maxPrepared: 2, prepareTime: 5s}";
    let h =
        Harness::start_configured(engines(1), &manifests(1, "img", "a", pool), at_most(4)).await;
    // Two spares warming up (running, in the zone's cache) beside one instance: 3 of 4.
    until_within(&h, 4, "1 instance, 2 spares preparing", |h| {
        h.members(ContainerState::Running).len() == 2 && h.instances().len() == 1
    })
    .await;
    // One more instance fits, while they still prepare (counted once each, not as 5 of 4).
    let began = Instant::now();
    h.tx.send(snapshot(&manifests(2, "img", "a", pool)))
        .unwrap();
    until_within(&h, 4, "2 instances", |h| h.instances().len() == 2).await;
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "launched at once, not after the preparations: {:?}",
        began.elapsed()
    );
    assert_eq!(
        h.members(ContainerState::Running).len(),
        2,
        "still preparing"
    );
    until_within(&h, 4, "2 paused spares", |h| {
        h.members(ContainerState::Paused).len() == 2
    })
    .await;
    stays_within(&h, 4, Duration::from_secs(3)).await;
}

#[tokio::test(start_paused = true)]
async fn an_instance_draining_for_scale_in_holds_its_place_until_removed() {
    let groups = |web: u32, other: u32| {
        format!(
            "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: web}}\nspec:\n  image: img\n  stopGracePeriod: 0s\n---\n\
             apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: web}}\nspec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: 10\n  desiredCapacity: {web}\n  availabilityZones: [a]\n  drainTimeout: 10s\n---\n\
             apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: other}}\nspec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: 10\n  desiredCapacity: {other}\n  availabilityZones: [a]\n"
        )
    };
    let h = Harness::start_configured(engines(1), &groups(3, 0), at_most(3)).await;
    until_within(&h, 3, "3 instances of web", |h| h.instances().len() == 3).await;
    // `web` scales in (a 10 s drain) while `other` asks for a container: the draining instance
    // still runs, so `other` waits for its removal.
    let asked = Instant::now();
    h.tx.send(snapshot(&groups(2, 1))).unwrap();
    until_within(&h, 3, "other launched", |h| {
        of_group(&h.all(), "other").any(|c| c.state == ContainerState::Running)
    })
    .await;
    assert!(
        asked.elapsed() >= Duration::from_secs(10),
        "launched beside the draining instance after {:?}",
        asked.elapsed()
    );
    stays_within(&h, 3, Duration::from_secs(3)).await;
    assert_eq!(of_group(&h.all(), "web").count(), 2);
}
