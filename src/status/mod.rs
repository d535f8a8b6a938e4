//! The `status:` block the controller owns: what it observed and did for each group, and where
//! it goes.
//!
//! The types here ([`GroupStatus`], its conditions, activities and the autoscaler's last
//! [`Decision`]) are what the API serves and the files hold; [`sync`] is the status writer, which
//! takes each group's status from the reconciler and hands it to the API at once ([`StatusBoard`])
//! and to the files shortly after (inline, a sidecar tree, or nowhere). This stage sits above the
//! directory watcher (it reads the desired state to know which file holds which group) and below
//! the autoscaler and the reconciler, which publish into it.

pub mod activity_log;
pub mod history;
pub mod sync;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::ObjectKey;

/// The latest status of every group, as the API serves it: written by the status writer
/// ([`sync::StatusSync::publish`]) only, read by the API and the reconciler.
pub type StatusBoard = std::sync::RwLock<BTreeMap<ObjectKey, GroupStatus>>;

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
    pub last_decision: Option<Decision>,
    /// Current averages of the group's metrics (whole percent). Only for groups with policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<GroupMetrics>,
    /// The warm pool: spares kept prepared (its members are listed among `instances` with state
    /// `warm`). Only for groups with a `warmPool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool: Option<WarmPoolStatus>,
    /// Image pulls a launch or rollout of the group waits for, with their progress (only while
    /// they run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pulls: Vec<PullStatus>,
}

/// One image pull in one zone, as far as it has come.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullStatus {
    pub zone: String,
    pub image: String,
    pub layers_done: u32,
    pub layers_total: u32,
    /// Bytes downloaded, of the sizes announced so far.
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Seconds since the pull started.
    pub seconds: u64,
}

/// A group's warm pool as last seen.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarmPoolStatus {
    /// Spares the pool keeps now (`minSize`, capped by `maxPrepared`).
    pub size: u32,
    /// Spares of the current launch configuration in the pool's state, ready to be taken.
    pub ready: u32,
    /// Spares being prepared, replaced or brought to the pool's state.
    #[serde(default)]
    pub preparing: u32,
    /// `Paused`, `Stopped` or `Running`.
    pub state: String,
    /// Memory the spares hold, in bytes, as measured once each was prepared (a stopped spare
    /// holds none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Why the pool holds fewer spares than it should (a namespace quota, failed preparations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The `state` of a warm pool member in [`InstanceStatus`]: not an instance, never in service.
pub const WARM: &str = "warm";

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
    /// The image it runs, by content (`sha256:...`): which build a moving tag resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Ready: running, the image's HEALTHCHECK (if any) not starting or unhealthy, and the
    /// group's readiness probe (if any) passing. What load balancers and the ready count use.
    #[serde(default)]
    pub ready: bool,
    /// The probes' verdict in one sentence ("ready: HTTP 200 from GET /healthz", "liveness
    /// failed 3 times in a row: ..."), or the image's HEALTHCHECK status without probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Protected from scale-in until then (`ms protect instance`; no expiry shows as
    /// 9999-12-31T23:59:59Z). State `draining`: chosen for termination, out of service (a load balancer drains
    /// it), waiting for its drain, `preStop` hook and stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_until: Option<DateTime<Utc>>,
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

/// One evaluation of a group's policies, with its inputs and the reason for its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub time: DateTime<Utc>,
    /// Capacity before the evaluation.
    pub capacity: u32,
    /// Metric values read (rounded to 0.1), by metric name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, f64>,
    /// The largest recommendation of the policies before the group's guards (none: no opinion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<u32>,
    /// The capacity decided.
    pub desired: u32,
    /// The guard that changed or held the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,
    /// The policy whose recommendation won.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The decision in words: "held at 3: scale-in cooldown until 12:04:10".
    pub message: String,
    /// One line per policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl Decision {
    /// True when `other` is the same outcome for the same reason (times and metric values
    /// aside): used to keep the status quiet while nothing changes.
    pub fn same_outcome(&self, other: &Decision) -> bool {
        self.capacity == other.capacity
            && self.desired == other.desired
            && self.raw == other.raw
            && self.guard == other.guard
            && self.policy == other.policy
    }
}

/// The guard that changed or held a recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Guard {
    /// Target tracking: the metric is within the tolerance band of the target.
    Tolerance,
    /// Target tracking: a higher recommendation within the scale-in stabilization window.
    Stabilization,
    /// Target tracking: `maxScaleOutStep` / `maxScaleInStep`.
    RateLimit,
    /// Step: the threshold has not been breached for the whole breach duration yet.
    BreachDuration,
    /// A scale-out or scale-in cooldown of the group.
    Cooldown,
    MinSize,
    MaxSize,
    /// No (fresh) metric: never a reason to scale in.
    MissingMetrics,
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Guard::Tolerance => "tolerance",
            Guard::Stabilization => "stabilization window",
            Guard::RateLimit => "rate limit",
            Guard::BreachDuration => "breach duration",
            Guard::Cooldown => "cooldown",
            Guard::MinSize => "minSize",
            Guard::MaxSize => "maxSize",
            Guard::MissingMetrics => "missing metrics",
        })
    }
}
