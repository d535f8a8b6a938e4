//! The HTTP apply/read endpoint: `ms apply` and `ms get` talk to this, and it writes only files.
//!
//! The endpoint never changes the running state directly: an apply, delete, scale, start or stop
//! edits the manifest files in the watched directory and asks the watcher to rescan, so the
//! directory stays the single source of truth and `git diff` shows every change an API call made.
//! All validation happens before the first write: a request with one bad document writes nothing.
//!
//! # Layout
//! The root of the HTTP API, beside the pipeline: it reads every stage and writes only files.
//! - This file: [`Context`] (what the API is handed), [`router`] (every route), the handlers:
//!   authentication, reads, writes.
//! - [`metrics`]: pushed metric values and `/v1/top`; [`prometheus`]: `/metrics`.
//! - [`stream`]: `/v1/watch` (changes as they happen); [`logs`]: instance output and exec;
//!   [`access_log`]: an INFO line per write.
//! - [`mod@serve`]: serving within limits (connections, timeouts, file descriptors).
//! - [`ratelimit`]: per-token rates of changes and pushes; [`write_locks`]: edits serialized per
//!   namespace.
//! - The JSON the client shares lives in [`crate::wire`].

pub mod access_log;
pub mod logs;
pub mod metrics;
pub mod prometheus;
pub mod ratelimit;
pub mod serve;
pub mod stream;
pub mod write_locks;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::autoscale::Autoscaler;
use crate::config::tenancy::Tenancy;
use crate::config::Config;
use crate::engine::lease::Identity;
use crate::health::liveness::Liveness;
use crate::health::supervise::Health;
use crate::manifest::yamldoc;
use crate::manifest::{parse_file_checked, Kind, ManifestError, Object, ObjectKey};
use crate::status::sync::WriteProblems;
use crate::status::StatusBoard;
use crate::util::unpoisoned::RwLockExt;
use crate::watch::prune::{Confirmations, Report};
use crate::watch::store::DesiredReader;
use crate::watch::store::{Desired, Entry};
use crate::wire::{ChangeResponse, ObjectResult, ScaleRequest, FILENAME_HEADER};
use ratelimit::RateLimiter;
use std::sync::atomic::AtomicBool;
use tokio::sync::Notify;
use write_locks::NamespaceLocks;

/// Name used in errors when the client did not say which file it sent.
const REQUEST_FILE: &str = "<request>";

/// How many times a write is retried when another writer (the status writer) changed the file
/// between our read and our write.
const WRITE_ATTEMPTS: usize = 5;

/// An API error: a status code and one clear line, plus manifest errors for a rejected apply.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub errors: Vec<ManifestError>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            errors: Vec::new(),
        }
    }
    fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    fn not_found(kind: Kind, namespace: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!(
                "{} `{name}` not found in namespace `{namespace}`",
                human_kind(kind)
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The kind as a user says it in a sentence.
pub fn human_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::LaunchConfiguration => "launch configuration",
        Kind::AutoScalingGroup => "autoscaling group",
        Kind::ScalingPolicy => "scaling policy",
    }
}

/// The kind as it appears in file names created by apply (`autoscaling-group-web.yaml`).
pub fn file_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::LaunchConfiguration => "launch-configuration",
        Kind::AutoScalingGroup => "autoscaling-group",
        Kind::ScalingPolicy => "scaling-policy",
    }
}

/// What the API is handed by the wiring: the handles it reads (it shows everything), the two it
/// writes to outside the files (deletions confirmed by name, rescans), and its own limits.
pub struct Context {
    /// Tokens, `api:` limits, the watched directory, where the configuration came from.
    pub config: Arc<Config>,
    /// The latest desired-state snapshot.
    pub desired: DesiredReader,
    /// Each group's latest status.
    pub status: Arc<StatusBoard>,
    /// Manifests whose status cannot be written, and why.
    pub status_problems: WriteProblems,
    /// Set once the first full load of the directory is done (`/readyz`; a write waits for the
    /// reload that follows it only from then on).
    pub ready: Arc<AtomicBool>,
    /// Asks the watcher to rescan now, after a write.
    pub rescan: Arc<Notify>,
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
    /// The API's file edits, serialized per namespace.
    pub write_locks: NamespaceLocks,
}

