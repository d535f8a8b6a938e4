//! Metrics collection: one-shot CPU/memory samples of every managed container, CPU% computed
//! from our own previous sample the way `docker stats` does, and group averages.
//!
//! Cost: one `stats` call per running container and period, at most `concurrency` in flight per
//! zone, one-shot (the engine does not wait a second for a second sample as streaming stats
//! do). Containers are found in the zones' caches, so no list call is needed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use crate::engine::observe::{group_key, Reach, Zone};
use crate::engine::{ContainerState, StatsSample};
use crate::manifest::ObjectKey;

use super::policy::GroupSample;

/// One container's latest metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceMetrics {
    pub name: String,
    pub namespace: String,
    pub group: String,
    pub zone: String,
    /// CPU in percent of one CPU, as `docker stats` shows it (can exceed 100 on several CPUs);
    /// `None` until two samples exist.
    pub cpu_percent: Option<f64>,
    /// CPU in percent of the instance's CPU allotment (its limit, or one CPU without a limit):
    /// what policies scale on.
    pub cpu_of_limit: Option<f64>,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
    pub memory_percent: Option<f64>,
    /// Still in its warm-up (left out of the group's averages).
    pub warming: bool,
    pub time: DateTime<Utc>,
}

/// CPU% of one CPU between two samples, as `docker stats` computes it.
pub fn cpu_percent(prev: &StatsSample, cur: &StatsSample) -> Option<f64> {
    let cpu = cur.cpu_total_ns.checked_sub(prev.cpu_total_ns)? as f64;
    let sys = cur.system_cpu_ns.checked_sub(prev.system_cpu_ns)? as f64;
    if sys <= 0.0 {
        return None;
    }
    let cpus = cur.online_cpus.max(1) as f64;
    Some(cpu / sys * cpus * 100.0)
}

/// What the collector needs to know about a group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupInfo {
    /// CPUs of each instance's limit (`None`: unlimited, counted as one CPU).
    pub cpus: Option<f64>,
    /// Instances younger than this are left out of averages.
    pub warm_up: Duration,
}

/// Samples containers and keeps the previous sample of each.
#[derive(Default)]
pub struct Collector {
    prev: HashMap<String, StatsSample>,
    latest: BTreeMap<String, InstanceMetrics>,
    /// The probes' verdicts: an instance its readiness probe says is not ready is left out of
    /// averages, as one warming up.
    pub readiness: Option<Arc<crate::probe::Verdicts>>,
}

impl Collector {
    /// Samples every running container of the groups in `groups` on every reachable zone, and
    /// returns each group's sample. Groups with no reachable zone get no sample (missing).
    pub async fn collect(
        &mut self,
        zones: &[Arc<Zone>],
        groups: &BTreeMap<ObjectKey, GroupInfo>,
        concurrency: usize,
        now: DateTime<Utc>,
    ) -> BTreeMap<ObjectKey, GroupSample> {
        let mut seen: HashMap<String, ()> = HashMap::new();
        let mut per_group: BTreeMap<ObjectKey, (Vec<f64>, Vec<f64>, u32)> = BTreeMap::new();
        let mut reached: BTreeMap<ObjectKey, bool> = BTreeMap::new();
        for zone in zones {
            if zone.reach() != Reach::Reachable {
                continue;
            }
            let Some(engine) = zone.engine() else {
                continue;
            };
            let mut todo = Vec::new();
            for key in groups.keys() {
                reached.insert(key.clone(), true);
                for o in zone.instances_of(key) {
                    // Warm pool members are spares, not capacity: never measured.
                    if o.state == ContainerState::Running && !crate::engine::warm::is_member(&o) {
                        todo.push((key.clone(), o));
                    }
                }
            }
            let results: Vec<_> = stream::iter(todo)
                .map(|(key, o)| {
                    let engine = engine.clone();
                    async move {
                        let r = engine.stats(&o.id).await;
                        (key, o, r)
                    }
                })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
            for (key, o, r) in results {
                let Ok(cur) = r else { continue };
                seen.insert(o.id.clone(), ());
                let info = groups[&key];
                let cpu = self.prev.get(&o.id).and_then(|p| cpu_percent(p, &cur));
                self.prev.insert(o.id.clone(), cur);
                let cpu_of_limit = cpu.map(|c| c / info.cpus.unwrap_or(1.0).max(0.001));
                let memory_percent = (cur.memory_limit_bytes > 0)
                    .then(|| cur.memory_used_bytes as f64 / cur.memory_limit_bytes as f64 * 100.0);
                // Lists may not carry the start time: creation is a close, earlier bound.
                let started = o.started_at.unwrap_or(o.created);
                let not_ready = self
                    .readiness
                    .as_ref()
                    .and_then(|v| v.get(&o.id))
                    .is_some_and(|v| v.ready == Some(false));
                let warming = not_ready
                    || now - started < chrono::Duration::from_std(info.warm_up).unwrap_or_default();
                let entry = per_group.entry(key.clone()).or_default();
                if !warming {
                    if let Some(c) = cpu_of_limit {
                        entry.0.push(c);
                        entry.2 += 1;
                    }
                    if let Some(m) = memory_percent {
                        entry.1.push(m);
                    }
                }
                let labels = group_key(&o.labels);
                self.latest.insert(
                    o.id.clone(),
                    InstanceMetrics {
                        name: o.name.clone(),
                        namespace: labels
                            .as_ref()
                            .map(|k| k.namespace.clone())
                            .unwrap_or_default(),
                        group: labels.map(|k| k.name).unwrap_or_default(),
                        zone: zone.name.clone(),
                        cpu_percent: cpu,
                        cpu_of_limit,
                        memory_used_bytes: cur.memory_used_bytes,
                        memory_limit_bytes: cur.memory_limit_bytes,
                        memory_percent,
                        warming,
                        time: now,
                    },
                );
            }
        }
        // Forget containers that are gone.
        self.prev.retain(|id, _| seen.contains_key(id));
        self.latest.retain(|id, _| seen.contains_key(id));
        let avg = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        reached
            .into_keys()
            .map(|key| {
                let (cpu, mem, n) = per_group.remove(&key).unwrap_or_default();
                let sample = GroupSample {
                    time: now,
                    cpu: avg(&cpu),
                    memory: avg(&mem),
                    instances: n,
                };
                (key, sample)
            })
            .collect()
    }

