//! Pure scaling decisions: step, target tracking and scheduled policies, their combination and
//! guards, each evaluation explained as a [`Decision`].
//!
//! Nothing here reads a clock or an engine: time, metric history and the capacity come in as
//! arguments and the remembered state is a plain value, so the live autoscaler and the simulator
//! run exactly this code and unit tests drive it on made-up time.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::manifest::{Metric, PolicyType, ScalingPolicySpec};
/// The decision and its guard are part of a group's status (`lastDecision`).
pub use crate::status::{Decision, Guard};

/// Default tolerance of target tracking, percent of the target.
pub const DEFAULT_TOLERANCE: f64 = 10.0;
/// Default scale-in stabilization window of target tracking.
pub const DEFAULT_STABILIZATION: Duration = Duration::from_secs(300);
/// Default group cooldowns (the group's `scaleOutCooldown` / `scaleInCooldown`).
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);

/// One collection of a group's metrics: averages over the instances that were measured.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSample {
    pub time: DateTime<Utc>,
    /// Average CPU, percent of each instance's CPU allotment; `None` when nothing was measured.
    pub cpu: Option<f64>,
    /// Average memory used, percent of each instance's limit.
    pub memory: Option<f64>,
    /// Instances that contributed (running, past their warm-up).
    pub instances: u32,
}

/// A metric a policy reads, as written in the policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetricRef {
    Cpu,
    Memory,
    Pushed(String),
}

impl MetricRef {
    /// The metric of a Step or TargetTracking policy (`None` for Scheduled ones).
    pub fn of(spec: &ScalingPolicySpec) -> Option<MetricRef> {
        match (&spec.metric, &spec.pushed_metric) {
            (Some(Metric::Cpu), _) => Some(MetricRef::Cpu),
            (Some(Metric::Memory), _) => Some(MetricRef::Memory),
            (None, Some(n)) => Some(MetricRef::Pushed(n.clone())),
            (None, None) => None,
        }
    }

    fn unit(&self) -> &'static str {
        match self {
            MetricRef::Pushed(_) => "",
            _ => "%",
        }
    }
}

impl fmt::Display for MetricRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricRef::Cpu => f.write_str("CPU"),
            MetricRef::Memory => f.write_str("Memory"),
            MetricRef::Pushed(n) => f.write_str(n),
        }
    }
}

/// A windowed value of one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub value: f64,
    /// Average over the window of (instances x value) of each sample: the group's total use,
    /// consistent while the number of measured instances changes (pushed: the value).
    pub total: f64,
    /// Instances measured in the latest sample (CPU/Memory); 0 for pushed metrics.
    pub instances: u32,
}

/// The recent metrics of one group: collected samples and pushed values.
#[derive(Debug, Clone, Default)]
pub struct History {
    samples: VecDeque<GroupSample>,
    pushed: BTreeMap<String, VecDeque<(DateTime<Utc>, f64)>>,
}

/// How long history is kept (longer than any sensible sampling window).
const KEEP: Duration = Duration::from_secs(3600);
/// At most this many samples per group (1 s periods for an hour).
const MAX_SAMPLES: usize = 3600;

impl History {
    /// Appends a collected sample (samples arrive in time order).
    pub fn record(&mut self, sample: GroupSample) {
        let cutoff = minus(sample.time, KEEP);
        self.samples.push_back(sample);
        while self.samples.len() > MAX_SAMPLES
            || self.samples.front().is_some_and(|s| s.time < cutoff)
        {
            self.samples.pop_front();
        }
    }

    /// Records a pushed value of metric `name`.
    pub fn push(&mut self, name: &str, time: DateTime<Utc>, value: f64) {
        let q = self.pushed.entry(name.to_string()).or_default();
        q.push_back((time, value));
        let cutoff = minus(time, KEEP);
        while q.len() > MAX_SAMPLES || q.front().is_some_and(|(t, _)| *t < cutoff) {
            q.pop_front();
        }
    }

    /// Names of the pushed metrics held.
    pub fn pushed_names(&self) -> impl Iterator<Item = &str> {
        self.pushed.keys().map(String::as_str)
    }

    /// Forgets pushed metrics whose newest value is older than `cutoff`: a stale value reads as
    /// missing anyway, and a name nobody pushes any more must not hold memory for ever.
    pub fn forget_pushed_before(&mut self, cutoff: DateTime<Utc>) {
        self.pushed
            .retain(|_, q| q.back().is_some_and(|(t, _)| *t >= cutoff));
    }

