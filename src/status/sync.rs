//! Publishes group status: onto the status board (the API) at once, and into files shortly after:
//! coalesced, one write per file per flush, level-triggered against what the files hold now.
//!
//! # Where status goes (`statusMode`)
//! - `inline` ([`inline`]): a `status:` block in each group's manifest document. In a git work
//!   tree the writer waits while git works and keeps git's index clean ([`crate::gitops`]).
//! - `sidecar` ([`sidecar`]): a parallel tree of `*.status.yaml`; manifests are never written.
//! - `off`: nowhere but the API.
//!
//! # Rules
//! - A file is looked at when a status of one of its groups changed, when it changed on disk
//!   (the watcher says so: [`StatusSync::files_changed`]), or when an earlier attempt must be
//!   retried. Looking at it means comparing the status wanted now with the file as it is now, so
//!   a block removed by anyone (`git reset --hard`, an editor) comes back after the watcher's
//!   debounce and one flush.
//! - A flush costs one read, one parse and at most one atomic write per file it looks at,
//!   whatever the number of groups in it.
//! - A file that cannot take its status (read-only, a symlink out of the watched directory, a
//!   full disk) is a [`WriteProblem`] (`ms get problems`, a `StatusWritten` condition in the
//!   API) and is retried with backoff; a busy git is waited for.
//! - The final flush at shutdown stops at its deadline between two files: every file is
//!   either written whole or not at all.
//! - A status published before a pass acts ([`StatusSync::publish_early`]) is on the board at
//!   once but reaches the files only if the pass's own status has not replaced it within
//!   [`EARLY_FILE_HOLD`]: a pass of a second is one write, a long pull or launch still shows
//!   in the file while it lasts. The final flush at shutdown does not write one sooner.

mod git_index;
pub mod inline;
pub mod problems;
pub mod sidecar;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use problems::{Reason, WriteProblem, WriteProblems, STATUS_WRITTEN};

use crate::config::{Config, StatusMode};
use crate::files::{self, OwnWrites};
use crate::manifest::ObjectKey;
use crate::status::{GroupStatus, StatusBoard};
use crate::util::unpoisoned::{LockExt, RwLockExt};
use crate::watch::store::DesiredReader;
use git_index::GitIndex;
use inline::InlineWriter;
use sidecar::Sidecar;

/// What happened to one file in a flush.
#[derive(Debug, Clone, PartialEq)]
pub enum FileOutcome {
    /// Its status is on disk now.
    Written,
    /// Written, but some documents could not take their block.
    WrittenWithProblem(Reason, String),
    /// It already held what we want.
    Unchanged,
    /// Not ours to write now (a file with errors: the user is editing it).
    Skipped,
    /// The file no longer exists.
    Gone,
    /// It changed between our read and our write: the user's edit wins, the watcher reloads it.
    UserEdited,
    /// Git is working in the tree: look again shortly.
    Busy,
    /// It cannot take its status.
    Problem(Reason, String),
}

/// How long a status published before a pass acts waits for the pass's own status before it
/// goes to the files.
pub const EARLY_FILE_HOLD: Duration = Duration::from_secs(5);
/// How long a busy git is given before the next look.
const BUSY_RETRY: Duration = Duration::from_millis(300);
/// Backoff of files with a write problem: 1 s doubling up to 1 min.
const PROBLEM_RETRY_BASE: Duration = Duration::from_secs(1);
const PROBLEM_RETRY_MAX: Duration = Duration::from_secs(60);

/// Where the status goes.
enum Sink {
    Inline {
        writer: InlineWriter,
        git: Mutex<GitIndex>,
    },
    Sidecar(Sidecar),
    Off,
}

/// A file to look at again, and when.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    /// Consecutive problems (0 for a busy git).
    attempts: u32,
}

/// What the next flush looks at.
#[derive(Debug, Default)]
struct Dirty {
    /// Groups whose status changed.
    keys: BTreeSet<ObjectKey>,
    /// Files that changed on disk.
    files: BTreeSet<PathBuf>,
    /// Files to look at again later.
    retry: BTreeMap<PathBuf, Retry>,
    /// The git index to refresh again later (git was busy).
    refresh_at: Option<Instant>,
    /// Every file (sidecar mode: the first load, and periodically, since nobody watches the
    /// sidecar tree for removals).
    all: bool,
    /// Groups whose status on the board was published early, and when it goes to the files
    /// unless a pass's own status replaces it first.
    early: BTreeMap<ObjectKey, Instant>,
}

