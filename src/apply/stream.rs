//! `GET /v1/watch`: the current state, then every change of groups, instances, launch
//! configurations and policies, as newline-delimited JSON (`ms get ... -w`, `ms wait`).
//!
//! ```text
//! {"type":"ADDED","kind":"AutoScalingGroup","object":{...}}     the current state, one per object
//! {"type":"SYNCED"}                                            end of the current state
//! {"type":"MODIFIED","kind":"Instance","object":{...}}          then one line per change
//! {"type":"DELETED","kind":"Instance","object":{...}}
//! {"type":"ERROR","message":"..."}                             last line when the watch is ended
//! {"type":"RELOADED"}                                          with ?reloads=true: manifests loaded
//! ```
//!
//! # Rules
//! - Level-triggered: one hub per API compares what the API would serve now (the desired store
//!   and the status board, the same sources as the read routes) with what it served at its last
//!   look, at once when the desired state changes and every [`TICK`] otherwise (the status board
//!   has no change signal), and only while someone watches. A group's conditions, counts and
//!   activities are part of its object, so each of their changes is a `MODIFIED` group.
//! - Bounded: each watcher has a buffer of [`BUFFER`] events. A watcher that falls that far
//!   behind is dropped (its stream ends with an `ERROR` line) so that it never slows the hub,
//!   the other watchers or the controller; it can watch again and gets the current state.
//! - Quiet streams carry an empty line every [`HEARTBEAT`], so the API's idle timeout does not
//!   close them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{check_access, ApiError, ApiResult, Context};
use crate::manifest::{Kind, ObjectKey};
use crate::status::GroupStatus;
use crate::util::unpoisoned::{LockExt, RwLockExt};
use crate::watch::store::{Desired, Entry};

/// How often the hub looks for changes while someone watches.
pub const TICK: Duration = Duration::from_millis(100);

/// Events buffered per watcher; a watcher further behind is dropped.
pub const BUFFER: usize = 1024;

/// Namespaces one watch may name.
pub const MAX_NAMESPACES: usize = 100;

/// Longest silence on a watch stream.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// What a watcher asked for.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WatchQuery {
    /// Comma-separated: `asgs`, `lcs`, `policies`, `instances` (default: all).
    kind: Option<String>,
    /// One namespace, or several separated by commas (the dashboard of a token with several);
    /// default: every namespace, for a token that may see them all.
    namespace: Option<String>,
    /// `true`: also a `{"type":"RELOADED"}` line whenever the manifests were loaded again (a
    /// file with an error changes no object, yet the problems list changes).
    #[serde(default)]
    reloads: bool,
}

/// The kind of an event's object, as the stream names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum StreamKind {
    Object(Kind),
    Instance,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            StreamKind::Object(k) => k.as_str(),
            StreamKind::Instance => "Instance",
        }
    }
}

/// Identity of one streamed object: kind, namespace, name.
type Key = (StreamKind, String, String);

/// One watcher: what it wants and where its events go.
struct Watcher {
    kinds: Vec<StreamKind>,
    /// `None`: every namespace.
    namespaces: Option<Vec<String>>,
    /// Also told `{"type":"RELOADED"}` at each new desired state (`?reloads=true`).
    reloads: bool,
    tx: mpsc::Sender<Bytes>,
    /// Set when the hub drops it for being slow (its stream then says so).
    dropped: Arc<AtomicBool>,
}

impl Watcher {
    fn wants(&self, key: &Key) -> bool {
        self.kinds.contains(&key.0)
            && self
                .namespaces
                .as_ref()
                .is_none_or(|list| list.contains(&key.1))
    }
}

/// The watchers of one API and the state they were last sent.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    watchers: Vec<Watcher>,
    /// What was last sent (valid while `running`).
    served: Served,
    running: bool,
}

