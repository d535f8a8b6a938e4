//! Every route of the endpoint, the health routes, and serving it on a listener.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use super::serve::{fd_limit, ConnLimits};
use super::{metrics, read, write, ApiError, Context};

/// The router of the endpoint. Every `/v1/*` route checks the bearer token itself.
pub fn router(ctx: Arc<Context>) -> Router {
    let lease = ctx
        .lease
        .as_ref()
        .map(|me| json!({ "holder": me.holder, "controllerName": me.controller }));
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/apply", post(write::apply))
        .route("/v1/asgs", get(read::list_groups))
        .route("/v1/asgs/{ns}/{name}", get(read::get_group))
        .route("/v1/asgs/{ns}/{name}/scale", post(write::scale))
        .route("/v1/asgs/{ns}/{name}/start", post(write::start))
        .route("/v1/asgs/{ns}/{name}/stop", post(write::stop))
        .route("/v1/lcs", get(read::list_lcs))
        .route("/v1/lcs/{ns}/{name}", get(read::get_lc))
        .route("/v1/policies", get(read::list_policies))
        .route("/v1/policies/{ns}/{name}", get(read::get_policy))
        .route("/v1/lbs", get(read::list_lbs))
        .route("/v1/lbs/{ns}/{name}", get(read::get_lb))
        .route("/v1/instances", get(read::list_instances))
        .route("/v1/problems", get(read::problems))
        .route("/v1/instancetypes", get(read::instance_types))
        .route("/v1/{kind}/{ns}/{name}", delete(write::delete_object))
        .route("/v1/metrics/{ns}/{group}", post(metrics::push))
        .route("/v1/top", get(metrics::top))
        .route("/v1/logs/{ns}/{name}", get(super::logs::instance_logs))
        .route("/v1/logs/{ns}/asg/{group}", get(super::logs::group_logs))
        .route("/v1/exec/{ns}/{name}", post(super::logs::exec))
        .route(
            "/v1/exec/{ns}/{name}/attach",
            post(super::exec_attach::exec_attach),
        )
        .merge(super::stream::routes(&ctx))
        .merge(super::dashboard::routes())
        .merge(super::prometheus::routes(&ctx));
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
        .layer(axum::middleware::from_fn(super::access_log::log_writes))
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
    let limits = ConnLimits::new(&ctx.config.api, fd_limit());
    let tls = super::tls::acceptor(&ctx.config)?;
    let mut app = router(ctx.clone());
    if ctx.config.standby {
        // A standby's answers are true reads, but a user should know who acts.
        app = app.layer(axum::middleware::map_response(
            |mut r: axum::response::Response| async move {
                r.headers_mut().insert(
                    crate::wire::ROLE_HEADER,
                    axum::http::HeaderValue::from_static("standby"),
                );
                r
            },
        ));
    }
    super::serve::serve_with_tls(listener, app, limits, tls, shutdown).await
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
