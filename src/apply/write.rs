//! The write routes: apply, delete, scale, start, stop. Each edits manifest files only, and
//! answers once the watcher has loaded a snapshot that includes the edit.
//!
//! # Rules
//! - Everything is checked before the first write: a request with one bad document writes
//!   nothing.
//! - A change is planned over the files it read under its locks ([`super::write_locks`]) and
//!   written only where the files still hold what was read; otherwise it is planned again.
//! - File reads and writes run off the async threads (`spawn_blocking`).
//! - The answer waits (at most `RELOAD_WAIT`, 2 s) for the watcher's first load that began after
//!   the write, so an `ms get` right after an `ms apply` sees it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::auth::authorize_write;
use super::edit::{self, Files};
use super::read::snapshot;
use super::{human_kind, ApiError, ApiResult, Context};
use crate::manifest::{
    parse_file_checked, yamldoc, AutoScalingGroup, Kind, ManifestError, Object, ObjectKey,
    ParsedObject,
};
use crate::util::tickets::Tickets;
use crate::watch::store::{Desired, DesiredReader, Entry};
use crate::wire::{ChangeResponse, ObjectResult, ScaleRequest, FILENAME_HEADER};

/// Name used in errors when the client did not say which file it sent.
const REQUEST_FILE: &str = "<request>";

/// How many times a write is planned again when another writer (the status writer, a user)
/// changed a file between our read and our write.
const WRITE_ATTEMPTS: usize = 5;

/// How long a change waits for the watcher to load it before answering anyway.
const RELOAD_WAIT: Duration = Duration::from_secs(2);

/// Query of `POST /v1/apply`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ApplyQuery {
    #[serde(rename = "dryRun", default)]
    dry_run: bool,
}

/// Plans a change with `plan` over the files it reads and writes it, planning again when
/// another writer got in between.
///
/// Locks, in this order: `namespaces` (the namespaces whose quota the change checks; empty for
/// a change that only lowers usage), then the files the plan reads, found by planning: a file
/// the plan asks for that is not locked and read yet makes it plan again with that file too.
/// Both are held until the watcher has loaded the write, so the next change of those files (or
/// that namespace) plans over a snapshot that includes this one.
async fn plan_and_write<T>(
    ctx: &Context,
    namespaces: &[&str],
    dry_run: bool,
    mut plan: impl FnMut(&Desired, &mut Files) -> ApiResult<T>,
) -> ApiResult<T> {
    let _namespaces = ctx.write_locks.lock(namespaces.iter().copied()).await;
    let mut wanted = std::collections::BTreeSet::new();
    // One more round than write attempts: the first usually only finds the files.
    for _ in 0..=WRITE_ATTEMPTS {
        let _files = ctx.file_locks.lock(wanted.iter()).await;
        // Taken under the locks: it includes what the previous holders wrote.
        let desired = snapshot(ctx);
        let mut files = if wanted.is_empty() {
            Files::default()
        } else {
            let paths = wanted.clone();
            blocking(move || Ok(Files::read(paths))).await?
        };
        let planned = plan(&desired, &mut files);
        if !files.wanted().is_empty() {
            wanted.extend(files.wanted().iter().cloned());
            continue;
        }
        let out = planned?;
        let changes = files.into_changes();
        if dry_run || changes.is_empty() {
            return Ok(out);
        }
        let reload = Reload::before_write(ctx);
        // The file locks go with the write: dropped mid-write (the client went away), this
        // handler leaves the files locked until the blocking write is done.
        let (written, _files) = blocking(move || {
            let written = edit::write_edits(&changes)?;
            Ok((written, _files))
        })
        .await?;
        if written {
            reload.wait(ctx).await;
            return Ok(out);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "the manifest files kept changing while applying; try again",
    ))
}

/// Runs blocking file I/O off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the file task failed: {e}")))?
}

// ---------------------------------------------------------------------------------------------
// Waiting for the watcher

/// A write's wait for the watcher's load of it: started before the write, awaited after it.
struct Reload {
    /// The desired state as it was before the write (without a watcher's tickets, the wait is
    /// for the next snapshot after this one).
    seen: DesiredReader,
}

