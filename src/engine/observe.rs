//! What the controller sees on each zone's engine: a cache of our containers per zone, fed by one
//! list per zone (at start, on resync, after a reconnect) and by the engine's event stream.
//!
//! One list per zone serves every group (the number of engine calls per resync grows with zones,
//! not groups). Our own creations and removals are written into the cache at once (by the
//! reconciler's actuator, the only caller of `created`, `terminating` and `removed`) and win over
//! a list that started before them (expectations), so a lagging view never causes a double
//! creation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::engine::{labels, ContainerState, Engine, EngineEvent, EventKind, Observed};
use crate::health::liveness::Beat;
use crate::manifest::{Kind, ObjectKey};
use crate::util::unpoisoned::{LockExt, RwLockExt};

/// Where an observer (or the autoscaler) sends the groups that need a look now: the reconcile
/// queue. A trait here, so the engine layer never imports the reconciler, which implements it.
pub trait Enqueue: Send + Sync {
    /// `key` should be reconciled now (a key already due or running is not doubled).
    fn enqueue(&self, key: ObjectKey);
}

/// Connects to a zone's engine; called again after each failure.
pub type Connector = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = crate::engine::Result<Arc<dyn Engine>>> + Send>>
        + Send
        + Sync,
>;

/// A connector that always hands out the same engine (tests, the scale model).
pub fn fixed_connector(engine: Arc<dyn Engine>) -> Connector {
    Arc::new(move || {
        let e = engine.clone();
        Box::pin(async move { Ok(e) })
    })
}

/// Reachability of a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Not tried yet: reconciles wait, because an empty view would look like "nothing runs".
    Unknown,
    Reachable,
    /// With the last error.
    Unreachable(String),
}

/// One availability zone: its engine and what we last saw on it.
pub struct Zone {
    pub name: String,
    /// Name of the controller owning the containers we look at (others' are ignored).
    controller: String,
    engine: RwLock<Option<Arc<dyn Engine>>>,
    state: Mutex<ZoneState>,
    /// Touched by the observer loop every time round (`/healthz`).
    beat: Mutex<Beat>,
    /// Becomes true once the zone's reachability is known (listed, or found unreachable): the
    /// reconciler's runner waits for it once instead of each pass checking.
    known: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct ZoneState {
    reach: Option<Reach>,
    containers: HashMap<String, Observed>,
    /// When we (or an event) last changed an entry: a list that started earlier does not undo it.
    touched: HashMap<String, Instant>,
    /// Containers we are stopping/removing: hidden from planning, events about them ignored.
    terminating: HashSet<String>,
    /// Container ids per group, so a reconcile costs its own group's size, not the zone's.
    by_group: HashMap<ObjectKey, HashSet<String>>,
}

impl ZoneState {
    fn insert(&mut self, c: Observed) {
        if let Some(k) = group_key(&c.labels) {
            self.by_group.entry(k).or_default().insert(c.id.clone());
        }
        self.containers.insert(c.id.clone(), c);
    }

    fn remove(&mut self, id: &str) {
        let Some(c) = self.containers.remove(id) else {
            return;
        };
        if let Some(k) = group_key(&c.labels) {
            if let Some(ids) = self.by_group.get_mut(&k) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_group.remove(&k);
                }
            }
        }
    }

    fn reindex(&mut self) {
        self.by_group.clear();
        for c in self.containers.values() {
            if let Some(k) = group_key(&c.labels) {
                self.by_group.entry(k).or_default().insert(c.id.clone());
            }
        }
    }
}

/// The filter that selects every container this controller manages.
pub fn managed_filter() -> Vec<(String, String)> {
    vec![(labels::MANAGED_BY.to_string(), labels::MANAGER.to_string())]
}

/// The group a container belongs to, from its labels.
pub fn group_key(labels_map: &BTreeMap<String, String>) -> Option<ObjectKey> {
    if labels_map.get(labels::MANAGED_BY).map(String::as_str) != Some(labels::MANAGER) {
        return None;
    }
    let ns = labels_map.get(labels::NAMESPACE)?;
    let group = labels_map.get(labels::GROUP)?;
    Some(ObjectKey::new(
        Kind::AutoScalingGroup,
        ns.clone(),
        group.clone(),
    ))
}