impl Dirty {
    /// When the loop must wake up without being told.
    fn next_due(&self) -> Option<Instant> {
        self.retry
            .values()
            .map(|r| r.at)
            .chain(self.refresh_at)
            .chain(self.early.values().copied())
            .min()
    }
}

/// What the status writer is handed by the wiring: its settings, its one input (the desired
/// state, to know which file defines which group) and the handles it writes to.
pub struct Context {
    /// `statusMode`, `statusDir`, the watched directory, and the rescan period (the sweep).
    pub config: Arc<Config>,
    /// The desired state: which file holds each group now.
    pub desired: DesiredReader,
    /// Each group's latest status, shown by the API at once.
    pub status: Arc<StatusBoard>,
    /// Manifests whose status cannot be written, and why (`ms get problems`).
    pub problems: WriteProblems,
    /// Asks the watcher to reload a file whose user edit raced a status write.
    pub rescan: Arc<Notify>,
    /// Where writes and failed writes are counted (`/metrics`).
    pub telemetry: Arc<crate::health::telemetry::Telemetry>,
    /// Each group's capacity and metrics over time (the dashboard's charts).
    pub history: Arc<super::history::History>,
}

/// Hands status from the reconciler to the API and to the files.
pub struct StatusSync {
    ctx: Arc<Context>,
    sink: Sink,
    problems: WriteProblems,
    /// The rendered `status:` block of every group with a known status (rendered once per
    /// change, not once per flush: a file of 2,000 groups is re-spliced, not re-rendered).
    blocks: Mutex<HashMap<ObjectKey, Arc<str>>>,
    dirty: Mutex<Dirty>,
    wake: Notify,
    /// Quiet time before writing, so a scale-out of 50 is a handful of writes, not 100.
    coalesce: Duration,
    /// One flush at a time: the loop's, and the final one at shutdown.
    flushing: Mutex<()>,
    /// Sidecar mode: the status each group had in the tree at start-up (seeds activities).
    previous: BTreeMap<ObjectKey, serde_json::Value>,
    /// Sidecar mode: how often every sidecar is compared again.
    sweep: Duration,
}

impl StatusSync {
    /// A status sync writing as `ctx.config` says (`statusMode`, `statusDir`, `dir`).
    pub fn new(ctx: Arc<Context>, own: Arc<OwnWrites>, coalesce: Duration) -> Arc<Self> {
        let config = &ctx.config;
        let mut previous = BTreeMap::new();
        let sink = match (config.status_mode, &config.status_dir) {
            (StatusMode::Inline, _) => Sink::Inline {
                writer: InlineWriter::new(config.dir.clone(), own),
                git: Mutex::new(GitIndex::discover(&config.dir)),
            },
            (StatusMode::Sidecar, Some(root)) => {
                let sc = Sidecar::new(config.dir.clone(), root.clone());
                previous = sc.load();
                info!(dir = %root.display(), "status goes to the sidecar tree; manifests are never written");
                Sink::Sidecar(sc)
            }
            (StatusMode::Sidecar, None) | (StatusMode::Off, _) => {
                info!("status is served by the API only; no file is written");
                Sink::Off
            }
        };
        let all = matches!(sink, Sink::Sidecar(_));
        Arc::new(StatusSync {
            problems: ctx.problems.clone(),
            sweep: config.rescan_period.0.max(Duration::from_secs(1)),
            ctx,
            sink,
            blocks: Mutex::new(HashMap::new()),
            dirty: Mutex::new(Dirty {
                all,
                ..Default::default()
            }),
            wake: Notify::new(),
            coalesce,
            flushing: Mutex::new(()),
            previous,
        })
    }

