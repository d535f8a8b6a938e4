//! The probe runner: level-triggered, it probes the running instances the zones' caches hold now
//! (of every group whose `healthCheck` asks for it), forgets the ones that are gone, counts
//! successes and failures against the thresholds, and publishes each instance's [`Verdict`].
//!
//! Probes run with bounded concurrency (a semaphore; a probe that cannot get a permit waits for
//! the next turn, late rather than piled up) and each within its timeout. A verdict that changes
//! (ready, not ready, liveness failed) enqueues the instance's group at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::check::{self, Outcome, Target};
use super::{target, Verdict, Verdicts};
use crate::engine::observe::{Enqueue, Reach, Zone};
use crate::engine::{ContainerState, Health, Observed};
use crate::health::liveness::Beat;
use crate::manifest::health_check::{Check, Probe, Probes, DEFAULT_GRACE};
use crate::manifest::ObjectKey;
use crate::watch::store::{Desired, DesiredReader};

/// Probes in flight at most, by default.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// How often the runner looks at the zones' caches for new and gone instances.
pub const DEFAULT_RESCAN: Duration = Duration::from_millis(500);
/// Probes due within this much of each other start together (one pass over the instances
/// per batch, not per probe).
const BATCH: Duration = Duration::from_millis(25);

/// How the runner works.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Probes in flight at most.
    pub concurrency: usize,
    /// Time between two looks at the zones' caches.
    pub rescan: Duration,
    /// Per zone, the address of ports published on a wildcard address (default 127.0.0.1).
    pub hosts: HashMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: DEFAULT_CONCURRENCY,
            rescan: DEFAULT_RESCAN,
            hosts: HashMap::new(),
        }
    }
}

/// The runner and its handles.
pub struct ProbeRunner {
    desired: DesiredReader,
    zones: Vec<Arc<Zone>>,
    queue: Arc<dyn Enqueue>,
    verdicts: Arc<Verdicts>,
    settings: Settings,
}

/// One probe of one instance: a readiness probe, a liveness probe, or one probe for both.
#[derive(Debug)]
struct Slot {
    probe: Probe,
    readiness: bool,
    liveness: bool,
    /// When it is due next.
    next: Instant,
    in_flight: bool,
    /// Consecutive passes and failures (readiness).
    passes: u32,
    failures: u32,
    /// Consecutive failures after the grace period (liveness).
    live_failures: u32,
    ready: bool,
    /// `ready` was carried over from the probe this one replaced (a changed `healthCheck`):
    /// it stands until this probe's own results move it.
    carried: bool,
    /// What the last probe said.
    last: Option<Outcome>,
}

impl Slot {
    fn new(probe: Probe, readiness: bool, liveness: bool, now: Instant) -> Slot {
        Slot {
            probe,
            readiness,
            liveness,
            next: now,
            in_flight: false,
            passes: 0,
            failures: 0,
            live_failures: 0,
            ready: false,
            carried: false,
            last: None,
        }
    }
}

/// One probed instance.
#[derive(Debug)]
struct Tracked {
    key: ObjectKey,
    zone: String,
    probes: Probes,
    /// Bumped when the probes are reset, so results of the old ones are dropped.
    generation: u64,
    slots: Vec<Slot>,
    /// What the cache says about it now.
    observed: Observed,
    grace: Duration,
    /// The verdict last published (see `published`).
    verdict: Verdict,
    published: bool,
    /// The kind of outcome the summary was made from.
    shown_kind: u8,
}

impl Tracked {
    fn new(key: ObjectKey, zone: String, probes: Probes, observed: Observed, now: Instant) -> Self {
        let mut slots = Vec::new();
        match (&probes.readiness, &probes.liveness) {
            (Some(r), Some(l)) if r == l => slots.push(Slot::new(r.clone(), true, true, now)),
            (r, l) => {
                if let Some(r) = r {
                    slots.push(Slot::new(r.clone(), true, false, now));
                }
                if let Some(l) = l {
                    slots.push(Slot::new(l.clone(), false, true, now));
                }
            }
        }
        let verdict = Verdict {
            ready: None,
            liveness_failed: false,
            summary: if probes.readiness.is_some() {
                "not probed yet".to_string()
            } else {
                "liveness not probed yet".to_string()
            },
        };
        Tracked {
            key,
            zone,
            probes,
            generation: 0,
            slots,
            observed,
            grace: DEFAULT_GRACE,
            verdict,
            published: false,
            shown_kind: 0,
        }
    }

    /// Whether the grace period is over at `now`: liveness counts only after it.
    fn past_grace(&self, now: DateTime<Utc>) -> bool {
        let since = self.observed.started_at.unwrap_or(self.observed.created);
        (now - since).to_std().is_ok_and(|up| up >= self.grace)
    }

