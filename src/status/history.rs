//! A bounded in-memory history of each group's capacity and metrics, recorded when its status
//! is published, for the dashboard's charts (`GET /v1/history/{ns}/{name}`).
//!
//! # Rules
//! - A sample is taken when a published status changes one of the charted values (desired,
//!   current, ready, the metric averages, pushed values); a status that changes only elsewhere
//!   (an activity, a condition's message) adds nothing. Values hold until the next sample, so a
//!   chart draws steps, and an idle group costs one sample.
//! - Bounded three ways: a sample closer than [`MIN_SPACING`] to the one before replaces it
//!   (the latest values, at the earlier time), a group keeps at most [`PER_GROUP`] samples and none older than [`MAX_AGE`] (but
//!   always the one that gives the value at the start of the window), and all groups together
//!   keep at most [`TOTAL`] (the group with the most samples gives up its oldest). Pushed values
//!   are kept for at most [`MAX_PUSHED`] metric names per sample.
//! - Not persisted: a restarted controller starts a new history (the files keep the status, not
//!   its past).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::GroupStatus;
use crate::manifest::ObjectKey;
use crate::util::unpoisoned::LockExt;

/// How long samples are kept.
pub const MAX_AGE: Duration = Duration::from_secs(6 * 3600);
/// Samples kept per group (at one per [`MIN_SPACING`], the last 48 minutes of a group whose
/// values change all the time; hours for one that changes only when it scales).
pub const PER_GROUP: usize = 1440;
/// Samples kept for all groups together: about 21 MB resident at worst, every sample a step
/// with its own decision's words and a pushed value (`memory_of_a_full_history`: 416 bytes a
/// sample, the queues' spare room included).
pub const TOTAL: usize = 50_000;
/// Samples closer than this to the one before replace it (its time stays).
pub const MIN_SPACING: Duration = Duration::from_secs(2);
/// Pushed metric names kept per sample.
pub const MAX_PUSHED: usize = 8;
/// Characters of a decision's message kept per sample.
pub const MAX_DECISION: usize = 300;

/// One point of a group's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub time: DateTime<Utc>,
    pub desired: u32,
    pub current: u32,
    pub ready: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<u32>,
    /// Pushed values by metric name, sorted by name (served as a map); the names are shared
    /// with the sample before.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "as_map")]
    pub pushed: Vec<(Arc<str>, f64)>,
    /// Who set the capacity (`policy/NAME`, `user`, ...), for a group with policies.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "shared_str")]
    pub set_by: Option<Arc<str>>,
    /// The latest policy decision in words, when it is about this capacity (a step's cause);
    /// shared with the sample before when it is the same.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "shared_str")]
    pub decision: Option<Arc<str>>,
}

impl Sample {
    fn of(time: DateTime<Utc>, status: &GroupStatus) -> Sample {
        let m = status.metrics.as_ref();
        Sample {
            time,
            desired: status.desired_capacity,
            current: status.current,
            ready: status.ready,
            cpu_percent: m.and_then(|m| m.cpu_percent),
            memory_percent: m.and_then(|m| m.memory_percent),
            pushed: m
                .map(|m| {
                    m.pushed
                        .iter()
                        .take(MAX_PUSHED)
                        .map(|(k, v)| (Arc::from(k.as_str()), *v))
                        .collect()
                })
                .unwrap_or_default(),
            set_by: status.desired_capacity_set_by.as_deref().map(Arc::from),
            decision: status
                .last_decision
                .as_ref()
                .filter(|d| d.desired == status.desired_capacity)
                .map(|d| Arc::from(d.message.chars().take(MAX_DECISION).collect::<String>())),
        }
    }

    /// The same charted values (times and causes aside: a cause alone draws nothing).
    fn same_values(&self, other: &Sample) -> bool {
        Sample {
            time: other.time,
            set_by: other.set_by.clone(),
            decision: other.decision.clone(),
            ..self.clone()
        } == *other
    }
}