    /// Records the latest status of `key`; schedules a look at its file if it changed (or if
    /// it is the one published early, which the file has not had yet).
    pub fn publish(&self, key: &ObjectKey, status: GroupStatus) {
        let mut map = self.ctx.status.write_locked();
        let same = map.get(key) == Some(&status);
        let was_early = self.dirty.locked().early.remove(key).is_some();
        if same && !was_early {
            return;
        }
        let block: Arc<str> = Arc::from(files::render_status(&status));
        if !same {
            super::activity_log::log_new(key, map.get(key), &status);
            self.ctx.history.record(key, &status);
            map.insert(key.clone(), status);
        }
        drop(map);
        self.blocks.locked().insert(key.clone(), block);
        self.dirty.locked().keys.insert(key.clone());
        self.wake.notify_one();
    }

    /// Records the status of `key` as a pass is about to act: the API and its watchers have it
    /// at once; the files get it only if no [`StatusSync::publish`] replaced it within
    /// [`EARLY_FILE_HOLD`] of the first early status (so a short pass costs one write).
    pub fn publish_early(&self, key: &ObjectKey, status: GroupStatus) {
        let mut map = self.ctx.status.write_locked();
        if map.get(key) == Some(&status) {
            return;
        }
        super::activity_log::log_new(key, map.get(key), &status);
        self.ctx.history.record(key, &status);
        map.insert(key.clone(), status);
        // Lock order: the board, then `dirty` (as in `publish`).
        self.dirty
            .locked()
            .early
            .entry(key.clone())
            .or_insert_with(|| Instant::now() + EARLY_FILE_HOLD);
        drop(map);
        self.wake.notify_one();
    }

