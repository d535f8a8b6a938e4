//! The spec types of lifecycle hooks, draining, quarantine and termination policies: what runs
//! around an instance's start and stop, and which instance goes first.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::DurationSpec;

/// Default time a hook may take before it counts as failed.
pub const DEFAULT_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest hook timeout accepted.
pub const MAX_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
/// Longest `drainTimeout` accepted.
pub const MAX_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
/// Most quarantined instances a group may keep.
pub const MAX_QUARANTINE_COUNT: u32 = 20;
/// Longest a quarantined instance may be kept.
pub const MAX_QUARANTINE_KEEP: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Hooks run by the controller around an instance's life (as Kubernetes' `lifecycle`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lifecycle {
    /// Runs once the container started; the instance is not ready until it succeeded, and a
    /// failure replaces the instance (through the crash backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<Hook>,
    /// Runs after the instance was drained and before the stop signal; its failure is recorded
    /// and the stop goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<Hook>,
}

/// One hook: a command in the container, or an HTTP GET to it (exactly one of the two).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hook {
    /// A command run in the container (no shell unless you call one); exit code 0 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// An HTTP GET to the container through its port published on 127.0.0.1; 2xx and 3xx are
    /// success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// How long the hook may take before it counts as failed. Default 10s, at most 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
}

impl Hook {
    /// The hook's timeout (default [`DEFAULT_HOOK_TIMEOUT`]).
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.map_or(DEFAULT_HOOK_TIMEOUT, |d| d.0)
    }
}

/// A command run in the container.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecAction {
    /// The command and its arguments, e.g. `["sh", "-c", "echo bye"]`.
    pub command: Vec<String>,
}

/// An HTTP GET to the container.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    /// Path and query, e.g. `/shutdown`. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The container port; it must be published (in `ports`) so the controller reaches it on
    /// 127.0.0.1.
    pub port: u16,
}

/// Which instances a scale-in takes first, after zone balancing (as EC2's termination policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TerminationPolicy {
    /// Instances of an outdated spec first, then the oldest (microscaler's default order).
    Default,
    /// The oldest instance first.
    OldestInstance,
    /// The newest instance first.
    NewestInstance,
    /// Instances running an outdated launch configuration (spec) first.
    OldestLaunchConfiguration,
}

/// Keeping failed instances for inspection instead of removing them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quarantine {
    /// Failed instances kept at once at most; older ones are removed first. Default 1, at most 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
    /// How long a quarantined instance is kept. Default 1h, at most 7d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_for: Option<DurationSpec>,
}

impl Quarantine {
    /// The count kept at most (default 1).
    pub fn max_count(&self) -> u32 {
        self.max_count.unwrap_or(1)
    }

    /// How long one is kept (default 1h).
    pub fn keep_for(&self) -> std::time::Duration {
        self.keep_for
            .map_or(std::time::Duration::from_secs(3600), |d| d.0)
    }
}