/// The router of the endpoint. Every `/v1/*` route checks the bearer token itself.
pub fn router(ctx: Arc<Context>) -> Router {
    let lease = ctx
        .lease
        .as_ref()
        .map(|me| json!({ "holder": me.holder, "controllerName": me.controller }));
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/apply", post(apply))
        .route("/v1/asgs", get(list_groups))
        .route("/v1/asgs/{ns}/{name}", get(get_group))
        .route("/v1/asgs/{ns}/{name}/scale", post(scale))
        .route("/v1/asgs/{ns}/{name}/start", post(start))
        .route("/v1/asgs/{ns}/{name}/stop", post(stop))
        .route("/v1/lcs", get(list_lcs))
        .route("/v1/lcs/{ns}/{name}", get(get_lc))
        .route("/v1/policies", get(list_policies))
        .route("/v1/policies/{ns}/{name}", get(get_policy))
        .route("/v1/instances", get(list_instances))
        .route("/v1/problems", get(problems))
        .route("/v1/instancetypes", get(instance_types))
        .route("/v1/{kind}/{ns}/{name}", delete(delete_object))
        .route("/v1/metrics/{ns}/{group}", post(metrics::push))
        .route("/v1/top", get(metrics::top))
        .route("/v1/logs/{ns}/{name}", get(logs::instance_logs))
        .route("/v1/logs/{ns}/asg/{group}", get(logs::group_logs))
        .route("/v1/exec/{ns}/{name}", post(logs::exec))
        .merge(stream::routes(&ctx))
        .merge(prometheus::routes(&ctx));
    // `GET /lease`: this controller's holder id, so a contender on another machine can tell
    // that the holder of a lease still runs (only a controller that holds leases has one).
    let router = match lease {
        Some(body) => router.route(
            "/lease",
            get(move || {
                let body = body.clone();
                async move { Json(body) }
            }),
        ),
        None => router,
    };
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn(access_log::log_writes))
        .with_state(ctx)
}

/// Serves the endpoint on `listener` until `shutdown` completes (tests bind `127.0.0.1:0`).
///
/// # Errors
/// Only I/O errors of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = serve::ConnLimits::new(&ctx.config.api, serve::fd_limit());
    serve::serve(listener, router(ctx), limits, shutdown).await
}

/// Checks the request carries a known token (when tokens are configured), for read routes
/// defined in other modules.
///
/// # Errors
/// 401 without a known token.
pub fn authorized(ctx: &Context, headers: &HeaderMap) -> ApiResult<()> {
    authorize(ctx, headers).map(|_| ())
}

/// Checks the request's bearer token for `namespace`, as every `/v1/*` route does (for routes
/// defined in other modules).
///
/// # Errors
/// 401 without a known token, 403 when the token may not access `namespace`.
pub fn check_access(ctx: &Context, headers: &HeaderMap, namespace: &str) -> ApiResult<()> {
    authorize(ctx, headers)?.check(namespace)
}

/// Ok while every loop of the controller makes progress (the watcher, each zone's observer,
/// the autoscaler, the reconcile queue); 503 naming the one that does not.
async fn healthz(State(ctx): State<Arc<Context>>) -> Response {
    let report = ctx.liveness.report();
    let mut body = if report.live { "ok\n" } else { "not live\n" }.to_string();
    for line in &report.lines {
        body.push_str(line);
        body.push('\n');
    }
    let status = if report.live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    if let Some(why) = ctx.health.failure() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response();
    }
    if ctx.ready.load(std::sync::atomic::Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the manifest directory is not loaded yet",
        )
            .into_response()
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// What the caller's token may see and change.
#[derive(Debug, Clone)]
enum Access {
    /// No tokens configured (loopback only), or a `*` token.
    All,
    Namespaces(Vec<String>),
}

impl Access {
    fn allows(&self, namespace: &str) -> bool {
        match self {
            Access::All => true,
            Access::Namespaces(ns) => ns.iter().any(|n| n == namespace),
        }
    }

    fn check(&self, namespace: &str) -> ApiResult<()> {
        if self.allows(namespace) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this token may not access namespace `{namespace}`"),
            ))
        }
    }
}

/// The configured token equal to `presented`, if any. Both sides are hashed first and every
/// token is compared in full, so neither the time taken nor an early exit reveals how much of
/// a token matched or how long it is.
fn find_token<'a>(
    tokens: &'a [crate::config::TokenConfig],
    presented: &str,
) -> Option<(usize, &'a crate::config::TokenConfig)> {
    use sha2::{Digest, Sha256};
    let p = Sha256::digest(presented.as_bytes());
    let mut found = None;
    for (i, t) in tokens.iter().enumerate() {
        let d = Sha256::digest(t.token.as_bytes());
        let diff = d
            .iter()
            .zip(p.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 && found.is_none() {
            found = Some((i, t));
        }
    }
    found
}

/// Checks the bearer token; returns what it may access and the caller's key for rate limits.
fn authenticate(ctx: &Context, headers: &HeaderMap) -> ApiResult<(Access, String)> {
    if ctx.config.tokens.is_empty() {
        return Ok((Access::All, "anonymous".to_string()));
    }
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("a bearer token is required (ms login --token ...)"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
    let (index, config) =
        find_token(&ctx.config.tokens, token).ok_or_else(|| unauthorized("unknown token"))?;
    let access = if config.namespaces.iter().any(|n| n == "*") {
        Access::All
    } else {
        Access::Namespaces(config.namespaces.clone())
    };
    Ok((access, format!("token {index}")))
}

fn authorize(ctx: &Context, headers: &HeaderMap) -> ApiResult<Access> {
    authenticate(ctx, headers).map(|(access, _)| access)
}

/// Where a setting of the controller configuration lives, for messages.
fn config_file(ctx: &Context) -> String {
    ctx.config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the controller configuration (ms controller --config FILE)".into())
}

/// Request bytes that cost one write permit: a 1 MiB apply costs 16 (the watcher re-reads
/// what an apply writes, for every tenant, so size is what loads the controller).
const BYTES_PER_WRITE_PERMIT: usize = 64 * 1024;

/// [`authorize`] for a change of `bytes` bytes: also takes permits of the caller's write rate.
fn authorize_write(ctx: &Context, headers: &HeaderMap, bytes: usize) -> ApiResult<Access> {
    let (access, caller) = authenticate(ctx, headers)?;
    let permits = u32::try_from(1 + bytes / BYTES_PER_WRITE_PERMIT).unwrap_or(u32::MAX);
    ctx.write_limit.take_n(&caller, permits).map_err(|wait| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many changes from this token: at most {} per second, {} at once, a change costing one per 64 KiB (api.writesPerSecond, api.writeBurst in {}); try again in {:.1}s",
                ctx.config.api.writes_per_second,
                ctx.config.api.write_burst,
                config_file(ctx),
                wait.as_secs_f64()
            ),
        )
    })?;
    Ok(access)
}

