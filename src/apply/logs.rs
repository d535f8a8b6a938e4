//! `GET /v1/logs/...` and `POST /v1/exec/...`: an instance's output and commands run in it, on
//! the engine of the instance's zone (`ms logs`, `ms exec`).
//!
//! # Rules
//! - The instance is found in the status board (the controller's own view of its groups), so a
//!   token sees and runs commands only in the containers of its namespaces' groups, never in any
//!   other container of the engine.
//! - Output is streamed through a bounded channel: a client that reads slowly slows only its
//!   own readers (the engine's stream waits), and a client that goes away ends them.
//! - A group's lines are prefixed with `[instance] ` and interleaved as they arrive.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{check_access, ApiError, ApiResult, Context};
use crate::engine::docker::{DockerEngine, Output, OutputStream};
use crate::engine::EngineError;
use crate::util::unpoisoned::RwLockExt;

/// Chunks buffered per response before the engine streams wait for the client.
const BUFFER: usize = 256;

/// Longest line kept whole; a longer one is cut (a runaway line must not grow a buffer).
const MAX_LINE: usize = 64 * 1024;

/// One instance as the logs and exec routes need it.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) name: String,
    pub(super) container_id: String,
    pub(super) zone: String,
}

/// Query of the logs routes.
#[derive(Debug, Default, Deserialize)]
pub struct LogsQuery {
    #[serde(default)]
    follow: bool,
    /// Only lines written in the last `since` seconds.
    since: Option<u64>,
    /// Only the last `tail` lines of each instance.
    tail: Option<usize>,
}

/// Body of `POST /v1/exec/{ns}/{instance}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    command: Vec<String>,
}

pub(super) fn targets(
    ctx: &Context,
    ns: &str,
    group: Option<&str>,
    instance: Option<&str>,
) -> Vec<Target> {
    let board = ctx.status.read_locked();
    board
        .iter()
        .filter(|(k, _)| k.namespace == ns && group.is_none_or(|g| g == k.name))
        .flat_map(|(_, st)| st.instances.iter())
        .filter(|i| instance.is_none_or(|n| n == i.name))
        .map(|i| Target {
            name: i.name.clone(),
            container_id: i.container_id.clone(),
            zone: i.zone.clone(),
        })
        .collect()
}

pub(super) async fn engine_of(ctx: &Context, zone: &str) -> ApiResult<DockerEngine> {
    let z = ctx
        .config
        .zones
        .iter()
        .find(|z| z.name == zone)
        .ok_or_else(|| ApiError::internal(format!("zone `{zone}` is not configured")))?;
    DockerEngine::connect(z.docker_host.as_deref())
        .await
        .map_err(engine_error)
}

pub(super) fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
        EngineError::Unreachable(m) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the instance's engine cannot be reached: {m}"),
        ),
        other => ApiError::internal(other.to_string()),
    }
}

/// Copies `output` into `tx` line by line, each line prefixed with `prefix`.
async fn forward(prefix: String, mut output: Output, tx: mpsc::Sender<Bytes>) {
    let mut partial: Vec<u8> = Vec::new();
    while let Some(item) = output.next().await {
        let chunk = match item {
            Ok((_, chunk)) => chunk,
            Err(e) => {
                let _ = tx.send(Bytes::from(format!("{prefix}error: {e}\n"))).await;
                return;
            }
        };
        partial.extend_from_slice(&chunk);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            let mut out = prefix.clone().into_bytes();
            out.extend_from_slice(&line);
            if tx.send(Bytes::from(out)).await.is_err() {
                return; // the client went away
            }
        }
        if partial.len() > MAX_LINE {
            let mut out = prefix.clone().into_bytes();
            out.append(&mut partial);
            out.push(b'\n');
            if tx.send(Bytes::from(out)).await.is_err() {
                return;
            }
        }
    }
    if !partial.is_empty() {
        let mut out = prefix.into_bytes();
        out.append(&mut partial);
        out.push(b'\n');
        let _ = tx.send(Bytes::from(out)).await;
    }
}