    /// The latest metrics of every sampled container, by container ID.
    pub fn instances(&self) -> Vec<InstanceMetrics> {
        self.latest.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::memory::MemoryEngine;
    use crate::engine::observe::{fixed_connector, observe};
    use crate::engine::{labels, ContainerSpec, Engine};
    use crate::manifest::Kind;
    use crate::reconcile::queue::Queue;
    use tokio_util::sync::CancellationToken;

    async fn zone_with(engine: &MemoryEngine, shutdown: &CancellationToken) -> Arc<Zone> {
        let zone = Arc::new(Zone::new("a"));
        let connect = fixed_connector(Arc::new(engine.clone()));
        tokio::spawn(observe(
            zone.clone(),
            connect,
            Duration::from_secs(60),
            Arc::new(Queue::new()),
            Arc::new(Vec::new),
            shutdown.clone(),
        ));
        for _ in 0..200 {
            if zone.reach() == Reach::Reachable {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        zone
    }

    fn spec(name: &str) -> ContainerSpec {
        let mut l = BTreeMap::new();
        l.insert(labels::MANAGED_BY.to_string(), labels::MANAGER.to_string());
        l.insert(labels::NAMESPACE.to_string(), "default".to_string());
        l.insert(labels::GROUP.to_string(), "web".to_string());
        ContainerSpec {
            name: name.into(),
            image: "img".into(),
            labels: l,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn group_averages_use_the_cpu_limit_and_leave_warming_instances_out() {
        let engine = MemoryEngine::new();
        let shutdown = CancellationToken::new();
        let a = engine.create_and_start(&spec("web-a")).await.unwrap();
        let b = engine.create_and_start(&spec("web-b")).await.unwrap();
        let zone = zone_with(&engine, &shutdown).await;
        assert_eq!(zone.len(), 2);
        engine.set_usage(&a.id, 0.5, 128 << 20).unwrap();
        engine.set_usage(&b.id, 0.25, 64 << 20).unwrap();
        let key = ObjectKey::new(Kind::AutoScalingGroup, "default", "web");
        let mut groups = BTreeMap::new();
        groups.insert(
            key.clone(),
            GroupInfo {
                cpus: Some(0.5),
                warm_up: Duration::ZERO,
            },
        );
        let mut c = Collector::default();
        let first = c
            .collect(std::slice::from_ref(&zone), &groups, 4, Utc::now())
            .await;
        assert_eq!(first[&key].cpu, None, "CPU needs two samples");
        assert_eq!(first[&key].instances, 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = c
            .collect(std::slice::from_ref(&zone), &groups, 4, Utc::now())
            .await;
        let s = &second[&key];
        // 0.5 and 0.25 of a CPU on a 0.5 CPU limit: 100% and 50%, average 75%.
        let cpu = s.cpu.unwrap();
        assert!((cpu - 75.0).abs() < 3.0, "{cpu}");
        assert_eq!(s.instances, 2);
        assert!((s.memory.unwrap() - 37.5).abs() < 0.1);
        let top = c.instances();
        assert_eq!(top.len(), 2);
        let ta = top.iter().find(|i| i.name == "web-a").unwrap();
        assert!((ta.cpu_percent.unwrap() - 50.0).abs() < 2.0, "{ta:?}");
        assert_eq!(ta.group, "web");

        // Instances in their warm-up are measured (ms top) but not averaged.
        groups.get_mut(&key).unwrap().warm_up = Duration::from_secs(3600);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let third = c
            .collect(std::slice::from_ref(&zone), &groups, 4, Utc::now())
            .await;
        assert_eq!(third[&key].cpu, None);
        assert!(c.instances().iter().all(|i| i.warming));

        // An unreachable engine: no sample at all (missing), not zero.
        engine.set_unreachable(true);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fourth = c.collect(&[zone], &groups, 4, Utc::now()).await;
        assert!(fourth.get(&key).is_none_or(|s| s.cpu.is_none()));
        shutdown.cancel();
    }

    #[test]
    fn cpu_percent_is_computed_as_docker_stats_does() {
        let prev = StatsSample {
            cpu_total_ns: 1_000_000_000,
            system_cpu_ns: 10_000_000_000,
            online_cpus: 4,
            ..Default::default()
        };
        // Half a CPU-second of 4 CPU-seconds of host time on 4 CPUs: 50% of one CPU.
        let cur = StatsSample {
            cpu_total_ns: 1_500_000_000,
            system_cpu_ns: 14_000_000_000,
            online_cpus: 4,
            ..Default::default()
        };
        assert_eq!(cpu_percent(&prev, &cur), Some(50.0));
        assert_eq!(cpu_percent(&cur, &cur), None, "no host time passed");
        assert_eq!(
            cpu_percent(&cur, &prev),
            None,
            "counters went back (restart)"
        );
    }
}
