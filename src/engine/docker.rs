//! The Docker engine through bollard: the only file in the crate that speaks the Docker API.
//!
//! Everything bollard returns is translated here into the domain types of [`super`], and every
//! bollard error goes through [`classify`], so the rest of the crate decides on
//! [`EngineError`] variants and never on HTTP status codes.
//!
//! # Layout
//! - This file: [`DockerEngine`], the [`Engine`] trait over bollard, [`classify`].
//! - [`endpoint`]: the address of a zone's engine (schemes, TLS, Docker's variables).
//! - [`tls`]: the certificate files of a TLS zone and the rustls client.
//! - [`pull`]: image pulls (policy, one pull per engine and image, registry credentials).

pub mod attach;
pub mod endpoint;
pub mod pull;
pub mod tls;

use std::sync::Arc;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::util::unpoisoned::LockExt;

use async_trait::async_trait;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, EventMessage, HostConfig,
    PortBinding, PortMap,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder, StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;

use endpoint::{Endpoint, Transport};

use crate::manifest::ImagePullPolicy;

use super::{
    ContainerSpec, ContainerState, Engine, EngineError, EngineEvent, EngineIdentity, EventKind,
    ExecOutcome, Health, Observed, Result, StatsSample, Transition,
};

/// Socket used when neither an address nor `DOCKER_HOST` is given.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// Seconds a plain request may take before it counts as an unreachable engine. Generous, because
/// a busy engine can take seconds to create a container; the stop call adds its grace on top.
const REQUEST_TIMEOUT_SECS: u64 = 30;

/// The image of marker containers (leases): an empty file system, imported by microscaler
/// itself on first use, so no registry is ever needed. Markers are never started.
pub const MARKER_IMAGE: &str = "microscaler/marker:1";

/// Event attributes Docker adds itself; every other attribute is one of the container's labels.
const NON_LABEL_ATTRIBUTES: &[&str] = &[
    "name",
    "image",
    "exitCode",
    "signal",
    "execDuration",
    "execID",
    "container",
    "driver",
    "destination",
    "propagation",
    "read/write",
    "type",
];

/// A connection to one Docker engine (one availability zone). Cheap to clone.
#[derive(Clone, Debug)]
pub struct DockerEngine {
    /// The bollard client, with the API version negotiated down to the engine's.
    docker: Docker,
    /// The address we connected to, for messages.
    host: String,
    /// CPUs of the engine's host: an instance type asking for more (m1.xlarge's 4 on a 2-core
    /// machine) is capped to it, since Docker refuses a `NanoCpus` above the host's CPUs.
    host_cpus: Option<i64>,
    /// Pulls in flight on this engine, shared by every launch waiting for the same image.
    pulls: Arc<pull::Pulls>,
    /// Registry credentials for pulls (anonymous when `None`).
    auth: Option<Arc<dyn pull::RegistryAuth>>,
    /// Image IDs by reference, for the launch hot path (one image inspect per reference, not
    /// per launch); a pull of the reference forgets it, since the tag may have moved.
    image_ids: Arc<std::sync::Mutex<HashMap<String, String>>>,
}

impl DockerEngine {
    /// Connects to `docker_host` (`unix:///path`, a bare socket path, or `tcp://127.0.0.1:port`);
    /// `None` means the default zone's engine ([`Endpoint::from_env`]). Negotiates the API
    /// version, so this talks to the engine once.
    ///
    /// # Errors
    /// As [`DockerEngine::connect_endpoint`].
    pub async fn connect(docker_host: Option<&str>) -> Result<DockerEngine> {
        let endpoint =
            Endpoint::new(docker_host, None).map_err(|e| EngineError::Other(e.to_string()))?;
        DockerEngine::connect_endpoint(&endpoint).await
    }