/// Checks the token for pushing a metric value to `namespace`, and the caller's push rate.
///
/// # Errors
/// 401/403 as [`check_access`]; 429 when the token pushes faster than `api.pushesPerSecond`.
pub fn check_push(ctx: &Context, headers: &HeaderMap, namespace: &str) -> ApiResult<()> {
    let (access, caller) = authenticate(ctx, headers)?;
    access.check(namespace)?;
    ctx.push_limit.take(&caller).map_err(|wait| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many metric values from this token: at most {} per second, {} at once (api.pushesPerSecond, api.pushBurst in {}); try again in {:.1}s",
                ctx.config.api.pushes_per_second,
                ctx.config.api.push_burst,
                config_file(ctx),
                wait.as_secs_f64()
            ),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Reads

fn snapshot(ctx: &Context) -> Arc<Desired> {
    ctx.desired.borrow().clone()
}

/// Query of the list endpoints.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    namespace: Option<String>,
    group: Option<String>,
}

/// One object as the read endpoints return it.
fn item(ctx: &Context, desired: &Desired, key: &ObjectKey, entry: &Entry) -> Value {
    let mut v = serde_json::to_value(&entry.object).unwrap_or(Value::Null);
    let status = if key.kind == Kind::AutoScalingGroup {
        let mut status = ctx
            .status
            .read_locked()
            .get(key)
            .map(|st| json!(st))
            .unwrap_or(Value::Null);
        // A file that cannot take its status shows as a condition of each group in it.
        if let Some(problem) = ctx.status_problems.get(&entry.file) {
            if !status.is_object() {
                status = json!({});
            }
            let conditions = &mut status["conditions"];
            if !conditions.is_array() {
                *conditions = json!([]);
            }
            if let Value::Array(list) = conditions {
                list.push(json!(problem.condition()));
            }
        }
        status
    } else {
        Value::Null
    };
    if let Value::Object(map) = &mut v {
        map.insert("status".into(), status);
        map.insert(
            "source".into(),
            json!({ "file": entry.file, "line": entry.line }),
        );
        map.insert("firstSeen".into(), json!(entry.first_seen));
        map.insert("errors".into(), json!(desired.errors_for(key)));
        map.insert("warnings".into(), json!(entry.warnings));
    }
    v
}

fn list_kind(
    ctx: &Context,
    headers: &HeaderMap,
    query: &ListQuery,
    kind: Kind,
) -> ApiResult<Json<Value>> {
    let access = authorize(ctx, headers)?;
    if let Some(ns) = &query.namespace {
        access.check(ns)?;
    }
    let desired = snapshot(ctx);
    let items: Vec<Value> = desired
        .objects
        .iter()
        .filter(|(k, _)| k.kind == kind && access.allows(&k.namespace))
        .filter(|(k, _)| query.namespace.as_ref().is_none_or(|ns| &k.namespace == ns))
        .map(|(k, e)| item(ctx, &desired, k, e))
        .collect();
    Ok(Json(json!({ "items": items })))
}

fn get_one(
    ctx: &Context,
    headers: &HeaderMap,
    kind: Kind,
    ns: &str,
    name: &str,
) -> ApiResult<Json<Value>> {
    let access = authorize(ctx, headers)?;
    access.check(ns)?;
    let desired = snapshot(ctx);
    let key = ObjectKey::new(kind, ns, name);
    let entry = desired
        .objects
        .get(&key)
        .ok_or_else(|| ApiError::not_found(kind, ns, name))?;
    Ok(Json(item(ctx, &desired, &key, entry)))
}

async fn list_groups(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list_kind(&ctx, &headers, &q, Kind::AutoScalingGroup)
}

async fn list_lcs(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list_kind(&ctx, &headers, &q, Kind::LaunchConfiguration)
}

async fn list_policies(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list_kind(&ctx, &headers, &q, Kind::ScalingPolicy)
}

