//! The HTTP apply/read endpoint: `ms apply` and `ms get` talk to this, and it writes only files.
//!
//! The endpoint never changes the running state directly: an apply, delete, scale, start or stop
//! edits the manifest files in the watched directory and asks the watcher to rescan, so the
//! directory stays the single source of truth and `git diff` shows every change an API call made.
//! All validation happens before the first write: a request with one bad document writes nothing.
//!
//! # Layout
//! The root of the HTTP API, beside the pipeline: it reads every stage and writes only files.
//! - This file: [`Context`], what the API is handed.
//! - [`router`](mod@router): every route ([`router()`]), `/healthz`, `/readyz`, [`serve()`].
//! - [`auth`]: bearer tokens → the namespaces a caller may access; rates of changes and pushes.
//! - [`read`]: the read routes (groups, launch configurations, policies, instances, problems).
//! - [`mod@write`]: the write routes (apply, delete, scale, start, stop) and their wait for the
//!   watcher's load; [`edit`]: the files a change reads, plans over and writes back;
//!   [`write_locks`]: changes serialized per file (and per namespace where a quota is checked).
//! - [`error`]: [`ApiError`], the one error every route answers with.
//! - [`metrics`]: pushed metric values and `/v1/top`; [`prometheus`]: `/metrics`.
//! - [`dashboard`]: the web dashboard at `/` (embedded assets), `/v1/history`, `/v1/whoami`.
//! - [`stream`]: `/v1/watch` (changes as they happen); [`logs`]: instance output and exec;
//!   [`access_log`]: an INFO line per write.
//! - [`mod@serve`]: serving within limits (connections, timeouts, file descriptors).
//! - [`tls`]: the API over TLS (the acceptor from `tls:`, the bounded handshake).
//! - [`ratelimit`]: per-token rates of changes and pushes.
//! - The JSON the client shares lives in [`crate::wire`].

pub mod access_log;
pub mod auth;
pub mod dashboard;
pub mod edit;
pub mod error;
pub mod exec_attach;
pub mod logs;
pub mod metrics;
pub mod prometheus;
pub mod ratelimit;
pub mod read;
pub mod router;
pub mod serve;
pub mod stream;
pub mod tls;
pub mod write;
pub mod write_locks;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::autoscale::Autoscaler;
use crate::config::tenancy::Tenancy;
use crate::config::Config;
use crate::engine::lease::Identity;
use crate::health::liveness::Liveness;
use crate::health::supervise::Health;
use crate::status::sync::WriteProblems;
use crate::status::StatusBoard;
use crate::util::tickets::Tickets;
use crate::watch::prune::{Confirmations, Report};
use crate::watch::store::DesiredReader;
use ratelimit::RateLimiter;
use write_locks::{FileLocks, NamespaceLocks};

pub use auth::{authorized, check_access, check_push};
pub use edit::file_kind;
pub use error::{human_kind, ApiError, ApiResult};
pub use router::{router, serve};

/// What the API is handed by the wiring: the handles it reads (it shows everything), the two it
/// writes to outside the files (deletions confirmed by name, rescans), and its own limits.
pub struct Context {
    /// Tokens, `api:` limits, the watched directory, where the configuration came from.
    pub config: Arc<Config>,
    /// The latest desired-state snapshot.
    pub desired: DesiredReader,
    /// Each group's latest status.
    pub status: Arc<StatusBoard>,
    /// Each load balancer's latest status (members and their state).
    pub lb_status: Arc<crate::lb::LbBoard>,
    /// Manifests whose status cannot be written, and why.
    pub status_problems: WriteProblems,
    /// Set once the first full load of the directory is done (`/readyz`; a write waits for the
    /// reload that follows it only from then on).
    pub ready: Arc<AtomicBool>,
    /// Asks the watcher to rescan now, after a write.
    pub rescan: Arc<Notify>,
    /// The watcher's loads, when a watcher runs: a write waits for the first load that began
    /// after it. `None` (the desired state fed by the caller): for the next snapshot.
    pub loads: Option<Arc<Tickets>>,
    /// Deletions confirmed by name (`ms delete`).
    pub confirmations: Arc<Confirmations>,
    /// Groups on the engines whose deletion the reconciler holds or keeps failing at.
    pub prune_report: Arc<Report>,
    /// Set when an essential task ended (`/readyz`).
    pub health: Arc<Health>,
    /// The loops' heartbeats and checks (`/healthz`).
    pub liveness: Arc<Liveness>,
    /// Per-namespace limits (quotas, host access, pushed metric names).
    pub tenancy: Arc<Tenancy>,
    /// Pushed metric values go to it; `/v1/top` reads it.
    pub autoscaler: Arc<Autoscaler>,
    /// This controller's lease identity (`GET /lease`, read by a controller taking over).
    pub lease: Option<Identity>,
    /// Changes per token (`api.writesPerSecond`).
    pub write_limit: RateLimiter,
    /// Pushed metric values per token (`api.pushesPerSecond`).
    pub push_limit: RateLimiter,
    /// Changes that check a namespace quota, serialized per namespace.
    pub write_locks: NamespaceLocks,
    /// The API's file edits, serialized per file.
    pub file_locks: FileLocks,
    /// The counters and latencies the stages record, served at `/metrics`.
    pub telemetry: Arc<crate::health::telemetry::Telemetry>,
    /// Each group's capacity and metrics over time (`/v1/history`, the dashboard's charts).
    pub history: Arc<crate::status::history::History>,
    /// Attached exec sessions open per namespace (`ms exec -i/-t`).
    pub exec_sessions: Arc<exec_attach::Sessions>,
}