    /// Connects to an engine over its socket, plain TCP on loopback, or TCP with TLS.
    ///
    /// # Errors
    /// [`EngineError::Unreachable`] when the socket is missing, the engine does not answer or
    /// refuses our TLS handshake (wrong CA, no client certificate); [`EngineError::Other`] for
    /// an address we do not support or unreadable certificate files.
    pub async fn connect_endpoint(endpoint: &Endpoint) -> Result<DockerEngine> {
        let host = endpoint.host.clone();
        let transport = endpoint
            .transport()
            .map_err(|e| EngineError::Other(e.to_string()))?;
        let docker = match transport {
            Transport::Unix(path) => {
                Docker::connect_with_unix(&path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
                    .map_err(|e| with_host(classify(e), &host))?
            }
            Transport::Tcp(addr) => {
                Docker::connect_with_http(&addr, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
                    .map_err(|e| with_host(classify(e), &host))?
            }
            Transport::Tls(addr, files) => tls::connect(&addr, &files, REQUEST_TIMEOUT_SECS)
                .map_err(|e| EngineError::Other(format!("{host}: {e}")))?,
        };
        // bollard speaks a newer API than the engines we meet (20.10 speaks 1.41); without this
        // every request would be refused as "client version too new".
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| with_host(classify(e), &host))?;
        let host_cpus = docker
            .info()
            .await
            .ok()
            .and_then(|i| i.ncpu)
            .filter(|n| *n > 0);
        Ok(DockerEngine {
            docker,
            host,
            host_cpus,
            pulls: Arc::default(),
            auth: None,
            image_ids: Arc::default(),
        })
    }

    /// Pulls with these registry credentials.
    pub fn with_registry_auth(mut self, auth: Arc<dyn pull::RegistryAuth>) -> DockerEngine {
        self.auth = Some(auth);
        self
    }

    /// Pulls `spec`'s image with the credentials of its namespace.
    async fn pull(&self, spec: &ContainerSpec) -> Result<()> {
        let namespace = spec
            .labels
            .get(super::labels::NAMESPACE)
            .map(String::as_str)
            .unwrap_or("default");
        let credentials = match &self.auth {
            Some(auth) => auth
                .credentials(namespace, pull::registry_of(&spec.image))
                .map_err(|e| EngineError::Other(format!("cannot pull `{}`: {e}", spec.image)))?,
            None => None,
        };
        let pulled = self
            .pulls
            .pull(&self.docker, &self.host, &spec.image, credentials)
            .await;
        self.image_ids.locked().remove(&spec.image);
        pulled
    }

    /// The ID of the image `reference` names on this engine (cached); `None` if the engine
    /// does not say (the next list fills it in).
    async fn image_id(&self, reference: &str) -> Option<String> {
        if let Some(id) = self.image_ids.locked().get(reference) {
            return Some(id.clone());
        }
        let id = self.docker.inspect_image(reference).await.ok()?.id?;
        self.image_ids
            .locked()
            .insert(reference.to_string(), id.clone());
        Some(id)
    }

    /// Imports [`MARKER_IMAGE`] (an empty tar archive) unless the engine has it.
    async fn ensure_marker_image(&self) -> Result<()> {
        match self.docker.inspect_image(MARKER_IMAGE).await {
            Ok(_) => return Ok(()),
            Err(e) => match classify(e) {
                EngineError::NotFound(_) => {}
                e => return Err(with_host(e, &self.host)),
            },
        }
        let (repo, tag) = MARKER_IMAGE.split_once(':').expect("name:tag");
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .build();
        // An empty tar archive: two zero blocks.
        let empty = bytes::Bytes::from(vec![0u8; 1024]);
        let mut progress =
            self.docker
                .create_image(Some(options), Some(bollard::body_full(empty)), None);
        while let Some(step) = progress.next().await {
            step.map_err(|e| with_host(classify(e), &self.host))?;
        }
        Ok(())
    }

    /// The address this engine was reached at.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The API version in use after negotiation, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }
}

/// Adds the engine address to an unreachable error, since "connection refused" alone does not say
/// which zone is down.
fn with_host(err: EngineError, host: &str) -> EngineError {
    match err {
        EngineError::Unreachable(m) => EngineError::Unreachable(format!("{host}: {m}")),
        other => other,
    }
}

/// The one place bollard errors become [`EngineError`]s.
///
/// 404 → `NotFound` and 409 → `Conflict`, each carrying the engine's own message (such as
/// "No such image: foo:latest"); connection, I/O and timeout failures → `Unreachable`; the
/// rest → `Other`.
pub fn classify(err: BollardError) -> EngineError {
    match err {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => EngineError::NotFound(message),
        BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        } => EngineError::Conflict(message),
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => EngineError::Other(format!("engine answered {status_code}: {message}")),
        e @ (BollardError::RequestTimeoutError
        | BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::SocketNotFoundError(_)) => EngineError::Unreachable(with_sources(&e)),
        e => EngineError::Other(e.to_string()),
    }
}

