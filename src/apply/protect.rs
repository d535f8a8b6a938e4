//! `POST /v1/protect/{ns}/{instance}` and `DELETE /v1/protect/{ns}/{instance}`: scale-in
//! protection of one instance (`ms protect instance`, `ms unprotect instance`), or an instance
//! protecting itself with the token in its environment.
//!
//! # Rules
//! - With a bearer token (or none configured, on loopback): any instance of the token's
//!   namespaces, for `for` or until unprotected.
//! - With the header `x-ms-instance-token` instead: only the instance the token was made for
//!   (an HMAC of its namespace and name with the controller's secret), always with an expiry of
//!   at most `maxProtection` (default 8h, also the default `for`).
//! - The instance is found in the status board; a draining one cannot be protected any more.
//! - Saved in the controller's instance state before the answer, so it survives a restart; the
//!   group is reconciled at once. Like any change, it costs one write permit of the caller
//!   (an instance's token has its own rate).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{SubsecRound, Utc};

use super::{ApiError, ApiResult, Context};
use crate::manifest::{DurationSpec, Kind, ObjectKey};
use crate::reconcile::instance_state::Protection;
use crate::util::unpoisoned::RwLockExt;
use crate::wire::{ProtectRequest, ProtectResponse, INSTANCE_TOKEN_HEADER};

/// Who asks.
enum Caller {
    User,
    Instance,
}

/// Checks the caller: the instance's own token for this instance, or a bearer token for `ns`.
fn caller(ctx: &Context, headers: &HeaderMap, ns: &str, name: &str) -> ApiResult<Caller> {
    if let Some(t) = headers.get(INSTANCE_TOKEN_HEADER) {
        let t = t.to_str().unwrap_or("");
        if ctx.instances.token_valid(ns, name, t) {
            // Each instance has its own write rate, as a bearer token does.
            ctx.write_limit
                .take(&format!("instance:{ns}/{name}"))
                .map_err(|wait| {
                    ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!(
                            "too many protection changes from instance `{name}`: try again in {:.1}s",
                            wait.as_secs_f64()
                        ),
                    )
                })?;
            return Ok(Caller::Instance);
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this instance token is not the one of instance `{name}` in namespace `{ns}`"),
        ));
    }
    super::auth::authorize_write(ctx, headers, 0)?.check(ns)?;
    Ok(Caller::User)
}

/// The group of instance `name` in `ns`, and its state, from the status board.
fn find(ctx: &Context, ns: &str, name: &str) -> ApiResult<(String, String)> {
    let board = ctx.status.read_locked();
    board
        .iter()
        .filter(|(k, _)| k.namespace == ns)
        .find_map(|(k, st)| {
            st.instances
                .iter()
                .find(|i| i.name == name)
                .map(|i| (k.name.clone(), i.state.clone()))
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "instance `{name}` not found in namespace `{ns}` (ms get instances -n {ns})"
                ),
            )
        })
}

/// `POST /v1/protect/{ns}/{instance}`.
pub async fn protect(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    body: Option<Json<ProtectRequest>>,
) -> ApiResult<Json<ProtectResponse>> {
    let who = caller(&ctx, &headers, &ns, &name)?;
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let max = ctx.config.max_protection.0;
    let wanted = match &req.for_ {
        Some(s) => Some(
            DurationSpec::parse(s)
                .map_err(|e| ApiError::unprocessable(format!("for: {e}")))?
                .0,
        ),
        None => None,
    };
    if wanted == Some(Duration::ZERO) {
        return Err(ApiError::unprocessable(
            "for: 0s protects nothing; use `ms unprotect instance` to end a protection",
        ));
    }
    let span = match who {
        Caller::Instance => {
            let d = wanted.unwrap_or(max);
            if d > max {
                return Err(ApiError::unprocessable(format!(
                    "for: an instance may protect itself for at most {} (maxProtection), not {}",
                    DurationSpec(max),
                    DurationSpec(d)
                )));
            }
            Some(d)
        }
        Caller::User => wanted,
    };
    if span.is_some_and(|d| d > crate::manifest::validate::MAX_DURATION) {
        return Err(ApiError::unprocessable("for: at most 365d"));
    }
    let (group, state) = find(&ctx, &ns, &name)?;
    if state == crate::reconcile::DRAINING {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("instance `{name}` is already draining: it was chosen for termination before the protection"),
        ));
    }
    let until = span
        .map(|d| chrono::Duration::from_std(d).map(|d| (Utc::now() + d).trunc_subsecs(0)))
        .transpose()
        .map_err(|_| ApiError::unprocessable("for: too long"))?;
    ctx.instances
        .protect(
            &name,
            Protection {
                namespace: ns.clone(),
                group: group.clone(),
                until,
                by: match who {
                    Caller::User => "user".into(),
                    Caller::Instance => "instance".into(),
                },
            },
        )
        .map_err(ApiError::internal)?;
    tracing::info!(namespace = %ns, instance = %name, until = ?until, "instance protected from scale-in");
    ctx.reconcile.now(ObjectKey::new(
        Kind::AutoScalingGroup,
        ns.clone(),
        group.clone(),
    ));
    Ok(Json(ProtectResponse {
        namespace: ns,
        instance: name,
        group,
        protected: true,
        until,
    }))
}

/// `DELETE /v1/protect/{ns}/{instance}`.
pub async fn unprotect(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> ApiResult<Json<ProtectResponse>> {
    caller(&ctx, &headers, &ns, &name)?;
    let (group, _) = find(&ctx, &ns, &name)?;
    ctx.instances.unprotect(&name).map_err(ApiError::internal)?;
    tracing::info!(namespace = %ns, instance = %name, "instance protection ended");
    ctx.reconcile.now(ObjectKey::new(
        Kind::AutoScalingGroup,
        ns.clone(),
        group.clone(),
    ));
    Ok(Json(ProtectResponse {
        namespace: ns,
        instance: name,
        group,
        protected: false,
        until: None,
    }))
}
