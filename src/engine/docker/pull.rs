//! Image pulls inside the Docker engine: a missing image on create is pulled, once per engine,
//! image and credentials, shared by every launch waiting for it.
//!
//! # Rules
//! - `IfNotPresent`: create; on "No such image", pull, then create again. `Always`: pull, then
//!   create. `Never`: create, and a missing image is the launch's failure.
//! - Concurrent launches of one image on one engine share one pull ([`Pulls`]): a scale-out of
//!   fifty asks the registry once. A finished pull is forgotten, so a failed one is tried again
//!   at the group's next attempt (which the reconciler backs off).
//! - A failed pull is [`EngineError::Other`] carrying the registry's own answer ("pull access
//!   denied ...", "manifest unknown", "no basic auth credentials"), which the reconciler shows as
//!   the group's `Degraded` condition; an engine that stops answering stays `Unreachable`.
//! - Credentials come from a [`RegistryAuth`] the controller supplies (its Docker config, or a
//!   namespace's own file), looked up at every pull so a rotated password is used at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::StreamExt;

use super::{classify, with_host};
use crate::engine::{EngineError, Result};
use crate::util::unpoisoned::LockExt;

/// How long one pull may take: layers of a large image over a slow link take minutes.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where pulls find their credentials (the controller's configuration implements it).
pub trait RegistryAuth: Send + Sync + std::fmt::Debug {
    /// The credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub) when pulling
    /// an image for a group of `namespace`; `None` pulls anonymously.
    ///
    /// # Errors
    /// A credentials file that cannot be read: the pull fails with this message.
    fn credentials(
        &self,
        namespace: &str,
        registry: &str,
    ) -> std::result::Result<Option<Credentials>, String>;
}

/// The registry of an image reference, as Docker reads it: the first path component when it
/// looks like a host (has a `.` or `:`, or is `localhost`), else Docker Hub.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// `name` and `tag` (or digest) of a reference; no tag means `latest`.
pub fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

type PullFuture = Shared<BoxFuture<'static, Result<()>>>;

/// How far one pull in flight on one engine has come (`ms describe` shows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    pub image: String,
    /// Layers the image has, as far as the engine has said yet.
    pub layers_total: u32,
    /// Layers pulled and extracted (or already on the engine).
    pub layers_done: u32,
    /// Bytes downloaded, and the sum of the sizes of the layers being downloaded (both grow as
    /// the engine announces layers).
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub started: std::time::Instant,
}

/// One layer of a pull as the engine reports it.
#[derive(Debug, Default, Clone, Copy)]
struct Layer {
    current: u64,
    total: u64,
    done: bool,
}

/// Folds the engine's progress messages into a [`PullProgress`].
#[derive(Debug, Default)]
struct Tracker {
    layers: std::collections::BTreeMap<String, Layer>,
}

impl Tracker {
    /// One message: `status` of layer `id`, with `current`/`total` bytes when downloading.
    fn step(&mut self, id: &str, status: &str, current: Option<i64>, total: Option<i64>) {
        let bytes = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        let layer = match status {
            "Pulling fs layer" | "Waiting" | "Already exists" | "Downloading"
            | "Verifying Checksum" | "Download complete" | "Extracting" | "Pull complete" => {
                self.layers.entry(id.to_string()).or_default()
            }
            _ => return, // "Pulling from ...", "Digest: ...", "Status: ..."
        };
        match status {
            "Downloading" => {
                layer.total = bytes(total).unwrap_or(layer.total);
                layer.current = bytes(current)
                    .unwrap_or(layer.current)
                    .min(layer.total.max(1));
            }
            "Download complete" | "Extracting" => layer.current = layer.total,
            "Already exists" | "Pull complete" => {
                layer.current = layer.total;
                layer.done = true;
            }
            _ => {}
        }
    }

    fn progress(&self, image: &str, started: std::time::Instant) -> PullProgress {
        let count = |f: fn(&Layer) -> bool| {
            u32::try_from(self.layers.values().filter(|l| f(l)).count()).unwrap_or(u32::MAX)
        };
        PullProgress {
            image: image.to_string(),
            layers_total: count(|_| true),
            layers_done: count(|l| l.done),
            bytes_done: self.layers.values().map(|l| l.current).sum(),
            bytes_total: self.layers.values().map(|l| l.total).sum(),
            started,
        }
    }
}

/// The pulls in flight on one engine, by image and credentials.
#[derive(Default)]
pub struct Pulls {
    inflight: Mutex<HashMap<String, PullFuture>>,
    /// How far each of them has come, by the same key.
    progress: Arc<Mutex<HashMap<String, PullProgress>>>,
}