async fn get_group(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    get_one(&ctx, &headers, Kind::AutoScalingGroup, &ns, &name)
}

async fn get_lc(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    get_one(&ctx, &headers, Kind::LaunchConfiguration, &ns, &name)
}

async fn get_policy(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    get_one(&ctx, &headers, Kind::ScalingPolicy, &ns, &name)
}

async fn list_instances(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let access = authorize(&ctx, &headers)?;
    if let Some(ns) = &q.namespace {
        access.check(ns)?;
    }
    let desired = snapshot(&ctx);
    let status = ctx.status.read_locked();
    let mut items = Vec::new();
    for (key, _, _) in desired.groups() {
        if !access.allows(&key.namespace)
            || q.namespace.as_ref().is_some_and(|ns| ns != &key.namespace)
            || q.group.as_ref().is_some_and(|g| g != &key.name)
        {
            continue;
        }
        let Some(st) = status.get(key) else { continue };
        for inst in &st.instances {
            let mut v = json!(inst);
            v["namespace"] = json!(key.namespace);
            v["group"] = json!(key.name);
            items.push(v);
        }
    }
    Ok(Json(json!({ "items": items })))
}

async fn problems(State(ctx): State<Arc<Context>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let access = authorize(&ctx, &headers)?;
    let desired = snapshot(&ctx);
    let dir = &ctx.config.dir;
    // A restricted token sees the errors of files that hold its namespaces' objects or live in
    // its namespaces' directories: enough to debug its own manifests, nothing of others'.
    let visible = |file: &Path| -> bool {
        match &access {
            Access::All => true,
            Access::Namespaces(_) => {
                desired
                    .objects
                    .iter()
                    .any(|(k, e)| e.file == file && access.allows(&k.namespace))
                    || namespace_of_path(dir, file).is_some_and(|ns| access.allows(&ns))
            }
        }
    };
    let file_errors: Vec<&ManifestError> = desired
        .file_errors
        .iter()
        .filter(|(f, _)| visible(f))
        .flat_map(|(_, e)| e)
        .collect();
    let conflicts: Vec<_> = desired
        .conflicts
        .iter()
        .filter(|c| visible(&c.winner) || visible(&c.ignored))
        .collect();
    // Deletions held by the watcher (the group keeps running as last loaded) and by the
    // reconciler (groups on the engines that no manifest defines), each with how to confirm.
    let mut held: Vec<Value> = desired
        .held
        .iter()
        .filter(|(k, _)| access.allows(&k.namespace))
        .map(|(k, message)| {
            json!({
                "namespace": k.namespace,
                "name": k.name,
                "file": desired.objects.get(k).map(|e| &e.file),
                "message": message,
            })
        })
        .collect();
    held.extend(
        ctx.prune_report
            .all()
            .into_iter()
            .filter(|(k, _)| access.allows(&k.namespace) && !desired.held.contains_key(k))
            .map(|(k, message)| {
                json!({
                    "namespace": k.namespace,
                    "name": k.name,
                    "file": Value::Null,
                    "message": message,
                })
            }),
    );
    let status_errors: Vec<_> = ctx
        .status_problems
        .all()
        .into_iter()
        .filter(|p| visible(&p.file))
        .collect();
    Ok(Json(json!({
        "fileErrors": file_errors,
        "conflicts": conflicts,
        "held": held,
        "statusErrors": status_errors,
    })))
}

/// The first directory under the manifest directory, which apply uses as the namespace.
fn namespace_of_path(dir: &Path, file: &Path) -> Option<String> {
    let rel = file
        .strip_prefix(dir)
        .ok()
        .or_else(|| file.strip_prefix(dir.canonicalize().ok()?).ok())?;
    let mut parts = rel.components();
    let first = parts.next()?;
    parts.next()?;
    Some(first.as_os_str().to_string_lossy().into_owned())
}

