//! The API's error: a status code and one clear line (plus the manifest errors of a rejected
//! apply), answered as `{"error": ..., "errors": [...]}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::manifest::{Kind, ManifestError};

/// An API error: a status code and one clear line, plus manifest errors for a rejected apply.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub errors: Vec<ManifestError>,
}

/// What every handler returns.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            errors: Vec::new(),
        }
    }
    pub(super) fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub(super) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    pub(super) fn not_found(kind: Kind, namespace: &str, name: &str) -> Self {
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

/// The kind as a user says it in a sentence.
pub fn human_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::LaunchConfiguration => "launch configuration",
        Kind::AutoScalingGroup => "autoscaling group",
        Kind::ScalingPolicy => "scaling policy",
        Kind::LoadBalancer => "load balancer",
    }
}