    /// The latest collected sample.
    pub fn latest(&self) -> Option<&GroupSample> {
        self.samples.back()
    }

    /// The latest pushed value of each metric, with its time.
    pub fn latest_pushed(&self) -> BTreeMap<String, (DateTime<Utc>, f64)> {
        self.pushed
            .iter()
            .filter_map(|(k, q)| q.back().map(|v| (k.clone(), *v)))
            .collect()
    }

    /// Average of `metric` over `(now - window, now]`; `None` (missing) when nothing was measured
    /// in the window, or when the newest pushed value is older than `max_pushed_age` (a stale
    /// value is missing, never zero).
    pub fn reading(
        &self,
        metric: &MetricRef,
        window: Duration,
        now: DateTime<Utc>,
        max_pushed_age: Duration,
    ) -> Option<Reading> {
        let from = minus(now, window);
        match metric {
            MetricRef::Pushed(name) => {
                let q = self.pushed.get(name)?;
                let (last, _) = q.back()?;
                if *last < minus(now, max_pushed_age) {
                    return None;
                }
                // The newest value always counts, even when pushed less often than the window.
                let vals: Vec<f64> = q
                    .iter()
                    .filter(|(t, _)| *t > from && *t <= now)
                    .map(|(_, v)| *v)
                    .collect();
                let value = if vals.is_empty() {
                    q.back()?.1
                } else {
                    vals.iter().sum::<f64>() / vals.len() as f64
                };
                Some(Reading {
                    value,
                    total: value,
                    instances: 0,
                })
            }
            m => {
                let pick = |s: &GroupSample| match m {
                    MetricRef::Cpu => s.cpu,
                    _ => s.memory,
                };
                let in_window: Vec<&GroupSample> = self
                    .samples
                    .iter()
                    .filter(|s| s.time > from && s.time <= now)
                    .collect();
                let vals: Vec<f64> = in_window.iter().filter_map(|s| pick(s)).collect();
                let totals: Vec<f64> = in_window
                    .iter()
                    .filter_map(|s| pick(s).map(|v| v * s.instances as f64))
                    .collect();
                let latest = in_window.iter().rev().find(|s| pick(s).is_some())?;
                Some(Reading {
                    value: vals.iter().sum::<f64>() / vals.len() as f64,
                    total: totals.iter().sum::<f64>() / totals.len() as f64,
                    instances: latest.instances,
                })
            }
        }
    }
}

/// Who set a group's current capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetBy {
    /// `spec.desiredCapacity` (or `minSize` when absent): the user, `ms scale`, git.
    User,
    /// A Step or TargetTracking policy on CPU or memory.
    Policy(String),
    /// A policy on a pushed metric.
    Pushed(String),
    /// A scheduled action (or the bounds it set).
    Schedule(String),
}

impl fmt::Display for SetBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetBy::User => f.write_str("user"),
            SetBy::Policy(n) => write!(f, "policy/{n}"),
            SetBy::Pushed(n) => write!(f, "pushed/{n}"),
            SetBy::Schedule(n) => write!(f, "schedule/{n}"),
        }
    }
}

impl SetBy {
    /// Parses what `Display` wrote (status written by an earlier run).
    pub fn parse(s: &str) -> Option<SetBy> {
        if s == "user" {
            return Some(SetBy::User);
        }
        let (kind, name) = s.split_once('/')?;
        let name = name.to_string();
        match kind {
            "policy" => Some(SetBy::Policy(name)),
            "pushed" => Some(SetBy::Pushed(name)),
            "schedule" => Some(SetBy::Schedule(name)),
            _ => None,
        }
    }
}

/// What a policy remembers between evaluations.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    /// Step: the threshold currently breached (true: upper) and since when.
    breach: Option<(bool, DateTime<Utc>)>,
    /// Target tracking: recommendations within the stabilization window.
    recommendations: VecDeque<(DateTime<Utc>, u32)>,
}

/// What the decision code remembers about one group.
#[derive(Debug, Clone, Default)]
pub struct GroupState {
    policies: BTreeMap<String, PolicyState>,
    /// Last policy-driven scale-out and scale-in (cooldowns).
    pub last_scale_out: Option<DateTime<Utc>>,
    pub last_scale_in: Option<DateTime<Utc>>,
    /// Time of the previous evaluation: a scheduled action fires when its time falls after it.
    pub last_eval: Option<DateTime<Utc>>,
}