async fn instance_types(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    authorize(&ctx, &headers)?;
    Ok(Json(
        json!({ "items": crate::manifest::instance_types::INSTANCE_TYPES }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Writes

/// Query of `POST /v1/apply`.
#[derive(Debug, Default, Deserialize)]
struct ApplyQuery {
    #[serde(rename = "dryRun", default)]
    dry_run: bool,
}

/// A file edit computed before anything is written.
#[derive(Debug)]
struct FileEdit {
    /// Content read before the edit (`None`: the file does not exist yet).
    original: Option<String>,
    /// `None`: delete the file.
    content: Option<String>,
}

/// Names that are safe as a path component (validation allows less; this guards the file system).
fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Reads a file, `None` when it does not exist.
fn read_optional(path: &Path) -> ApiResult<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ApiError::internal(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Identity of a document read leniently (the file may currently be invalid), to find where an
/// object lives in a file without trusting a document index that may be stale.
fn document_key(body: &str) -> Option<ObjectKey> {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(body).ok()?;
    let kind = Kind::parse(v.get("kind")?.as_str()?)?;
    let meta = v.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let ns = meta
        .get("namespace")
        .and_then(|n| n.as_str())
        .unwrap_or("default");
    Some(ObjectKey::new(kind, ns, name))
}

/// Index of the document defining `key` in `text`.
fn find_document(text: &str, key: &ObjectKey) -> Option<usize> {
    yamldoc::split(text)
        .iter()
        .position(|d| !d.empty && document_key(&text[d.body.clone()]).as_ref() == Some(key))
}

/// True when no document of `text` holds anything but comments and blank lines.
fn only_empty_documents(text: &str) -> bool {
    yamldoc::split(text).iter().all(|d| d.empty)
}

/// Writes computed edits. Returns `Ok(false)` when a file changed since it was read (the caller
/// recomputes and retries).
fn write_edits(edits: &BTreeMap<PathBuf, FileEdit>) -> ApiResult<bool> {
    for (path, edit) in edits {
        match &edit.content {
            Some(content) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        ApiError::internal(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
                match edit::write_atomic(path, content, edit.original.as_deref()) {
                    Ok(true) => {}
                    Ok(false) => return Ok(false),
                    Err(e @ crate::files::EditError::ReadOnly { .. }) => {
                        return Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
                    }
                    Err(e) => {
                        return Err(ApiError::internal(format!(
                            "cannot write {}: {e}",
                            path.display()
                        )))
                    }
                }
            }
            None => {
                // Delete only if nobody changed the file since we read it.
                if read_optional(path)? != edit.original {
                    return Ok(false);
                }
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(ApiError::internal(format!(
                            "cannot delete {}: {e}",
                            path.display()
                        )))
                    }
                }
            }
        }
    }
    Ok(true)
}

/// Computes edits with `plan` and writes them, recomputing when another writer got in between.
/// How long a change waits for the watcher to load it before answering anyway.
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Edits of the namespaces in `namespaces` run one at a time (each reads what the previous one
/// wrote); other namespaces' edits go on in parallel. Other writers of a ctx-by-many file (another
/// namespace's edit, the status writer) are caught by `write_atomic`'s expected content.
async fn plan_and_write<T>(
    ctx: &Context,
    namespaces: &[&str],
    dry_run: bool,
    mut plan: impl FnMut(&Desired) -> ApiResult<(BTreeMap<PathBuf, FileEdit>, T)>,
) -> ApiResult<T> {
    let _guards = ctx.write_locks.lock(namespaces.iter().copied()).await;
    for _ in 0..WRITE_ATTEMPTS {
        let desired = snapshot(ctx);
        let (edits, out) = plan(&desired)?;
        if dry_run || edits.is_empty() {
            return Ok(out);
        }
        // Answer once the watcher has loaded what we wrote, so an `ms get` right after an
        // `ms apply` sees it (only in a running controller: `ready` means a watcher publishes).
        let mut seen = ctx.desired.clone();
        seen.borrow_and_update();
        if write_edits(&edits)? {
            ctx.rescan.notify_one();
            if ctx.ready.load(std::sync::atomic::Ordering::Acquire) {
                let _ = tokio::time::timeout(RELOAD_WAIT, seen.changed()).await;
            }
            return Ok(out);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "the manifest files kept changing while applying; try again",
    ))
}

/// Gets the text of `path` from the pending edits or from disk, recording it as read.
fn current_text<'a>(
    edits: &'a mut BTreeMap<PathBuf, FileEdit>,
    path: &Path,
) -> ApiResult<&'a mut FileEdit> {
    if !edits.contains_key(path) {
        let original = read_optional(path)?;
        edits.insert(
            path.to_path_buf(),
            FileEdit {
                content: original.clone(),
                original,
            },
        );
    }
    Ok(edits.get_mut(path).expect("just inserted"))
}

async fn apply(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(q): Query<ApplyQuery>,
    body: String,
) -> ApiResult<Json<ChangeResponse>> {
    let access = authorize_write(&ctx, &headers, body.len())?;
    let filename = headers
        .get(FILENAME_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or(REQUEST_FILE)
        .to_string();
    let tenancy = ctx.tenancy.clone();
    let parsed = parse_file_checked(Path::new(&filename), &body, &|o| tenancy.check_object(o));
    if !parsed.errors.is_empty() {
        let n = parsed.errors.len();
        let mut e = ApiError::unprocessable(format!(
            "{filename} has {n} error{}: nothing was applied (first: {})",
            if n == 1 { "" } else { "s" },
            parsed.errors[0]
        ));
        e.errors = parsed.errors;
        return Err(e);
    }
    if parsed.objects.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "{filename} holds no manifest: nothing was applied"
        )));
    }
    let mut seen = BTreeMap::new();
    for o in &parsed.objects {
        let key = o.object.key();
        access.check(&key.namespace)?;
        if !safe_component(&key.namespace) || !safe_component(&key.name) {
            return Err(ApiError::unprocessable(format!(
                "{filename}:{}: `{}` cannot be used as a file name",
                o.line, key
            )));
        }
        if let Some(line) = seen.insert(key.clone(), o.line) {
            return Err(ApiError::unprocessable(format!(
                "{filename}:{}: {} `{}` is defined twice in this request (also line {line})",
                o.line,
                human_kind(key.kind),
                key.name
            )));
        }
    }

    // The user's text of each object: its document body (for in-place replacement), and for a
    // new file the document with the comments that precede it.
    let docs = yamldoc::split(&body);
    let mut texts = Vec::new();
    let mut from = 0usize;
    for o in &parsed.objects {
        let d = &docs[o.doc_index];
        let body_text = body[d.body.clone()].to_string();
        let full: String = docs[from..=o.doc_index]
            .iter()
            .map(|d| &body[d.range.clone()])
            .collect();
        from = o.doc_index + 1;
        texts.push((body_text, full));
    }

    let dir = ctx.config.dir.clone();
    let namespaces: Vec<&str> = parsed
        .objects
        .iter()
        .map(|o| o.object.metadata().namespace.as_str())
        .collect();
    let changes: BTreeMap<ObjectKey, Option<Object>> = parsed
        .objects
        .iter()
        .map(|o| (o.object.key(), Some(o.object.clone())))
        .collect();
    let results = plan_and_write(&ctx, &namespaces, q.dry_run, |desired| {
        check_quotas(&ctx, desired, &changes)?;
        let mut edits: BTreeMap<PathBuf, FileEdit> = BTreeMap::new();
        let mut results = Vec::new();
        for (o, (body_text, full_text)) in parsed.objects.iter().zip(&texts) {
            let key = o.object.key();
            let existing = desired.objects.get(&key);
            let broken = existing.is_some_and(|e| desired.file_errors.contains_key(&e.file));
            // Unchanged only if the file still holds it: a group whose file was removed (its
            // deletion held, so it still runs) is written back.
            let unchanged = match existing {
                Some(e) if !broken && e.object.spec_hash() == o.object.spec_hash() => {
                    let edit = current_text(&mut edits, &e.file)?;
                    edit.content
                        .as_deref()
                        .is_some_and(|t| find_document(t, &key).is_some())
                }
                _ => false,
            };
            let (action, file) = match existing {
                Some(e) if unchanged => ("unchanged", e.file.clone()),
                Some(e) => {
                    let edit = current_text(&mut edits, &e.file)?;
                    let at = edit
                        .content
                        .as_deref()
                        .and_then(|t| find_document(t, &key).map(|i| (t, i)));
                    match at {
                        Some((text, index)) => {
                            edit.content = Some(edit::replace_document(text, index, body_text));
                            ("configured", e.file.clone())
                        }
                        // Gone from its file since the snapshot: create it anew.
                        None => create(&mut edits, &dir, &key, body_text, full_text)?,
                    }
                }
                None => create(&mut edits, &dir, &key, body_text, full_text)?,
            };
            results.push(ObjectResult {
                kind: key.kind,
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                action: action.to_string(),
                file,
            });
        }
        edits.retain(|_, e| e.content != e.original);
        Ok((edits, results))
    })
    .await?;

    let warnings = reference_warnings(&snapshot(&ctx), &filename, &parsed.objects);
    Ok(Json(ChangeResponse {
        results,
        warnings,
        dry_run: q.dry_run,
    }))
}