/// An error and its causes on one line: a refused TLS handshake is only in the causes
/// ("client error (Connect): invalid peer certificate: UnknownIssuer").
fn with_sources(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Docker filter map from `key=value` label pairs.
fn label_filters(filter: &[(String, String)]) -> HashMap<String, Vec<String>> {
    let mut filters = HashMap::new();
    if !filter.is_empty() {
        filters.insert(
            "label".to_string(),
            filter.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
    }
    filters
}

/// Health from the `Status` text of a list entry ("Up 3 seconds (healthy)"), the only place the
/// list endpoint of API 1.41 carries it.
fn health_from_status(status: &str) -> Option<Health> {
    // "(unhealthy)" contains "healthy)", so test it first.
    if status.contains("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if status.contains("(healthy)") {
        Some(Health::Healthy)
    } else if status.contains("(health: starting)") {
        Some(Health::Starting)
    } else {
        None
    }
}

/// Parses a Docker timestamp; Docker's "never" is the zero time `0001-01-01T00:00:00Z`.
fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s?).ok()?.with_timezone(&Utc);
    (t.timestamp() > 0).then_some(t)
}

fn observed_from_summary(c: ContainerSummary) -> Observed {
    let name = c
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default();
    let mut ports: Vec<String> = c
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let public = p.public_port?;
            let ip = p.ip.unwrap_or_else(|| "0.0.0.0".to_string());
            let proto = p.typ.map(|t| t.to_string()).unwrap_or_else(|| "tcp".into());
            Some(format!("{ip}:{public}->{}/{proto}", p.private_port))
        })
        .collect();
    ports.sort();
    ports.dedup();
    Observed {
        id: c.id.unwrap_or_default(),
        name,
        labels: c.labels.unwrap_or_default().into_iter().collect(),
        state: ContainerState::parse(c.state.as_ref().map(|s| s.as_ref()).unwrap_or("")),
        health: c.status.as_deref().and_then(health_from_status),
        created: c
            .created
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .unwrap_or_default(),
        started_at: None,
        ports,
        exit_code: None,
        image_id: c.image_id.filter(|i| !i.is_empty()),
    }
}