impl std::fmt::Debug for Pulls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pulls")
            .field("inflight", &self.inflight.locked().len())
            .finish()
    }
}

impl Pulls {
    /// The pulls in flight now, with their progress.
    pub fn in_flight(&self) -> Vec<PullProgress> {
        self.progress.locked().values().cloned().collect()
    }

    /// Pulls `image` onto the engine, joining a pull of the same image with the same
    /// credentials already in flight.
    ///
    /// # Errors
    /// [`EngineError::Unreachable`] when the engine stops answering; [`EngineError::Other`] with
    /// the registry's message for everything else.
    pub async fn pull(
        self: &Arc<Self>,
        docker: &Docker,
        host: &str,
        image: &str,
        credentials: Option<Credentials>,
    ) -> Result<()> {
        let key = format!(
            "{image}\n{}",
            credentials
                .as_ref()
                .map(|c| crate::manifest::short_hash(
                    format!("{}:{}", c.username, c.password).as_bytes()
                ))
                .unwrap_or_default()
        );
        let docker = docker.clone().with_timeout(PULL_TIMEOUT);
        let (host, image) = (host.to_string(), image.to_string());
        let progress = Arc::clone(&self.progress);
        self.join(key.clone(), move || {
            async move {
                let r = pull_once(&docker, &host, &image, credentials, |p| {
                    progress.locked().insert(key.clone(), p);
                })
                .await;
                progress.locked().remove(&key);
                r
            }
            .boxed()
        })
        .await
    }