/// Refuses `changes` (a new version of each object, `None`: deleted) when they would take a
/// namespace beyond its `maxObjects`, `maxContainers`, `maxCpus` or `maxMemoryMiB`, counting
/// what its groups ask for (desired capacity times each container's limits).
fn check_quotas(
    ctx: &Context,
    desired: &Desired,
    changes: &BTreeMap<ObjectKey, Option<Object>>,
) -> ApiResult<()> {
    let namespaces: std::collections::BTreeSet<&str> =
        changes.keys().map(|k| k.namespace.as_str()).collect();
    for ns in namespaces {
        let before: BTreeMap<&ObjectKey, &Object> = desired
            .objects
            .iter()
            .filter(|(k, _)| k.namespace == ns)
            .map(|(k, e)| (k, &e.object))
            .collect();
        let mut after = before.clone();
        for (k, o) in changes.iter().filter(|(k, _)| k.namespace == ns) {
            match o {
                Some(o) => after.insert(k, o),
                None => after.remove(k),
            };
        }
        let t = &ctx.tenancy;
        t.check_object_count(ns, before.len(), after.len())
            .and_then(|()| {
                t.check_usage(
                    ns,
                    t.desired_usage(ns, before.values().copied()),
                    t.desired_usage(ns, after.values().copied()),
                )
            })
            .map_err(ApiError::unprocessable)?;
    }
    Ok(())
}

