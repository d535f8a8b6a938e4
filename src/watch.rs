//! Loads and watches the manifest directory (GitOps style) and publishes desired-state snapshots.
//!
//! Every change ends in one full, consistent reload: file events only say "look again", after a
//! short quiet time, so an editor's rename-over-write, swap files or a `git checkout` touching
//! fifty files all produce one snapshot. A periodic rescan covers missed events.
//!
//! The rules that make a typo or an accident harmless live in the pure [`build_snapshot`]:
//! a file with errors keeps its last valid objects, and a reload that would delete every group at
//! once is refused unless explicitly allowed.
//!
//! # Layout
//! The first stage of the pipeline: the directory in, desired-state snapshots out.
//! - This file: loading, the snapshot rules, the watch loop ([`run`]).
//! - [`store`]: the snapshot itself ([`store::Desired`]) and its reader.
//! - [`prune`]: when a group may be deleted for lack of a manifest, and confirmations by name.
//! - [`dirlock`]: one controller per manifest directory.
//! - `targets`: the files behind symlinks, watched too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{sleep, sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub mod dirlock;
pub mod prune;
pub mod store;
mod targets;

use crate::health::liveness::Beat;
use crate::manifest::{self, Kind, ManifestError, Object, ObjectKey, ParsedFile};
use crate::util::tickets::Tickets;

use crate::config::tenancy::Tenancy;
use crate::files::OwnWrites;
use crate::watch::store::{Conflict, Desired, Entry};

/// How the directory is watched.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The manifest directory (read recursively).
    pub dir: PathBuf,
    /// Quiet time after the last file event before reloading (at most 1 s after the first event).
    pub debounce: Duration,
    /// Full rescan period: the safety net for missed file events.
    pub rescan_period: Duration,
    /// Accept a reload that deletes every group at once (`--allow-empty`).
    pub allow_empty: bool,
    /// Deletions confirmed by name (`ms delete`): never held, never made to settle.
    pub confirmations: Arc<prune::Confirmations>,
    /// Told, after each load, which files changed (content, creation, removal), so the status
    /// writer compares its blocks with them (level-triggered status).
    pub changed_files: Option<mpsc::UnboundedSender<Vec<PathBuf>>>,
    /// Directories below `dir` that hold no manifests (the sidecar status tree, when the user
    /// put it there): never loaded.
    pub ignore: Vec<PathBuf>,
    /// The per-namespace limits every manifest is checked against (host access, maxObjects).
    pub tenancy: Arc<Tenancy>,
    /// Touched after every rescan (`/healthz`).
    pub beat: Beat,
    /// Each load notes the last ticket taken before it began, and serves it once its snapshot
    /// is published (or found unchanged): the API's writes wait for their own load.
    pub loads: Arc<Tickets>,
}

impl WatchOptions {
    /// Options with the defaults: 50 ms debounce, 30 s rescan, empty reloads refused.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WatchOptions {
            dir: dir.into(),
            debounce: Duration::from_millis(50),
            rescan_period: Duration::from_secs(30),
            allow_empty: false,
            confirmations: Arc::default(),
            changed_files: None,
            ignore: Vec::new(),
            tenancy: Arc::default(),
            beat: Beat::detached(),
            loads: Arc::default(),
        }
    }
}

/// A reload that drops objects is believed only when a read at least this much later still
/// drops them: a file read while it is being rewritten (truncated, not yet written), a `git
/// checkout` halfway through or a rename in progress all look like a deletion for a moment.
pub const DELETION_SETTLE: Duration = Duration::from_millis(500);

/// A burst of events never delays a reload by more than this after its first event.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// Directory depth limit, which also stops symlink loops.
const MAX_DEPTH: usize = 32;

// ---------------------------------------------------------------------------------------------
// Loading

/// The parse function; the real one is [`manifest::parse_file`], tests may swap in another.
pub type ParseFn = fn(&Path, &str) -> ParsedFile;

/// Reads the directory, re-parsing only the files whose content changed since the last load.
pub struct Loader {
    parse: ParseFn,
    /// Path → (hash of the content, its parse).
    cache: HashMap<PathBuf, (u64, ParsedFile)>,
    /// To tell our own status writes from the user's edits in the logs.
    own: Option<Arc<OwnWrites>>,
    /// False until the first load: the first load logs no "changed" lines.
    loaded_once: bool,
    /// Files whose content changed (new, edited, removed) in the last load.
    changed: Vec<PathBuf>,
    /// Subtrees that are never loaded.
    ignore: Vec<PathBuf>,
    /// Per-namespace limits checked beside validation (located like validation errors).
    tenancy: Option<Arc<Tenancy>>,
}

impl Default for Loader {
    fn default() -> Self {
        Loader::with_parser(manifest::parse_file)
    }
}

impl Loader {
    /// A loader using [`manifest::parse_file`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A loader using `parse` instead of the real parser.
    pub fn with_parser(parse: ParseFn) -> Self {
        Loader {
            parse,
            cache: HashMap::new(),
            own: None,
            loaded_once: false,
            changed: Vec::new(),
            ignore: Vec::new(),
            tenancy: None,
        }
    }

    /// Never loads anything below these directories.
    pub fn with_ignored(mut self, ignore: Vec<PathBuf>) -> Self {
        self.ignore = ignore;
        self
    }

    /// The files whose content changed in the last [`Loader::load`] (new, edited or removed).
    pub fn take_changed(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.changed)
    }

    /// Checks every object against the per-namespace limits of `tenancy` too.
    pub fn with_tenancy(mut self, tenancy: Arc<Tenancy>) -> Self {
        self.tenancy = Some(tenancy);
        self
    }

    /// Logs changes made by anyone but the controller itself at `info`, its own at `debug`.
    pub fn with_own_writes(mut self, own: Arc<OwnWrites>) -> Self {
        self.own = Some(own);
        self
    }

    /// Every `*.yaml`/`*.yml` file below `dir` (recursively, sorted by path) and its parse.
    ///
    /// Skips hidden files and directories (`.git`, `.web.yaml.swp`, the writer's
    /// `.web.yaml.ms-tmp-*`) and editor backups ending in `~`. A file that cannot be read is
    /// reported as a file error (so what it defined keeps running) rather than treated as
    /// deleted; so is a directory that cannot be listed (permissions, I/O error, no file
    /// descriptor left): it appears keyed by its own path, with the error. A missing directory
    /// loads as empty.
    pub fn load(&mut self, dir: &Path) -> BTreeMap<PathBuf, ParsedFile> {
        let mut paths = Vec::new();
        let mut unreadable = Vec::new();
        walk(dir, 0, &mut paths, &mut unreadable);
        if !self.ignore.is_empty() {
            paths.retain(|p| !self.ignore.iter().any(|i| p.starts_with(i)));
            unreadable.retain(|(p, _)| !self.ignore.iter().any(|i| p.starts_with(i)));
        }
        self.changed.clear();
        let mut out = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for path in paths {
            let Some(parsed) = self.load_file(&path) else {
                continue;
            };
            seen.insert(path.clone());
            out.insert(path, parsed);
        }
        let removed = self.cache.keys().filter(|p| !seen.contains(*p)).cloned();
        self.changed.extend(removed.collect::<Vec<_>>());
        for (path, error) in unreadable {
            out.insert(
                path.clone(),
                file_error(&path, format!("cannot read the directory: {error}")),
            );
        }
        self.cache.retain(|p, _| seen.contains(p));
        self.loaded_once = true;
        out
    }

    fn load_file(&mut self, path: &Path) -> Option<ParsedFile> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            // Deleted between listing and reading: it is gone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => return Some(file_error(path, format!("cannot read the file: {e}"))),
        };
        let hash = hash_bytes(&bytes);
        if let Some((h, parsed)) = self.cache.get(path) {
            if *h == hash {
                return Some(parsed.clone());
            }
        }
        self.changed.push(path.to_path_buf());
        let parsed = match String::from_utf8(bytes) {
            Ok(text) => {
                if self.loaded_once {
                    match &self.own {
                        Some(own) if own.is_own(path, &text) => {
                            debug!(file = %path.display(), "reloading after our own status write")
                        }
                        _ => info!(file = %path.display(), "manifest changed"),
                    }
                }
                let parse = self.parse;
                let tenancy = self.tenancy.clone();
                std::panic::catch_unwind(|| match &tenancy {
                    Some(t) => manifest::parse_file_checked(path, &text, &|o| t.check_object(o)),
                    None => parse(path, &text),
                })
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    file_error(
                        path,
                        format!(
                            "internal error while reading this file (please report it): {what}"
                        ),
                    )
                })
            }
            Err(_) => file_error(path, "the file is not valid UTF-8".into()),
        };
        self.cache
            .insert(path.to_path_buf(), (hash, parsed.clone()));
        Some(parsed)
    }
}

