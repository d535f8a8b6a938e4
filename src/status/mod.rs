//! The `status:` block the controller owns: what it observed and did for each group.

pub mod sync;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Status of an `AutoScalingGroup`, written back into its manifest and served by the API.
///
/// Holds nothing that changes without the world changing (no "last reconciled at"), so the file
/// is rewritten only when something really happened and git diffs stay quiet.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    /// Hash of the spec this status was computed for (the "generation").
    pub observed_generation: String,
    /// Capacity the controller is converging to (spec clamped, 0 when Stopped).
    pub desired_capacity: u32,
    /// Instances that exist (any state but removed).
    pub current: u32,
    /// Instances running (and healthy, where the image has a health check).
    pub ready: u32,
    /// Instances running the current launch configuration.
    #[serde(default)]
    pub updated: u32,
    /// The zones the group runs in (its `availabilityZones`, or the default zone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Zones whose engine could not be reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable_zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_out: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_in: Option<DateTime<Utc>>,
    /// The most recent scaling activities, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activities: Vec<Activity>,
    /// Who set the current capacity: `user`, `policy/NAME`, `schedule/NAME`, `pushed/NAME`.
    /// Only for groups with scaling policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_capacity_set_by: Option<String>,
    /// The latest policy evaluation whose outcome differed from the one before (kept while the
    /// outcome stays the same, so the file does not change on every evaluation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<crate::autoscale::policy::Decision>,
    /// Current averages of the group's metrics (whole percent). Only for groups with policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<GroupMetrics>,
}

/// A group's current metric averages, rounded so the status changes only on real changes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMetrics {
    /// Average CPU, whole percent of each instance's CPU allotment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
    /// Average memory used, whole percent of each instance's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_percent: Option<u32>,
    /// Instances measured (running, past their warm-up).
    #[serde(default)]
    pub instances: u32,
    /// Latest fresh value of each pushed metric.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pushed: std::collections::BTreeMap<String, f64>,
}

/// One container of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Container name (also its hostname).
    pub name: String,
    /// Short (12-digit) container ID.
    pub container_id: String,
    pub zone: String,
    /// `created`, `running`, `exited`, ...
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Published ports as `127.0.0.1:32768->80/tcp`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Whether it runs the current launch configuration.
    #[serde(default)]
    pub up_to_date: bool,
}

/// Condition types, as in Kubernetes.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const INVALID: &str = "Invalid";
/// Present (True) only while the deletion of the group is held: no manifest defines it any more,
/// but it keeps running until the deletion is confirmed (see `crate::watch::prune`).
pub const DELETION_HELD: &str = "DeletionHeld";

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `"True"` or `"False"`.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
}

/// One scaling activity: an instance launched or terminated, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub time: DateTime<Utc>,
    /// `Launch` or `Terminate` (or `LaunchFailed`).
    pub action: String,
    pub instance: String,
    pub zone: String,
    pub cause: String,
}

/// How many activities are kept in a status.
pub const MAX_ACTIVITIES: usize = 10;