/// Places a new object: its own file `<dir>/<ns>/<kind>-<name>.yaml`, or, if that file exists,
/// into it (replacing a broken version of the same object, else appended).
fn create(
    edits: &mut BTreeMap<PathBuf, FileEdit>,
    dir: &Path,
    key: &ObjectKey,
    body_text: &str,
    full_text: &str,
) -> ApiResult<(&'static str, PathBuf)> {
    let path = dir
        .join(&key.namespace)
        .join(format!("{}-{}.yaml", file_kind(key.kind), key.name));
    let edit = current_text(edits, &path)?;
    let new = match edit.content.as_deref() {
        None => {
            let mut t = full_text.to_string();
            if !t.ends_with('\n') {
                t.push('\n');
            }
            t
        }
        Some(text) if only_empty_documents(text) => {
            let mut t = full_text.to_string();
            if !t.ends_with('\n') {
                t.push('\n');
            }
            t
        }
        Some(text) => match find_document(text, key) {
            Some(i) => edit::replace_document(text, i, body_text),
            None => edit::append_document(text, body_text),
        },
    };
    edit.content = Some(new);
    Ok(("created", path))
}

/// Warnings about references of the applied objects that do not resolve, over the snapshot
/// plus what was applied (a group applied before its launch configuration is fine, but worth
/// saying).
fn reference_warnings(
    desired: &Desired,
    filename: &str,
    applied: &[crate::manifest::ParsedObject],
) -> Vec<ManifestError> {
    let mut all: BTreeMap<ObjectKey, Object> = desired
        .objects
        .iter()
        .map(|(k, e)| (k.clone(), e.object.clone()))
        .collect();
    for o in applied {
        all.insert(o.object.key(), o.object.clone());
    }
    let missing = crate::manifest::missing_references(&all);
    applied
        .iter()
        .filter_map(|o| {
            let message = missing.get(&o.object.key())?;
            let field = match o.object.kind() {
                Kind::AutoScalingGroup => "spec.launchConfiguration",
                Kind::ScalingPolicy => "spec.autoScalingGroup",
                Kind::LaunchConfiguration => "",
            };
            Some(ManifestError {
                file: PathBuf::from(filename),
                line: o.line,
                column: 1,
                field: field.to_string(),
                message: message.clone(),
            })
        })
        .chain(applied.iter().flat_map(|o| o.warnings.iter().cloned()))
        .collect()
}

/// Locates an object for a change: the snapshot entry, after the access check.
fn locate<'a>(
    desired: &'a Desired,
    kind: Kind,
    ns: &str,
    name: &str,
) -> ApiResult<(ObjectKey, &'a Entry)> {
    let key = ObjectKey::new(kind, ns, name);
    let entry = desired
        .objects
        .get(&key)
        .ok_or_else(|| ApiError::not_found(kind, ns, name))?;
    Ok((key, entry))
}

async fn delete_object(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((kind, ns, name)): UrlPath<(String, String, String)>,
) -> ApiResult<Json<ChangeResponse>> {
    let access = authorize_write(&ctx, &headers, 0)?;
    let kind = Kind::parse(&kind).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown kind `{kind}`: use asg, lc or policy"),
        )
    })?;
    access.check(&ns)?;
    let key = ObjectKey::new(kind, ns.as_str(), name.as_str());
    let desired = snapshot(&ctx);
    // A group whose manifest is already gone (its deletion held), or that only the engines
    // still know, is deleted by name too: this is the confirmation the hold waits for.
    let on_engines_only = !desired.objects.contains_key(&key) && ctx.prune_report.contains(&key);
    if !desired.objects.contains_key(&key) && !on_engines_only {
        return Err(ApiError::not_found(kind, &ns, &name));
    }
    // Confirmed before the file changes, so the reload that follows lets it go at once.
    ctx.confirmations.confirm(&key);
    let file = desired.objects.get(&key).map(|e| e.file.clone());
    drop(desired);
    if file.is_some() {
        plan_and_write(&ctx, &[ns.as_str()], false, |desired| {
            let Some(entry) = desired.objects.get(&key) else {
                return Ok((BTreeMap::new(), ()));
            };
            let mut edits = BTreeMap::new();
            let edit = current_text(&mut edits, &entry.file)?;
            if let Some(text) = edit.content.as_deref() {
                if let Some(index) = find_document(text, &key) {
                    let rest = edit::remove_document(text, index);
                    edit.content = if only_empty_documents(&rest) {
                        None
                    } else {
                        Some(rest)
                    };
                }
            }
            edits.retain(|_, e| e.content != e.original);
            Ok((edits, ()))
        })
        .await?;
    }
    // Nothing to write (the file was gone already): still wait for the reload that lets it go.
    if snapshot(&ctx).objects.contains_key(&key) {
        reload_and_wait(&ctx).await;
    }
    Ok(Json(ChangeResponse {
        results: vec![ObjectResult {
            kind,
            namespace: ns,
            name,
            action: "deleted".into(),
            file: file.unwrap_or_default(),
        }],
        warnings: Vec::new(),
        dry_run: false,
    }))
}

/// Asks the watcher to reload and waits (at most [`RELOAD_WAIT`]) for what it publishes.
async fn reload_and_wait(ctx: &Context) {
    let mut seen = ctx.desired.clone();
    seen.borrow_and_update();
    ctx.rescan.notify_one();
    if ctx.ready.load(std::sync::atomic::Ordering::Acquire) {
        let _ = tokio::time::timeout(RELOAD_WAIT, seen.changed()).await;
    }
}