/// Hands `lines` to every watcher that wants them, without ever waiting: a watcher whose buffer
/// is full is dropped (flagged, so its stream says why), one that went away is forgotten.
fn deliver(watchers: &mut Vec<Watcher>, lines: &[(&Key, Bytes)]) {
    watchers.retain(|w| {
        for (k, line) in lines {
            if !w.wants(k) {
                continue;
            }
            match w.tx.try_send(line.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::info!(
                        buffer = BUFFER,
                        "a watch client fell behind: its stream is ended"
                    );
                    w.dropped.store(true, Ordering::Release);
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        true
    });
}

/// Tells the watchers that asked for it that a new desired state was loaded; like [`deliver`],
/// never waits.
fn deliver_reload(watchers: &mut Vec<Watcher>) {
    watchers.retain(|w| {
        if !w.reloads {
            return true;
        }
        match w
            .tx
            .try_send(Bytes::from_static(b"{\"type\":\"RELOADED\"}\n"))
        {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                w.dropped.store(true, Ordering::Release);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}

/// What the watchers were last sent, and what it was computed from, so that a look at an
/// unchanged controller costs comparisons, not serialization (an idle watch of 1,000 groups
/// cost a third of a core when everything was serialized at every tick).
#[derive(Default)]
struct Served {
    /// Every object a watcher may see, as sent.
    values: BTreeMap<Key, Value>,
    /// The desired-state snapshot `values` was computed from.
    desired: Option<Arc<Desired>>,
    /// Each group's status `values` was computed from (`None`: none published yet).
    status: BTreeMap<ObjectKey, Option<GroupStatus>>,
}

/// The streamed values of one object: the object itself (a group with its status) and, for a
/// group, its instances.
fn object_values(
    key: &ObjectKey,
    entry: &Entry,
    status: Option<&GroupStatus>,
) -> Vec<(Key, Value)> {
    let mut v = serde_json::to_value(&entry.object).unwrap_or(Value::Null);
    let mut out = Vec::new();
    if key.kind == Kind::AutoScalingGroup {
        v["status"] = status.map(|s| json!(s)).unwrap_or(Value::Null);
        for inst in status.iter().flat_map(|s| s.instances.iter()) {
            let mut i = json!(inst);
            i["namespace"] = json!(key.namespace);
            i["group"] = json!(key.name);
            out.push((
                (
                    StreamKind::Instance,
                    key.namespace.clone(),
                    inst.name.clone(),
                ),
                i,
            ));
        }
    }
    out.push((
        (
            StreamKind::Object(key.kind),
            key.namespace.clone(),
            key.name.clone(),
        ),
        v,
    ));
    out
}

impl Served {
    /// Brings `values` up to date with the controller; returns the events that did it.
    fn refresh(&mut self, ctx: &Context) -> Vec<(&'static str, Key, Value)> {
        let desired = ctx.desired.borrow().clone();
        let board = ctx.status.read_locked();
        if !self
            .desired
            .as_ref()
            .is_some_and(|d| Arc::ptr_eq(d, &desired))
        {
            // A new desired state: everything is computed again (rare: a file changed).
            let mut values = BTreeMap::new();
            let mut status = BTreeMap::new();
            for (key, entry) in &desired.objects {
                let st = board.get(key);
                values.extend(object_values(key, entry, st));
                if key.kind == Kind::AutoScalingGroup {
                    status.insert(key.clone(), st.cloned());
                }
            }
            drop(board);
            let events = owned(changes(&self.values, &values));
            *self = Served {
                values,
                desired: Some(desired),
                status,
            };
            return events;
        }
        // The same desired state: only groups whose status changed are computed again.
        let changed: Vec<ObjectKey> = self
            .status
            .iter()
            .filter(|(k, st)| board.get(*k) != st.as_ref())
            .map(|(k, _)| k.clone())
            .collect();
        let mut before = BTreeMap::new();
        let mut after = BTreeMap::new();
        for key in changed {
            let Some(entry) = desired.objects.get(&key) else {
                continue;
            };
            let old = self.status.get(&key).cloned().flatten();
            let group_key = (
                StreamKind::Object(key.kind),
                key.namespace.clone(),
                key.name.clone(),
            );
            let old_keys = old
                .iter()
                .flat_map(|s| s.instances.iter())
                .map(|i| (StreamKind::Instance, key.namespace.clone(), i.name.clone()))
                .chain(std::iter::once(group_key));
            for k in old_keys {
                if let Some(v) = self.values.remove(&k) {
                    before.insert(k, v);
                }
            }
            let st = board.get(&key);
            for (k, v) in object_values(&key, entry, st) {
                self.values.insert(k.clone(), v.clone());
                after.insert(k, v);
            }
            self.status.insert(key, st.cloned());
        }
        owned(changes(&before, &after))
    }
}

fn owned(events: Vec<(&'static str, &Key, &Value)>) -> Vec<(&'static str, Key, Value)> {
    events
        .into_iter()
        .map(|(t, k, v)| (t, k.clone(), v.clone()))
        .collect()
}

fn event(type_: &str, key: &Key, object: &Value) -> Bytes {
    let line = json!({ "type": type_, "kind": key.0.name(), "object": object });
    Bytes::from(format!("{line}\n"))
}

/// The events that turn `before` into `after`.
fn changes<'a>(
    before: &'a BTreeMap<Key, Value>,
    after: &'a BTreeMap<Key, Value>,
) -> Vec<(&'static str, &'a Key, &'a Value)> {
    let mut out = Vec::new();
    for (k, v) in after {
        match before.get(k) {
            None => out.push(("ADDED", k, v)),
            Some(old) if old != v => out.push(("MODIFIED", k, v)),
            Some(_) => {}
        }
    }
    for (k, v) in before {
        if !after.contains_key(k) {
            out.push(("DELETED", k, v));
        }
    }
    out
}

impl Hub {
    /// Adds a watcher: sends it the current state and `SYNCED`, and starts the hub's loop if it
    /// was idle. The current state is taken under the hub's lock, so the watcher's first change
    /// is relative to exactly what it was sent.
    fn subscribe(self: &Arc<Self>, ctx: &Arc<Context>, mut w: Watcher) {
        let mut st = self.inner.locked();
        if !st.running {
            st.served = Served::default();
            st.served.refresh(ctx);
        }
        let initial: Vec<Bytes> = st
            .served
            .values
            .iter()
            .filter(|(k, _)| w.wants(k))
            .map(|(k, v)| event("ADDED", k, v))
            .chain(std::iter::once(Bytes::from("{\"type\":\"SYNCED\"}\n")))
            .collect();
        // The current state is sent whole even when it is larger than the buffer: what does not
        // fit is queued, in order, ahead of every later event.
        let mut overflow = Vec::new();
        for b in initial {
            if !overflow.is_empty() {
                overflow.push(b);
            } else if let Err(mpsc::error::TrySendError::Full(b)) = w.tx.try_send(b) {
                overflow.push(b);
            }
        }
        if !overflow.is_empty() {
            // Deliver the rest from a task; events that follow wait behind it (the watcher's
            // own sender is replaced by one that queues behind the overflow).
            let (qtx, mut qrx) = mpsc::channel::<Bytes>(BUFFER);
            let out = w.tx.clone();
            tokio::spawn(async move {
                for b in overflow {
                    if out.send(b).await.is_err() {
                        return;
                    }
                }
                while let Some(b) = qrx.recv().await {
                    if out.send(b).await.is_err() {
                        return;
                    }
                }
            });
            w.tx = qtx;
        }
        st.watchers.push(w);
        if !st.running {
            st.running = true;
            let hub = self.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move { hub.run(ctx).await });
        }
    }

    /// Looks for changes every [`TICK`] while anyone watches.
    async fn run(self: Arc<Self>, ctx: Arc<Context>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut desired = ctx.desired.clone();
        desired.mark_unchanged();
        loop {
            // A new desired state is looked at at once; the status board has no signal of its
            // own, so its changes wait for the tick.
            tokio::select! {
                _ = tick.tick() => {}
                r = desired.changed() => {
                    if r.is_err() {
                        tick.tick().await; // the sender is gone: fall back to ticks
                    }
                }
            }
            let mut guard = self.inner.locked();
            let st = &mut *guard;
            st.watchers.retain(|w| !w.tx.is_closed());
            if st.watchers.is_empty() {
                st.running = false;
                st.served = Served::default();
                return;
            }
            let before = st.served.desired.clone();
            let events = st.served.refresh(&ctx);
            let reloaded =
                !matches!((&before, &st.served.desired), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
            if reloaded {
                // Watchers that asked to hear of every new desired state (the dashboard reads
                // the problems again: a broken file changes no object).
                deliver_reload(&mut st.watchers);
            }
            if !events.is_empty() {
                let lines: Vec<(&Key, Bytes)> =
                    events.iter().map(|(t, k, v)| (k, event(t, k, v))).collect();
                deliver(&mut st.watchers, &lines);
            }
        }
    }

    /// Watchers now (for tests and metrics).
    pub fn watchers(&self) -> usize {
        self.inner.locked().watchers.len()
    }
}

fn kinds(q: &WatchQuery) -> ApiResult<Vec<StreamKind>> {
    let Some(list) = q.kind.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(vec![
            StreamKind::Object(Kind::LaunchConfiguration),
            StreamKind::Object(Kind::AutoScalingGroup),
            StreamKind::Object(Kind::ScalingPolicy),
            StreamKind::Instance,
        ]);
    };
    list.split(',')
        .map(|k| match k.trim().to_ascii_lowercase().as_str() {
            "instances" | "instance" | "inst" => Ok(StreamKind::Instance),
            other => Kind::parse(other).map(StreamKind::Object).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("unknown kind `{other}`: use asgs, lcs, policies or instances"),
                )
            }),
        })
        .collect()
}

/// The namespaces asked for: `None` for every namespace.
fn namespaces(q: &WatchQuery) -> ApiResult<Option<Vec<String>>> {
    let Some(list) = q.namespace.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let list: Vec<String> = list.split(',').map(|n| n.trim().to_string()).collect();
    if list.iter().any(String::is_empty) || list.len() > MAX_NAMESPACES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("namespace: give one to {MAX_NAMESPACES} names separated by commas"),
        ));
    }
    Ok(Some(list))
}

