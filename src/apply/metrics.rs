//! Pushed metrics and per-instance metrics over HTTP: `POST /v1/metrics/{ns}/{group}` records a
//! named value for a group (same bearer tokens as the apply endpoint), `GET /v1/top` returns the
//! latest CPU/memory of every instance.
//!
//! A pushed value carries the time it arrived; policies treat values older than the
//! controller's `pushedMetricMaxAge` as missing, never as zero (see [`crate::autoscale::policy::History`]).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{authorized, check_access, check_push, ApiError, Context};
use crate::manifest::{Kind, ObjectKey};
use crate::wire::PushedValue;

pub(super) async fn push(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Path((ns, group)): Path<(String, String)>,
    body: Json<Value>,
) -> Result<Json<Value>, ApiError> {
    check_push(&ctx, &headers, &ns)?;
    let bad = |m: String| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: m,
        errors: vec![],
    };
    let v: PushedValue = serde_json::from_value(body.0).map_err(|e| {
        bad(format!(
            "the body must be {{\"name\": \"...\", \"value\": 12.5}}: {e}"
        ))
    })?;
    v.validate().map_err(bad)?;
    let key = ObjectKey::new(Kind::AutoScalingGroup, ns.clone(), group.clone());
    if !crate::autoscale::group_exists(&ctx.desired.borrow(), &key) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("autoscaling group `{group}` not found in namespace `{ns}`"),
            errors: vec![],
        });
    }
    let max = ctx.tenancy.max_metric_names(&ns);
    ctx.autoscaler
        .push(&key, &v.name, v.value, Utc::now(), max)
        .map_err(|held| ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "namespace `{ns}` already has {held} pushed metrics, its limit (maxMetricNames {max}, {}; each group's metrics count apart): push to a metric it has, or let unused ones expire ({}s after their last value)",
                ctx.tenancy.origin(&ns, "maxMetricNames"),
                ctx.config.pushed_metric_max_age.0.as_secs() + 60
            ),
            errors: vec![],
        })?;
    Ok(Json(
        json!({ "group": group, "namespace": ns, "name": v.name, "value": v.value }),
    ))
}

/// Query of `GET /v1/top`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TopQuery {
    namespace: Option<String>,
    group: Option<String>,
}

pub(super) async fn top(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(q): Query<TopQuery>,
) -> Result<Json<Value>, ApiError> {
    // Every read needs a token when tokens are configured: an unknown one is refused here
    // rather than answered with an empty list.
    authorized(&ctx, &headers)?;
    if let Some(ns) = &q.namespace {
        check_access(&ctx, &headers, ns)?;
    }
    let mut items: Vec<_> = ctx
        .autoscaler
        .instances()
        .into_iter()
        .filter(|i| q.namespace.as_ref().is_none_or(|n| *n == i.namespace))
        .filter(|i| q.group.as_ref().is_none_or(|g| *g == i.group))
        .filter(|i| check_access(&ctx, &headers, &i.namespace).is_ok())
        .collect();
    items.sort_by(|a, b| (&a.namespace, &a.group, &a.name).cmp(&(&b.namespace, &b.group, &b.name)));
    Ok(Json(json!({ "items": items })))
}