#[derive(Default)]
struct Inner {
    groups: HashMap<ObjectKey, VecDeque<Sample>>,
    total: usize,
}

/// The history of every group (one per controller, shared by the status writer and the API).
#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

impl History {
    /// Records `status` of `key` as of now.
    pub fn record(&self, key: &ObjectKey, status: &GroupStatus) {
        self.record_at(key, status, Utc::now());
    }

    /// Records `status` of `key` as of `now` (tests give the time).
    pub fn record_at(&self, key: &ObjectKey, status: &GroupStatus, now: DateTime<Utc>) {
        let mut sample = Sample::of(now, status);
        let mut inner = self.inner.locked();
        let inner = &mut *inner;
        let samples = inner.groups.entry(key.clone()).or_default();
        if let Some(last) = samples.back() {
            if last.same_values(&sample) {
                return;
            }
            if last.desired == sample.desired {
                // The cause of a capacity is what set it: a later decision that holds it (at
                // maxSize, in a cooldown) is not, and the words are shared, not copied.
                sample.decision = last.decision.clone();
                sample.set_by = last.set_by.clone();
            }
            for (name, _) in &mut sample.pushed {
                if let Some((same, _)) = last.pushed.iter().find(|(n, _)| n == name) {
                    *name = same.clone();
                }
            }
        }
        let spacing = chrono::Duration::from_std(MIN_SPACING).unwrap_or_default();
        // Within the spacing the latest values win, at the time the spacing began: a burst of
        // changes is one step, not a hundred, and a value that changes every second still
        // leaves a sample every two (keeping the latest time would merge them all into one).
        match samples.back_mut() {
            Some(last) if now - last.time < spacing && now >= last.time => {
                *last = Sample {
                    time: last.time,
                    ..sample
                }
            }
            _ => {
                samples.push_back(sample);
                inner.total += 1;
            }
        }
        inner.total -= trim(samples, now);
        if samples.len() > PER_GROUP {
            samples.pop_front();
            inner.total -= 1;
        }
        while inner.total > TOTAL {
            // The group with the most samples gives up its oldest.
            let Some(biggest) = inner.groups.values_mut().max_by_key(|s| s.len()) else {
                break;
            };
            if biggest.pop_front().is_none() {
                break;
            }
            inner.total -= 1;
        }
    }

    /// The samples of `key` from `since` on, with the one before it (the value at `since`),
    /// oldest first.
    pub fn samples(&self, key: &ObjectKey, since: DateTime<Utc>) -> Vec<Sample> {
        let inner = self.inner.locked();
        let Some(samples) = inner.groups.get(key) else {
            return Vec::new();
        };
        let first = samples.partition_point(|s| s.time < since);
        samples
            .iter()
            .skip(first.saturating_sub(1))
            .cloned()
            .collect()
    }

    /// Drops the history of a deleted group.
    pub fn forget(&self, key: &ObjectKey) {
        let mut inner = self.inner.locked();
        if let Some(s) = inner.groups.remove(key) {
            inner.total -= s.len();
        }
    }

    /// Samples held for all groups.
    pub fn len(&self) -> usize {
        self.inner.locked().total
    }

    /// True when no sample is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn as_map<S: serde::Serializer>(v: &[(Arc<str>, f64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(v.len()))?;
    for (name, value) in v {
        map.serialize_entry(&**name, value)?;
    }
    map.end()
}

fn shared_str<S: serde::Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(text) => s.serialize_some(&**text),
        None => s.serialize_none(),
    }
}