async fn watch(
    State((ctx, hub)): State<(Arc<Context>, Arc<Hub>)>,
    headers: HeaderMap,
    Query(q): Query<WatchQuery>,
) -> ApiResult<Response> {
    let namespaces = namespaces(&q)?;
    match &namespaces {
        Some(list) => {
            for ns in list {
                check_access(&ctx, &headers, ns)?;
            }
        }
        // Without a namespace, only a token that sees every namespace may watch.
        None => check_access(&ctx, &headers, "*").map_err(|e| match e.status {
            StatusCode::FORBIDDEN => ApiError::new(
                StatusCode::FORBIDDEN,
                "this token may watch only its own namespaces: add ?namespace=NS (ms get -n NS -w)",
            ),
            _ => e,
        })?,
    }
    let kinds = kinds(&q)?;
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    let dropped = Arc::new(AtomicBool::new(false));
    hub.subscribe(
        &ctx,
        Watcher {
            kinds,
            namespaces,
            reloads: q.reloads,
            tx,
            dropped: dropped.clone(),
        },
    );
    let body = futures::stream::unfold((rx, false), move |(mut rx, done)| {
        let dropped = dropped.clone();
        async move {
            if done {
                return None;
            }
            match tokio::time::timeout(HEARTBEAT, rx.recv()).await {
                Ok(Some(b)) => Some((Ok::<_, std::io::Error>(b), (rx, false))),
                Err(_) => Some((Ok(Bytes::from_static(b"\n")), (rx, false))),
                Ok(None) if dropped.load(Ordering::Acquire) => Some((
                    Ok(Bytes::from(format!(
                        "{}\n",
                        json!({"type": "ERROR", "message": format!("this watch fell more than {BUFFER} events behind and was ended: watch again")})
                    ))),
                    (rx, true),
                )),
                Ok(None) => None,
            }
        }
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

/// The watch route, with its hub.
pub fn routes(ctx: &Arc<Context>) -> Router<Arc<Context>> {
    let hub = Arc::new(Hub::default());
    Router::new()
        .route("/v1/watch", get(watch))
        .with_state((ctx.clone(), hub))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        (StreamKind::Instance, "default".into(), name.into())
    }

    #[test]
    fn changes_are_added_modified_and_deleted() {
        let before: BTreeMap<Key, Value> = [(key("a"), json!(1)), (key("b"), json!(2))]
            .into_iter()
            .collect();
        let after: BTreeMap<Key, Value> = [(key("b"), json!(3)), (key("c"), json!(4))]
            .into_iter()
            .collect();
        let c: Vec<(&str, &str)> = changes(&before, &after)
            .into_iter()
            .map(|(t, k, _)| (t, k.2.as_str()))
            .collect();
        assert_eq!(c, [("MODIFIED", "b"), ("ADDED", "c"), ("DELETED", "a")]);
        assert!(changes(&after, &after).is_empty());
    }

    fn watcher(capacity: usize) -> (Watcher, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity);
        let w = Watcher {
            kinds: vec![StreamKind::Instance],
            namespaces: None,
            reloads: false,
            tx,
            dropped: Arc::new(AtomicBool::new(false)),
        };
        (w, rx)
    }

    #[test]
    fn a_watcher_that_falls_behind_is_dropped_and_the_others_get_everything() {
        let (slow, _slow_rx) = watcher(BUFFER);
        let slow_flag = slow.dropped.clone();
        let (fast, mut fast_rx) = watcher(BUFFER * 4);
        let mut watchers = vec![slow, fast];
        let k = key("a");
        // One more event than the slow watcher's buffer holds, in batches as the hub sends.
        for _ in 0..=BUFFER {
            let line = event("MODIFIED", &k, &json!(1));
            deliver(&mut watchers, &[(&k, line)]);
        }
        assert_eq!(watchers.len(), 1, "the slow watcher is dropped");
        assert!(slow_flag.load(Ordering::Acquire), "and told why");
        let mut got = 0;
        while fast_rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, BUFFER + 1, "the other watcher missed nothing");
    }

    #[test]
    fn a_watcher_gets_only_its_kinds_and_namespace() {
        let (mut w, mut rx) = watcher(8);
        w.namespaces = Some(vec!["shop".into(), "lab".into()]);
        let mut watchers = vec![w];
        let other_ns: Key = (StreamKind::Instance, "other".into(), "x".into());
        let other_kind: Key = (
            StreamKind::Object(Kind::AutoScalingGroup),
            "shop".into(),
            "x".into(),
        );
        let mine: Key = (StreamKind::Instance, "shop".into(), "x".into());
        for k in [&other_ns, &other_kind, &mine] {
            deliver(&mut watchers, &[(k, event("ADDED", k, &json!(1)))]);
        }
        let only = rx.try_recv().unwrap();
        assert!(String::from_utf8_lossy(&only).contains("\"kind\":\"Instance\""));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn kinds_accept_the_cli_names() {
        let q = WatchQuery {
            kind: Some("asgs,instances".into()),
            namespace: None,
            reloads: false,
        };
        assert_eq!(
            kinds(&q).unwrap(),
            [
                StreamKind::Object(Kind::AutoScalingGroup),
                StreamKind::Instance
            ]
        );
        let bad = WatchQuery {
            kind: Some("pods".into()),
            namespace: None,
            reloads: false,
        };
        assert!(kinds(&bad).is_err());
    }
}