async fn stream_logs(
    ctx: &Context,
    list: Vec<Target>,
    q: &LogsQuery,
    prefix: bool,
) -> ApiResult<Response> {
    let since = q
        .since
        .map(|s| chrono::Utc::now().timestamp() - i64::try_from(s).unwrap_or(i64::MAX / 2));
    let (tx, mut rx) = mpsc::channel::<Bytes>(BUFFER);
    for t in list {
        let engine = engine_of(ctx, &t.zone).await?;
        let output = engine.output(&t.container_id, q.follow, since, q.tail);
        let p = if prefix {
            format!("[{}] ", t.name)
        } else {
            String::new()
        };
        tokio::spawn(forward(p, output, tx.clone()));
    }
    drop(tx);
    let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<_, std::io::Error>);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        Body::from_stream(body),
    )
        .into_response())
}

/// `GET /v1/logs/{ns}/{instance}`: one instance's output.
pub async fn instance_logs(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    check_access(&ctx, &headers, &ns)?;
    let list = targets(&ctx, &ns, None, Some(&name));
    if list.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("instance `{name}` not found in namespace `{ns}`"),
        ));
    }
    stream_logs(&ctx, list, &q, false).await
}

/// `GET /v1/logs/{ns}/asg/{group}`: every instance of a group, lines prefixed `[instance] `.
pub async fn group_logs(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, group)): UrlPath<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    check_access(&ctx, &headers, &ns)?;
    let key = crate::manifest::ObjectKey::new(crate::manifest::Kind::AutoScalingGroup, &ns, &group);
    if !ctx.desired.borrow().objects.contains_key(&key) {
        return Err(ApiError::not_found(
            crate::manifest::Kind::AutoScalingGroup,
            &ns,
            &group,
        ));
    }
    let list = targets(&ctx, &ns, Some(&group), None);
    stream_logs(&ctx, list, &q, true).await
}

/// `POST /v1/exec/{ns}/{instance}`: runs a command (no terminal, no input); the answer is
/// newline-delimited JSON, `{"stream":"stdout"|"stderr","data":"..."}` per chunk, then
/// `{"exitCode":N}`.
pub async fn exec(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Json(req): Json<ExecRequest>,
) -> ApiResult<Response> {
    check_access(&ctx, &headers, &ns)?;
    if req.command.is_empty() {
        return Err(ApiError::unprocessable("command must not be empty"));
    }
    let Some(t) = targets(&ctx, &ns, None, Some(&name)).into_iter().next() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("instance `{name}` not found in namespace `{ns}`"),
        ));
    };
    let engine = engine_of(&ctx, &t.zone).await?;
    let (exec_id, mut output) = engine
        .exec(&t.container_id, req.command)
        .await
        .map_err(engine_error)?;
    tracing::info!(namespace = %ns, instance = %name, "exec started through the API");
    let (tx, mut rx) = mpsc::channel::<Bytes>(BUFFER);
    tokio::spawn(async move {
        let line = |v: serde_json::Value| Bytes::from(format!("{v}\n"));
        while let Some(item) = output.next().await {
            let msg = match item {
                Ok((stream, data)) => json!({
                    "stream": if stream == OutputStream::Stderr { "stderr" } else { "stdout" },
                    "data": String::from_utf8_lossy(&data),
                }),
                Err(e) => json!({ "error": e.to_string() }),
            };
            if tx.send(line(msg)).await.is_err() {
                return;
            }
        }
        let code = exit_code(&engine, &exec_id).await;
        let _ = tx.send(line(json!({ "exitCode": code }))).await;
    });
    let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<_, std::io::Error>);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

/// The exit code of a command whose output ended (`None` when the engine does not say within
/// a second: it is set a moment after the output ends).
pub(super) async fn exit_code(engine: &DockerEngine, exec_id: &str) -> Option<i64> {
    for _ in 0..50 {
        match engine.exec_exit_code(exec_id).await {
            Ok(Some(c)) => return Some(c),
            Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Err(_) => return None,
        }
    }
    None
}