    /// Runs `start()`'s pull unless one under `key` is in flight, and waits for that one:
    /// every caller gets the one outcome. The engine-free core of [`Pulls::pull`].
    async fn join(
        self: &Arc<Self>,
        key: String,
        start: impl FnOnce() -> BoxFuture<'static, Result<()>>,
    ) -> Result<()> {
        let shared = {
            let mut inflight = self.inflight.locked();
            inflight
                .entry(key.clone())
                .or_insert_with(|| {
                    let pulls = Arc::clone(self);
                    let pull = start();
                    async move {
                        let r = pull.await;
                        // Forgotten once done: the next launch after a failure asks again.
                        pulls.inflight.locked().remove(&key);
                        r
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        shared.await
    }
}

async fn pull_once(
    docker: &Docker,
    host: &str,
    image: &str,
    credentials: Option<Credentials>,
    report: impl Fn(PullProgress),
) -> Result<()> {
    let (name, tag) = split_reference(image);
    let options = CreateImageOptionsBuilder::default()
        .from_image(name)
        .tag(tag)
        .build();
    let auth = credentials.map(|c| DockerCredentials {
        username: Some(c.username),
        password: Some(c.password),
        serveraddress: Some(registry_of(image).to_string()),
        ..Default::default()
    });
    tracing::info!(%image, engine = %host, "pulling image");
    let started = std::time::Instant::now();
    let mut layers = std::collections::BTreeSet::new();
    let mut tracker = Tracker::default();
    report(tracker.progress(image, started));
    let mut progress = docker.create_image(Some(options), None, auth);
    while let Some(step) = progress.next().await {
        match step {
            Ok(info) => {
                let done = matches!(
                    info.status.as_deref(),
                    Some("Pull complete" | "Already exists")
                );
                if let (Some(id), Some(status)) = (&info.id, &info.status) {
                    let detail = info.progress_detail.as_ref();
                    tracker.step(
                        id,
                        status,
                        detail.and_then(|d| d.current),
                        detail.and_then(|d| d.total),
                    );
                    report(tracker.progress(image, started));
                }
                if let Some(id) = info.id.filter(|_| done) {
                    layers.insert(id);
                }
                if let Some(e) = info.error_detail.and_then(|d| d.message) {
                    return Err(EngineError::Other(format!("cannot pull `{image}`: {e}")));
                }
            }
            Err(e) => {
                return Err(match with_host(classify(e), host) {
                    e @ EngineError::Unreachable(_) => e,
                    EngineError::NotFound(m) | EngineError::Conflict(m) | EngineError::Other(m) => {
                        EngineError::Other(format!("cannot pull `{image}`: {m}"))
                    }
                })
            }
        }
    }
    tracing::info!(%image, engine = %host, layers = layers.len(), elapsed_ms = started.elapsed().as_millis() as u64, "image pulled");
    Ok(())
}

/// Whether a create failure means the image is missing (rather than, say, a missing network).
pub fn is_missing_image(err: &EngineError) -> bool {
    matches!(err, EngineError::NotFound(m) if m.contains("No such image") || m.contains("no such image"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_read_as_docker_reads_them() {
        assert_eq!(registry_of("127.0.0.1:5000/team/web:1"), "127.0.0.1:5000");
        assert_eq!(
            registry_of("registry.example.com/web"),
            "registry.example.com"
        );
        assert_eq!(registry_of("localhost/web"), "localhost");
        assert_eq!(registry_of("microscaler/busybox:latest"), "docker.io");
        assert_eq!(registry_of("busybox"), "docker.io");
    }

    #[test]
    fn references_split_into_name_and_tag_or_digest() {
        assert_eq!(
            split_reference("127.0.0.1:5000/web:1.2"),
            ("127.0.0.1:5000/web", "1.2")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/web"),
            ("127.0.0.1:5000/web", "latest")
        );
        assert_eq!(split_reference("web@sha256:abcd"), ("web", "sha256:abcd"));
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
    }

    #[test]
    fn only_a_missing_image_triggers_a_pull() {
        assert!(is_missing_image(&EngineError::NotFound(
            "No such image: 127.0.0.1:5000/web:1".into()
        )));
        assert!(!is_missing_image(&EngineError::NotFound(
            "network ms-net not found".into()
        )));
    }

    /// A fake pull that counts its starts and finishes when `release` is notified.
    fn slow_pull(
        starts: &Arc<std::sync::atomic::AtomicUsize>,
        release: &Arc<tokio::sync::Notify>,
        outcome: Result<()>,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<()>> {
        let (starts, release) = (Arc::clone(starts), Arc::clone(release));
        move || {
            starts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                release.notified().await;
                outcome
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn concurrent_launches_of_one_image_share_one_pull_and_its_outcome() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let pulls = Arc::new(Pulls::default());
        let starts = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let failed = Err(EngineError::Other(
            "cannot pull `web:1`: manifest unknown".into(),
        ));
        // Five launches of one image with one set of credentials, all waiting on the pull.
        let waiting: Vec<_> = (0..5)
            .map(|_| {
                let pulls = Arc::clone(&pulls);
                let start = slow_pull(&starts, &release, failed.clone());
                tokio::spawn(async move { pulls.join("web:1\nA".into(), start).await })
            })
            .collect();
        // Another credentials hash is another pull (a refused login must not serve another's).
        let other = {
            let pulls = Arc::clone(&pulls);
            let start = slow_pull(&starts, &release, Ok(()));
            tokio::spawn(async move { pulls.join("web:1\nB".into(), start).await })
        };
        while pulls.inflight.locked().len() < 2 {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(starts.load(SeqCst), 2, "one pull per image and credentials");
        release.notify_waiters();
        for w in waiting {
            assert_eq!(
                format!("{:?}", w.await.unwrap()),
                format!("{failed:?}"),
                "every waiter sees the one outcome"
            );
        }
        assert!(other.await.unwrap().is_ok());
        // Finished pulls are forgotten: the next launch asks the registry again.
        assert!(pulls.inflight.locked().is_empty());
        let again = slow_pull(&starts, &release, Ok(()));
        let next = tokio::spawn({
            let pulls = Arc::clone(&pulls);
            async move { pulls.join("web:1\nA".into(), again).await }
        });
        while starts.load(SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        release.notify_waiters();
        assert!(next.await.unwrap().is_ok());
    }

    #[test]
    fn progress_counts_layers_and_bytes_as_the_engine_reports_them() {
        let started = std::time::Instant::now();
        let mut t = Tracker::default();
        t.step("1", "Pulling from team/web", None, None);
        t.step("a", "Already exists", None, None);
        t.step("b", "Pulling fs layer", None, None);
        t.step("c", "Waiting", None, None);
        t.step("b", "Downloading", Some(300), Some(1000));
        let p = t.progress("web:1", started);
        assert_eq!((p.layers_done, p.layers_total), (1, 3));
        assert_eq!((p.bytes_done, p.bytes_total), (300, 1000));
        t.step("b", "Download complete", None, None);
        t.step("c", "Downloading", Some(50), Some(500));
        t.step("b", "Extracting", Some(10), Some(1000));
        t.step("b", "Pull complete", None, None);
        let p = t.progress("web:1", started);
        assert_eq!((p.layers_done, p.layers_total), (2, 3));
        assert_eq!((p.bytes_done, p.bytes_total), (1050, 1500));
        // A hostile engine cannot make done exceed total.
        t.step("c", "Downloading", Some(i64::MAX), Some(-5));
        let p = t.progress("web:1", started);
        assert_eq!((p.bytes_done, p.bytes_total), (1500, 1500));
    }

    #[test]
    fn credentials_never_print_their_password() {
        let c = Credentials {
            username: "ci".into(),
            password: "hunter2hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
