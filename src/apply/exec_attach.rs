//! `POST /v1/exec/{ns}/{instance}/attach`: a command with its standard input attached and,
//! with `tty=true`, a terminal (`ms exec -i/-t`). The connection is upgraded (`Upgrade:
//! microscaler-exec`) and then carries [`crate::wire::tty`] frames both ways: input, window
//! sizes and the end of input from the client; output, then the exit status, to it.
//!
//! # Rules
//! - The same checks as `POST /v1/exec/...` (token, namespace, the instance found in the status
//!   board), all made before the upgrade, so a refusal is an ordinary JSON error.
//! - The upgraded connection keeps its place under the API's connection cap until it closes,
//!   and a namespace has at most [`MAX_SESSIONS_PER_NAMESPACE`] sessions open (429 beyond), so
//!   one tenant's shells cannot take every connection.
//! - A client that goes away closes the command's input; output that cannot be delivered ends
//!   the session (nothing buffers without bound: the engine's stream waits for the client).

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::logs::{engine_error, engine_of, exit_code, targets};
use super::{check_access, ApiError, ApiResult, Context};
use crate::engine::docker::attach::Attached;
use crate::engine::docker::{DockerEngine, OutputStream};
use crate::wire::tty::{Decoder, Frame, PROTOCOL};

/// Longest command accepted (its JSON), so a query string cannot grow without bound.
const MAX_COMMAND: usize = 16 * 1024;

/// Attached sessions a namespace may have open at once: each holds an API connection for as
/// long as it lasts, and one tenant's shells must not take the connections of the others.
pub const MAX_SESSIONS_PER_NAMESPACE: usize = 16;

/// The attached sessions open, per namespace.
#[derive(Debug, Default)]
pub struct Sessions {
    open: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One open session's place; freed when dropped.
pub struct Slot {
    sessions: Arc<Sessions>,
    namespace: String,
}

impl Sessions {
    /// A place for a session of `namespace`, unless it has [`MAX_SESSIONS_PER_NAMESPACE`].
    pub fn take(self: &Arc<Self>, namespace: &str) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(namespace.to_string()).or_default();
        if *n >= MAX_SESSIONS_PER_NAMESPACE {
            return None;
        }
        *n += 1;
        Some(Slot {
            sessions: Arc::clone(self),
            namespace: namespace.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.sessions.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.namespace);
            }
        }
    }
}

/// Query of the route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachQuery {
    /// The command and its arguments as a JSON array of strings.
    command: String,
    /// Run it with a terminal.
    #[serde(default)]
    tty: bool,
    /// The terminal's first size.
    rows: Option<u16>,
    cols: Option<u16>,
}