/// The group's side of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInput {
    /// The capacity in force now (set by the user or by an earlier decision).
    pub capacity: u32,
    pub min_size: u32,
    pub max_size: u32,
    pub scale_out_cooldown: Duration,
    pub scale_in_cooldown: Duration,
    /// Pushed values older than this are missing.
    pub max_pushed_age: Duration,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub decision: Decision,
    /// Bounds in force (the spec's, or a scheduled action's).
    pub min_size: u32,
    pub max_size: u32,
    /// Who the new capacity is owed to, when a policy set it (`None`: nothing changed).
    pub set_by: Option<SetBy>,
}

/// One policy's vote.
struct Vote {
    policy: String,
    /// Capacity it asks for; `None`: no opinion (a scheduled policy that did not fire).
    wants: Option<u32>,
    guard: Option<Guard>,
    reason: String,
    set_by: SetBy,
    /// Scheduled actions are not gated by cooldowns.
    ignores_cooldown: bool,
}

fn fmt_value(v: f64, unit: &str) -> String {
    if (v - v.round()).abs() < 0.05 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `t - d`, saturating at the earliest representable time: validation bounds durations, but a
/// panic here would stop every group's evaluation, so the arithmetic itself cannot fail.
pub(crate) fn minus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_sub_signed(chrono_dur(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `t + d`, saturating at the latest representable time.
pub(crate) fn plus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(chrono_dur(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Evaluates every policy of a group at `now` and combines them: the largest capacity wins,
/// then the group's bounds and cooldowns apply.
///
/// # Guarantees
/// - The result is within the bounds in force.
/// - A policy without fresh metrics votes to keep the capacity, so missing metrics never cause
///   a scale-in (and they hold other policies' scale-ins too: scale-out is the safe side).
pub fn evaluate(
    now: DateTime<Utc>,
    group: &GroupInput,
    policies: &[(String, ScalingPolicySpec)],
    history: &History,
    state: &mut GroupState,
) -> Outcome {
    let c = group.capacity;
    let mut inputs = BTreeMap::new();
    let mut votes: Vec<Vote> = Vec::new();
    // minSize/maxSize of scheduled actions: the most recent action setting each wins.
    let mut sched_min: Option<(DateTime<Utc>, u32, String)> = None;
    let mut sched_max: Option<(DateTime<Utc>, u32, String)> = None;
    let last_eval = state.last_eval;
    state
        .policies
        .retain(|k, _| policies.iter().any(|(n, _)| n == k));
    for (name, spec) in policies {
        let ps = state.policies.entry(name.clone()).or_default();
        match spec.policy_type {
            PolicyType::Step => {
                votes.push(step(now, c, name, spec, history, group, ps, &mut inputs))
            }
            PolicyType::TargetTracking => votes.push(target_tracking(
                now,
                c,
                name,
                spec,
                history,
                group,
                ps,
                &mut inputs,
            )),
            PolicyType::Scheduled => {
                let (vote, min, max) = scheduled(now, last_eval, name, spec);
                if let Some((t, m)) = min {
                    if sched_min.as_ref().is_none_or(|(t0, _, _)| t >= *t0) {
                        sched_min = Some((t, m, name.clone()));
                    }
                }
                if let Some((t, m)) = max {
                    if sched_max.as_ref().is_none_or(|(t0, _, _)| t >= *t0) {
                        sched_max = Some((t, m, name.clone()));
                    }
                }
                if let Some(v) = vote {
                    votes.push(v);
                }
            }
        }
    }
    state.last_eval = Some(now);
    let min = sched_min.as_ref().map_or(group.min_size, |(_, m, _)| *m);
    let max = sched_max
        .as_ref()
        .map_or(group.max_size, |(_, m, _)| *m)
        .max(min);
    let bound_owner = |s: &Option<(DateTime<Utc>, u32, String)>| {
        s.as_ref().map(|(_, _, n)| SetBy::Schedule(n.clone()))
    };

    // The largest wish wins; on a tie the first policy (policies come sorted by name).
    let winner =
        votes
            .iter()
            .filter(|v| v.wants.is_some())
            .fold(None::<&Vote>, |best, v| match best {
                Some(b) if b.wants >= v.wants => Some(b),
                _ => Some(v),
            });
    let raw = winner.and_then(|w| w.wants);
    let mut desired = raw.unwrap_or(c);
    let mut guard = winner.and_then(|w| w.guard);
    let mut held_msg: Option<String> = None;
    let mut set_by = winner.map(|w| w.set_by.clone());

    // Bounds first: a minSize above the capacity is not a scale-out a cooldown may delay.
    if desired < min {
        desired = min;
        guard = Some(Guard::MinSize);
        set_by = bound_owner(&sched_min).or(set_by);
    } else if desired > max {
        desired = max;
        guard = Some(Guard::MaxSize);
        set_by = bound_owner(&sched_max).or(set_by);
    }
    let bypass = winner.is_some_and(|w| w.ignores_cooldown);
    let clamped_c = c.clamp(min, max);
    if !bypass && desired > c && desired > clamped_c {
        if let Some(t) = state.last_scale_out {
            let until = plus(t, group.scale_out_cooldown);
            if now < until {
                desired = clamped_c;
                guard = Some(Guard::Cooldown);
                held_msg = Some(format!(
                    "scale-out cooldown until {} (wants {})",
                    until.format("%H:%M:%S"),
                    raw.unwrap_or(desired)
                ));
            }
        }
    } else if !bypass && desired < c && desired < clamped_c {
        let last = state.last_scale_in.max(state.last_scale_out);
        if let Some(t) = last {
            let until = plus(t, group.scale_in_cooldown);
            if now < until {
                desired = clamped_c;
                guard = Some(Guard::Cooldown);
                held_msg = Some(format!(
                    "scale-in cooldown until {} (wants {})",
                    until.format("%H:%M:%S"),
                    raw.unwrap_or(desired)
                ));
            }
        }
    }
    if desired > c {
        state.last_scale_out = Some(now);
    } else if desired < c {
        state.last_scale_in = Some(now);
    }
    if desired == c {
        set_by = None;
    }

    let why = winner
        .map(|w| format!("{}: {}", w.policy, w.reason))
        .unwrap_or_else(|| "no policy has an opinion".to_string());
    let message = if desired > c {
        match guard {
            Some(Guard::MinSize) => format!("raised from {c} to {desired}: minSize is {min}"),
            _ => format!("scaled out from {c} to {desired}: {why}"),
        }
    } else if desired < c {
        match guard {
            Some(Guard::MaxSize) => format!("lowered from {c} to {desired}: maxSize is {max}"),
            _ => format!("scaled in from {c} to {desired}: {why}"),
        }
    } else if let Some(h) = held_msg {
        format!("held at {c}: {h}")
    } else if let Some(g) = guard {
        format!("held at {c} ({g}): {why}")
    } else {
        format!("steady at {c}: {why}")
    };
    Outcome {
        decision: Decision {
            time: now,
            capacity: c,
            inputs,
            raw,
            desired,
            guard,
            policy: winner.map(|w| w.policy.clone()),
            message,
            reasons: votes
                .iter()
                .map(|v| format!("{}: {}", v.policy, v.reason))
                .collect(),
        },
        min_size: min,
        max_size: max,
        set_by,
    }
}

fn owner(name: &str, metric: &MetricRef) -> SetBy {
    match metric {
        MetricRef::Pushed(_) => SetBy::Pushed(name.to_string()),
        _ => SetBy::Policy(name.to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
fn step(
    now: DateTime<Utc>,
    c: u32,
    name: &str,
    spec: &ScalingPolicySpec,
    history: &History,
    group: &GroupInput,
    ps: &mut PolicyState,
    inputs: &mut BTreeMap<String, f64>,
) -> Vote {
    let metric = MetricRef::of(spec).unwrap_or(MetricRef::Cpu);
    let hold = |guard: Option<Guard>, reason: String| Vote {
        policy: name.to_string(),
        wants: Some(c),
        guard,
        reason,
        set_by: owner(name, &metric),
        ignores_cooldown: false,
    };
    let Some(r) = history.reading(&metric, spec.sampling_window.0, now, group.max_pushed_age)
    else {
        ps.breach = None;
        return hold(
            Some(Guard::MissingMetrics),
            format!(
                "no {metric} value in the last {}",
                human_duration(spec.sampling_window.0)
            ),
        );
    };
    inputs.insert(metric.to_string(), (r.value * 10.0).round() / 10.0);
    let (upper, lower) = (
        spec.upper_threshold.unwrap_or(f64::INFINITY),
        spec.lower_threshold.unwrap_or(f64::NEG_INFINITY),
    );
    let v = fmt_value(r.value, metric.unit());
    let above = if r.value > upper {
        true
    } else if r.value < lower {
        false
    } else {
        ps.breach = None;
        return hold(
            None,
            format!(
                "{metric} {v} within [{}, {}]",
                fmt_value(lower, ""),
                fmt_value(upper, "")
            ),
        );
    };
    let since = match ps.breach {
        Some((dir, t)) if dir == above => t,
        _ => {
            ps.breach = Some((above, now));
            now
        }
    };
    let breached_for = (now - since).to_std().unwrap_or_default();
    let (word, bound) = if above {
        ("above", upper)
    } else {
        ("below", lower)
    };
    if breached_for < spec.breach_duration.0 {
        return hold(
            Some(Guard::BreachDuration),
            format!(
                "{metric} {v} {word} {} for {} of {}",
                fmt_value(bound, ""),
                human_duration(breached_for),
                human_duration(spec.breach_duration.0)
            ),
        );
    }
    let wants = if above {
        c.saturating_add(spec.scale_out_step.unwrap_or(1))
    } else {
        c.saturating_sub(spec.scale_in_step.unwrap_or(1))
    };
    Vote {
        policy: name.to_string(),
        wants: Some(wants),
        guard: None,
        reason: format!(
            "{metric} {v} {word} {} for {}: {}",
            fmt_value(bound, ""),
            human_duration(breached_for),
            if above {
                format!("+{}", spec.scale_out_step.unwrap_or(1))
            } else {
                format!("-{}", spec.scale_in_step.unwrap_or(1))
            }
        ),
        set_by: owner(name, &metric),
        ignores_cooldown: false,
    }
}

#[allow(clippy::too_many_arguments)]
fn target_tracking(
    now: DateTime<Utc>,
    c: u32,
    name: &str,
    spec: &ScalingPolicySpec,
    history: &History,
    group: &GroupInput,
    ps: &mut PolicyState,
    inputs: &mut BTreeMap<String, f64>,
) -> Vote {
    let metric = MetricRef::of(spec).unwrap_or(MetricRef::Cpu);
    let target = spec.target_value.unwrap_or(50.0).max(f64::MIN_POSITIVE);
    let window = spec
        .scale_in_stabilization
        .map(|d| d.0)
        .unwrap_or(DEFAULT_STABILIZATION);
    let cutoff = minus(now, window);
    while ps
        .recommendations
        .front()
        .is_some_and(|(t, _)| *t <= cutoff)
    {
        ps.recommendations.pop_front();
    }
    let mut vote = Vote {
        policy: name.to_string(),
        wants: Some(c),
        guard: None,
        reason: String::new(),
        set_by: owner(name, &metric),
        ignores_cooldown: false,
    };
    let reading = history
        .reading(&metric, spec.sampling_window.0, now, group.max_pushed_age)
        .filter(|r| matches!(metric, MetricRef::Pushed(_)) || r.instances > 0);
    let Some(r) = reading else {
        // Counts as "keep the capacity" in the window too: a gap in metrics then delays a
        // scale-in rather than hastening it.
        ps.recommendations.push_back((now, c));
        vote.guard = Some(Guard::MissingMetrics);
        vote.reason = format!(
            "no {metric} value in the last {}",
            human_duration(spec.sampling_window.0)
        );
        return vote;
    };
    // For utilization metrics, the per-instance value the decision is based on: the window's
    // average total over the instances measured now.
    let shown = match metric {
        MetricRef::Pushed(_) => r.value,
        _ => r.total / r.instances.max(1) as f64,
    };
    inputs.insert(metric.to_string(), (shown * 10.0).round() / 10.0);
    let v = fmt_value(shown, metric.unit());
    let t = fmt_value(target, metric.unit());
    // Utilization metrics average over the measured instances; a pushed value is the group's
    // total and the target is per instance.
    let (raw_f, ratio, basis) = match metric {
        MetricRef::Pushed(_) => {
            let raw = r.value / target;
            let ratio = if c == 0 {
                if r.value > 0.0 {
                    f64::INFINITY
                } else {
                    1.0
                }
            } else {
                r.value / (c as f64 * target)
            };
            (
                raw,
                ratio,
                format!("{metric} {v} for target {t} per instance"),
            )
        }
        // The window's average total use over the target: a new instance does not multiply
        // the load measured before it existed.
        _ => (
            r.total / target,
            r.total / (r.instances.max(1) as f64 * target),
            format!("{metric} {v} vs target {t} on {} instances", r.instances),
        ),
    };
    let raw = (raw_f - 1e-9).ceil().max(0.0) as u32;
    let tolerance = spec.tolerance.unwrap_or(DEFAULT_TOLERANCE) / 100.0;
    let mut wants = raw;
    if raw != c && (ratio - 1.0).abs() <= tolerance {
        wants = c;
        vote.guard = Some(Guard::Tolerance);
        vote.reason = format!(
            "{basis}: within {}% of the target, keep {c}",
            fmt_value(tolerance * 100.0, "")
        );
    } else {
        vote.reason = format!("{basis}: wants {raw}");
    }
    if let Some(step) = spec.max_scale_out_step {
        if wants > c.saturating_add(step) {
            wants = c.saturating_add(step);
            vote.guard = Some(Guard::RateLimit);
            vote.reason = format!("{basis}: wants {raw}, limited to +{step}");
        }
    }
    if let Some(step) = spec.max_scale_in_step {
        if wants < c.saturating_sub(step) {
            wants = c.saturating_sub(step);
            vote.guard = Some(Guard::RateLimit);
            vote.reason = format!("{basis}: wants {raw}, limited to -{step}");
        }
    }
    ps.recommendations.push_back((now, wants));
    if wants < c {
        let highest = ps
            .recommendations
            .iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(wants);
        if highest > wants {
            vote.guard = Some(Guard::Stabilization);
            vote.reason = format!(
                "{basis}: wants {wants}, but the {} stabilization window recommends {highest}",
                human_duration(window)
            );
            wants = highest.min(c).max(wants);
        }
    }
    vote.wants = Some(wants);
    vote
}

/// A scheduled policy: the vote of an action that fired since the last evaluation, and the
/// minSize/maxSize in force (from the most recent action setting each, with its fire time).
#[allow(clippy::type_complexity)]
fn scheduled(
    now: DateTime<Utc>,
    last_eval: Option<DateTime<Utc>>,
    name: &str,
    spec: &ScalingPolicySpec,
) -> (
    Option<Vote>,
    Option<(DateTime<Utc>, u32)>,
    Option<(DateTime<Utc>, u32)>,
) {
    let mut fired: Option<(DateTime<Utc>, u32, String)> = None;
    let mut min: Option<(DateTime<Utc>, u32)> = None;
    let mut max: Option<(DateTime<Utc>, u32)> = None;
    for a in &spec.schedule {
        let Some(prev) = previous_fire(a, now) else {
            continue;
        };
        if let Some(m) = a.min_size {
            if min.is_none_or(|(t, _)| prev >= t) {
                min = Some((prev, m));
            }
        }
        if let Some(m) = a.max_size {
            if max.is_none_or(|(t, _)| prev >= t) {
                max = Some((prev, m));
            }
        }
        if let (Some(d), Some(last)) = (a.desired_capacity, last_eval) {
            if prev > last && fired.as_ref().is_none_or(|(t, _, _)| prev >= *t) {
                fired = Some((prev, d, a.cron.clone()));
            }
        }
    }
    let vote = fired.map(|(t, d, cron)| Vote {
        policy: name.to_string(),
        wants: Some(d),
        guard: None,
        reason: format!(
            "scheduled action `{cron}` fired at {}: desired capacity {d}",
            t.format("%H:%M:%S")
        ),
        set_by: SetBy::Schedule(name.to_string()),
        ignores_cooldown: true,
    });
    (vote, min, max)
}

/// The most recent time at or before `now` at which `action` fired, if it is in force now
/// (after its `startTime`, before its `endTime`).
pub fn previous_fire(
    action: &crate::manifest::ScheduledAction,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if action.end_time.is_some_and(|e| now >= e) {
        return None;
    }
    let cron = crate::manifest::validate::parse_cron(&action.cron).ok()?;
    let tz = match &action.time_zone {
        Some(z) => crate::manifest::validate::parse_time_zone(z).ok()?,
        None => chrono_tz::UTC,
    };
    let local = now.with_timezone(&tz);
    let prev = cron.find_previous_occurrence(&local, true).ok()?;
    let prev = prev.with_timezone(&Utc);
    if action.start_time.is_some_and(|s| prev < s) {
        return None;
    }
    Some(prev)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