/// Drops samples older than [`MAX_AGE`] except the newest of them (it gives the value at the
/// start of the window); returns how many went.
fn trim(samples: &mut VecDeque<Sample>, now: DateTime<Utc>) -> usize {
    let cutoff = now - chrono::Duration::from_std(MAX_AGE).unwrap_or_default();
    let mut gone = 0;
    while samples.len() > 1 && samples[1].time <= cutoff {
        samples.pop_front();
        gone += 1;
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;
    use crate::status::GroupMetrics;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::AutoScalingGroup, "default", name)
    }

    fn status(desired: u32, ready: u32, cpu: Option<u32>) -> GroupStatus {
        GroupStatus {
            desired_capacity: desired,
            current: desired,
            ready,
            metrics: cpu.map(|c| GroupMetrics {
                cpu_percent: Some(c),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_sample_is_taken_only_when_a_charted_value_changes() {
        let h = History::default();
        h.record_at(&key("web"), &status(2, 1, Some(40)), at(0));
        let mut other = status(2, 1, Some(40));
        other.activities = vec![]; // nothing charted changed
        other.observed_generation = "x".into();
        h.record_at(&key("web"), &other, at(10));
        h.record_at(&key("web"), &status(2, 2, Some(40)), at(20));
        h.record_at(&key("web"), &status(2, 2, Some(70)), at(30));
        let s = h.samples(&key("web"), at(0));
        let got: Vec<(i64, u32, Option<u32>)> = s
            .iter()
            .map(|s| {
                (
                    s.time.timestamp() - at(0).timestamp(),
                    s.ready,
                    s.cpu_percent,
                )
            })
            .collect();
        assert_eq!(
            got,
            [(0, 1, Some(40)), (20, 2, Some(40)), (30, 2, Some(70))]
        );
    }

    #[test]
    fn a_step_keeps_its_cause_and_a_cause_alone_adds_no_sample() {
        let h = History::default();
        h.record_at(&key("web"), &status(1, 1, Some(90)), at(0));
        let decided = |desired: u32, message: &str| {
            let mut st = status(desired, 1, Some(90));
            st.desired_capacity_set_by = Some("policy/cpu".into());
            st.last_decision = Some(crate::status::Decision {
                time: at(9),
                capacity: 1,
                inputs: Default::default(),
                raw: Some(2),
                desired: 2,
                guard: None,
                policy: Some("cpu".into()),
                message: message.into(),
                reasons: vec![],
            });
            st
        };
        h.record_at(&key("web"), &decided(2, "CPU 90% vs target 50%"), at(10));
        // The same values with other words: nothing new to draw.
        h.record_at(&key("web"), &decided(2, "CPU 91% vs target 50%"), at(20));
        let s = h.samples(&key("web"), at(0));
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].set_by.as_deref(), Some("policy/cpu"));
        assert_eq!(s[1].decision.as_deref(), Some("CPU 90% vs target 50%"));
        // A later decision that holds the capacity does not replace the step's cause.
        let mut held = decided(2, "held at 2 (maxSize)");
        held.ready = 2;
        h.record_at(&key("web"), &held, at(25));
        let s = h.samples(&key("web"), at(0));
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].decision.as_deref(), Some("CPU 90% vs target 50%"));
        // A decision about another capacity is not this step's cause.
        h.record_at(&key("web"), &decided(3, "CPU 90% vs target 50%"), at(30));
        assert_eq!(h.samples(&key("web"), at(0))[3].decision, None);
    }

    #[test]
    fn samples_within_the_spacing_replace_each_other() {
        let h = History::default();
        h.record_at(&key("web"), &status(1, 1, None), at(0));
        h.record_at(&key("web"), &status(2, 1, None), at(10));
        h.record_at(&key("web"), &status(3, 1, None), at(11));
        let s = h.samples(&key("web"), at(0));
        assert_eq!(s.len(), 2);
        assert_eq!((s[1].desired, s[1].time), (3, at(10)));
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn a_value_that_changes_every_second_leaves_a_sample_every_two() {
        let h = History::default();
        for i in 0..20u32 {
            h.record_at(&key("web"), &status(1, 1, Some(i)), at(i64::from(i)));
        }
        let s = h.samples(&key("web"), at(0));
        let times: Vec<i64> = s
            .iter()
            .map(|s| s.time.timestamp() - at(0).timestamp())
            .collect();
        assert_eq!(times, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
        // Each holds the latest value of its two seconds.
        assert_eq!(s[1].cpu_percent, Some(3));
    }

    #[test]
    fn a_group_keeps_its_window_and_the_value_at_its_start() {
        let h = History::default();
        let age = MAX_AGE.as_secs() as i64;
        h.record_at(&key("web"), &status(1, 1, None), at(0));
        h.record_at(&key("web"), &status(2, 2, None), at(100));
        // Much later: the first sample is out of the window, the second gives its start value.
        h.record_at(&key("web"), &status(3, 3, None), at(age + 200));
        let s = h.samples(&key("web"), at(0));
        assert_eq!(s.iter().map(|s| s.desired).collect::<Vec<_>>(), [2, 3]);
        // A read from a later time includes the sample that holds at that time.
        let s = h.samples(&key("web"), at(150));
        assert_eq!(s.iter().map(|s| s.desired).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(h.len(), 2);
    }

    /// Resident memory of the process, in bytes (Linux).
    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// The memory of a full history (`cargo test --lib history -- --ignored --nocapture`):
    /// every sample with a CPU value, a pushed value and a decision's words.
    #[test]
    #[ignore]
    fn memory_of_a_full_history() {
        let h = History::default();
        let before = rss();
        let groups = 100;
        for i in 0..(TOTAL / groups + 10) as u32 {
            for g in 0..groups {
                let mut st = status(1 + i % 7, i % 5, Some(i % 100));
                st.desired_capacity_set_by = Some("policy/cpu".into());
                let mut m = st.metrics.take().unwrap();
                m.pushed.insert("queue_depth".into(), f64::from(i));
                st.metrics = Some(m);
                st.last_decision = Some(crate::status::Decision {
                    time: at(0),
                    capacity: 1,
                    inputs: Default::default(),
                    raw: None,
                    desired: 1 + i % 7,
                    guard: None,
                    policy: None,
                    message: format!(
                        "scaled to {}: cpu: CPU 93.0% vs target 50% on 3 instances: wants {}",
                        1 + i % 7,
                        1 + i % 7
                    ),
                    reasons: vec![],
                });
                h.record_at(&key(&format!("g{g}")), &st, at(i64::from(i) * 3));
            }
        }
        let used = rss().saturating_sub(before);
        eprintln!(
            "{} samples: {:.1} MB resident, {} bytes per sample",
            h.len(),
            used as f64 / 1e6,
            used / h.len().max(1)
        );
        assert_eq!(h.len(), TOTAL);
    }

    #[test]
    fn a_group_and_all_groups_are_bounded() {
        let h = History::default();
        for i in 0..(PER_GROUP as u32 + 50) {
            h.record_at(
                &key("busy"),
                &status(i % 7, 0, Some(i)),
                at(i64::from(i) * 3),
            );
        }
        assert_eq!(h.samples(&key("busy"), at(0)).len(), PER_GROUP);
        assert_eq!(h.len(), PER_GROUP);
        // Enough groups to pass the total: the total holds and every group keeps its latest.
        let groups = TOTAL / PER_GROUP + 2;
        for g in 0..groups {
            for i in 0..PER_GROUP as u32 {
                h.record_at(
                    &key(&format!("g{g}")),
                    &status(i % 5, 0, Some(i)),
                    at(i64::from(i) * 3),
                );
            }
        }
        assert!(h.len() <= TOTAL, "{} samples held", h.len());
        for g in 0..groups {
            let s = h.samples(&key(&format!("g{g}")), at(0));
            assert_eq!(
                s.last().map(|s| s.cpu_percent),
                Some(Some(PER_GROUP as u32 - 1))
            );
        }
        h.forget(&key("busy"));
        assert!(h.samples(&key("busy"), at(0)).is_empty());
    }
}