/// Sets one spec field of a group in its file.
async fn set_group_field(
    ctx: &Context,
    headers: &HeaderMap,
    ns: &str,
    name: &str,
    action: &'static str,
    check: impl Fn(&Desired, &crate::manifest::AutoScalingGroup) -> ApiResult<(&'static str, Value)>,
) -> ApiResult<Json<ChangeResponse>> {
    let access = authorize_write(ctx, headers, 0)?;
    access.check(ns)?;
    let result = plan_and_write(ctx, &[ns], false, |desired| {
        let (key, entry) = locate(desired, Kind::AutoScalingGroup, ns, name)?;
        let Object::AutoScalingGroup(group) = &entry.object else {
            return Err(ApiError::not_found(Kind::AutoScalingGroup, ns, name));
        };
        let (field, value) = check(desired, group)?;
        let mut edits = BTreeMap::new();
        let edit = current_text(&mut edits, &entry.file)?;
        let text = edit.content.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("{} no longer exists", entry.file.display()),
            )
        })?;
        let index = find_document(text, &key).ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "autoscaling group `{name}` is no longer in {}",
                    entry.file.display()
                ),
            )
        })?;
        let new = edit::set_spec_field(text, index, field, &value).map_err(|e| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("cannot edit {}: {e}", entry.file.display()),
            )
        })?;
        edit.content = Some(new);
        edits.retain(|_, e| e.content != e.original);
        Ok((
            edits,
            ObjectResult {
                kind: Kind::AutoScalingGroup,
                namespace: ns.to_string(),
                name: name.to_string(),
                action: action.into(),
                file: entry.file.clone(),
            },
        ))
    })
    .await?;
    Ok(Json(ChangeResponse {
        results: vec![result],
        ..Default::default()
    }))
}

async fn scale(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<ChangeResponse>> {
    let req: ScaleRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::unprocessable(format!(
            "the body must be {{\"desired\": N}} with N >= 0: {e}"
        ))
    })?;
    let n = req.desired;
    set_group_field(&ctx, &headers, &ns, &name, "scaled", |desired, g| {
        if n < g.spec.min_size || n > g.spec.max_size {
            return Err(ApiError::unprocessable(format!(
                "desired capacity {n} is outside [minSize {}, maxSize {}] of autoscaling group `{name}`",
                g.spec.min_size, g.spec.max_size
            )));
        }
        let mut scaled = g.clone();
        scaled.spec.desired_capacity = Some(n);
        let key = ObjectKey::new(Kind::AutoScalingGroup, ns.as_str(), name.as_str());
        let changes = BTreeMap::from([(key, Some(Object::AutoScalingGroup(scaled)))]);
        check_quotas(&ctx, desired, &changes)?;
        Ok(("desiredCapacity", json!(n)))
    })
    .await
}

async fn start(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<ChangeResponse>> {
    set_group_field(&ctx, &headers, &ns, &name, "started", |desired, g| {
        let mut started = g.clone();
        started.spec.state = crate::manifest::GroupState::Started;
        let key = ObjectKey::new(Kind::AutoScalingGroup, ns.as_str(), name.as_str());
        let changes = BTreeMap::from([(key, Some(Object::AutoScalingGroup(started)))]);
        check_quotas(&ctx, desired, &changes)?;
        Ok(("state", json!("Started")))
    })
    .await
}

async fn stop(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<ChangeResponse>> {
    set_group_field(&ctx, &headers, &ns, &name, "stopped", |_, _| {
        Ok(("state", json!("Stopped")))
    })
    .await
}

/// Document edits, through `crate::files` (the byte-preserving writer the status uses).
mod edit {
    use std::path::Path;

    use crate::files::{self, EditError, WriteOutcome};

    pub use files::{append_document, remove_document, replace_document};

    /// Sets `spec.<field>` of document `index` to `value` (JSON, written as one line of YAML).
    pub fn set_spec_field(
        text: &str,
        index: usize,
        field: &str,
        value: &serde_json::Value,
    ) -> Result<String, EditError> {
        // JSON scalars are valid YAML flow scalars; strings get quoted only when they need it.
        let yaml = match value {
            serde_json::Value::String(s)
                if s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                s.clone()
            }
            other => other.to_string(),
        };
        files::set_spec_field(text, index, field, &yaml)
    }

    /// Writes `content` if the file still holds `expected` (`None`: the file must not exist).
    /// `Ok(false)`: someone else changed the file since it was read.
    pub fn write_atomic(
        path: &Path,
        content: &str,
        expected: Option<&str>,
    ) -> Result<bool, EditError> {
        if expected.is_none() && path.exists() {
            return Ok(false);
        }
        match files::write_atomic(path, content, expected)? {
            WriteOutcome::Written | WriteOutcome::Unchanged => Ok(true),
            WriteOutcome::UserEdited | WriteOutcome::Gone => Ok(false),
        }
    }
}