/// `127.0.0.1:32768->8080/tcp` strings from an inspect port map.
fn ports_from_map(map: Option<&PortMap>) -> Vec<String> {
    let mut ports: Vec<String> = map
        .into_iter()
        .flatten()
        .flat_map(|(inner, bindings)| {
            bindings.iter().flatten().filter_map(move |b| {
                let port = b.host_port.as_deref().filter(|p| !p.is_empty())?;
                let ip = b
                    .host_ip
                    .as_deref()
                    .filter(|i| !i.is_empty())
                    .unwrap_or("0.0.0.0");
                Some(format!("{ip}:{port}->{inner}"))
            })
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

fn observed_from_inspect(c: ContainerInspectResponse) -> Observed {
    let state = c.state.unwrap_or_default();
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    let health = state
        .health
        .and_then(|h| h.status)
        .and_then(|s| match s.as_ref() {
            "starting" => Some(Health::Starting),
            "healthy" => Some(Health::Healthy),
            "unhealthy" => Some(Health::Unhealthy),
            _ => None,
        });
    let container_state = ContainerState::parse(&status);
    Observed {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        labels: c
            .config
            .and_then(|cfg| cfg.labels)
            .unwrap_or_default()
            .into_iter()
            .collect(),
        state: container_state,
        health,
        created: parse_time(c.created.as_deref()).unwrap_or_default(),
        started_at: parse_time(state.started_at.as_deref()),
        ports: ports_from_map(c.network_settings.and_then(|n| n.ports).as_ref()),
        // Docker reports 0 for a container that never exited; only an exited one has a real code.
        exit_code: if container_state.is_failed() {
            state.exit_code
        } else {
            None
        },
        image_id: c.image.filter(|i| !i.is_empty()),
    }
}

/// Event kind from a Docker action (`die`, `health_status: healthy`, ...).
fn event_kind(action: &str) -> EventKind {
    match action {
        "create" => EventKind::Create,
        "start" => EventKind::Start,
        "die" => EventKind::Die,
        "kill" => EventKind::Kill,
        "oom" => EventKind::Oom,
        "stop" => EventKind::Stop,
        "destroy" => EventKind::Destroy,
        "pause" => EventKind::Pause,
        "unpause" => EventKind::Unpause,
        "rename" => EventKind::Rename,
        a => match a.strip_prefix("health_status:").map(str::trim) {
            Some("healthy") => EventKind::Health(Health::Healthy),
            Some("unhealthy") => EventKind::Health(Health::Unhealthy),
            Some("starting") => EventKind::Health(Health::Starting),
            _ => EventKind::Other,
        },
    }
}

fn event_from_message(m: EventMessage) -> EngineEvent {
    let actor = m.actor.unwrap_or_default();
    let attributes = actor.attributes.unwrap_or_default();
    let exit_code = attributes.get("exitCode").and_then(|c| c.parse().ok());
    let name = attributes.get("name").cloned();
    let labels: BTreeMap<String, String> = attributes
        .into_iter()
        .filter(|(k, _)| k.contains('.') || !NON_LABEL_ATTRIBUTES.contains(&k.as_str()))
        .collect();
    let time = m
        .time_nano
        .map(DateTime::from_timestamp_nanos)
        .or_else(|| m.time.and_then(|s| DateTime::from_timestamp(s, 0)))
        .unwrap_or_else(Utc::now);
    EngineEvent {
        kind: event_kind(m.action.as_deref().unwrap_or("")),
        id: actor.id.unwrap_or_default(),
        name,
        labels,
        exit_code,
        time,
    }
}

/// The create request for a spec: port bindings default to 127.0.0.1 and an ephemeral host port,
/// so nothing is exposed beyond the machine by accident.
fn create_body(spec: &ContainerSpec, host_cpus: Option<i64>) -> ContainerCreateBody {
    let mut bindings: PortMap = HashMap::new();
    for p in &spec.ports {
        let proto = p.protocol.as_deref().unwrap_or("tcp");
        let key = format!("{}/{proto}", p.container_port);
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.clone().unwrap_or_else(|| "127.0.0.1".into())),
                host_port: Some(p.host_port.map(|h| h.to_string()).unwrap_or_default()),
            });
    }
    let mut exposed: Vec<String> = bindings.keys().cloned().collect();
    exposed.sort();
    let host_config = HostConfig {
        nano_cpus: match (spec.nano_cpus, host_cpus) {
            (Some(n), Some(cpus)) => Some(n.min(cpus.saturating_mul(1_000_000_000))),
            (n, _) => n,
        },
        memory: spec.memory_bytes,
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        network_mode: spec.network.clone(),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: (!spec.env.is_empty())
            .then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        hostname: spec.hostname.clone(),
        domainname: spec.domainname.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        stop_timeout: spec.stop_timeout,
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Whole seconds for Docker's stop timeout, rounding a sub-second grace up so it is not zero.
fn grace_secs(grace: Duration) -> i32 {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

#[async_trait]
impl Engine for DockerEngine {
    async fn ping(&self) -> Result<()> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| with_host(classify(e), &self.host))
    }

    async fn list(&self, filter: &[(String, String)]) -> Result<Vec<Observed>> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&label_filters(filter))
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| with_host(classify(e), &self.host))?;
        Ok(list.into_iter().map(observed_from_summary).collect())
    }

    async fn inspect(&self, id: &str) -> Result<Observed> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| with_host(classify(e), &self.host))?;
        Ok(observed_from_inspect(c))
    }

    async fn create_and_start(&self, spec: &ContainerSpec) -> Result<Observed> {
        let options = (!spec.name.is_empty()).then(|| {
            CreateContainerOptionsBuilder::default()
                .name(&spec.name)
                .build()
        });
        if spec.pull_policy == ImagePullPolicy::Always {
            self.pull(spec).await?;
        }
        let began = std::time::Instant::now();
        let create = || async {
            self.docker
                .create_container(options.clone(), create_body(spec, self.host_cpus))
                .await
                .map_err(|e| with_host(classify(e), &self.host))
        };
        let created = match create().await {
            Err(e)
                if spec.pull_policy == ImagePullPolicy::IfNotPresent
                    && pull::is_missing_image(&e) =>
            {
                self.pull(spec).await?;
                create().await?
            }
            r => r?,
        };
        let create_took = began.elapsed();
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            // A container that never ran is debris: remove it so the next attempt starts clean
            // (and the name is free again). Its own failure is secondary to the start error.
            let force = RemoveContainerOptionsBuilder::default().force(true).build();
            if let Err(rm) = self.docker.remove_container(&created.id, Some(force)).await {
                tracing::warn!(id = %created.id, error = %rm, "could not remove a container that failed to start");
            }
            return Err(with_host(classify(e), &self.host));
        }
        tracing::debug!(
            name = %spec.name,
            create_ms = create_took.as_secs_f64() * 1000.0,
            start_ms = (began.elapsed() - create_took).as_secs_f64() * 1000.0,
            "container created and started"
        );
        if !spec.ports.is_empty() {
            // Ephemeral host ports are only known after start; one inspect is worth it then.
            return self.inspect(&created.id).await;
        }
        // The hot path (self-heal): no second round trip, we know what we just created.
        let image_id = self.image_id(&spec.image).await;
        let now = Utc::now();
        Ok(Observed {
            id: created.id,
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            state: ContainerState::Running,
            health: None,
            created: now,
            started_at: Some(now),
            ports: Vec::new(),
            exit_code: None,
            image_id,
        })
    }

    async fn remove(&self, id: &str, grace: Duration) -> Result<()> {
        let ok_if_gone = |e: BollardError| match classify(e) {
            EngineError::NotFound(_) => Ok(()),
            // Someone else (another pass, a human) is already removing it: same outcome.
            EngineError::Conflict(m) if m.contains("already in progress") => Ok(()),
            e => Err(with_host(e, &self.host)),
        };
        if !grace.is_zero() {
            let t = grace_secs(grace);
            // The stop call answers only after the grace, so it needs a longer timeout.
            let docker = self
                .docker
                .clone()
                .with_timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS).saturating_add(grace));
            let options = StopContainerOptionsBuilder::default().t(t).build();
            if let Err(e) = docker.stop_container(id, Some(options)).await {
                match e {
                    // 304: already stopped; fine, remove below.
                    BollardError::DockerResponseServerError {
                        status_code: 304, ..
                    } => {}
                    e => ok_if_gone(e)?,
                }
            }
        }
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) => ok_if_gone(e),
        }
    }

    async fn events(
        &self,
        filter: &[(String, String)],
    ) -> Result<BoxStream<'static, Result<EngineEvent>>> {
        let mut filters = label_filters(filter);
        filters.insert("type".to_string(), vec!["container".to_string()]);
        // bollard sends the request only when the stream is first polled, which may be well after
        // this call returns. `since` = now makes the subscription start here anyway: the engine
        // replays from its event buffer whatever happened in between, so nothing done after
        // `events()` returns is missed.
        let now = Utc::now();
        let since = format!("{}.{:09}", now.timestamp(), now.timestamp_subsec_nanos());
        let options = EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        let host = self.host.clone();
        let mut stream = self
            .docker
            .events(Some(options))
            .map(move |item| {
                item.map(event_from_message)
                    .map_err(|e| with_host(classify(e), &host))
            })
            .boxed();
        // A short first poll surfaces a refused connection here rather than on the first read;
        // Docker answers the headers at once and then stays silent until something happens.
        match tokio::time::timeout(Duration::from_millis(100), stream.next()).await {
            Ok(Some(Err(e))) => Err(e),
            Ok(Some(Ok(ev))) => Ok(futures::stream::once(async { Ok(ev) })
                .chain(stream)
                .boxed()),
            Ok(None) => Err(EngineError::Unreachable(format!(
                "{}: event stream closed at once",
                self.host
            ))),
            Err(_still_waiting) => Ok(stream),
        }
    }

    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| with_host(classify(e), &self.host))?;
            out.extend_from_slice(&chunk.into_bytes());
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn create_marker(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Observed> {
        self.ensure_marker_image().await?;
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let body = ContainerCreateBody {
            image: Some(MARKER_IMAGE.to_string()),
            // Never run; Docker wants a command all the same.
            cmd: Some(vec!["microscaler-marker".to_string()]),
            labels: Some(labels.clone().into_iter().collect()),
            network_disabled: Some(true),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| with_host(classify(e), &self.host))?;
        self.inspect(&created.id).await
    }

    async fn transition(&self, id: &str, t: Transition) -> Result<()> {
        let res = match t {
            Transition::Pause => self.docker.pause_container(id).await,
            Transition::Unpause => self.docker.unpause_container(id).await,
            Transition::Start => self.docker.start_container(id, None).await,
            Transition::Stop(grace) => {
                let docker = self
                    .docker
                    .clone()
                    .with_timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS).saturating_add(grace));
                let options = StopContainerOptionsBuilder::default()
                    .t(grace_secs(grace))
                    .build();
                docker.stop_container(id, Some(options)).await
            }
        };
        match res {
            // 304: already started / stopped.
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            r => match r.map_err(classify) {
                // Already (un)paused: the wanted state.
                Err(EngineError::Conflict(m))
                    if (t == Transition::Pause && m.contains("already paused"))
                        || (t == Transition::Unpause && m.contains("not paused")) =>
                {
                    Ok(())
                }
                r => r.map_err(|e| with_host(e, &self.host)),
            },
        }
    }

    async fn rename(&self, id: &str, name: &str) -> Result<()> {
        let options = RenameContainerOptionsBuilder::default().name(name).build();
        self.docker
            .rename_container(id, options)
            .await
            .map_err(|e| with_host(classify(e), &self.host))
    }

    async fn identity(&self) -> Result<EngineIdentity> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| with_host(classify(e), &self.host))?;
        Ok(EngineIdentity {
            id: info.id.unwrap_or_default(),
            name: info.name.unwrap_or_default(),
            root_dir: info.docker_root_dir.unwrap_or_default(),
        })
    }

    async fn exec_wait(&self, id: &str, cmd: &[String], keep: usize) -> Result<ExecOutcome> {
        let (exec_id, mut output) = self.exec(id, cmd.to_vec()).await?;
        let mut tail: Vec<u8> = Vec::new();
        while let Some(item) = output.next().await {
            let (_, chunk) = item?;
            tail.extend_from_slice(&chunk);
            if tail.len() > keep {
                tail.drain(..tail.len() - keep);
            }
        }
        // The exit code is set a moment after the output ends.
        let mut exit_code = None;
        for _ in 0..50 {
            exit_code = self.exec_exit_code(&exec_id).await?;
            if exit_code.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(ExecOutcome {
            exit_code,
            output: String::from_utf8_lossy(&tail).into_owned(),
        })
    }

    async fn ensure_image(&self, spec: &ContainerSpec) -> Result<()> {
        match spec.pull_policy {
            ImagePullPolicy::Never => Ok(()),
            ImagePullPolicy::Always => self.pull(spec).await,
            ImagePullPolicy::IfNotPresent => match self.docker.inspect_image(&spec.image).await {
                Ok(_) => Ok(()),
                Err(e) => match with_host(classify(e), &self.host) {
                    EngineError::NotFound(_) => self.pull(spec).await,
                    other => Err(other),
                },
            },
        }
    }

    fn pulls(&self) -> Vec<pull::PullProgress> {
        self.pulls.in_flight()
    }

    async fn stats(&self, id: &str) -> Result<StatsSample> {
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = self.docker.stats(id, Some(options));
        let s = match stream.next().await {
            Some(s) => s.map_err(|e| with_host(classify(e), &self.host))?,
            None => {
                return Err(EngineError::Other(format!(
                    "{}: no stats sample for {id}",
                    self.host
                )))
            }
        };
        let cpu = s.cpu_stats.unwrap_or_default();
        let mem = s.memory_stats.unwrap_or_default();
        let usage = mem.usage.unwrap_or(0);
        // What `docker stats` shows: page cache is reclaimable, so it does not count as used.
        // cgroup v1 names it total_inactive_file, v2 inactive_file; older engines only cache.
        let cache = mem
            .stats
            .as_ref()
            .and_then(|st| {
                st.get("total_inactive_file")
                    .or_else(|| st.get("inactive_file"))
                    .or_else(|| st.get("cache"))
                    .copied()
            })
            .unwrap_or(0);
        Ok(StatsSample {
            cpu_total_ns: cpu.cpu_usage.and_then(|u| u.total_usage).unwrap_or(0),
            system_cpu_ns: cpu.system_cpu_usage.unwrap_or(0),
            online_cpus: cpu.online_cpus.unwrap_or(0),
            memory_used_bytes: usage.saturating_sub(cache),
            memory_limit_bytes: mem.limit.unwrap_or(0),
        })
    }
}

