//! The watch loop: events debounced into full rescans, deletions settled, snapshots published.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{sleep, sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::dirwatch::{dir_identity, is_relevant, DirWatch, EventTx};
use super::load::Loader;
use super::snapshot::{build_snapshot_confirmed, log_changes, same_meaning};
use super::store::Desired;
use super::{prune, targets, WatchOptions, DELETION_SETTLE};
use crate::config::tenancy::Tenancy;
use crate::files::OwnWrites;
use crate::health::liveness::Beat;
use crate::manifest::ObjectKey;
use crate::util::tickets::Tickets;

/// A burst of events never delays a reload by more than this after its first event.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// Counters, for tests and diagnostics.
#[derive(Debug, Default)]
pub(crate) struct WatchStats {
    /// Full directory loads (the initial one included).
    pub rescans: AtomicUsize,
    /// Snapshots sent.
    pub publishes: AtomicUsize,
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
    /// The API's writes wait for the load that began after them.
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
        let (mut loader, files, links, exists) = tokio::task::spawn_blocking(move || {
            let mut files = loader.load(&dir);
            tenancy.limit_objects(&mut files);
            let links = targets::symlink_targets(files.keys());
            let exists = dir_identity(&dir).is_some();
            (loader, files, links, exists)
        })
        .await
        .expect("the loader catches parser panics");
        let changed = loader.take_changed();
        self.loader = loader;
        self.targets.update(links, &self.events);
        self.stats.rescans.fetch_add(1, Ordering::Relaxed);

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

/// [`run`] with its loader and counters given: the tests swap in a parser and read the counters.
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
    dir_watch = ensure_watch(dir_watch, &dir, &ev_tx).await;
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
        dir_watch = ensure_watch(dir_watch, &dir, &ev_tx).await;
        recheck = state.rescan(&tx).await;
        ticker.reset();
    }
}

/// [`DirWatch::ensure`] on a blocking thread, like the loads: it stats the directory, and a new
/// recursive watch walks the whole tree below it (one inotify watch per directory).
async fn ensure_watch(mut dir_watch: DirWatch, dir: &Path, events: &EventTx) -> DirWatch {
    let (dir, events) = (dir.to_path_buf(), events.clone());
    tokio::task::spawn_blocking(move || {
        dir_watch.ensure(&dir, &events);
        dir_watch
    })
    .await
    .expect("setting up a watch does not panic")
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::watch::fixtures::{desired_of, gkey, manifest};

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