impl Zone {
    /// A zone of the controller named `default`.
    pub fn new(name: impl Into<String>) -> Self {
        Zone::for_controller(name, labels::DEFAULT_CONTROLLER)
    }

    /// A zone that sees only the containers of the controller named `controller`.
    pub fn for_controller(name: impl Into<String>, controller: impl Into<String>) -> Self {
        Zone {
            name: name.into(),
            controller: controller.into(),
            engine: RwLock::new(None),
            state: Mutex::new(ZoneState::default()),
            beat: Mutex::new(Beat::detached()),
            known: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The heartbeat the observer loop touches (registered with the controller's liveness).
    pub fn set_beat(&self, beat: Beat) {
        *self.beat.locked() = beat;
    }

    fn touch(&self) {
        self.beat.locked().touch();
    }

    /// Containers of namespace `ns` that hold resources (neither failed nor being removed),
    /// counted per group: what the namespace's quotas count.
    pub fn namespace_usage(&self, ns: &str) -> BTreeMap<ObjectKey, u32> {
        let st = self.state.locked();
        let mut out = BTreeMap::new();
        for (key, ids) in st.by_group.iter().filter(|(k, _)| k.namespace == ns) {
            // A container being drained or stopped still runs and holds what it holds: it counts
            // until it is removed, or a launch beside it would go over the namespace's quota.
            let n = ids
                .iter()
                .filter_map(|id| st.containers.get(id))
                .filter(|c| !c.state.is_failed())
                .count();
            if n > 0 {
                out.insert(key.clone(), u32::try_from(n).unwrap_or(u32::MAX));
            }
        }
        out
    }

    /// Whether a container belongs to this zone's controller.
    fn owns(&self, l: &BTreeMap<String, String>) -> bool {
        l.get(labels::CONTROLLER)
            .map(String::as_str)
            .unwrap_or(labels::DEFAULT_CONTROLLER)
            == self.controller
    }

    /// A zone whose engine is already connected (tests, the scale model).
    pub fn with_engine(name: impl Into<String>, engine: Arc<dyn Engine>) -> Self {
        let z = Zone::new(name);
        *z.engine.write_locked() = Some(engine);
        z
    }

    pub fn engine(&self) -> Option<Arc<dyn Engine>> {
        self.engine.read_locked().clone()
    }

    pub fn reach(&self) -> Reach {
        self.state.locked().reach.clone().unwrap_or(Reach::Unknown)
    }

    fn set_reach(&self, reach: Reach) -> bool {
        let changed = {
            let mut st = self.state.locked();
            let changed = st.reach.as_ref() != Some(&reach);
            st.reach = Some(reach);
            changed
        };
        self.known.send_replace(true);
        changed
    }

    /// Returns once the zone has been listed or found unreachable (its reachability is never
    /// [`Reach::Unknown`] again).
    pub async fn observed(&self) {
        let mut rx = self.known.subscribe();
        // The sender lives as long as the zone, so this ends only when the value turns true.
        let _ = rx.wait_for(|known| *known).await;
    }

    /// The containers of one group (terminating ones excluded).
    pub fn instances_of(&self, key: &ObjectKey) -> Vec<Observed> {
        let st = self.state.locked();
        let Some(ids) = st.by_group.get(key) else {
            return Vec::new();
        };
        ids.iter()
            .filter(|id| !st.terminating.contains(*id))
            .filter_map(|id| st.containers.get(id))
            .cloned()
            .collect()
    }

    /// How many instances of one group are being stopped or removed right now (warm pool
    /// members being replaced are not: they never served).
    pub fn terminating_of(&self, key: &ObjectKey) -> usize {
        let st = self.state.locked();
        st.by_group.get(key).map_or(0, |ids| {
            ids.iter()
                .filter(|id| st.terminating.contains(*id))
                .filter(|id| {
                    st.containers
                        .get(*id)
                        .is_none_or(|c| !crate::engine::warm::is_member(c))
                })
                .count()
        })
    }

    /// The containers of one group being drained, stopped or removed right now.
    pub fn terminating_instances_of(&self, key: &ObjectKey) -> Vec<Observed> {
        let st = self.state.locked();
        let Some(ids) = st.by_group.get(key) else {
            return Vec::new();
        };
        ids.iter()
            .filter(|id| st.terminating.contains(*id))
            .filter_map(|id| st.containers.get(id))
            .cloned()
            .collect()
    }

    /// Whether container `id` is being drained, stopped or removed.
    pub fn is_terminating(&self, id: &str) -> bool {
        self.state.locked().terminating.contains(id)
    }

    /// Every group that has a container here.
    pub fn group_keys(&self) -> BTreeSet<ObjectKey> {
        let st = self.state.locked();
        st.by_group.keys().cloned().collect()
    }

    /// Number of containers in the cache.
    pub fn len(&self) -> usize {
        self.state.locked().containers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a container we just created.
    pub fn created(&self, c: Observed) {
        let mut st = self.state.locked();
        st.touched.insert(c.id.clone(), Instant::now());
        st.insert(c);
    }

    /// Records what we just did to a container (paused, unpaused, started, stopped, renamed: a
    /// warm pool's steps), as an expectation like [`Zone::created`].
    pub fn changed(&self, c: Observed) {
        self.created(c);
    }

    /// Hides a container we are about to remove.
    pub fn terminating(&self, id: &str) {
        let mut st = self.state.locked();
        st.terminating.insert(id.to_string());
        st.touched.insert(id.to_string(), Instant::now());
    }

    /// Records the end of a removal (`ok` false: it failed, the container shows again).
    pub fn removed(&self, id: &str, ok: bool) {
        let mut st = self.state.locked();
        st.terminating.remove(id);
        st.touched.insert(id.to_string(), Instant::now());
        if ok {
            st.remove(id);
        }
    }

    /// Replaces the cache with a list taken at `started`, keeping changes made since.
    pub fn apply_list(&self, started: Instant, list: Vec<Observed>) {
        let mut st = self.state.locked();
        let mut fresh: HashMap<String, Observed> = HashMap::with_capacity(list.len());
        for mut c in list.into_iter().filter(|c| self.owns(&c.labels)) {
            if let Some(t) = st.touched.get(&c.id) {
                if *t >= started {
                    continue; // decided below from the cache
                }
            }
            // A list carries no start time; keep the one we learned from events or inspect.
            if let Some(old) = st.containers.get(&c.id) {
                c.started_at = c.started_at.or(old.started_at);
                c.exit_code = c.exit_code.or(old.exit_code);
            }
            fresh.insert(c.id.clone(), c);
        }
        for (id, t) in &st.touched {
            if *t >= started {
                if let Some(c) = st.containers.get(id) {
                    fresh.insert(id.clone(), c.clone());
                }
            }
        }
        st.containers = fresh;
        st.reindex();
        st.touched.retain(|_, t| *t >= started);
        let ids: HashSet<&String> = st.containers.keys().collect();
        let gone: Vec<String> = st
            .terminating
            .iter()
            .filter(|id| !ids.contains(id))
            .cloned()
            .collect();
        for id in gone {
            st.terminating.remove(&id);
        }
    }

    /// Running or paused containers whose start time is unknown: a list does not carry it, so
    /// after a restart every container's is learned by one inspect (`learn_start_times`).
    fn missing_start_times(&self) -> Vec<String> {
        let st = self.state.locked();
        st.containers
            .values()
            .filter(|c| c.started_at.is_none())
            .filter(|c| matches!(c.state, ContainerState::Running | ContainerState::Paused))
            .map(|c| c.id.clone())
            .collect()
    }

    /// Fills in a start time learned by inspecting `id`, unless the entry is gone or an event
    /// told us a newer one meanwhile.
    fn learned_start_time(&self, id: &str, started_at: DateTime<Utc>) {
        let mut st = self.state.locked();
        if let Some(c) = st.containers.get_mut(id) {
            c.started_at = c.started_at.or(Some(started_at));
        }
    }

    /// Applies one event; returns the group it concerns.
    pub fn apply_event(&self, ev: &EngineEvent) -> Option<ObjectKey> {
        if !self.owns(&ev.labels) {
            return None;
        }
        let key = group_key(&ev.labels);
        let mut st = self.state.locked();
        if st.terminating.contains(&ev.id) && ev.kind != EventKind::Destroy {
            return None;
        }
        st.touched.insert(ev.id.clone(), Instant::now());
        match ev.kind {
            EventKind::Destroy => {
                st.terminating.remove(&ev.id);
                st.remove(&ev.id);
            }
            EventKind::Create
            | EventKind::Start
            | EventKind::Die
            | EventKind::Oom
            | EventKind::Health(_)
            | EventKind::Pause
            | EventKind::Unpause
            | EventKind::Rename => {
                if !st.containers.contains_key(&ev.id) {
                    st.insert(Observed {
                        id: ev.id.clone(),
                        name: ev
                            .name
                            .clone()
                            .unwrap_or_else(|| short_id(&ev.id).to_string()),
                        labels: ev.labels.clone(),
                        state: ContainerState::Created,
                        health: None,
                        created: ev.time,
                        started_at: None,
                        ports: Vec::new(),
                        exit_code: None,
                        image_id: None,
                    });
                }
                let entry = st.containers.get_mut(&ev.id).expect("inserted above");
                match ev.kind {
                    EventKind::Start => {
                        entry.state = ContainerState::Running;
                        entry.started_at = Some(ev.time);
                        entry.exit_code = None;
                    }
                    EventKind::Die => {
                        entry.state = ContainerState::Exited;
                        entry.exit_code = ev.exit_code;
                    }
                    EventKind::Health(h) => entry.health = Some(h),
                    EventKind::Pause => entry.state = ContainerState::Paused,
                    EventKind::Unpause => entry.state = ContainerState::Running,
                    EventKind::Rename => {
                        if let Some(n) = &ev.name {
                            entry.name.clone_from(n);
                        }
                    }
                    _ => {}
                }
            }
            EventKind::Kill | EventKind::Stop | EventKind::Other => {}
        }
        key
    }
}

/// First 12 hex digits of a container ID, as `docker ps` shows it.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Runs one zone's observer until `shutdown`: connect, subscribe to events, list, then keep the
/// cache current, relisting every `resync` and after any error (with backoff 200 ms → 5 s).
///
/// `on_change` is called with the group of every container that changed, and with `None` when
/// the whole zone changed (first list, reachability change, resync): then every group is due.
pub async fn observe(
    zone: Arc<Zone>,
    connect: Connector,
    resync: Duration,
    queue: Arc<dyn Enqueue>,
    all_groups: Arc<dyn Fn() -> Vec<ObjectKey> + Send + Sync>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    let enqueue_all = |zone: &Zone| {
        for k in all_groups().into_iter().chain(zone.group_keys()) {
            queue.enqueue(k);
        }
    };
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        zone.touch();
        let result = observe_once(&zone, &connect, resync, &queue, &enqueue_all, &shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
        let reason = match result {
            Ok(()) => "event stream ended".to_string(),
            Err(e) => e.to_string(),
        };
        // Confirm with a ping before declaring the zone unreachable: a dropped event stream on a
        // healthy engine only needs a resubscribe.
        let alive = match zone.engine() {
            Some(e) => tokio::time::timeout(Duration::from_secs(2), e.ping())
                .await
                .map(|r| r.is_ok())
                .unwrap_or(false),
            None => false,
        };
        if !alive {
            if zone.set_reach(Reach::Unreachable(reason.clone())) {
                warn!(zone = %zone.name, error = %reason, "zone unreachable; its capacity is made up in the others");
                *zone.engine.write_locked() = None;
                enqueue_all(&zone);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            debug!(zone = %zone.name, %reason, "resubscribing to events");
            backoff = Duration::from_millis(200);
        }
    }
}

async fn observe_once(
    zone: &Arc<Zone>,
    connect: &Connector,
    resync: Duration,
    queue: &Arc<dyn Enqueue>,
    enqueue_all: &impl Fn(&Zone),
    shutdown: &CancellationToken,
) -> crate::engine::Result<()> {
    let engine = match zone.engine() {
        Some(e) => e,
        None => {
            let e = tokio::time::timeout(Duration::from_secs(5), connect())
                .await
                .map_err(|_| {
                    crate::engine::EngineError::Unreachable("connect timed out".into())
                })??;
            *zone.engine.write_locked() = Some(e.clone());
            e
        }
    };
    // Subscribe before listing so nothing that happens in between is missed.
    let mut events = engine.events(&managed_filter()).await?;
    relist(zone, engine.as_ref()).await?;
    if zone.set_reach(Reach::Reachable) {
        info!(zone = %zone.name, containers = zone.len(), "zone reachable");
    }
    enqueue_all(zone);
    let mut tick = tokio::time::interval_at(Instant::now() + resync, resync);
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
                    zone.touch();
                    if let Some(k) = zone.apply_event(&ev) {
                        // The event's own time against ours: how late it reached us (latency).
                        debug!(
                            zone = %zone.name,
                            group = %k,
                            container = short_id(&ev.id),
                            kind = ?ev.kind,
                            lag_ms = (chrono::Utc::now() - ev.time).num_microseconds().unwrap_or(0) as f64 / 1000.0,
                            "event enqueues its group"
                        );
                        queue.enqueue(k);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            _ = tick.tick() => {
                relist(zone, engine.as_ref()).await?;
                enqueue_all(zone);
            }
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Lists the zone's managed containers (bounded by 10 s: a hung engine must not hold the
/// observer) and makes the list the zone's truth, as of when it was asked for.
async fn relist(zone: &Zone, engine: &dyn Engine) -> crate::engine::Result<()> {
    let started = Instant::now();
    let list = tokio::time::timeout(Duration::from_secs(10), engine.list(&managed_filter()))
        .await
        .map_err(|_| crate::engine::EngineError::Unreachable("list timed out".into()))??;
    zone.apply_list(started, list);
    learn_start_times(zone, engine).await;
    zone.touch();
    Ok(())
}

/// Learns the start times a list leaves out, by inspecting each container that lacks one: after
/// a restart every instance would otherwise have no age, lose `startedAt` from the status
/// written into its manifest file (a diff in git for nothing), and look freshly started to the
/// crash window. Once learned, a start time is kept across lists, so a steady resync inspects
/// nothing. Bounded (16 at once, 5 s in all): what is not learned now is asked at the next list.
async fn learn_start_times(zone: &Zone, engine: &dyn Engine) {
    let ids = zone.missing_start_times();
    if ids.is_empty() {
        return;
    }
    let inspect_all = futures::stream::iter(ids)
        .map(|id| async move { engine.inspect(&id).await.ok() })
        .buffer_unordered(16)
        .for_each(|o| {
            if let Some((id, t)) = o.and_then(|o| Some((o.id, o.started_at?))) {
                zone.learned_start_time(&id, t);
            }
            async {}
        });
    if tokio::time::timeout(Duration::from_secs(5), inspect_all)
        .await
        .is_err()
    {
        debug!(zone = %zone.name, "start times not all learned within 5 s; the next list asks again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn obs(id: &str, group: &str, state: ContainerState) -> Observed {
        let labels = BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
            (labels::NAMESPACE.to_string(), "default".to_string()),
            (labels::GROUP.to_string(), group.to_string()),
        ]);
        Observed {
            id: id.into(),
            name: id.into(),
            labels,
            state,
            health: None,
            created: Utc::now(),
            started_at: None,
            ports: vec![],
            exit_code: None,
            image_id: None,
        }
    }

    fn key(g: &str) -> ObjectKey {
        ObjectKey::new(Kind::AutoScalingGroup, "default", g)
    }

    #[tokio::test]
    async fn a_restarted_controller_learns_start_times_once() {
        let engine = Arc::new(crate::engine::memory::MemoryEngine::new());
        let id = engine.add_foreign(&[
            (labels::MANAGED_BY, labels::MANAGER),
            (labels::NAMESPACE, "default"),
            (labels::GROUP, "web"),
        ]);
        let started = engine.containers()[0].started_at;
        assert!(started.is_some());
        // A new controller: all it has is a list, which carries no start time.
        let z = Zone::with_engine("a", engine.clone());
        relist(&z, engine.as_ref()).await.unwrap();
        let seen = z.instances_of(&key("web"));
        assert_eq!(
            (seen[0].id.as_str(), seen[0].started_at),
            (id.as_str(), started)
        );
        assert_eq!(engine.calls().inspect, 1);
        // Kept across lists: a steady resync inspects nothing.
        relist(&z, engine.as_ref()).await.unwrap();
        assert_eq!(z.instances_of(&key("web"))[0].started_at, started);
        assert_eq!(engine.calls().inspect, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_started_before_our_creation_does_not_hide_it() {
        let z = Zone::new("a");
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        z.created(obs("c1", "web", ContainerState::Running));
        z.apply_list(t0, vec![]); // stale list: taken before c1 existed
        assert_eq!(z.instances_of(&key("web")).len(), 1);
        // A later list is authoritative.
        tokio::time::advance(Duration::from_millis(5)).await;
        z.apply_list(Instant::now(), vec![]);
        assert!(z.instances_of(&key("web")).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_die_event_during_a_list_is_not_undone_by_it() {
        let z = Zone::new("a");
        z.apply_list(
            Instant::now(),
            vec![obs("c1", "web", ContainerState::Running)],
        );
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_millis(1)).await;
        let ev = EngineEvent {
            kind: EventKind::Die,
            id: "c1".into(),
            name: Some("c1".into()),
            labels: obs("c1", "web", ContainerState::Running).labels,
            exit_code: Some(137),
            time: Utc::now(),
        };
        assert_eq!(z.apply_event(&ev), Some(key("web")));
        z.apply_list(t0, vec![obs("c1", "web", ContainerState::Running)]);
        let i = z.instances_of(&key("web"));
        assert_eq!(i[0].state, ContainerState::Exited);
        assert_eq!(i[0].exit_code, Some(137));
    }

    #[tokio::test(start_paused = true)]
    async fn terminating_containers_are_hidden_until_removed() {
        let z = Zone::new("a");
        z.apply_list(
            Instant::now(),
            vec![obs("c1", "web", ContainerState::Running)],
        );
        z.terminating("c1");
        assert!(z.instances_of(&key("web")).is_empty());
        z.removed("c1", false);
        assert_eq!(
            z.instances_of(&key("web")).len(),
            1,
            "a failed removal shows the container again"
        );
        // A warm pool member being removed is no instance being stopped.
        let mut spare = obs("c2", "web", ContainerState::Paused);
        spare.name = "web-abcde-warm".into();
        z.apply_list(Instant::now(), vec![spare]);
        z.terminating("c2");
        assert_eq!(z.terminating_of(&key("web")), 0);
    }

    #[test]
    fn a_zone_ignores_containers_of_other_controllers() {
        let z = Zone::for_controller("a", "blue");
        let mut theirs = obs("c1", "web", ContainerState::Running);
        theirs
            .labels
            .insert(labels::CONTROLLER.into(), "green".into());
        let mut ours = obs("c2", "web", ContainerState::Running);
        ours.labels.insert(labels::CONTROLLER.into(), "blue".into());
        let unlabelled = obs("c3", "web", ContainerState::Running);
        z.apply_list(Instant::now(), vec![theirs.clone(), ours, unlabelled]);
        let ids: Vec<String> = z
            .instances_of(&key("web"))
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, vec!["c2".to_string()]);
        // Containers without the label belong to the controller named `default`.
        let d = Zone::new("a");
        d.apply_list(
            Instant::now(),
            vec![theirs, obs("c3", "web", ContainerState::Running)],
        );
        assert_eq!(d.instances_of(&key("web")).len(), 1);
    }

    #[test]
    fn containers_without_our_labels_belong_to_no_group() {
        let mut c = obs("c1", "web", ContainerState::Running);
        assert_eq!(group_key(&c.labels), Some(key("web")));
        c.labels.remove(labels::MANAGED_BY);
        assert_eq!(group_key(&c.labels), None);
    }
}