/// Loads `dir` once with a fresh [`Loader`].
pub fn load_dir(dir: &Path) -> BTreeMap<PathBuf, ParsedFile> {
    Loader::new().load(dir)
}

fn file_error(path: &Path, message: String) -> ParsedFile {
    ParsedFile {
        objects: Vec::new(),
        errors: vec![ManifestError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            field: String::new(),
            message,
        }],
    }
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Hidden names and editor backups are never manifests, nor directories of manifests.
fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~')
}

fn is_manifest_name(name: &str) -> bool {
    !is_ignored_name(name) && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Collects manifest paths below `dir` into `out`, and the directories that could not be listed
/// completely (with why) into `unreadable`: those must not count as emptied.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, unreadable: &mut Vec<(PathBuf, String)>) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if depth == 0 && e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!(dir = %dir.display(), "cannot read directory: {e}; what it defined keeps running");
            unreadable.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                // A listing cut short (I/O error): what was not listed is not gone.
                warn!(dir = %dir.display(), "cannot list directory: {e}; what it defined keeps running");
                unreadable.push((dir.to_path_buf(), e.to_string()));
                break;
            }
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_ignored_name(&name) {
            continue;
        }
        let path = entry.path();
        // `metadata` follows symlinks: Kubernetes ConfigMap mounts are symlinked files.
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                if depth < MAX_DEPTH {
                    walk(&path, depth + 1, out, unreadable);
                } else {
                    warn!(dir = %path.display(), "directory nested too deep (a symlink loop?); skipped");
                }
            }
            // A broken or unreadable entry named like a manifest is reported when read.
            Ok(_) | Err(_) if is_manifest_name(&name) => out.push(path),
            // A directory (or a link to one) that cannot be looked at may hold manifests. A
            // dangling link is nothing.
            Err(e)
                if e.kind() != std::io::ErrorKind::NotFound
                    && entry
                        .file_type()
                        .is_ok_and(|t| t.is_dir() || t.is_symlink()) =>
            {
                warn!(dir = %path.display(), "cannot read directory: {e}; what it defined keeps running");
                unreadable.push((path, e.to_string()));
            }
            _ => {}
        }
    }
    if depth == 0 {
        out.sort();
        unreadable.sort();
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots

/// Builds the next snapshot from the previous one and the files just loaded. Pure.
///
/// # Rules
/// - Valid files contribute their objects. One identity lives in one file: when two files (or
///   two documents) define it, the first by path wins and the other is listed in `conflicts`.
/// - A file with errors contributes its errors to `file_errors` and keeps the objects the
///   previous snapshot had from it: the last valid version keeps running. A directory that
///   cannot be read (keyed by its own path) does the same for the files below it.
/// - A file that is gone takes its objects with it, unless [`prune::judge`] holds the deletion
///   of a group (directory emptied, a namespace or most groups gone at once, files with
///   errors): then the group, its launch configuration and its policies stay as last loaded,
///   and `held` says why until the manifest is back or the deletion is confirmed
///   (`allow_empty`, or `confirmed` by name).
/// - `first_seen` is carried over per identity (`now` for new ones); `warnings` are the
///   parser's plus the missing references ([`manifest::missing_references`]).
pub fn build_snapshot(
    prev: &Desired,
    files: &BTreeMap<PathBuf, ParsedFile>,
    allow_empty: bool,
    now: DateTime<Utc>,
) -> Desired {
    build_snapshot_confirmed(prev, files, allow_empty, &|_| false, now)
}

/// [`build_snapshot`], with deletions confirmed by name (`ms delete`) never held.
pub fn build_snapshot_confirmed(
    prev: &Desired,
    files: &BTreeMap<PathBuf, ParsedFile>,
    allow_empty: bool,
    confirmed: &dyn Fn(&ObjectKey) -> bool,
    now: DateTime<Utc>,
) -> Desired {
    let mut objects: BTreeMap<ObjectKey, Entry> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut file_errors = BTreeMap::new();
    // Missing-reference warnings of the previous snapshot, to strip them from kept entries
    // (they are recomputed below) while keeping those entries' parser warnings.
    let prev_refs = reference_warnings(&prev.objects);
    let kept = |k: &ObjectKey, e: &Entry| {
        let mut e = e.clone();
        if let Some(w) = prev_refs.get(k) {
            e.warnings.retain(|x| x != w);
        }
        (k.clone(), e)
    };

    for (path, parsed) in files {
        let candidates: Vec<(ObjectKey, Entry)> = if parsed.errors.is_empty() {
            parsed
                .objects
                .iter()
                .map(|po| {
                    let key = po.object.key();
                    let first_seen = prev.objects.get(&key).map_or(now, |e| e.first_seen);
                    (key, Entry::new(po.clone(), path.clone(), first_seen))
                })
                .collect()
        } else {
            file_errors.insert(path.clone(), parsed.errors.clone());
            // The file itself, or (an unreadable directory) the files below it not listed now.
            prev.objects
                .iter()
                .filter(|(_, e)| {
                    &e.file == path || (e.file.starts_with(path) && !files.contains_key(&e.file))
                })
                .map(|(k, e)| kept(k, e))
                .collect()
        };
        for (key, entry) in candidates {
            match objects.get(&key) {
                Some(winner) => conflicts.push(Conflict {
                    key: key.to_string(),
                    winner: winner.file.clone(),
                    ignored: entry.file.clone(),
                }),
                None => {
                    objects.insert(key, entry);
                }
            }
        }
    }

    // Groups that would go: the prune rules decide which really may.
    let group_keys = |o: &BTreeMap<ObjectKey, Entry>| -> BTreeSet<ObjectKey> {
        o.keys()
            .filter(|k| k.kind == Kind::AutoScalingGroup)
            .cloned()
            .collect()
    };
    let remaining = group_keys(&objects);
    let deleting: BTreeSet<ObjectKey> = group_keys(&prev.objects)
        .difference(&remaining)
        .cloned()
        .collect();
    let error_paths: Vec<PathBuf> = file_errors.keys().cloned().collect();
    let holds = prune::judge(&deleting, &remaining, &error_paths, allow_empty, confirmed);
    for key in holds.keys() {
        for k in with_dependencies(prev, key) {
            if !objects.contains_key(&k) {
                let (k, e) = kept(&k, &prev.objects[&k]);
                objects.insert(k, e);
            }
        }
    }
    let held = holds
        .iter()
        .map(|(k, reason)| (k.clone(), reason.message(k)))
        .collect();

    for (key, warning) in reference_warnings(&objects) {
        if let Some(e) = objects.get_mut(&key) {
            e.warnings.push(warning);
        }
    }

    Desired {
        objects,
        file_errors,
        conflicts,
        held,
        loaded: true,
    }
}

/// A group of `prev` and what it needs to keep running as it did: its launch configuration and
/// the policies that set its capacity (those present in `prev`).
fn with_dependencies(prev: &Desired, group: &ObjectKey) -> Vec<ObjectKey> {
    let Some(g) = prev.group(group) else {
        return Vec::new();
    };
    let mut out = vec![group.clone()];
    let lc = ObjectKey::new(
        Kind::LaunchConfiguration,
        group.namespace.clone(),
        g.spec.launch_configuration.clone(),
    );
    if prev.objects.contains_key(&lc) {
        out.push(lc);
    }
    out.extend(
        prev.policies()
            .filter(|(k, p, _)| {
                k.namespace == group.namespace && p.spec.auto_scaling_group == group.name
            })
            .map(|(k, _, _)| k.clone()),
    );
    out
}

/// [`manifest::missing_references`] as warnings located at each object's document.
pub fn reference_warnings(
    objects: &BTreeMap<ObjectKey, Entry>,
) -> BTreeMap<ObjectKey, ManifestError> {
    let plain: BTreeMap<ObjectKey, Object> = objects
        .iter()
        .map(|(k, e)| (k.clone(), e.object.clone()))
        .collect();
    manifest::missing_references(&plain)
        .into_iter()
        .filter_map(|(key, message)| {
            let e = objects.get(&key)?;
            let field = match key.kind {
                Kind::AutoScalingGroup => "spec.launchConfiguration",
                Kind::ScalingPolicy => "spec.autoScalingGroup",
                Kind::LaunchConfiguration => "",
            };
            let warning = ManifestError {
                file: e.file.clone(),
                line: e.line,
                column: 1,
                field: field.to_string(),
                message,
            };
            Some((key, warning))
        })
        .collect()
}

/// True when `a` and `b` would make the controller do the same thing: same identities,
/// generations, sources, warnings, errors, conflicts and refusal. Line numbers of objects are
/// ignored, so the controller's own status writes (which shift the documents below them) never
/// cause a publish.
pub fn same_meaning(a: &Desired, b: &Desired) -> bool {
    let warnings = |e: &Entry| -> Vec<(String, String)> {
        e.warnings
            .iter()
            .map(|w| (w.field.clone(), w.message.clone()))
            .collect()
    };
    a.loaded == b.loaded
        && a.held == b.held
        && a.conflicts == b.conflicts
        && a.file_errors == b.file_errors
        && a.objects.len() == b.objects.len()
        && a.objects
            .iter()
            .zip(&b.objects)
            .all(|((ka, ea), (kb, eb))| {
                ka == kb
                    && ea.generation == eb.generation
                    && ea.file == eb.file
                    && ea.doc_index == eb.doc_index
                    && warnings(ea) == warnings(eb)
            })
}

/// Logs what changed between two snapshots, once: new file errors, fixed files, new conflicts,
/// and the start and end of an empty-reload refusal.
fn log_changes(dir: &Path, prev: &Desired, next: &Desired) {
    for (path, errors) in &next.file_errors {
        let old = prev.file_errors.get(path);
        for e in errors {
            if !old.is_some_and(|o| o.contains(e)) {
                warn!("{e}");
            }
        }
    }
    for path in prev.file_errors.keys() {
        if !next.file_errors.contains_key(path) {
            info!(file = %path.display(), "manifest is valid again");
        }
    }
    for c in &next.conflicts {
        if !prev.conflicts.contains(c) {
            warn!(
                "{} is defined in {} and in {}: using the first, ignoring the second",
                c.key,
                c.winner.display(),
                c.ignored.display()
            );
        }
    }
    for (key, msg) in &next.held {
        if prev.held.get(key) != Some(msg) {
            error!(dir = %dir.display(), "{msg}");
        }
    }
    for key in prev.held.keys() {
        if !next.held.contains_key(key) {
            let outcome = if next.objects.contains_key(key) {
                "its manifest is back"
            } else {
                "confirmed, it is deleted"
            };
            info!(group = %key, "deletion no longer held: {outcome}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The watch loop

/// Counters, for tests and diagnostics.
#[derive(Debug, Default)]
pub(crate) struct WatchStats {
    /// Full directory loads (the initial one included).
    pub rescans: AtomicUsize,
    /// Snapshots sent.
    pub publishes: AtomicUsize,
}

/// Identity of the directory itself, to notice it being replaced (`rm -r` + `mkdir`, a new mount).
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    let m = fs::metadata(dir).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        Some((0, 0))
    }
}

type EventTx = mpsc::UnboundedSender<notify::Result<notify::Event>>;

/// The OS watcher on the directory, re-created when the directory appears or is replaced.
#[derive(Default)]
struct DirWatch {
    watcher: Option<notify::RecommendedWatcher>,
    watched: Option<(u64, u64)>,
}

impl DirWatch {
    fn ensure(&mut self, dir: &Path, tx: &EventTx) {
        let id = dir_identity(dir);
        if id.is_some() && id == self.watched && self.watcher.is_some() {
            return;
        }
        self.watcher = None;
        self.watched = id;
        if id.is_none() {
            return;
        }
        let tx = tx.clone();
        let result = notify::recommended_watcher(move |res| {
            // The receiver only goes away when the loop ends.
            let _ = tx.send(res);
        })
        .and_then(|mut w| w.watch(dir, RecursiveMode::Recursive).map(|()| w));
        match result {
            Ok(w) => self.watcher = Some(w),
            Err(e) => warn!(
                dir = %dir.display(),
                "cannot watch the manifest directory ({e}); changes are picked up by the periodic rescan only"
            ),
        }
    }
}

/// Whether an event may change what the directory defines.
fn is_relevant(dir: &Path, event: &notify::Result<notify::Event>) -> bool {
    let event = match event {
        Ok(e) => e,
        Err(e) => {
            warn!("file watch error: {e}; rescanning");
            return true;
        }
    };
    // Opening and reading (our own rescans included) changes nothing.
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.is_empty() || event.paths.iter().any(|p| is_relevant_path(dir, p))
}

fn is_relevant_path(dir: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    if rel.as_os_str().is_empty() {
        return true; // the directory itself
    }
    let hidden = rel.components().any(|c| match c {
        Component::Normal(n) => is_ignored_name(&n.to_string_lossy()),
        _ => false,
    });
    if hidden {
        return false;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Directories (existing, or removed ones, which usually have no extension) may hold manifests.
    is_manifest_name(&name) || path.extension().is_none() || path.is_dir()
}

/// Watches `opts.dir` and publishes a snapshot into `tx` whenever what it defines changes,
/// until `shutdown` is cancelled.
///
/// # Guarantees
/// - The first full load is published even when empty (`loaded = true` is what `/readyz` waits for).
/// - Events are debounced (`opts.debounce` of quiet, at most 1 s after the first) into one full
///   rescan; there is also a rescan every `opts.rescan_period`, and one as soon as `rescan` is
///   notified (use `notify_one`, so a request made during a rescan is not lost).
/// - A snapshot is published only when something meaningful changed ([`same_meaning`]), so the
///   controller's own status writes (recorded in `own`) never trigger a reconcile.
/// - Each new file error is logged once, with `file:line:col: field: message`.
/// - A directory that disappears loads as empty, so the empty-reload refusal protects the groups.
pub async fn run(
    opts: WatchOptions,
    tx: watch::Sender<Arc<Desired>>,
    own: Arc<OwnWrites>,
    rescan: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let loader = Loader::new()
        .with_own_writes(own)
        .with_ignored(opts.ignore.clone())
        .with_tenancy(opts.tenancy.clone());
    run_with(opts, tx, loader, rescan, shutdown, Arc::default()).await
}

/// Absolute form of `dir`, without requiring it to exist.
fn absolute_dir(dir: &Path) -> PathBuf {
    if let Ok(p) = fs::canonicalize(dir) {
        return p;
    }
    if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| c.join(dir))
            .unwrap_or_else(|_| dir.to_path_buf())
    }
}

/// The watch state between rescans.
struct State {
    dir: PathBuf,
    allow_empty: bool,
    confirmations: Arc<prune::Confirmations>,
    loader: Loader,
    /// Objects the latest reads dropped, and since when: kept until [`DELETION_SETTLE`] later.
    dropping: BTreeMap<ObjectKey, Instant>,
    /// The latest snapshot built: the `prev` of the next one.
    built: Desired,
    /// The latest snapshot sent.
    published: Desired,
    missing_logged: bool,
    stats: Arc<WatchStats>,
    /// Told which files changed after each load.
    changed_files: Option<mpsc::UnboundedSender<Vec<PathBuf>>>,
    /// The real files behind symlinked manifests, watched too.
    targets: targets::TargetWatch,
    /// Where the OS watchers send their events.
    events: EventTx,
    tenancy: Arc<Tenancy>,
    beat: Beat,
    loads: Arc<Tickets>,
}

impl State {
    /// Reloads the directory and publishes what changed. Returns when to read again to settle
    /// a deletion seen for the first time (see [`DELETION_SETTLE`]).
    async fn rescan(&mut self, tx: &watch::Sender<Arc<Desired>>) -> Option<Instant> {
        let covered = self.loads.begin();
        let mut loader = std::mem::take(&mut self.loader);
        let dir = self.dir.clone();
        let tenancy = self.tenancy.clone();
        let (mut loader, files, links) = tokio::task::spawn_blocking(move || {
            let mut files = loader.load(&dir);
            tenancy.limit_objects(&mut files);
            let links = targets::symlink_targets(files.keys());
            (loader, files, links)
        })
        .await
        .expect("the loader catches parser panics");
        let changed = loader.take_changed();
        self.loader = loader;
        self.targets.update(links, &self.events);
        self.stats.rescans.fetch_add(1, Ordering::Relaxed);

        let exists = dir_identity(&self.dir).is_some();
        if !exists && !self.missing_logged {
            warn!(dir = %self.dir.display(), "the manifest directory does not exist; treating it as empty");
        }
        self.missing_logged = !exists;

        let confirmations = self.confirmations.clone();
        let confirmed = |k: &ObjectKey| confirmations.is_confirmed(k);
        let mut next = build_snapshot_confirmed(
            &self.built,
            &files,
            self.allow_empty,
            &confirmed,
            Utc::now(),
        );
        let recheck = self.settle(&mut next, &confirmed);
        log_changes(&self.dir, &self.built, &next);
        self.built = next;
        if !same_meaning(&self.published, &self.built) {
            self.published = self.built.clone();
            tx.send_replace(Arc::new(self.published.clone()));
            self.stats.publishes.fetch_add(1, Ordering::Relaxed);
            debug!(
                objects = self.published.objects.len(),
                file_errors = self.published.file_errors.len(),
                "published a new desired state"
            );
        }
        // After the snapshot: the status writer looks at these files with it.
        if let Some(ch) = &self.changed_files {
            if !changed.is_empty() {
                let _ = ch.send(changed);
            }
        }
        self.loads.served(covered);
        self.beat.touch();
        recheck
    }

    /// Keeps in `next` the objects of the previous snapshot that it drops, until a read
    /// [`DELETION_SETTLE`] after the first one that dropped them still does (a confirmed
    /// deletion goes at once). Returns when that read is due.
    fn settle(
        &mut self,
        next: &mut Desired,
        confirmed: &dyn Fn(&ObjectKey) -> bool,
    ) -> Option<Instant> {
        let now = Instant::now();
        let dropped: BTreeSet<ObjectKey> = self
            .built
            .objects
            .keys()
            .filter(|k| !next.objects.contains_key(*k) && !confirmed(k))
            .cloned()
            .collect();
        self.dropping.retain(|k, _| dropped.contains(k));
        for key in dropped {
            let since = *self.dropping.entry(key.clone()).or_insert(now);
            if now.duration_since(since) >= DELETION_SETTLE {
                self.dropping.remove(&key);
            } else {
                debug!(object = %key, "dropped by this read; kept until a later read confirms it");
                next.objects
                    .insert(key.clone(), self.built.objects[&key].clone());
            }
        }
        self.dropping.values().min().map(|t| *t + DELETION_SETTLE)
    }
}

pub(crate) async fn run_with(
    opts: WatchOptions,
    tx: watch::Sender<Arc<Desired>>,
    loader: Loader,
    rescan: Arc<Notify>,
    shutdown: CancellationToken,
    stats: Arc<WatchStats>,
) {
    let dir = absolute_dir(&opts.dir);
    let debounce = opts.debounce;
    let max_wait = debounce.max(MAX_DEBOUNCE);
    // We keep a sender, so `recv` never returns `None` even while no OS watcher exists.
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut dir_watch = DirWatch::default();
    let mut state = State {
        dir: dir.clone(),
        allow_empty: opts.allow_empty,
        confirmations: opts.confirmations.clone(),
        loader,
        dropping: BTreeMap::new(),
        built: Desired::default(),
        published: Desired::default(),
        missing_logged: false,
        stats,
        changed_files: opts.changed_files.clone(),
        targets: targets::TargetWatch::default(),
        events: ev_tx.clone(),
        tenancy: opts.tenancy.clone(),
        beat: opts.beat.clone(),
        loads: opts.loads.clone(),
    };
    info!(dir = %dir.display(), "watching the manifest directory");
    // Watch first, then load: a change made during the load is then seen as an event.
    dir_watch.ensure(&dir, &ev_tx);
    let mut recheck = state.rescan(&tx).await;

    let period = opts.rescan_period.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = rescan.notified() => debug!("rescan requested"),
            _ = ticker.tick() => {}
            _ = sleep_until(recheck.unwrap_or_else(far_future)), if recheck.is_some() => {
                debug!("reading again to settle a deletion")
            }
            Some(event) = ev_rx.recv() => {
                if !is_relevant(&dir, &event) {
                    continue;
                }
                // Debounce: wait for `debounce` of quiet, at most `max_wait` after this event.
                let deadline = Instant::now() + max_wait;
                loop {
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return,
                        _ = rescan.notified() => break,
                        _ = sleep_until(deadline) => break,
                        Some(_) = ev_rx.recv() => continue,
                        _ = sleep(debounce) => break,
                    }
                }
            }
        }
        dir_watch.ensure(&dir, &ev_tx);
        recheck = state.rescan(&tx).await;
        ticker.reset();
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::manifest::{
        AutoScalingGroupSpec, LaunchConfigurationSpec, Manifest, Metadata, ParsedObject,
        API_VERSION,
    };

    fn meta(name: &str) -> Metadata {
        Metadata {
            name: name.into(),
            namespace: "default".into(),
            labels: Default::default(),
        }
    }

    fn group(name: &str, lc: &str, desired: u32) -> Object {
        Object::AutoScalingGroup(Manifest {
            api_version: API_VERSION.into(),
            kind: Kind::AutoScalingGroup,
            metadata: meta(name),
            spec: AutoScalingGroupSpec {
                launch_configuration: lc.into(),
                min_size: 0,
                max_size: 10,
                desired_capacity: Some(desired),
                availability_zones: vec![],
                scale_out_cooldown: None,
                scale_in_cooldown: None,
                domain: None,
                state: Default::default(),
                max_surge: None,
                max_unavailable: None,
                health_check_grace_period: None,
            },
            status: None,
        })
    }

    fn lc(name: &str) -> Object {
        Object::LaunchConfiguration(Manifest {
            api_version: API_VERSION.into(),
            kind: Kind::LaunchConfiguration,
            metadata: meta(name),
            spec: LaunchConfigurationSpec {
                image: "nginx".into(),
                instance_type: None,
                resources: None,
                command: None,
                entrypoint: None,
                env: Default::default(),
                ports: vec![],
                labels: Default::default(),
                user_data: None,
                network: None,
                stop_grace_period: None,
            },
            status: None,
        })
    }

    fn ok(objects: Vec<Object>) -> ParsedFile {
        ParsedFile {
            objects: objects
                .into_iter()
                .enumerate()
                .map(|(i, object)| ParsedObject {
                    object,
                    doc_index: i,
                    line: 1 + 10 * i,
                    warnings: vec![],
                })
                .collect(),
            errors: vec![],
        }
    }

    fn broken(path: &str) -> ParsedFile {
        file_error(Path::new(path), "spec.minSize: expected a number".into())
    }

    fn files(list: Vec<(&str, ParsedFile)>) -> BTreeMap<PathBuf, ParsedFile> {
        list.into_iter()
            .map(|(p, f)| (PathBuf::from(p), f))
            .collect()
    }

    fn gkey(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::AutoScalingGroup, "default", name)
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn valid_files_contribute_their_objects() {
        let f = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 2)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 1)])),
        ]);
        let d = build_snapshot(&Desired::default(), &f, false, t(0));
        assert!(d.loaded);
        assert_eq!(d.objects.len(), 3);
        let web = &d.objects[&gkey("web")];
        assert_eq!(web.file, PathBuf::from("/m/a.yaml"));
        assert_eq!(web.doc_index, 1);
        assert_eq!(web.line, 11);
        assert_eq!(web.generation, group("web", "web", 2).spec_hash());
        assert_eq!(web.first_seen, t(0));
        assert!(web.warnings.is_empty());
        assert!(d.file_errors.is_empty() && d.conflicts.is_empty() && d.held.is_empty());
    }

    #[test]
    fn an_identity_in_two_files_is_a_conflict_and_the_first_path_wins() {
        let f = files(vec![
            ("/m/b.yaml", ok(vec![lc("web"), group("web", "web", 5)])),
            ("/m/a.yaml", ok(vec![group("web", "web", 2)])),
        ]);
        let d = build_snapshot(&Desired::default(), &f, false, t(0));
        assert_eq!(d.objects[&gkey("web")].file, PathBuf::from("/m/a.yaml"));
        assert_eq!(
            d.conflicts,
            vec![Conflict {
                key: gkey("web").to_string(),
                winner: "/m/a.yaml".into(),
                ignored: "/m/b.yaml".into(),
            }]
        );
    }

    #[test]
    fn a_file_with_errors_keeps_its_last_valid_objects() {
        let v1 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 3)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 1)])),
        ]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let v2 = files(vec![
            ("/m/a.yaml", broken("/m/a.yaml")),
            ("/m/b.yaml", ok(vec![group("api", "web", 2)])),
        ]);
        let d2 = build_snapshot(&d1, &v2, false, t(5));
        assert_eq!(d2.objects.len(), 3);
        assert_eq!(
            d2.objects[&gkey("web")].generation,
            d1.objects[&gkey("web")].generation
        );
        assert_eq!(d2.file_errors[Path::new("/m/a.yaml")].len(), 1);
        assert_eq!(d2.errors_for(&gkey("web")).len(), 1);
        assert!(d2.errors_for(&gkey("api")).is_empty());
        // Fixing the file clears the error and takes the new version.
        let v3 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 4)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 2)])),
        ]);
        let d3 = build_snapshot(&d2, &v3, false, t(9));
        assert!(d3.file_errors.is_empty());
        assert_eq!(
            d3.objects[&gkey("web")].generation,
            group("web", "web", 4).spec_hash()
        );
    }

    #[test]
    fn a_new_file_with_errors_contributes_only_its_errors() {
        let d = build_snapshot(
            &Desired::default(),
            &files(vec![("/m/a.yaml", broken("/m/a.yaml"))]),
            false,
            t(0),
        );
        assert!(d.objects.is_empty());
        assert_eq!(d.file_errors.len(), 1);
        assert!(d.held.is_empty());
    }

    #[test]
    fn a_deleted_file_deletes_its_objects() {
        let v1 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 3)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 1)])),
        ]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let v2 = files(vec![(
            "/m/a.yaml",
            ok(vec![lc("web"), group("web", "web", 3)]),
        )]);
        let d2 = build_snapshot(&d1, &v2, false, t(1));
        assert!(!d2.objects.contains_key(&gkey("api")));
        assert!(d2.held.is_empty());
    }

    #[test]
    fn deleting_every_group_at_once_is_refused_until_a_group_comes_back() {
        let v1 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 3)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 1)])),
        ]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let refused = build_snapshot(&d1, &BTreeMap::new(), false, t(1));
        assert_eq!(refused.objects.len(), 3);
        assert_eq!(refused.held.len(), 2);
        let msg = &refused.held[&gkey("web")];
        assert!(msg.contains("defines no autoscaling group"), "{msg}");
        assert!(msg.contains("ms delete asg web -n default"), "{msg}");
        assert!(msg.contains("--allow-empty"), "{msg}");
        // Only the launch configuration left: still no group, still refused.
        let only_lc = files(vec![("/m/a.yaml", ok(vec![lc("web")]))]);
        let still = build_snapshot(&refused, &only_lc, false, t(2));
        assert_eq!(still.held.len(), 2);
        assert_eq!(still.groups().count(), 2);
        // A state with a group again lets the other go (one of two in its namespace).
        let back = files(vec![(
            "/m/a.yaml",
            ok(vec![lc("web"), group("web", "web", 1)]),
        )]);
        let cleared = build_snapshot(&still, &back, false, t(3));
        assert!(cleared.held.is_empty());
        assert_eq!(cleared.groups().count(), 1);
        assert_eq!(cleared.objects[&gkey("web")].first_seen, t(0));
    }

    fn nkey(ns: &str, kind: Kind, name: &str) -> ObjectKey {
        ObjectKey::new(kind, ns, name)
    }

    fn in_namespace(ns: &str, mut o: Object) -> Object {
        match &mut o {
            Object::AutoScalingGroup(m) => m.metadata.namespace = ns.into(),
            Object::LaunchConfiguration(m) => m.metadata.namespace = ns.into(),
            Object::ScalingPolicy(m) => m.metadata.namespace = ns.into(),
        }
        o
    }

    #[test]
    fn removing_a_namespace_folder_holds_its_groups_with_their_launch_configurations() {
        let team = |name: &str| {
            ok(vec![
                in_namespace("team-b", lc(name)),
                in_namespace("team-b", group(name, name, 1)),
            ])
        };
        let v1 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 1)])),
            ("/m/team-b/x.yaml", team("x")),
            ("/m/team-b/y.yaml", team("y")),
        ]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let v2 = files(vec![(
            "/m/a.yaml",
            ok(vec![lc("web"), group("web", "web", 1)]),
        )]);
        let d2 = build_snapshot(&d1, &v2, false, t(1));
        assert_eq!(d2.objects.len(), 6, "{:?}", d2.objects.keys());
        let x = nkey("team-b", Kind::AutoScalingGroup, "x");
        assert!(
            d2.held[&x].contains("every group of namespace `team-b`"),
            "{:?}",
            d2.held
        );
        assert!(d2
            .objects
            .contains_key(&nkey("team-b", Kind::LaunchConfiguration, "x")));
        // Confirming one by name lets it go, with its launch configuration; the other stays.
        let d3 = build_snapshot_confirmed(&d2, &v2, false, &|k: &ObjectKey| k == &x, t(2));
        assert!(!d3.objects.contains_key(&x));
        assert!(!d3
            .objects
            .contains_key(&nkey("team-b", Kind::LaunchConfiguration, "x")));
        assert_eq!(d3.held.len(), 1);
        assert!(d3
            .held
            .contains_key(&nkey("team-b", Kind::AutoScalingGroup, "y")));
    }

    #[test]
    fn while_a_file_has_errors_no_group_is_deleted_for_lack_of_a_manifest() {
        let v1 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 1)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 1)])),
            ("/m/c.yaml", ok(vec![group("jobs", "web", 1)])),
        ]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        // `api` moved into c.yaml, which now has a typo: api must not go.
        let v2 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 1)])),
            ("/m/c.yaml", broken("/m/c.yaml")),
        ]);
        let d2 = build_snapshot(&d1, &v2, true, t(1));
        assert!(d2.objects.contains_key(&gkey("api")));
        assert!(d2.held[&gkey("api")].contains("/m/c.yaml"), "{:?}", d2.held);
        assert!(d2.objects.contains_key(&gkey("jobs")), "kept as last valid");
        // Fixed: api is really gone now.
        let v3 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 1)])),
            ("/m/c.yaml", ok(vec![group("jobs", "web", 1)])),
        ]);
        let d3 = build_snapshot(&d2, &v3, false, t(2));
        assert!(!d3.objects.contains_key(&gkey("api")));
        assert!(d3.held.is_empty());
    }

    #[test]
    fn an_unreadable_directory_keeps_what_its_files_defined() {
        let v1 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 1)])),
            ("/m/team/b.yaml", ok(vec![group("api", "web", 2)])),
            ("/m/team/c.yaml", ok(vec![group("jobs", "web", 1)])),
        ]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        // The listing of /m/team failed part-way: c.yaml was read, b.yaml was not.
        let v2 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 1)])),
            (
                "/m/team",
                file_error(
                    Path::new("/m/team"),
                    "cannot read the directory: Permission denied".into(),
                ),
            ),
            ("/m/team/c.yaml", ok(vec![group("jobs", "web", 3)])),
        ]);
        let d2 = build_snapshot(&d1, &v2, false, t(1));
        assert_eq!(desired_of(&d2, "api"), Some(2));
        assert_eq!(desired_of(&d2, "jobs"), Some(3), "what was read is current");
        assert!(d2.conflicts.is_empty(), "{:?}", d2.conflicts);
        assert_eq!(d2.errors_for(&gkey("api")).len(), 1);
        assert!(d2.errors_for(&gkey("web")).is_empty());
    }

    #[test]
    fn allow_empty_lets_every_group_go() {
        let v1 = files(vec![("/m/a.yaml", ok(vec![group("web", "web", 3)]))]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let d2 = build_snapshot(&d1, &BTreeMap::new(), true, t(1));
        assert!(d2.objects.is_empty());
        assert!(d2.held.is_empty());
        // Never having had a group is not a refusal either.
        let d3 = build_snapshot(&Desired::default(), &BTreeMap::new(), false, t(0));
        assert!(d3.objects.is_empty() && d3.held.is_empty() && d3.loaded);
    }

    #[test]
    fn first_seen_is_carried_over_and_new_identities_get_now() {
        let v1 = files(vec![(
            "/m/a.yaml",
            ok(vec![lc("web"), group("web", "web", 3)]),
        )]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let v2 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 7)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 1)])),
        ]);
        let d2 = build_snapshot(&d1, &v2, false, t(60));
        assert_eq!(d2.objects[&gkey("web")].first_seen, t(0));
        assert_eq!(d2.objects[&gkey("api")].first_seen, t(60));
    }

    #[test]
    fn warnings_combine_missing_references_and_parser_warnings() {
        let mut parsed = ok(vec![group("web", "wbe", 1), lc("web")]);
        parsed.objects[0].warnings.push(ManifestError {
            file: "/m/a.yaml".into(),
            line: 3,
            column: 1,
            field: "spec.domain".into(),
            message: "parser warning".into(),
        });
        let d1 = build_snapshot(
            &Desired::default(),
            &files(vec![("/m/a.yaml", parsed)]),
            false,
            t(0),
        );
        let w = &d1.objects[&gkey("web")].warnings;
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].message, "parser warning");
        assert_eq!(w[1].field, "spec.launchConfiguration");
        assert!(w[1].message.contains("wbe"), "{}", w[1].message);
        // A kept entry gets its missing-reference warning recomputed, not duplicated.
        let d2 = build_snapshot(
            &d1,
            &files(vec![("/m/a.yaml", broken("/m/a.yaml"))]),
            false,
            t(1),
        );
        assert_eq!(
            d2.objects[&gkey("web")].warnings,
            d1.objects[&gkey("web")].warnings
        );
        // Once the launch configuration exists, the warning is gone.
        let fixed = files(vec![(
            "/m/a.yaml",
            ok(vec![group("web", "web", 1), lc("web")]),
        )]);
        let d3 = build_snapshot(&d2, &fixed, false, t(2));
        assert!(d3.objects[&gkey("web")].warnings.is_empty());
    }

    #[test]
    fn same_meaning_ignores_line_shifts_but_not_generations_or_errors() {
        let v1 = files(vec![(
            "/m/a.yaml",
            ok(vec![lc("web"), group("web", "web", 3)]),
        )]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let mut shifted = d1.clone();
        shifted.objects.get_mut(&gkey("web")).unwrap().line += 4;
        assert!(same_meaning(&d1, &shifted));
        let v2 = files(vec![(
            "/m/a.yaml",
            ok(vec![lc("web"), group("web", "web", 4)]),
        )]);
        assert!(!same_meaning(&d1, &build_snapshot(&d1, &v2, false, t(1))));
        let v3 = files(vec![("/m/a.yaml", broken("/m/a.yaml"))]);
        assert!(!same_meaning(&d1, &build_snapshot(&d1, &v3, false, t(1))));
        assert!(!same_meaning(
            &Desired::default(),
            &build_snapshot(&Desired::default(), &BTreeMap::new(), false, t(0))
        ));
    }

    #[test]
    fn load_dir_reads_yaml_recursively_and_skips_hidden_backups_and_others() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::create_dir_all(p.join("sub/deeper")).unwrap();
        fs::create_dir_all(p.join(".git")).unwrap();
        for f in [
            "a.yaml",
            "b.yml",
            "sub/c.yaml",
            "sub/deeper/d.yaml",
            ".git/e.yaml",
            ".web.yaml.swp",
            ".web.yaml.ms-tmp-0123",
            "web.yaml~",
            "notes.txt",
        ] {
            fs::write(p.join(f), "x: 1\n").unwrap();
        }
        let mut loader = Loader::with_parser(|_, _| ParsedFile::default());
        let loaded = loader.load(p);
        let names: Vec<String> = loaded
            .keys()
            .map(|k| k.strip_prefix(p).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["a.yaml", "b.yml", "sub/c.yaml", "sub/deeper/d.yaml"]
        );
        assert!(Loader::new().load(&p.join("missing")).is_empty());
    }

    static PARSES: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn the_loader_reparses_only_changed_files_and_reports_unreadable_ones() {
        fn counting(path: &Path, text: &str) -> ParsedFile {
            PARSES.fetch_add(1, Ordering::SeqCst);
            if text.contains("panic") {
                panic!("parser bug");
            }
            let _ = path;
            ParsedFile::default()
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("a.yaml"), "a: 1\n").unwrap();
        fs::write(p.join("b.yaml"), "b: 1\n").unwrap();
        let mut loader = Loader::with_parser(counting);
        loader.load(p);
        assert_eq!(PARSES.load(Ordering::SeqCst), 2);
        fs::write(p.join("b.yaml"), "b: 2\n").unwrap();
        loader.load(p);
        assert_eq!(PARSES.load(Ordering::SeqCst), 3);
        fs::write(p.join("a.yaml"), [0xff, 0xfe]).unwrap();
        fs::write(p.join("b.yaml"), "panic\n").unwrap();
        let loaded = loader.load(p);
        assert!(loaded[&p.join("a.yaml")].errors[0]
            .message
            .contains("UTF-8"));
        assert!(loaded[&p.join("b.yaml")].errors[0]
            .message
            .contains("parser bug"));
    }

    // --- The watch loop, on a real directory and the real parser ---------------------------

    fn manifest(name: &str, desired: u32) -> String {
        format!(
            "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata:\n  name: {name}\nspec:\n  image: nginx\n\
             ---\napiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata:\n  name: {name}\n\
             spec:\n  launchConfiguration: {name}\n  minSize: 0\n  maxSize: 100\n  desiredCapacity: {desired}\n"
        )
    }

    fn desired_of(d: &Desired, name: &str) -> Option<u32> {
        d.group(&gkey(name)).and_then(|g| g.spec.desired_capacity)
    }

    struct Harness {
        dir: tempfile::TempDir,
        rx: watch::Receiver<Arc<Desired>>,
        stats: Arc<WatchStats>,
        rescan: Arc<Notify>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Harness {
        async fn start(dir: tempfile::TempDir, allow_empty: bool) -> Harness {
            let (tx, rx) = watch::channel(Arc::new(Desired::default()));
            let stats = Arc::new(WatchStats::default());
            let rescan = Arc::new(Notify::new());
            let shutdown = CancellationToken::new();
            let opts = WatchOptions {
                rescan_period: Duration::from_secs(3600),
                allow_empty,
                ..WatchOptions::new(dir.path())
            };
            let task = tokio::spawn(run_with(
                opts,
                tx,
                Loader::new(),
                rescan.clone(),
                shutdown.clone(),
                stats.clone(),
            ));
            let mut h = Harness {
                dir,
                rx,
                stats,
                rescan,
                shutdown,
                task,
            };
            h.wait_for(|d| d.loaded).await;
            h
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn publishes(&self) -> usize {
            self.stats.publishes.load(Ordering::SeqCst)
        }

        fn rescans(&self) -> usize {
            self.stats.rescans.load(Ordering::SeqCst)
        }

        async fn wait_for(&mut self, pred: impl Fn(&Desired) -> bool) -> Arc<Desired> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let current = self.rx.borrow_and_update().clone();
                if pred(&current) {
                    return current;
                }
                match tokio::time::timeout_at(deadline, self.rx.changed()).await {
                    Ok(Ok(())) => {}
                    _ => panic!("condition not reached; last snapshot: {current:#?}"),
                }
            }
        }

        async fn settle(&self) {
            sleep(Duration::from_millis(400)).await;
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.task.await.unwrap();
        }
    }

    async fn harness_with(files: &[(&str, String)], allow_empty: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        Harness::start(dir, allow_empty).await
    }

    #[tokio::test]
    async fn an_empty_directory_is_published_as_loaded() {
        let h = harness_with(&[], false).await;
        assert!(h.rx.borrow().objects.is_empty());
        assert_eq!(h.publishes(), 1);
        h.stop().await;
    }

    #[tokio::test]
    async fn a_written_file_becomes_a_snapshot() {
        let mut h = harness_with(&[], false).await;
        fs::write(h.path("web.yaml"), manifest("web", 2)).unwrap();
        let d = h.wait_for(|d| desired_of(d, "web") == Some(2)).await;
        assert_eq!(
            d.objects[&gkey("web")].file,
            h.path("web.yaml").canonicalize().unwrap()
        );
        assert_eq!(d.objects[&gkey("web")].doc_index, 1);
        h.stop().await;
    }

    #[tokio::test]
    async fn rename_over_write_is_exactly_one_reload_with_the_new_content() {
        let mut h = harness_with(&[("web.yaml", manifest("web", 2))], false).await;
        assert_eq!(desired_of(&h.rx.borrow(), "web"), Some(2));
        h.settle().await;
        let (publishes, rescans) = (h.publishes(), h.rescans());
        let tmp = h.path(".web.yaml.tmp");
        fs::write(&tmp, manifest("web", 5)).unwrap();
        fs::rename(&tmp, h.path("web.yaml")).unwrap();
        h.wait_for(|d| desired_of(d, "web") == Some(5)).await;
        h.settle().await;
        assert_eq!(h.publishes(), publishes + 1);
        assert_eq!(h.rescans(), rescans + 1);
        h.stop().await;
    }

    #[tokio::test]
    async fn a_burst_of_thirty_files_is_a_few_reloads() {
        let mut h = harness_with(&[], false).await;
        for i in 0..30 {
            fs::write(
                h.path(&format!("g{i:02}.yaml")),
                manifest(&format!("g{i:02}"), 1),
            )
            .unwrap();
        }
        h.wait_for(|d| d.groups().count() == 30).await;
        h.settle().await;
        assert_eq!(h.rx.borrow().objects.len(), 60);
        assert!(h.publishes() <= 4, "{} publishes", h.publishes());
        h.stop().await;
    }

    #[tokio::test]
    async fn swap_files_and_reads_cause_no_reload() {
        let mut h = harness_with(&[("web.yaml", manifest("web", 2))], false).await;
        h.settle().await;
        let rescans = h.rescans();
        fs::write(h.path(".web.yaml.swp"), "garbage: [").unwrap();
        fs::write(h.path("web.yaml~"), "garbage: [").unwrap();
        let _ = fs::read_to_string(h.path("web.yaml")).unwrap();
        h.settle().await;
        assert_eq!(h.rescans(), rescans);
        // An explicit rescan request still reloads (and finds nothing new to publish).
        let publishes = h.publishes();
        h.rescan.notify_one();
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.rescans() == rescans && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(h.rescans(), rescans + 1);
        assert_eq!(h.publishes(), publishes);
        assert!(h.rx.borrow().file_errors.is_empty());
        let _ = h.wait_for(|d| desired_of(d, "web") == Some(2)).await;
        h.stop().await;
    }

    #[tokio::test]
    async fn a_status_write_by_the_controller_publishes_nothing() {
        let mut h = harness_with(&[("web.yaml", manifest("web", 2))], false).await;
        h.settle().await;
        let publishes = h.publishes();
        let rescans = h.rescans();
        let out = crate::files::write_status(
            &h.path("web.yaml"),
            1,
            &gkey("web"),
            Some("status:\n  observedGeneration: abc\n  current: 2\n"),
        )
        .unwrap();
        assert_eq!(out, crate::files::WriteOutcome::Written);
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.rescans() == rescans && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
        h.settle().await;
        assert_eq!(h.rescans(), rescans + 1);
        assert_eq!(h.publishes(), publishes);
        let _ = h.wait_for(|d| desired_of(d, "web") == Some(2)).await;
        h.stop().await;
    }

    #[tokio::test]
    async fn an_invalid_edit_keeps_the_old_object_and_records_the_error() {
        let mut h = harness_with(&[("web.yaml", manifest("web", 2))], false).await;
        fs::write(
            h.path("web.yaml"),
            manifest("web", 9).replace("minSize: 0", "minSize: lots"),
        )
        .unwrap();
        let d = h.wait_for(|d| !d.file_errors.is_empty()).await;
        assert_eq!(desired_of(&d, "web"), Some(2));
        let errors = d.errors_for(&gkey("web"));
        assert!(!errors.is_empty());
        assert!(errors[0].to_string().contains("web.yaml:"), "{}", errors[0]);
        fs::write(h.path("web.yaml"), manifest("web", 3)).unwrap();
        let d = h.wait_for(|d| desired_of(d, "web") == Some(3)).await;
        assert!(d.file_errors.is_empty());
        h.stop().await;
    }

    #[tokio::test]
    async fn a_file_read_while_it_is_rewritten_deletes_nothing() {
        let mut h = harness_with(
            &[
                ("web.yaml", manifest("web", 2)),
                ("api.yaml", manifest("api", 1)),
            ],
            false,
        )
        .await;
        h.settle().await;
        // Every snapshot published from now on must still have web.
        let mut rx = h.rx.clone();
        let watching = CancellationToken::new();
        let stop = watching.clone();
        let lost = tokio::spawn(async move {
            let mut lost = false;
            loop {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return lost },
                    _ = stop.cancelled() => return lost,
                }
                lost |= rx.borrow_and_update().group(&gkey("web")).is_none();
            }
        });
        // An editor (or `fs::write`) truncates, then writes: the watcher reads the empty file
        // in between, and then the new text has a typo.
        fs::File::create(h.path("web.yaml")).unwrap();
        h.rescan.notify_one();
        sleep(Duration::from_millis(200)).await;
        fs::write(
            h.path("web.yaml"),
            manifest("web", 2).replace("desiredCapacity", "desiredCapasity"),
        )
        .unwrap();
        let d = h.wait_for(|d| !d.file_errors.is_empty()).await;
        assert_eq!(
            desired_of(&d, "web"),
            Some(2),
            "the last valid version runs"
        );
        h.settle().await;
        assert_eq!(desired_of(&h.rx.borrow(), "web"), Some(2));
        watching.cancel();
        assert!(!lost.await.unwrap(), "a snapshot without web was published");
        // Removing the file for good deletes the group, once a later read agrees.
        let removed_at = Instant::now();
        fs::remove_file(h.path("web.yaml")).unwrap();
        h.wait_for(|d| d.group(&gkey("web")).is_none()).await;
        assert!(removed_at.elapsed() >= DELETION_SETTLE);
        h.stop().await;
    }

    #[tokio::test]
    async fn deleting_every_file_is_refused() {
        let mut h = harness_with(
            &[
                ("web.yaml", manifest("web", 2)),
                ("api.yaml", manifest("api", 1)),
            ],
            false,
        )
        .await;
        fs::remove_file(h.path("web.yaml")).unwrap();
        h.wait_for(|d| d.group(&gkey("web")).is_none()).await;
        fs::remove_file(h.path("api.yaml")).unwrap();
        let d = h.wait_for(|d| !d.held.is_empty()).await;
        assert_eq!(desired_of(&d, "api"), Some(1));
        fs::write(h.path("new.yaml"), manifest("new", 1)).unwrap();
        // api may go now (one of two groups of its namespace), after the settle time.
        let d = h
            .wait_for(|d| d.held.is_empty() && d.group(&gkey("api")).is_none())
            .await;
        assert_eq!(d.groups().count(), 1);
        h.stop().await;
    }

    #[tokio::test]
    async fn a_vanished_directory_is_refused_and_allow_empty_accepts_it() {
        let mut h = harness_with(&[("web.yaml", manifest("web", 2))], false).await;
        let dir = h.dir.path().to_path_buf();
        fs::remove_dir_all(&dir).unwrap();
        let d = h.wait_for(|d| !d.held.is_empty()).await;
        assert_eq!(desired_of(&d, "web"), Some(2));
        // The directory comes back: a requested rescan re-watches it.
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("web.yaml"), manifest("web", 4)).unwrap();
        h.rescan.notify_one();
        h.wait_for(|d| desired_of(d, "web") == Some(4) && d.held.is_empty())
            .await;
        fs::write(dir.join("api.yaml"), manifest("api", 1)).unwrap();
        h.wait_for(|d| desired_of(d, "api") == Some(1)).await;
        h.stop().await;

        let mut h = harness_with(&[("web.yaml", manifest("web", 2))], true).await;
        fs::remove_file(h.path("web.yaml")).unwrap();
        let d = h.wait_for(|d| d.objects.is_empty()).await;
        assert!(d.held.is_empty());
        h.stop().await;
    }

    // --- What the status writer and symlinks need --------------------------------------------

    #[test]
    fn the_loader_says_which_files_changed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("a.yaml"), manifest("a", 1)).unwrap();
        fs::write(p.join("b.yaml"), manifest("b", 1)).unwrap();
        fs::create_dir(p.join("status")).unwrap();
        fs::write(p.join("status/a.status.yaml"), "x: 1\n").unwrap();
        let mut loader = Loader::new().with_ignored(vec![p.join("status")]);
        let loaded = loader.load(p);
        assert_eq!(loaded.len(), 2, "the ignored tree is not loaded");
        assert_eq!(
            loader.take_changed(),
            vec![p.join("a.yaml"), p.join("b.yaml")]
        );
        loader.load(p);
        assert!(loader.take_changed().is_empty());
        fs::write(p.join("a.yaml"), manifest("a", 2)).unwrap();
        fs::remove_file(p.join("b.yaml")).unwrap();
        loader.load(p);
        let mut changed = loader.take_changed();
        changed.sort();
        assert_eq!(changed, vec![p.join("a.yaml"), p.join("b.yaml")]);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn an_edit_of_a_symlink_target_outside_is_seen_at_once_and_reported_as_changed() {
        let outside = tempfile::tempdir().unwrap();
        let real = outside.path().join("real.yaml");
        fs::write(&real, manifest("web", 1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("web.yaml")).unwrap();
        let (tx, mut rx) = watch::channel(Arc::new(Desired::default()));
        let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let opts = WatchOptions {
            // Only events can bring the change in time.
            rescan_period: Duration::from_secs(3600),
            changed_files: Some(changed_tx),
            ..WatchOptions::new(dir.path())
        };
        let task = tokio::spawn(run_with(
            opts,
            tx,
            Loader::new(),
            Arc::new(Notify::new()),
            shutdown.clone(),
            Arc::default(),
        ));
        let link = dir.path().canonicalize().unwrap().join("web.yaml");
        let first = tokio::time::timeout(Duration::from_secs(10), changed_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first, vec![link.clone()]);
        // An editor saves the target by renaming a new file over it.
        let tmp = outside.path().join(".real.yaml.swp");
        fs::write(&tmp, manifest("web", 4)).unwrap();
        fs::rename(&tmp, &real).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while desired_of(&rx.borrow_and_update(), "web") != Some(4) {
            tokio::time::timeout_at(deadline, rx.changed())
                .await
                .expect("the target's edit is loaded without waiting for the rescan")
                .unwrap();
        }
        let next = tokio::time::timeout(Duration::from_secs(10), changed_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next, vec![link]);
        shutdown.cancel();
        task.await.unwrap();
    }
}