    /// Time left of the grace period.
    fn grace_left(&self, now: DateTime<Utc>) -> Duration {
        let since = self.observed.started_at.unwrap_or(self.observed.created);
        let up = (now - since).to_std().unwrap_or(Duration::ZERO);
        self.grace.saturating_sub(up)
    }
}

/// What a probe task hands back.
struct Done {
    id: String,
    generation: u64,
    slot: usize,
    outcome: Outcome,
}

/// The runner's state between turns.
#[derive(Default)]
struct State {
    tracked: HashMap<String, Tracked>,
    last_scan: Option<Instant>,
    /// When the next probe not in flight is due (as of the last dispatch, lowered by results).
    next_due: Option<Instant>,
    /// The last dispatch left due probes without a permit.
    starved: bool,
}

impl ProbeRunner {
    pub fn new(
        desired: DesiredReader,
        zones: Vec<Arc<Zone>>,
        queue: Arc<dyn Enqueue>,
        verdicts: Arc<Verdicts>,
        settings: Settings,
    ) -> Self {
        ProbeRunner {
            desired,
            zones,
            queue,
            verdicts,
            settings,
        }
    }

    /// Probes until `shutdown`, touching `beat` every turn.
    pub async fn run(self, beat: Beat, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut tasks: JoinSet<Done> = JoinSet::new();
        let mut st = State::default();
        loop {
            beat.touch();
            let now = Instant::now();
            let scanned = st
                .last_scan
                .is_none_or(|t| now.duration_since(t) >= self.settings.rescan);
            if scanned {
                self.scan(&mut st, now);
                st.last_scan = Some(now);
            }
            if scanned || st.starved || st.next_due.is_some_and(|d| d <= now + BATCH) {
                self.dispatch(&mut st, &permits, &mut tasks, now);
            }
            let next_scan = st.last_scan.unwrap_or(now) + self.settings.rescan;
            let wake = st
                .next_due
                .map_or(next_scan, |t| t.min(next_scan))
                .max(now + Duration::from_millis(5));
            tokio::select! {
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(done) = done {
                        self.record(&mut st, done);
                    }
                    // Every other result that is in: one dispatch for all of them.
                    while let Some(done) = tasks.try_join_next() {
                        if let Ok(done) = done {
                            self.record(&mut st, done);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.cancelled() => {
                    tasks.abort_all();
                    return;
                }
            }
        }
    }

    /// Looks at the zones' caches: new instances are tracked, gone ones forgotten, changed
    /// probes reset, and Docker HEALTHCHECK verdicts (no I/O) taken at once.
    fn scan(&self, st: &mut State, now: Instant) {
        let desired = self.desired.borrow().clone();
        let wall = Utc::now();
        let mut seen: HashSet<String> = HashSet::new();
        for (key, probes, grace) in probed_groups(&desired) {
            for zone in self.zones.iter().filter(|z| z.reach() == Reach::Reachable) {
                for o in zone.instances_of(&key) {
                    if o.state != ContainerState::Running {
                        continue;
                    }
                    seen.insert(o.id.clone());
                    let id = o.id.clone();
                    let t = st.tracked.entry(id.clone()).or_insert_with(|| {
                        Tracked::new(
                            key.clone(),
                            zone.name.clone(),
                            probes.clone(),
                            o.clone(),
                            now,
                        )
                    });
                    if t.probes != probes {
                        // A changed check starts over, but an instance's readiness stands until
                        // the new probe's results move it (no blip out of service).
                        let was_ready = t
                            .slots
                            .iter()
                            .find(|s| s.readiness && (s.last.is_some() || s.carried))
                            .map(|s| s.ready);
                        let generation = t.generation + 1;
                        let summary = std::mem::take(&mut t.verdict.summary);
                        *t = Tracked::new(
                            key.clone(),
                            zone.name.clone(),
                            probes.clone(),
                            o.clone(),
                            now,
                        );
                        t.generation = generation;
                        let slot = t.slots.iter_mut().find(|s| s.readiness);
                        if let (Some(r), Some(s)) = (was_ready, slot) {
                            s.ready = r;
                            s.carried = true;
                            t.verdict.summary = summary;
                        }
                    }
                    t.observed = o;
                    t.grace = grace;
                    docker_health(t, wall);
                    self.publish(&id, t);
                }
            }
        }
        st.tracked.retain(|id, _| seen.contains(id));
        self.verdicts.retain(&seen);
    }

    /// Starts every probe due within [`BATCH`] that a permit is free for; records when the next
    /// one not in flight is due, and whether some were left without a permit (they start when
    /// a probe in flight ends).
    fn dispatch(
        &self,
        st: &mut State,
        permits: &Arc<Semaphore>,
        tasks: &mut JoinSet<Done>,
        now: Instant,
    ) {
        let wall = Utc::now();
        let mut due: Option<Instant> = None;
        let mut full = false;
        for (id, t) in st.tracked.iter_mut() {
            let grace_left = t.grace_left(wall);
            for (i, s) in t.slots.iter_mut().enumerate() {
                if s.in_flight || s.probe.check == Check::Docker {
                    continue;
                }
                if s.next > now + BATCH {
                    due = Some(due.map_or(s.next, |d| d.min(s.next)));
                    continue;
                }
                if full {
                    continue; // started when a probe in flight ends and frees its permit
                }
                // A liveness-only probe waits out the grace period (no verdict before it).
                if !s.readiness && !grace_left.is_zero() {
                    s.next = now + grace_left;
                    due = Some(due.map_or(s.next, |d| d.min(s.next)));
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    full = true;
                    continue;
                };
                s.in_flight = true;
                s.next = now + s.probe.interval;
                let target = self.target(&t.zone, &t.observed, &s.probe.check);
                let (check, timeout) = (s.probe.check.clone(), s.probe.timeout);
                let (id, generation) = (id.clone(), t.generation);
                tasks.spawn(async move {
                    let outcome = check::probe(&check, target, timeout).await;
                    drop(permit);
                    Done {
                        id,
                        generation,
                        slot: i,
                        outcome,
                    }
                });
            }
        }
        st.next_due = due;
        st.starved = full;
    }

    /// Where a probe of `observed` in `zone` goes.
    fn target(&self, zone: &str, observed: &Observed, check: &Check) -> Target {
        let port = match check {
            Check::Http { port, .. } | Check::Tcp { port } => *port,
            Check::Exec { .. } => {
                return match self
                    .zones
                    .iter()
                    .find(|z| z.name == zone)
                    .and_then(|z| z.engine())
                {
                    Some(e) => Target::Container(e, observed.id.clone()),
                    None => Target::Missing(format!("zone {zone} has no engine connection")),
                };
            }
            Check::Docker => return Target::Missing("read from the engine".to_string()),
        };
        let host = self
            .settings
            .hosts
            .get(zone)
            .map_or("127.0.0.1", String::as_str);
        match target::published(&observed.ports, port, host) {
            Some((addr, p)) => Target::Address(addr, p),
            // Seen through an event only: the engine knows its ports.
            None if observed.ports.is_empty() => match self
                .zones
                .iter()
                .find(|z| z.name == zone)
                .and_then(|z| z.engine())
            {
                Some(engine) => Target::Lookup {
                    engine,
                    id: observed.id.clone(),
                    port,
                    host: host.to_string(),
                },
                None => Target::Missing(format!("zone {zone} has no engine connection")),
            },
            None => Target::Missing(target::not_published(port)),
        }
    }

    /// Counts one probe's outcome and publishes the verdict if it changed.
    fn record(&self, st: &mut State, done: Done) {
        let Some(t) = st.tracked.get_mut(&done.id) else {
            return; // gone meanwhile
        };
        if t.generation != done.generation {
            return;
        }
        let past_grace = t.past_grace(Utc::now());
        let Some(s) = t.slots.get_mut(done.slot) else {
            return;
        };
        s.in_flight = false;
        st.next_due = Some(st.next_due.map_or(s.next, |d| d.min(s.next)));
        count(s, &done.outcome, past_grace);
        s.last = Some(done.outcome);
        self.publish(&done.id, t);
    }

    /// Publishes `t`'s verdict when it changed (and enqueues the group when it matters).
    fn publish(&self, id: &str, t: &mut Tracked) {
        let (next, kind) = verdict(t);
        t.shown_kind = kind;
        if next == t.verdict && t.published {
            return;
        }
        let matters =
            next.ready != t.verdict.ready || next.liveness_failed != t.verdict.liveness_failed;
        t.verdict = next.clone();
        t.published = true;
        self.verdicts.set(id, next);
        if matters {
            tracing::info!(instance = %t.observed.name, group = %t.key, verdict = %t.verdict.summary, "probe verdict changed");
            self.queue.enqueue(t.key.clone());
        }
    }
}

/// Every group with probes: its key, probes and grace period.
fn probed_groups(desired: &Desired) -> Vec<(ObjectKey, Probes, Duration)> {
    let mut out = Vec::new();
    for (key, group, _) in desired.groups() {
        let lc = desired.launch_configuration(&key.namespace, &group.spec.launch_configuration);
        let Some(hc) = group
            .spec
            .health_check
            .as_ref()
            .or_else(|| lc.and_then(|l| l.spec.health_check.as_ref()))
        else {
            continue;
        };
        let probes = hc.resolve();
        if probes.is_empty() {
            continue;
        }
        let grace = group
            .spec
            .health_check_grace_period
            .map_or(DEFAULT_GRACE, |d| d.0);
        out.push((key.clone(), probes, grace));
    }
    out
}

/// Counts `outcome` into slot `s`. Readiness: ready after `healthyThreshold` passes in a row,
/// not ready after `unhealthyThreshold` failures in a row. Liveness: failures in a row after
/// the grace period (final once they reach the threshold). No verdict counts neither way.
fn count(s: &mut Slot, outcome: &Outcome, past_grace: bool) {
    match outcome {
        Outcome::Pass(_) => {
            s.passes = s.passes.saturating_add(1);
            s.failures = 0;
            if s.live_failures < s.probe.unhealthy_threshold {
                s.live_failures = 0;
            }
            if s.passes >= s.probe.healthy_threshold {
                s.ready = true;
            }
        }
        Outcome::Fail(_) => {
            s.failures = s.failures.saturating_add(1);
            s.passes = 0;
            if s.failures >= s.probe.unhealthy_threshold {
                s.ready = false;
            }
            if past_grace {
                s.live_failures = s.live_failures.saturating_add(1);
            }
        }
        Outcome::Unknown(_) => {}
    }
}

/// The Docker HEALTHCHECK as a liveness verdict: `unhealthy` after the grace period fails it at
/// once (the image's own retries already counted).
fn docker_health(t: &mut Tracked, now: DateTime<Utc>) {
    let past_grace = t.past_grace(now);
    let health = t.observed.health;
    for s in t
        .slots
        .iter_mut()
        .filter(|s| s.probe.check == Check::Docker)
    {
        match health {
            Some(Health::Unhealthy) if past_grace => {
                s.live_failures = s.probe.unhealthy_threshold;
                s.last = Some(Outcome::Fail(
                    "the image's HEALTHCHECK reports unhealthy".into(),
                ));
            }
            Some(Health::Healthy) => {
                s.last = Some(Outcome::Pass(
                    "the image's HEALTHCHECK reports healthy".into(),
                ));
            }
            _ => {}
        }
    }
}

/// The instance's verdict from its slots. The summary changes only with the verdict or with the
/// kind of the last outcome (pass, fail, no verdict), never with each probe's text, so the
/// status does not churn.
fn verdict(t: &Tracked) -> (Verdict, u8) {
    // Not judged before the first result (the reconciler then decides what it means).
    let ready = t
        .slots
        .iter()
        .find(|s| s.readiness)
        .and_then(|s| (s.last.is_some() || s.carried).then_some(s.ready));
    let failed_live = t
        .slots
        .iter()
        .find(|s| s.liveness && s.live_failures >= s.probe.unhealthy_threshold);
    let liveness_failed = t.verdict.liveness_failed || failed_live.is_some();
    let shown = t
        .slots
        .iter()
        .find(|s| s.readiness)
        .or_else(|| t.slots.first());
    let kind = shown.map_or(0, |s| kind(s.last.as_ref()));
    let mut v = Verdict {
        ready,
        liveness_failed,
        summary: t.verdict.summary.clone(),
    };
    let said = |s: &Slot| {
        s.last
            .as_ref()
            .map_or_else(String::new, |o| o.text().to_string())
    };
    if liveness_failed {
        if !t.verdict.liveness_failed {
            if let Some(s) = failed_live {
                v.summary = if s.probe.check == Check::Docker {
                    "liveness failed: the image's HEALTHCHECK reports unhealthy".to_string()
                } else {
                    format!(
                        "liveness failed {} times in a row: {}",
                        s.live_failures,
                        said(s)
                    )
                };
            }
        }
        // Final: the summary stays the one that said why.
    } else if ready != t.verdict.ready || kind != t.shown_kind {
        if let Some(s) = shown {
            v.summary = match (s.readiness, ready, &s.last) {
                (_, _, None) => t.verdict.summary.clone(),
                (_, _, Some(Outcome::Unknown(why))) => format!("not probed: {why}"),
                (true, Some(true), Some(Outcome::Pass(_))) => format!("ready: {}", said(s)),
                (true, Some(true), Some(Outcome::Fail(_))) => {
                    format!("ready, but the last probe failed: {}", said(s))
                }
                (true, _, Some(Outcome::Pass(_))) => format!("not ready yet: {}", said(s)),
                (true, _, Some(Outcome::Fail(_))) => format!("not ready: {}", said(s)),
                (false, _, Some(Outcome::Pass(_))) => format!("live: {}", said(s)),
                (false, _, Some(Outcome::Fail(_))) => format!("liveness failing: {}", said(s)),
            };
        }
    }
    (v, kind)
}

/// 0 nothing yet, 1 pass, 2 fail, 3 no verdict.
fn kind(o: Option<&Outcome>) -> u8 {
    match o {
        None => 0,
        Some(Outcome::Pass(_)) => 1,
        Some(Outcome::Fail(_)) => 2,
        Some(Outcome::Unknown(_)) => 3,
    }
}

#[cfg(test)]
mod tests;
