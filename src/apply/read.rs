//! The read routes: groups, launch configurations, policies, instances, problems and instance
//! types, each as the snapshot the watcher last published plus the status board, filtered to
//! the namespaces the caller's token may see.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{authorize, Access};
use super::{ApiError, ApiResult, Context};
use crate::manifest::{Kind, ManifestError, ObjectKey};
use crate::util::unpoisoned::RwLockExt;
use crate::watch::store::{Desired, Entry};

/// The desired state the watcher last published.
pub(super) fn snapshot(ctx: &Context) -> Arc<Desired> {
    ctx.desired.borrow().clone()
}

/// Query of the list endpoints.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
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
    } else if key.kind == Kind::LoadBalancer {
        ctx.lb_status
            .read_locked()
            .get(key)
            .map(|st| json!(st))
            .unwrap_or(Value::Null)
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

pub(super) async fn list_groups(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list_kind(&ctx, &headers, &q, Kind::AutoScalingGroup)
}

pub(super) async fn list_lcs(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list_kind(&ctx, &headers, &q, Kind::LaunchConfiguration)
}

pub(super) async fn list_policies(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list_kind(&ctx, &headers, &q, Kind::ScalingPolicy)
}

pub(super) async fn list_lbs(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    list_kind(&ctx, &headers, &q, Kind::LoadBalancer)
}

pub(super) async fn get_lb(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    get_one(&ctx, &headers, Kind::LoadBalancer, &ns, &name)
}

pub(super) async fn get_group(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    get_one(&ctx, &headers, Kind::AutoScalingGroup, &ns, &name)
}

pub(super) async fn get_lc(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    get_one(&ctx, &headers, Kind::LaunchConfiguration, &ns, &name)
}

pub(super) async fn get_policy(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    get_one(&ctx, &headers, Kind::ScalingPolicy, &ns, &name)
}

pub(super) async fn list_instances(
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

pub(super) async fn problems(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let access = authorize(&ctx, &headers)?;
    let desired = snapshot(&ctx);
    // The manifest directory as configured and as resolved (the watcher's paths are absolute);
    // resolved once per request, and only for a token that needs it.
    let dirs = match &access {
        Access::All => Vec::new(),
        Access::Namespaces(_) => {
            let dir = ctx.config.dir.clone();
            let resolved = dir.canonicalize().ok();
            std::iter::once(dir).chain(resolved).collect()
        }
    };
    let visible = |file: &Path| file_visible(&access, &desired, &dirs, file);
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
    // Load balancers that are not serving for a reason other than having no ready instance,
    // and instances that cannot be members.
    let load_balancers: Vec<Value> = ctx
        .lb_status
        .read_locked()
        .iter()
        .filter(|(k, _)| access.allows(&k.namespace))
        .flat_map(|(k, st)| {
            let failing = st
                .conditions
                .iter()
                .filter(|c| {
                    c.status == "False" && c.reason != "NoMembers" && c.reason != "Converging"
                })
                .map(|c| format!("{}: {}", c.reason, c.message));
            failing
                .chain(st.problems.iter().cloned())
                .map(
                    |message| json!({"namespace": k.namespace, "name": k.name, "message": message}),
                )
                .collect::<Vec<_>>()
        })
        .collect();
    let mut load_balancers = load_balancers;
    load_balancers.extend(
        crate::lb::members::missing(&desired)
            .into_iter()
            .filter(|(g, _)| access.allows(&g.namespace))
            .map(|(g, lb)| {
                json!({
                    "namespace": g.namespace,
                    "name": lb,
                    "message": format!(
                        "group {} lists load balancer `{lb}`, which does not exist in namespace {}",
                        g.name, g.namespace
                    ),
                })
            }),
    );
    Ok(Json(json!({
        "fileErrors": file_errors,
        "conflicts": conflicts,
        "held": held,
        "statusErrors": status_errors,
        "loadBalancers": load_balancers,
    })))
}

/// Whether the errors of `file` are shown to `access`. A restricted token sees the errors of
/// files that hold its namespaces' objects or live in its namespaces' directories: enough to
/// debug its own manifests, nothing of others'.
fn file_visible(access: &Access, desired: &Desired, dirs: &[PathBuf], file: &Path) -> bool {
    match access {
        Access::All => true,
        Access::Namespaces(_) => {
            desired
                .objects
                .iter()
                .any(|(k, e)| e.file == file && access.allows(&k.namespace))
                || namespace_of_path(dirs, file).is_some_and(|ns| access.allows(&ns))
        }
    }
}

/// The first directory under the manifest directory (one of `dirs`: its spellings), which
/// apply uses as the namespace.
fn namespace_of_path(dirs: &[PathBuf], file: &Path) -> Option<String> {
    let rel = dirs.iter().find_map(|d| file.strip_prefix(d).ok())?;
    let mut parts = rel.components();
    let first = parts.next()?;
    parts.next()?;
    Some(first.as_os_str().to_string_lossy().into_owned())
}

pub(super) async fn instance_types(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    authorize(&ctx, &headers)?;
    Ok(Json(
        json!({ "items": crate::manifest::instance_types::INSTANCE_TYPES }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restricted(ns: &[&str]) -> Access {
        Access::Namespaces(ns.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn the_namespace_of_a_file_is_its_first_directory_under_the_manifest_directory() {
        let dirs = [PathBuf::from("/m"), PathBuf::from("/real/m")];
        let ns = |f: &str| namespace_of_path(&dirs, Path::new(f));
        assert_eq!(ns("/m/team-a/web.yaml").as_deref(), Some("team-a"));
        assert_eq!(ns("/real/m/team-a/sub/web.yaml").as_deref(), Some("team-a"));
        // A file directly in the directory, or outside it, belongs to no namespace.
        assert_eq!(ns("/m/web.yaml"), None);
        assert_eq!(ns("/elsewhere/team-a/web.yaml"), None);
    }

    #[test]
    fn a_restricted_token_sees_the_errors_of_its_own_files_only() {
        let mut desired = crate::watch::store::test_snapshot(
            "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {name: web, namespace: team-a}\nspec: {image: busybox}\n",
        );
        for e in desired.objects.values_mut() {
            e.file = PathBuf::from("/m/shared.yaml");
        }
        let dirs = [PathBuf::from("/m")];
        let a = restricted(&["team-a"]);
        let b = restricted(&["team-b"]);
        let shared = Path::new("/m/shared.yaml");
        assert!(file_visible(&a, &desired, &dirs, shared));
        assert!(!file_visible(&b, &desired, &dirs, shared));
        let in_b = Path::new("/m/team-b/broken.yaml");
        assert!(file_visible(&b, &desired, &dirs, in_b));
        assert!(!file_visible(&a, &desired, &dirs, in_b));
        assert!(file_visible(&Access::All, &desired, &dirs, in_b));
    }
}