/// Which stream of a container a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Output of a container or of a command run in it, chunk by chunk as the engine sends it.
pub type Output = BoxStream<'static, Result<(OutputStream, bytes::Bytes)>>;

fn output_chunk(
    host: &str,
    item: std::result::Result<bollard::container::LogOutput, BollardError>,
) -> Result<(OutputStream, bytes::Bytes)> {
    use bollard::container::LogOutput;
    match item {
        Ok(LogOutput::StdErr { message }) => Ok((OutputStream::Stderr, message)),
        Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
            Ok((OutputStream::Stdout, message))
        }
        Ok(LogOutput::StdIn { message }) => Ok((OutputStream::Stdout, message)),
        Err(e) => Err(with_host(classify(e), host)),
    }
}

/// Reading output and running commands, for `ms logs` and `ms exec` (not part of [`Engine`]:
/// the reconciler never needs them).
impl DockerEngine {
    /// The output of container `id`: the last `tail` lines (all when `None`), only what was
    /// written at or after `since` (Unix seconds), and, with `follow`, everything it writes
    /// until it stops.
    pub fn output(
        &self,
        id: &str,
        follow: bool,
        since: Option<i64>,
        tail: Option<usize>,
    ) -> Output {
        let mut options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(follow)
            .tail(&tail.map_or_else(|| "all".to_string(), |n| n.to_string()));
        if let Some(s) = since {
            options = options.since(i32::try_from(s).unwrap_or(i32::MAX));
        }
        let host = self.host.clone();
        self.docker
            .logs(id, Some(options.build()))
            .map(move |item| output_chunk(&host, item))
            .boxed()
    }

