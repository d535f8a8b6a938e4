//! One INFO line per change made through the API (method, path, outcome), so the log says who
//! changed what besides the files and `git diff`.

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

/// Logs requests that change something (every method but GET and HEAD) once answered.
pub async fn log_writes(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let file = req
        .headers()
        .get(crate::wire::FILENAME_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let resp = next.run(req).await;
    tracing::info!(
        %method,
        %path,
        status = resp.status().as_u16(),
        file = file.as_deref().unwrap_or("-"),
        "API write"
    );
    resp
}
