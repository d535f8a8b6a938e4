//! Why a group is not as its spec asks: typed values until they become the `Degraded` condition.
//!
//! Each variant is one reason of that condition, and [`ReconcileError::reason`] is the exact
//! string users see there (and in `ms get problems`); the message is the variant's `Display`.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::EngineError;

/// What kept a pass from what the group needs, or what the pass saw go wrong.
///
/// A pass returns the errors of its own actions (`LaunchFailed`) after it has published the
/// group's status; the others are observations it shows as conditions, and `Panicked` is what
/// the runner makes of a pass that panicked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReconcileError {
    /// A container could not be created or started (the slow start stops at the first).
    #[error("{}", launch_message(.zone, .image, .error))]
    LaunchFailed {
        zone: String,
        image: String,
        #[source]
        error: Arc<EngineError>,
    },
    /// An instance exited by itself soon after its start.
    #[error("{}", crash_message(.instance, *.code, *.ran_for, .logs))]
    CrashLoop {
        instance: String,
        code: Option<i64>,
        ran_for: Option<Duration>,
        /// Its last log lines, joined with ` | `.
        logs: String,
    },
    /// An instance failed its liveness probe and was replaced (counts towards the backoff, so
    /// a broken check cannot churn the engine).
    #[error("instance {instance} was replaced: {why}")]
    Unhealthy { instance: String, why: String },
    /// The group's `healthCheck` cannot work with its launch configuration (a port not
    /// published): the sentence says what to change.
    #[error("{0}")]
    HealthCheck(String),
    /// An instance's `postStart` hook failed: it is replaced, through the crash backoff.
    #[error("postStart hook of instance {instance} failed: {why}; it is replaced")]
    PostStartFailed { instance: String, why: String },
    /// The namespace's quota leaves no room for more containers (the sentence says which).
    #[error("{0}")]
    QuotaExceeded(String),
    /// The engine refused to remove a container; retried after `retry_in`.
    #[error("{why}; next attempt in {:.0}s", .retry_in.as_secs_f64().ceil())]
    RemovalFailed { why: String, retry_in: Duration },
    /// The spec names a zone the controller does not know (the sentence offers the nearest).
    #[error("{0}")]
    UnknownZone(String),
    /// One of the group's zones does not answer.
    #[error("zone {zone} is unreachable ({error}); its capacity is made up in the other zones")]
    ZoneUnreachable { zone: String, error: String },
    /// A pass panicked (a bug): what it said.
    #[error("internal error while reconciling (please report it): {0}; retrying with backoff")]
    Panicked(String),
    /// A pass was called before the desired state was loaded and every zone listed once (the
    /// runner waits for that; a direct caller may not have).
    #[error("the desired state or a zone is not observed in full yet")]
    NotObserved,
}

impl ReconcileError {
    /// The condition reason users see (`Degraded=True <reason>`).
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::LaunchFailed { .. } => "LaunchFailed",
            ReconcileError::CrashLoop { .. } => "CrashLoop",
            ReconcileError::Unhealthy { .. } => "Unhealthy",
            ReconcileError::HealthCheck(_) => "InvalidHealthCheck",
            ReconcileError::PostStartFailed { .. } => "PostStartFailed",
            ReconcileError::QuotaExceeded(_) => "QuotaExceeded",
            ReconcileError::RemovalFailed { .. } => "RemovalFailed",
            ReconcileError::UnknownZone(_) => "UnknownZone",
            ReconcileError::ZoneUnreachable { .. } => "ZoneUnreachable",
            ReconcileError::Panicked(_) => "ReconcilePanicked",
            ReconcileError::NotObserved => "NotObserved",
        }
    }

    /// A failed launch of `image` in `zone`.
    pub fn launch_failed(zone: &str, image: &str, error: EngineError) -> Self {
        ReconcileError::LaunchFailed {
            zone: zone.to_string(),
            image: image.to_string(),
            error: Arc::new(error),
        }
    }
}

fn launch_message(zone: &str, image: &str, error: &EngineError) -> String {
    match error {
        EngineError::NotFound(m) => format!(
            "cannot launch in zone {zone}: {m} (image `{image}`; with imagePullPolicy: Never, load or build the image on that engine)"
        ),
        other => format!("cannot launch in zone {zone}: {other}"),
    }
}

fn crash_message(
    instance: &str,
    code: Option<i64>,
    ran_for: Option<Duration>,
    logs: &str,
) -> String {
    format!(
        "instance {instance} exited with code {} {}after start{}",
        code.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
        ran_for
            .map(|d| format!("{:.1}s ", d.as_secs_f64()))
            .unwrap_or_default(),
        if logs.is_empty() {
            String::new()
        } else {
            format!("; last log lines: {logs}")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_names_the_condition_reason_users_already_see() {
        let cases = [
            (
                ReconcileError::launch_failed("a", "img", EngineError::NotFound("no image".into())),
                "LaunchFailed",
                "cannot launch in zone a: no image (image `img`; with imagePullPolicy: Never, load or build the image on that engine)",
            ),
            (
                ReconcileError::launch_failed("b", "img", EngineError::Other("boom".into())),
                "LaunchFailed",
                "cannot launch in zone b: boom",
            ),
            (
                ReconcileError::CrashLoop {
                    instance: "web-1".into(),
                    code: Some(3),
                    ran_for: Some(Duration::from_millis(1500)),
                    logs: "x | y".into(),
                },
                "CrashLoop",
                "instance web-1 exited with code 3 1.5s after start; last log lines: x | y",
            ),
            (
                ReconcileError::RemovalFailed {
                    why: "refused".into(),
                    retry_in: Duration::from_millis(1200),
                },
                "RemovalFailed",
                "refused; next attempt in 2s",
            ),
            (
                ReconcileError::ZoneUnreachable {
                    zone: "b".into(),
                    error: "down".into(),
                },
                "ZoneUnreachable",
                "zone b is unreachable (down); its capacity is made up in the other zones",
            ),
            (
                ReconcileError::Unhealthy {
                    instance: "web-1".into(),
                    why: "liveness failed 3 times in a row: HTTP 500 from GET /".into(),
                },
                "Unhealthy",
                "instance web-1 was replaced: liveness failed 3 times in a row: HTTP 500 from GET /",
            ),
            (
                ReconcileError::Panicked("oops".into()),
                "ReconcilePanicked",
                "internal error while reconciling (please report it): oops; retrying with backoff",
            ),
        ];
        for (err, reason, message) in cases {
            assert_eq!(err.reason(), reason);
            assert_eq!(err.to_string(), message);
        }
    }
}