    /// Runs `cmd` in container `id` (no terminal, no input); returns the exec id (for
    /// [`DockerEngine::exec_exit_code`]) and its output.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] when the container is gone; others as classified.
    pub async fn exec(&self, id: &str, cmd: Vec<String>) -> Result<(String, Output)> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| with_host(classify(e), &self.host))?;
        let started = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| with_host(classify(e), &self.host))?;
        let host = self.host.clone();
        match started {
            StartExecResults::Attached { output, .. } => Ok((
                created.id,
                output.map(move |item| output_chunk(&host, item)).boxed(),
            )),
            StartExecResults::Detached => Ok((created.id, futures::stream::empty().boxed())),
        }
    }

    /// The exit code of a finished exec (`None` while it runs).
    ///
    /// # Errors
    /// As classified.
    pub async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>> {
        let r = self
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| with_host(classify(e), &self.host))?;
        Ok(if r.running == Some(true) {
            None
        } else {
            r.exit_code
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::PortSpec;

    #[test]
    fn unhealthy_is_not_mistaken_for_healthy() {
        assert_eq!(
            health_from_status("Up 2 minutes (unhealthy)"),
            Some(Health::Unhealthy)
        );
        assert_eq!(
            health_from_status("Up 2 minutes (healthy)"),
            Some(Health::Healthy)
        );
        assert_eq!(
            health_from_status("Up 1 second (health: starting)"),
            Some(Health::Starting)
        );
        assert_eq!(health_from_status("Up 2 minutes"), None);
    }

    #[test]
    fn status_codes_are_classified_once() {
        let err = |status_code| BollardError::DockerResponseServerError {
            status_code,
            message: "No such image: foo:latest".into(),
        };
        assert!(
            matches!(classify(err(404)), EngineError::NotFound(m) if m == "No such image: foo:latest")
        );
        assert!(matches!(classify(err(409)), EngineError::Conflict(_)));
        assert!(matches!(classify(err(500)), EngineError::Other(m) if m.contains("500")));
        assert!(matches!(
            classify(BollardError::RequestTimeoutError),
            EngineError::Unreachable(_)
        ));
        assert!(matches!(
            classify(BollardError::SocketNotFoundError("/nope".into())),
            EngineError::Unreachable(_)
        ));
    }

    #[test]
    fn health_actions_become_health_events() {
        assert_eq!(
            event_kind("health_status: unhealthy"),
            EventKind::Health(Health::Unhealthy)
        );
        assert_eq!(event_kind("die"), EventKind::Die);
        assert_eq!(event_kind("exec_start: sh"), EventKind::Other);
    }

    #[test]
    fn event_labels_drop_dockers_own_attributes() {
        let mut attributes = HashMap::new();
        attributes.insert("name".to_string(), "web-1".to_string());
        attributes.insert("image".to_string(), "busybox".to_string());
        attributes.insert("exitCode".to_string(), "137".to_string());
        attributes.insert("io.microscaler.group".to_string(), "web".to_string());
        attributes.insert("team".to_string(), "ops".to_string());
        let m = EventMessage {
            action: Some("die".into()),
            actor: Some(bollard::models::EventActor {
                id: Some("abc".into()),
                attributes: Some(attributes),
            }),
            time_nano: Some(1_700_000_000_123_456_789),
            ..Default::default()
        };
        let ev = event_from_message(m);
        assert_eq!(ev.kind, EventKind::Die);
        assert_eq!(ev.exit_code, Some(137));
        assert_eq!(
            ev.labels.keys().collect::<Vec<_>>(),
            vec!["io.microscaler.group", "team"]
        );
        assert_eq!(ev.time.timestamp_subsec_nanos(), 123_456_789);
    }

    #[test]
    fn ports_bind_to_loopback_and_an_ephemeral_port_by_default() {
        let spec = ContainerSpec {
            image: "img".into(),
            ports: vec![PortSpec {
                container_port: 8080,
                host_port: None,
                host_ip: None,
                protocol: None,
            }],
            ..Default::default()
        };
        let body = create_body(&spec, None);
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        let b = &bindings["8080/tcp"].as_ref().unwrap()[0];
        assert_eq!(b.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b.host_port.as_deref(), Some(""));
        assert_eq!(body.exposed_ports, Some(vec!["8080/tcp".to_string()]));
    }

    #[test]
    fn sub_second_grace_rounds_up() {
        assert_eq!(grace_secs(Duration::from_millis(200)), 1);
        assert_eq!(grace_secs(Duration::from_secs(10)), 10);
    }

    #[test]
    fn docker_zero_time_means_never() {
        assert_eq!(parse_time(Some("0001-01-01T00:00:00Z")), None);
        assert!(parse_time(Some("2024-05-01T10:00:00.123456789Z")).is_some());
    }
}