    /// The latest status published for `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<GroupStatus> {
        self.ctx.status.read_locked().get(key).cloned()
    }

    /// Drops the status of a deleted group.
    pub fn forget(&self, key: &ObjectKey) {
        let mut map = self.ctx.status.write_locked();
        map.remove(key);
        self.dirty.locked().early.remove(key);
        drop(map);
        self.blocks.locked().remove(key);
        self.ctx.history.forget(key);
    }

    /// The watcher saw these files change (content, creation, removal): their status is compared
    /// with what they hold now.
    pub fn files_changed(&self, files: impl IntoIterator<Item = PathBuf>) {
        self.dirty.locked().files.extend(files);
        self.wake.notify_one();
    }

    /// The status `key` had before this controller started: the file's own block (inline), the
    /// sidecar's, or none (`off`).
    pub fn previous(
        &self,
        key: &ObjectKey,
        in_file: Option<&serde_json::Value>,
    ) -> Option<serde_json::Value> {
        match &self.sink {
            Sink::Inline { .. } => in_file.cloned(),
            Sink::Sidecar(_) => self.previous.get(key).cloned(),
            Sink::Off => None,
        }
    }

    /// Writes until `shutdown`; the caller makes the final, bounded flush ([`Self::flush`]).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut next_sweep = Instant::now() + self.sweep;
        loop {
            let due = self.dirty.locked().next_due();
            let wake_at = match (&self.sink, due) {
                (Sink::Sidecar(_), Some(d)) => d.min(next_sweep),
                (Sink::Sidecar(_), None) => next_sweep,
                (_, Some(d)) => d,
                (_, None) => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                _ = shutdown.cancelled() => return,
            }
            // Inline files need no sweep: the watcher reports every change to them.
            if matches!(self.sink, Sink::Sidecar(_)) && Instant::now() >= next_sweep {
                next_sweep = Instant::now() + self.sweep;
                self.dirty.locked().all = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.coalesce) => {}
                _ = shutdown.cancelled() => return,
            }
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.flush(None)).await;
        }
    }

    /// Brings every file that needs it in line now; with a `deadline`, stops between two files
    /// once it has passed (what is left waits for the next start) and retries everything
    /// pending. Returns how many files were written.
    pub fn flush(&self, deadline: Option<std::time::Instant>) -> usize {
        let _one_at_a_time = self.flushing.locked();
        let desired = self.ctx.desired.borrow().clone();
        if !desired.loaded {
            return 0; // nothing is known yet; the first load reports every file
        }
        let now = Instant::now();
        self.take_due_early(now);
        let (keys, disk, retries, all, refresh) = {
            let mut d = self.dirty.locked();
            let due: Vec<PathBuf> = d
                .retry
                .iter()
                .filter(|(_, r)| deadline.is_some() || r.at <= now)
                .map(|(f, _)| f.clone())
                .collect();
            let refresh = d.refresh_at.is_some_and(|t| t <= now) || deadline.is_some();
            if refresh {
                d.refresh_at = None;
            }
            (
                std::mem::take(&mut d.keys),
                std::mem::take(&mut d.files),
                due,
                std::mem::take(&mut d.all),
                refresh,
            )
        };

        // Groups by the file that defines them now.
        let mut by_file: BTreeMap<PathBuf, Vec<ObjectKey>> = BTreeMap::new();
        for (key, _, entry) in desired.groups() {
            by_file
                .entry(entry.file.clone())
                .or_default()
                .push(key.clone());
        }
        let status_files: BTreeSet<PathBuf> = keys
            .iter()
            .filter_map(|k| desired.objects.get(k).map(|e| e.file.clone()))
            .collect();
        let mut files: BTreeSet<PathBuf> = status_files.iter().cloned().collect();
        files.extend(disk.iter().cloned());
        files.extend(retries.iter().cloned());
        if all {
            files.extend(by_file.keys().cloned());
        }

        let mut written = 0;
        let mut left = Vec::new();
        for file in &files {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                left.push(file.clone());
                continue;
            }
            let wanted: BTreeMap<ObjectKey, Arc<str>> = {
                let blocks = self.blocks.locked();
                by_file
                    .get(file)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| Some((k.clone(), blocks.get(k)?.clone())))
                    .collect()
            };
            let disk_only = !status_files.contains(file) && !retries.contains(file);
            // Groups whose status is not known yet (just loaded) leave their file alone; a file
            // with no group at all is a sidecar to remove.
            let outcome = if wanted.is_empty() && by_file.contains_key(file) {
                FileOutcome::Unchanged
            } else {
                self.sync_file(file, &wanted, disk_only)
            };
            if matches!(
                outcome,
                FileOutcome::Written | FileOutcome::WrittenWithProblem(..)
            ) {
                written += 1;
            }
            self.settle(file, outcome);
        }
        if !left.is_empty() {
            warn!(
                files = left.len(),
                "shutting down before every status was written; they are written at the next start"
            );
        }
        if all {
            if let Sink::Sidecar(sc) = &self.sink {
                let live: Vec<PathBuf> = by_file.keys().cloned().collect();
                let removed = sc.remove_stale(&live);
                if removed > 0 {
                    info!(
                        files = removed,
                        "removed status files of manifests that are gone"
                    );
                }
            }
        }
        if let Sink::Inline { git, .. } = &self.sink {
            let mut git = git.locked();
            if (written > 0 || refresh || !files.is_empty()) && git.refresh().is_err() {
                self.dirty.locked().refresh_at = Some(now + BUSY_RETRY);
            }
        }
        written
    }

    /// Early statuses whose hold ended become changed statuses for this flush. The final flush
    /// at shutdown takes no others: a pass cut short launches nothing more, and its file keeps
    /// the status of the last pass that ended (the next start publishes the truth).
    fn take_due_early(&self, now: Instant) {
        let due: Vec<ObjectKey> = {
            let mut d = self.dirty.locked();
            let due: Vec<ObjectKey> = d
                .early
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &due {
                d.early.remove(k);
            }
            due
        };
        for key in due {
            let Some(status) = self.ctx.status.read_locked().get(&key).cloned() else {
                continue;
            };
            let block: Arc<str> = Arc::from(files::render_status(&status));
            self.blocks.locked().insert(key.clone(), block);
            self.dirty.locked().keys.insert(key);
        }
    }

    /// One file through the sink.
    fn sync_file(
        &self,
        file: &std::path::Path,
        wanted: &BTreeMap<ObjectKey, Arc<str>>,
        disk_only: bool,
    ) -> FileOutcome {
        match &self.sink {
            Sink::Inline { writer, git } => {
                let mut git = git.locked();
                if git.busy() {
                    return FileOutcome::Busy;
                }
                let outcome = writer.sync_file(file, wanted, disk_only);
                if matches!(
                    outcome,
                    FileOutcome::Written
                        | FileOutcome::WrittenWithProblem(..)
                        | FileOutcome::Unchanged
                ) {
                    git.touched(file);
                }
                outcome
            }
            Sink::Sidecar(sc) => sc.sync_file(file, wanted),
            Sink::Off => FileOutcome::Unchanged,
        }
    }

    /// Records what a file's outcome means: problems, retries, reloads.
    fn settle(&self, file: &std::path::Path, outcome: FileOutcome) {
        let mut retry = None;
        match outcome {
            FileOutcome::Written | FileOutcome::Unchanged | FileOutcome::Gone => {
                if self.problems.clear(file) {
                    info!(file = %file.display(), "status is written again");
                }
                if outcome == FileOutcome::Written {
                    self.ctx.telemetry.status_write(true);
                    debug!(file = %file.display(), "status written");
                }
            }
            FileOutcome::Skipped => {}
            FileOutcome::UserEdited => {
                debug!(file = %file.display(), "file changed under us; the user's edit wins and is reloaded");
                self.ctx.rescan.notify_one();
            }
            FileOutcome::Busy => {
                retry = Some(Retry {
                    at: Instant::now() + BUSY_RETRY,
                    attempts: 0,
                })
            }
            FileOutcome::WrittenWithProblem(reason, message) => {
                self.ctx.telemetry.status_write(true);
                if self.problems.set(file, reason, message.clone()) {
                    warn!("{message}");
                }
            }
            FileOutcome::Problem(reason, message) => {
                self.ctx.telemetry.status_write(false);
                if self.problems.set(file, reason, message.clone()) {
                    warn!("{message}");
                }
                let attempts = self
                    .dirty
                    .locked()
                    .retry
                    .get(file)
                    .map_or(0, |r| r.attempts);
                let delay = PROBLEM_RETRY_BASE
                    .saturating_mul(1 << attempts.min(6))
                    .min(PROBLEM_RETRY_MAX);
                retry = Some(Retry {
                    at: Instant::now() + delay,
                    attempts: attempts + 1,
                });
            }
        }
        let mut d = self.dirty.locked();
        match retry {
            Some(r) => {
                d.retry.insert(file.to_path_buf(), r);
            }
            None => {
                d.retry.remove(file);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::manifest::Kind;
    use crate::watch::store::Desired;

    const LC: &str = "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata:\n  name: lc\nspec:\n  image: busybox\n";

    fn group(name: &str) -> String {
        format!(
            "---\n# group {name}\napiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata:\n  name: {name}\nspec:\n  launchConfiguration: lc\n  minSize: 0\n  maxSize: 3\n"
        )
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::AutoScalingGroup, "default", name)
    }

    fn status(current: u32) -> GroupStatus {
        GroupStatus {
            observed_generation: "abc".into(),
            current,
            ..Default::default()
        }
    }

    /// A sync over a real directory, its snapshot loaded as the watcher would.
    struct Fixture {
        dir: tempfile::TempDir,
        sync: Arc<StatusSync>,
        tx: tokio::sync::watch::Sender<Arc<Desired>>,
    }

    impl Fixture {
        fn new(files: &[(&str, String)], extra: &str) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            for (name, text) in files {
                std::fs::write(dir.path().join(name), text).unwrap();
            }
            let root = std::fs::canonicalize(dir.path()).unwrap();
            let config: Config =
                serde_yaml_ng::from_str(&format!("dir: {}\n{extra}", root.display())).unwrap();
            let (tx, rx) = tokio::sync::watch::channel(Arc::new(Desired::default()));
            let ctx = Arc::new(Context {
                config: Arc::new(config),
                desired: rx,
                status: Arc::default(),
                problems: WriteProblems::default(),
                rescan: Arc::default(),
                telemetry: Arc::default(),
                history: Arc::default(),
            });
            let sync = StatusSync::new(ctx, Arc::new(OwnWrites::new()), Duration::ZERO);
            let f = Fixture { dir, sync, tx };
            f.reload();
            f
        }

        fn path(&self, name: &str) -> PathBuf {
            std::fs::canonicalize(self.dir.path()).unwrap().join(name)
        }

        fn reload(&self) {
            let root = std::fs::canonicalize(self.dir.path()).unwrap();
            let files = crate::watch::load_dir(&root);
            let prev = self.tx.borrow().clone();
            let next = crate::watch::build_snapshot(&prev, &files, true, chrono::Utc::now());
            self.tx.send_replace(Arc::new(next));
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.path(name)).unwrap()
        }
    }

    #[test]
    fn a_thousand_group_statuses_of_one_file_are_one_write() {
        let mut text = LC.to_string();
        for i in 0..1000 {
            text.push_str(&group(&format!("g{i}")));
        }
        let f = Fixture::new(&[("all.yaml", text.clone())], "");
        for i in 0..1000 {
            f.sync.publish(&key(&format!("g{i}")), status(i));
        }
        assert_eq!(f.sync.flush(None), 1);
        let written = f.read("all.yaml");
        assert_eq!(written.matches("\nstatus:\n").count(), 1000);
        assert_eq!(crate::files::strip_statuses(&written), text);
        // Nothing changed: nothing written.
        f.sync.files_changed([f.path("all.yaml")]);
        assert_eq!(f.sync.flush(None), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_early_status_reaches_the_file_only_when_its_pass_outlasts_the_hold() {
        let text = format!("{LC}{}", group("web"));
        let f = Fixture::new(&[("web.yaml", text.clone())], "");
        let board = |f: &Fixture| f.sync.ctx.status.read_locked()[&key("web")].current;
        // A short pass: the board has each status at once, the file only the pass's own.
        f.sync.publish_early(&key("web"), status(1));
        assert_eq!(board(&f), 1);
        assert_eq!(f.sync.flush(None), 0, "held back from the file");
        assert_eq!(f.read("web.yaml"), text);
        f.sync.publish(&key("web"), status(3));
        assert_eq!(f.sync.flush(None), 1);
        assert!(f.read("web.yaml").contains("current: 3"));
        tokio::time::advance(EARLY_FILE_HOLD * 2).await;
        assert_eq!(f.sync.flush(None), 0, "the early status never follows");
        assert!(f.read("web.yaml").contains("current: 3"));

        // A long pass (a pull): once the hold ends the file shows what is in progress.
        f.sync.publish_early(&key("web"), status(4));
        tokio::time::advance(EARLY_FILE_HOLD / 2).await;
        f.sync.publish_early(&key("web"), status(5));
        assert_eq!(f.sync.flush(None), 0);
        let due = f.sync.dirty.lock().unwrap().next_due().expect("a due time");
        assert!(
            due <= Instant::now() + EARLY_FILE_HOLD / 2,
            "held from the first"
        );
        tokio::time::advance(EARLY_FILE_HOLD / 2).await;
        assert_eq!(f.sync.flush(None), 1);
        assert!(f.read("web.yaml").contains("current: 5"));
        // The pass's own status, the same as the early one the file has: nothing to write.
        f.sync.publish(&key("web"), status(5));
        assert_eq!(f.sync.flush(None), 0);

        // The pass's own status equal to an early one the file has not had: written.
        f.sync.publish_early(&key("web"), status(6));
        f.sync.publish(&key("web"), status(6));
        assert_eq!(f.sync.flush(None), 1);
        assert!(f.read("web.yaml").contains("current: 6"));

        // Shutdown during a pass: its words of launching are not left in the file.
        f.sync.publish_early(&key("web"), status(7));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        assert_eq!(f.sync.flush(Some(deadline)), 0);
        assert!(f.read("web.yaml").contains("current: 6"));
    }

    #[test]
    fn a_removed_status_block_comes_back_when_the_file_changes() {
        let text = format!("{LC}{}", group("web"));
        let f = Fixture::new(&[("web.yaml", text.clone())], "");
        f.sync.publish(&key("web"), status(2));
        assert_eq!(f.sync.flush(None), 1);
        assert!(f.read("web.yaml").contains("current: 2"));
        // `git reset --hard`: the committed text, no status. The status in memory did not change.
        std::fs::write(f.path("web.yaml"), &text).unwrap();
        f.sync.publish(&key("web"), status(2));
        assert_eq!(f.sync.flush(None), 0, "memory alone says nothing changed");
        f.reload();
        f.sync.files_changed([f.path("web.yaml")]);
        assert_eq!(f.sync.flush(None), 1);
        assert!(f.read("web.yaml").contains("current: 2"));
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_manifest_gets_no_status_and_a_problem_until_it_is_writable() {
        use std::os::unix::fs::PermissionsExt;
        let text = format!("{LC}{}", group("web"));
        let f = Fixture::new(&[("web.yaml", text.clone())], "");
        let path = f.path("web.yaml");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        f.sync.publish(&key("web"), status(2));
        assert_eq!(f.sync.flush(None), 0);
        assert_eq!(f.read("web.yaml"), text);
        let problem = f.sync.problems.get(&path).expect("a problem");
        assert_eq!(problem.reason, Reason::ReadOnly);
        assert!(problem.message.contains("read-only"), "{}", problem.message);
        // Retried with backoff: made writable, the next due retry writes it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let due = f.sync.dirty.lock().unwrap().next_due().expect("a retry");
        assert!(due > Instant::now());
        // The final flush (with a deadline) retries everything pending.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        assert_eq!(f.sync.flush(Some(deadline)), 1);
        assert!(f.read("web.yaml").contains("current: 2"));
        assert!(f.sync.problems.get(&path).is_none());
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_out_of_the_watched_directory_is_never_written_through() {
        let outside = tempfile::tempdir().unwrap();
        let real = outside.path().join("real.yaml");
        let text = format!("{LC}{}", group("web"));
        std::fs::write(&real, &text).unwrap();
        let f = Fixture::new(&[], "");
        std::os::unix::fs::symlink(&real, f.path("web.yaml")).unwrap();
        f.reload();
        f.sync.publish(&key("web"), status(1));
        assert_eq!(f.sync.flush(None), 0);
        assert_eq!(std::fs::read_to_string(&real).unwrap(), text);
        let problem = f.sync.problems.get(&f.path("web.yaml")).expect("a problem");
        assert_eq!(problem.reason, Reason::OutsideWatchedDirectory);
    }

    #[test]
    fn sidecar_mode_never_writes_a_manifest_and_off_writes_nothing() {
        let text = format!("{LC}{}", group("web"));
        let side = tempfile::tempdir().unwrap();
        let f = Fixture::new(
            &[("web.yaml", text.clone())],
            &format!(
                "statusMode: sidecar\nstatusDir: {}\n",
                side.path().display()
            ),
        );
        f.sync.publish(&key("web"), status(3));
        assert_eq!(f.sync.flush(None), 1);
        assert_eq!(f.read("web.yaml"), text);
        let sidecar = side.path().join("web.status.yaml");
        let written = std::fs::read_to_string(&sidecar).unwrap();
        assert!(
            written.contains("name: web") && written.contains("current: 3"),
            "{written}"
        );
        assert_eq!(
            f.sync.previous(&key("web"), None),
            None,
            "previous is what was there at start-up"
        );
        // A restart: the sidecar seeds the group, and is not removed before its status is known.
        let restarted = StatusSync::new(
            f.sync.ctx.clone(),
            Arc::new(OwnWrites::new()),
            Duration::ZERO,
        );
        assert_eq!(restarted.previous(&key("web"), None).unwrap()["current"], 3);
        restarted.files_changed([f.path("web.yaml")]);
        assert_eq!(restarted.flush(None), 0);
        assert!(sidecar.exists());

        let f = Fixture::new(&[("web.yaml", text.clone())], "statusMode: off\n");
        f.sync.publish(&key("web"), status(3));
        assert_eq!(f.sync.flush(None), 0);
        assert_eq!(f.read("web.yaml"), text);
        assert_eq!(f.sync.ctx.status.read_locked()[&key("web")].current, 3);
    }

    #[test]
    fn the_final_flush_stops_at_its_deadline_between_files() {
        let files: Vec<(String, String)> = (0..5)
            .map(|i| {
                (
                    format!("g{i}.yaml"),
                    format!("{LC}{}", group(&format!("g{i}"))),
                )
            })
            .collect();
        let named: Vec<(&str, String)> =
            files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let f = Fixture::new(&named, "");
        for i in 0..5 {
            f.sync.publish(&key(&format!("g{i}")), status(1));
        }
        assert_eq!(f.sync.flush(Some(std::time::Instant::now())), 0);
        for (name, text) in &files {
            assert_eq!(&f.read(name), text, "nothing half-written");
        }
    }
}