/// `POST /v1/exec/{ns}/{instance}/attach`.
pub async fn exec_attach(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<AttachQuery>,
    mut req: Request,
) -> ApiResult<Response> {
    check_access(&ctx, &headers, &ns)?;
    if q.command.len() > MAX_COMMAND {
        return Err(ApiError::unprocessable(format!(
            "the command is longer than {MAX_COMMAND} bytes"
        )));
    }
    let command: Vec<String> = serde_json::from_str(&q.command).map_err(|e| {
        ApiError::unprocessable(format!("command: not a JSON list of strings: {e}"))
    })?;
    if command.is_empty() {
        return Err(ApiError::unprocessable("command must not be empty"));
    }
    let upgrading = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    let on_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let Some(on_upgrade) = on_upgrade.filter(|_| upgrading) else {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            format!("this route needs `Connection: Upgrade` and `Upgrade: {PROTOCOL}` (ms exec -i/-t speaks it)"),
        ));
    };
    let Some(t) = targets(&ctx, &ns, None, Some(&name)).into_iter().next() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("instance `{name}` not found in namespace `{ns}`"),
        ));
    };
    let Some(slot) = ctx.exec_sessions.take(&ns) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("namespace `{ns}` has {MAX_SESSIONS_PER_NAMESPACE} exec sessions open, the most at once: end one first"),
        ));
    };
    let engine = engine_of(&ctx, &t.zone).await?;
    let attached = engine
        .exec_attached(&t.container_id, command, q.tty)
        .await
        .map_err(engine_error)?;
    if let (true, Some(rows), Some(cols)) = (q.tty, q.rows, q.cols) {
        if let Err(e) = engine.resize_exec(&attached.exec_id, rows, cols).await {
            tracing::debug!(error = %e, "cannot set the terminal's first size");
        }
    }
    tracing::info!(namespace = %ns, instance = %name, tty = q.tty, "interactive exec started through the API");
    tokio::spawn(async move {
        let _slot = slot; // the namespace's place, until the session ends
        match on_upgrade.await {
            Ok(upgraded) => bridge(TokioIo::new(upgraded), engine, attached).await,
            // The client went away before the upgrade: dropping `attached` closes the input.
            Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    Ok(resp)
}

/// Copies frames between the client's connection and the command until its output ends, then
/// sends its exit status.
async fn bridge<S>(io: S, engine: DockerEngine, attached: Attached)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Attached {
        exec_id,
        mut output,
        mut input,
    } = attached;
    let (mut rd, mut wr) = tokio::io::split(io);
    let resizer = engine.clone();
    let resize_id = exec_id.clone();
    let from_client = tokio::spawn(async move {
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut open = true;
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            decoder.push(&buf[..n]);
            loop {
                match decoder.next_frame() {
                    Ok(Some(Frame::Stdin(data))) if open => {
                        if input.write_all(&data).await.is_err() || input.flush().await.is_err() {
                            open = false;
                        }
                    }
                    Ok(Some(Frame::Resize { rows, cols })) => {
                        if let Err(e) = resizer.resize_exec(&resize_id, rows, cols).await {
                            tracing::debug!(error = %e, "cannot resize an exec's terminal");
                        }
                    }
                    Ok(Some(Frame::StdinEnd)) if open => {
                        let _ = input.shutdown().await;
                        open = false;
                    }
                    Ok(Some(_)) => {} // input after its end, or a server's frame: ignored
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "exec client sent a bad frame; closing input");
                        let _ = input.shutdown().await;
                        return;
                    }
                }
            }
        }
        // The client closed its side: the command's input ends too.
        if open {
            let _ = input.shutdown().await;
        }
    });
    let mut delivered = true;
    while let Some(item) = output.next().await {
        let frames = match item {
            Ok((OutputStream::Stdout, data)) => Frame::chunks(&data, Frame::Stdout),
            Ok((OutputStream::Stderr, data)) => Frame::chunks(&data, Frame::Stderr),
            Err(e) => vec![Frame::Error(e.to_string())],
        };
        for f in frames {
            if wr.write_all(&f.encode()).await.is_err() {
                delivered = false;
                break;
            }
        }
        if !delivered || wr.flush().await.is_err() {
            delivered = false;
            break;
        }
    }
    if delivered {
        let code = exit_code(&engine, &exec_id).await;
        let _ = wr.write_all(&Frame::Exit(code).encode()).await;
        let _ = wr.shutdown().await;
    }
    from_client.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_has_a_bounded_number_of_sessions_and_ended_ones_free_theirs() {
        let sessions = Arc::new(Sessions::default());
        let mut held: Vec<Slot> = (0..MAX_SESSIONS_PER_NAMESPACE)
            .map(|_| sessions.take("a").expect("within the limit"))
            .collect();
        assert!(sessions.take("a").is_none(), "one more is refused");
        assert!(
            sessions.take("b").is_some(),
            "another namespace is not affected"
        );
        held.pop();
        assert!(
            sessions.take("a").is_some(),
            "an ended session frees its place"
        );
        drop(held);
        assert!(sessions
            .open
            .lock()
            .unwrap()
            .get("a")
            .is_none_or(|n| *n == 0));
    }
}