impl Reload {
    fn before_write(ctx: &Context) -> Reload {
        let mut seen = ctx.desired.clone();
        seen.borrow_and_update();
        Reload { seen }
    }

    /// Asks the watcher to rescan and waits for its load (only in a running controller: `ready`
    /// means a watcher publishes).
    async fn wait(self, ctx: &Context) {
        wait_for_load(
            &ctx.ready,
            &ctx.rescan,
            ctx.loads.as_deref(),
            self.seen,
            RELOAD_WAIT,
        )
        .await;
    }
}

/// After a write: asks for a rescan and waits, at most `limit`, for the first load that began
/// after the write (with the watcher's `loads`), or else for the next snapshot after `seen`.
async fn wait_for_load(
    ready: &AtomicBool,
    rescan: &Notify,
    loads: Option<&Tickets>,
    mut seen: DesiredReader,
    limit: Duration,
) {
    // The ticket before the request: the rescan it asks for begins after both.
    let ticket = loads.map(Tickets::take);
    rescan.notify_one();
    if !ready.load(Ordering::Acquire) {
        return;
    }
    match (loads, ticket) {
        (Some(loads), Some(ticket)) => {
            loads.wait(ticket, limit).await;
        }
        _ => {
            let _ = tokio::time::timeout(limit, seen.changed()).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Apply

pub(super) async fn apply(
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
        if !edit::safe_component(&key.namespace) || !edit::safe_component(&key.name) {
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

    let texts = user_texts(&body, &parsed.objects);
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
    let results = plan_and_write(&ctx, &namespaces, q.dry_run, |desired, files| {
        check_quotas(&ctx, desired, &changes)?;
        parsed
            .objects
            .iter()
            .zip(&texts)
            .map(|(o, (body_text, full_text))| place(desired, files, &dir, o, body_text, full_text))
            .collect()
    })
    .await?;

    let warnings = reference_warnings(&snapshot(&ctx), &filename, &parsed.objects);
    Ok(Json(ChangeResponse {
        results,
        warnings,
        dry_run: q.dry_run,
    }))
}

/// The user's text of each object: its document body (for in-place replacement), and for a
/// new file the document with the comments that precede it.
fn user_texts(body: &str, objects: &[ParsedObject]) -> Vec<(String, String)> {
    let docs = yamldoc::split(body);
    let mut texts = Vec::new();
    let mut from = 0usize;
    for o in objects {
        let d = &docs[o.doc_index];
        let body_text = body[d.body.clone()].to_string();
        let full: String = docs[from..=o.doc_index]
            .iter()
            .map(|d| &body[d.range.clone()])
            .collect();
        from = o.doc_index + 1;
        texts.push((body_text, full));
    }
    texts
}

/// Plans one applied object into `files`: unchanged, configured in place, or created.
fn place(
    desired: &Desired,
    files: &mut Files,
    dir: &Path,
    o: &ParsedObject,
    body_text: &str,
    full_text: &str,
) -> ApiResult<ObjectResult> {
    let key = o.object.key();
    let existing = desired.objects.get(&key);
    let broken = existing.is_some_and(|e| desired.file_errors.contains_key(&e.file));
    // Unchanged only if the file still holds it: a group whose file was removed (its deletion
    // held, so it still runs) is written back.
    let unchanged = match existing {
        Some(e) if !broken && e.object.spec_hash() == o.object.spec_hash() => files
            .file(&e.file)?
            .content
            .as_deref()
            .is_some_and(|t| edit::find_document(t, &key).is_some()),
        _ => false,
    };
    let (action, file) = match existing {
        Some(e) if unchanged => ("unchanged", e.file.clone()),
        Some(e) => {
            let edit = files.file(&e.file)?;
            let at = edit
                .content
                .as_deref()
                .and_then(|t| edit::find_document(t, &key).map(|i| (t, i)));
            match at {
                Some((text, index)) => {
                    edit.content = Some(crate::files::replace_document(text, index, body_text));
                    ("configured", e.file.clone())
                }
                // Gone from its file since the snapshot: create it anew.
                None => edit::create(files, dir, &key, body_text, full_text)?,
            }
        }
        None => edit::create(files, dir, &key, body_text, full_text)?,
    };
    Ok(ObjectResult {
        kind: key.kind,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        action: action.to_string(),
        file,
    })
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

/// Warnings about references of the applied objects that do not resolve, over the snapshot
/// plus what was applied (a group applied before its launch configuration is fine, but worth
/// saying), then each object's own warnings. The rule is the watcher's
/// ([`crate::watch::reference_warnings`]), located in the request.
fn reference_warnings(
    desired: &Desired,
    filename: &str,
    applied: &[ParsedObject],
) -> Vec<ManifestError> {
    let mut all = desired.objects.clone();
    let now = chrono::Utc::now();
    for o in applied {
        all.insert(
            o.object.key(),
            Entry::new(o.clone(), PathBuf::from(filename), now),
        );
    }
    let mut missing = crate::watch::reference_warnings(&all);
    applied
        .iter()
        .filter_map(|o| missing.remove(&o.object.key()))
        .chain(applied.iter().flat_map(|o| o.warnings.iter().cloned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Delete

pub(super) async fn delete_object(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((kind, ns, name)): UrlPath<(String, String, String)>,
) -> ApiResult<Json<ChangeResponse>> {
    let access = authorize_write(&ctx, &headers, 0)?;
    let kind = Kind::parse(&kind).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown kind `{kind}`: use asg, lc, policy or lb"),
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
        // A deletion only lowers a namespace's usage: it checks no quota, so it locks no
        // namespace, only its file.
        plan_and_write(&ctx, &[], false, |desired, files| {
            let Some(entry) = desired.objects.get(&key) else {
                return Ok(());
            };
            let edit = files.file(&entry.file)?;
            if let Some(text) = edit.content.as_deref() {
                if let Some(index) = edit::find_document(text, &key) {
                    let rest = crate::files::remove_document(text, index);
                    edit.content = if edit::only_empty_documents(&rest) {
                        None
                    } else {
                        Some(rest)
                    };
                }
            }
            Ok(())
        })
        .await?;
    }
    // Nothing to write (the file was gone already): still wait for the reload that lets it go.
    if snapshot(&ctx).objects.contains_key(&key) {
        Reload::before_write(&ctx).wait(&ctx).await;
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

// ---------------------------------------------------------------------------------------------
// Scale, start, stop

/// Sets one spec field of a group in its file. `quota`: the change may raise the namespace's
/// usage (its check needs the namespace lock).
async fn set_group_field(
    ctx: &Context,
    headers: &HeaderMap,
    (ns, name): (&str, &str),
    action: &'static str,
    quota: bool,
    check: impl Fn(&Desired, &AutoScalingGroup) -> ApiResult<(&'static str, Value)>,
) -> ApiResult<Json<ChangeResponse>> {
    let access = authorize_write(ctx, headers, 0)?;
    access.check(ns)?;
    let namespaces: &[&str] = if quota { &[ns] } else { &[] };
    let result = plan_and_write(ctx, namespaces, false, |desired, files| {
        let key = ObjectKey::new(Kind::AutoScalingGroup, ns, name);
        let entry = desired
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(Kind::AutoScalingGroup, ns, name))?;
        let Object::AutoScalingGroup(group) = &entry.object else {
            return Err(ApiError::not_found(Kind::AutoScalingGroup, ns, name));
        };
        let (field, value) = check(desired, group)?;
        let edit = files.file(&entry.file)?;
        let text = edit.content.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("{} no longer exists", entry.file.display()),
            )
        })?;
        let index = edit::find_document(text, &key).ok_or_else(|| {
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
        Ok(ObjectResult {
            kind: Kind::AutoScalingGroup,
            namespace: ns.to_string(),
            name: name.to_string(),
            action: action.into(),
            file: entry.file.clone(),
        })
    })
    .await?;
    Ok(Json(ChangeResponse {
        results: vec![result],
        ..Default::default()
    }))
}

pub(super) async fn scale(
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
    set_group_field(&ctx, &headers, (&ns, &name), "scaled", true, |desired, g| {
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

pub(super) async fn start(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<ChangeResponse>> {
    set_group_field(
        &ctx,
        &headers,
        (&ns, &name),
        "started",
        true,
        |desired, g| {
            let mut started = g.clone();
            started.spec.state = crate::manifest::GroupState::Started;
            let key = ObjectKey::new(Kind::AutoScalingGroup, ns.as_str(), name.as_str());
            let changes = BTreeMap::from([(key, Some(Object::AutoScalingGroup(started)))]);
            check_quotas(&ctx, desired, &changes)?;
            Ok(("state", json!("Started")))
        },
    )
    .await
}

pub(super) async fn stop(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<ChangeResponse>> {
    // Stopping only lowers usage: no quota to check, no namespace lock.
    set_group_field(&ctx, &headers, (&ns, &name), "stopped", false, |_, _| {
        Ok(("state", json!("Stopped")))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired_channel() -> (tokio::sync::watch::Sender<Arc<Desired>>, DesiredReader) {
        tokio::sync::watch::channel(Arc::new(Desired::default()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_waits_for_a_load_that_began_after_it_not_for_any_snapshot() {
        let (tx, rx) = desired_channel();
        let (ready, rescan, loads) = (AtomicBool::new(true), Notify::new(), Tickets::default());
        // A load that began before the write (it read the directory without the write).
        let early = loads.begin();
        let wait = wait_for_load(&ready, &rescan, Some(&loads), rx, Duration::from_secs(60));
        tokio::pin!(wait);
        assert!(futures_poll(&mut wait).await.is_none());
        // That early load publishes: not the write's.
        tx.send_replace(Arc::new(Desired {
            loaded: true,
            ..Desired::default()
        }));
        loads.served(early);
        assert!(futures_poll(&mut wait).await.is_none(), "still waiting");
        // The rescan asked for after the write.
        rescan.notified().await;
        let covered = loads.begin();
        loads.served(covered);
        assert!(futures_poll(&mut wait).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_watcher_a_write_waits_for_the_next_snapshot_and_not_at_all_before_ready() {
        let (tx, rx) = desired_channel();
        let (ready, rescan) = (AtomicBool::new(false), Notify::new());
        let limit = Duration::from_secs(60);
        // Not ready: no watcher publishes yet, nothing to wait for.
        let t0 = tokio::time::Instant::now();
        wait_for_load(&ready, &rescan, None, rx.clone(), limit).await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        ready.store(true, Ordering::Release);
        let mut seen = rx.clone();
        seen.borrow_and_update();
        let wait = wait_for_load(&ready, &rescan, None, seen, limit);
        tokio::pin!(wait);
        assert!(futures_poll(&mut wait).await.is_none());
        tx.send_replace(Arc::new(Desired::default()));
        assert!(futures_poll(&mut wait).await.is_some());
    }

    /// Polls `f` until it stops making progress: `Some` when it finished.
    async fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        tokio::time::timeout(Duration::from_millis(10), f)
            .await
            .ok()
    }

    #[test]
    fn a_missing_reference_is_a_warning_located_in_the_request() {
        let parsed = crate::manifest::parse_file(
            Path::new("web.yaml"),
            "apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {name: web}\nspec: {launchConfiguration: nope, minSize: 0, maxSize: 1}\n",
        );
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let warnings = reference_warnings(&Desired::default(), "web.yaml", &parsed.objects);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].file, PathBuf::from("web.yaml"));
        assert_eq!(warnings[0].line, 1);
        assert_eq!(warnings[0].field, "spec.launchConfiguration");
        // Applied together with what it names: no warning.
        let both = crate::manifest::parse_file(
            Path::new("web.yaml"),
            "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {name: nope}\nspec: {image: busybox}\n---\napiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {name: web}\nspec: {launchConfiguration: nope, minSize: 0, maxSize: 1}\n",
        );
        assert!(reference_warnings(&Desired::default(), "web.yaml", &both.objects).is_empty());
    }
}
