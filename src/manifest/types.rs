//! The serde/schemars types of the manifest kinds and the identity they share.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::DurationSpec;
use super::health_check::HealthCheck;

/// The only `apiVersion` this controller understands.
pub const API_VERSION: &str = "microscaler.io/v1";

/// The kinds of manifest.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Kind {
    LaunchConfiguration,
    AutoScalingGroup,
    ScalingPolicy,
    LoadBalancer,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::LaunchConfiguration,
        Kind::AutoScalingGroup,
        Kind::ScalingPolicy,
        Kind::LoadBalancer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::LaunchConfiguration => "LaunchConfiguration",
            Kind::AutoScalingGroup => "AutoScalingGroup",
            Kind::ScalingPolicy => "ScalingPolicy",
            Kind::LoadBalancer => "LoadBalancer",
        }
    }

    /// Parses a kind name as written in `kind:` or a CLI short name (`asg`, `lc`, `policy`).
    pub fn parse(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "launchconfiguration" | "launchconfigurations" | "lc" | "lcs" => {
                Some(Kind::LaunchConfiguration)
            }
            "autoscalinggroup" | "autoscalinggroups" | "asg" | "asgs" => {
                Some(Kind::AutoScalingGroup)
            }
            "scalingpolicy" | "scalingpolicies" | "policy" | "policies" => {
                Some(Kind::ScalingPolicy)
            }
            "loadbalancer" | "loadbalancers" | "lb" | "lbs" => Some(Kind::LoadBalancer),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of a manifest object: one identity lives in exactly one file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

fn default_namespace() -> String {
    "default".to_string()
}

fn is_default_namespace(ns: &String) -> bool {
    ns == "default"
}

/// `metadata:` shared by every kind. Namespaces are what the original microscaler called accounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Name, unique per kind and namespace. Lower-case letters, digits and `-`.
    pub name: String,
    /// Namespace (the original's account). Default `default`.
    #[serde(
        default = "default_namespace",
        skip_serializing_if = "is_default_namespace"
    )]
    pub namespace: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One manifest document: `apiVersion`, `kind`, `metadata`, `spec` and the controller-owned `status`.
///
/// `status` is accepted and ignored on input: it is the controller's, written back into the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest<S> {
    /// Always `microscaler.io/v1`.
    pub api_version: String,
    /// The kind of object.
    pub kind: Kind,
    pub metadata: Metadata,
    pub spec: S,
    /// Written by the controller; ignored when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub status: Option<serde_json::Value>,
}

pub type LaunchConfiguration = Manifest<LaunchConfigurationSpec>;
pub type AutoScalingGroup = Manifest<AutoScalingGroupSpec>;
pub type ScalingPolicy = Manifest<ScalingPolicySpec>;
pub type LoadBalancer = Manifest<super::load_balancer::LoadBalancerSpec>;

/// Any one of the kinds, as stored by the controller.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    LaunchConfiguration(LaunchConfiguration),
    AutoScalingGroup(AutoScalingGroup),
    ScalingPolicy(ScalingPolicy),
    LoadBalancer(LoadBalancer),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::LaunchConfiguration(_) => Kind::LaunchConfiguration,
            Object::AutoScalingGroup(_) => Kind::AutoScalingGroup,
            Object::ScalingPolicy(_) => Kind::ScalingPolicy,
            Object::LoadBalancer(_) => Kind::LoadBalancer,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Object::LaunchConfiguration(m) => &m.metadata,
            Object::AutoScalingGroup(m) => &m.metadata,
            Object::ScalingPolicy(m) => &m.metadata,
            Object::LoadBalancer(m) => &m.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let m = self.metadata();
        ObjectKey::new(self.kind(), m.namespace.clone(), m.name.clone())
    }

    /// Hash of what the user declared (metadata + spec, never status): the "generation".
    pub fn spec_hash(&self) -> String {
        let value = match self {
            Object::LaunchConfiguration(m) => serde_json::to_string(&(&m.metadata, &m.spec)),
            Object::AutoScalingGroup(m) => serde_json::to_string(&(&m.metadata, &m.spec)),
            Object::ScalingPolicy(m) => serde_json::to_string(&(&m.metadata, &m.spec)),
            Object::LoadBalancer(m) => serde_json::to_string(&(&m.metadata, &m.spec)),
        }
        .expect("manifest types always serialize");
        short_hash(value.as_bytes())
    }
}

/// First 10 hex digits of the SHA-256 of `bytes`: short enough for a label, long enough not to collide.
pub fn short_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// A container port published on the host. Written either as a bare number (`80`) or as a map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSpec {
    /// Port inside the container.
    pub container_port: u16,
    /// Port on the host; omitted (the usual case for a group) means an ephemeral port chosen by Docker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// Host address to bind; default `127.0.0.1` so nothing is exposed by accident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// CPU and memory limits overriding the instance type's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPUs (fractions allowed), Docker's `--cpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit in MiB, Docker's `--memory`.
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
}

/// What each instance of a group runs: the original's launch configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaunchConfigurationSpec {
    /// Docker image (name:tag or ID). Required.
    pub image: String,
    /// Instance type from the catalogue (`ms get instancetypes`), giving CPU and memory limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// CPU/memory limits overriding the instance type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Command (arguments after the entrypoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Container ports published on the host (host IP 127.0.0.1 unless given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Extra container labels (the `io.microscaler.*` ones are reserved).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form data handed to each container as JSON in the env var `USER_DATA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<serde_json::Value>,
    /// An existing Docker network to attach containers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Time between SIGTERM and SIGKILL when an instance is terminated. Default 10s (Docker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<DurationSpec>,
    /// When the engine pulls the image from its registry: `IfNotPresent` (the default: when the
    /// engine does not have it), `Always` (before every launch, so a moved tag is followed) or
    /// `Never` (the image must be loaded on every engine by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// How the controller probes each instance (readiness and liveness); without it, only the
    /// image's own HEALTHCHECK gates readiness and nothing is replaced for being unhealthy.
    /// Changing it restarts nothing (probes are the controller's, not the container's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Hooks the controller runs after an instance started (`postStart`) and before it is
    /// stopped (`preStop`). Changing them does not roll out new containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<super::lifecycle::Lifecycle>,
}

/// When an engine pulls a launch configuration's image, as Kubernetes' `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ImagePullPolicy {
    /// Pull only when the engine does not have the image.
    #[default]
    IfNotPresent,
    /// Pull before every launch (cheap when the registry's image has not changed).
    Always,
    /// Never pull: a missing image is a launch failure.
    Never,
}

/// `Started` runs the group; `Stopped` keeps it but runs zero containers (start-asg / stop-asg).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum GroupState {
    #[default]
    Started,
    Stopped,
}

/// A count or a percentage of the desired capacity (`1`, `"25%"`), as in Kubernetes rollouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum IntOrPercent {
    Int(u32),
    Percent(String),
}

/// The autoscaling group: how many instances of which launch configuration, in which zones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoScalingGroupSpec {
    /// Name of a `LaunchConfiguration` in the same namespace.
    pub launch_configuration: String,
    /// Lower bound of the capacity.
    pub min_size: u32,
    /// Upper bound of the capacity.
    pub max_size: u32,
    /// Wanted number of instances; default `minSize`. Clamped to [minSize, maxSize].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_capacity: Option<u32>,
    /// Zones (Docker engines from the controller configuration); default: the first configured zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub availability_zones: Vec<String>,
    /// Minimum time between two policy-driven scale-outs. Default 300s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_out_cooldown: Option<DurationSpec>,
    /// Minimum time between two policy-driven scale-ins. Default 300s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in_cooldown: Option<DurationSpec>,
    /// Domain name of the containers (hostname `<group>-<suffix>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `Started` (default) or `Stopped`.
    #[serde(default)]
    pub state: GroupState,
    /// Extra instances allowed during a rollout (count or percent of desired). Default `25%` (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrPercent>,
    /// Instances that may be missing during a rollout. Default `0`: a new one runs before an old one goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
    /// Time after start during which an instance is not counted in metrics and gets no
    /// liveness verdict (AWS's grace period). Default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period: Option<DurationSpec>,
    /// Replaces the launch configuration's `healthCheck` for this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// How long an instance chosen for termination stays out of service (state `draining`, not
    /// ready) before its `preStop` hook and stop. Default 0s, at most 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<DurationSpec>,
    /// Which instances a scale-in takes first, in order, after zone balancing (always first:
    /// containers this controller did not launch, then instances that are not ready).
    /// Default `[Default]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub termination_policies: Vec<super::lifecycle::TerminationPolicy>,
    /// Keep failed instances (crashed, or whose postStart failed) stopped but not removed, outside
    /// capacity, for `docker logs`/`docker inspect`: at most `maxCount` (default 1) for
    /// `keepFor` (default 1h). Their replacements are launched as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<super::lifecycle::Quarantine>,
    /// Spare containers kept prepared, taken first by scale-out and self-healing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool: Option<super::WarmPool>,
    /// Names of `LoadBalancer`s (same namespace) that send traffic to this group's ready
    /// instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<String>,
}

impl AutoScalingGroupSpec {
    /// The capacity this spec asks for: `desiredCapacity` (default `minSize`) clamped to
    /// [minSize, maxSize]; a `maxSize` below `minSize` counts as `minSize`, so no input panics.
    /// The one clamp the reconciler (without policies) and the namespace quotas both use.
    pub fn capacity(&self) -> u32 {
        self.desired_capacity
            .unwrap_or(self.min_size)
            .clamp(self.min_size, self.max_size.max(self.min_size))
    }
}

/// Metric a policy scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Metric {
    #[serde(rename = "CPU")]
    Cpu,
    Memory,
}

/// How samples are combined; only `Average` exists (as in the original).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Statistic {
    #[default]
    Average,
}

/// Which rule a `ScalingPolicy` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum PolicyType {
    /// The original's policy: add or remove a fixed step after a threshold breach.
    #[default]
    Step,
    /// Keep a metric near `targetValue`, sizing the group in proportion.
    TargetTracking,
    /// Set sizes at times given by cron expressions.
    Scheduled,
}

fn is_step(t: &PolicyType) -> bool {
    *t == PolicyType::Step
}

fn default_sampling_window() -> DurationSpec {
    DurationSpec::from_secs(60)
}

fn default_breach_duration() -> DurationSpec {
    DurationSpec::from_secs(60)
}

/// One scheduled action of a `Scheduled` policy: at each time matched by `cron` (in `timeZone`),
/// set the group's size bounds and/or its capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduledAction {
    /// Standard 5-field cron expression (minute hour day-of-month month day-of-week), e.g.
    /// `0 8 * * MON-FRI`.
    pub cron: String,
    /// IANA time zone the cron expression is read in, e.g. `Europe/Berlin`. Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// New lower bound, in force until the next action of this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u32>,
    /// New upper bound, in force until the next action of this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u32>,
    /// Capacity set when the action fires (policies may change it afterwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_capacity: Option<u32>,
    /// The action fires only at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The action fires only before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// A scaling policy attached to a group: `Step` (the original's, the default), `TargetTracking`
/// or `Scheduled`. Fields that belong to one type only are optional and checked per type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingPolicySpec {
    /// Name of the `AutoScalingGroup` (same namespace).
    pub auto_scaling_group: String,
    /// `Step` (default), `TargetTracking` or `Scheduled`.
    #[serde(rename = "type", default, skip_serializing_if = "is_step")]
    pub policy_type: PolicyType,
    /// `CPU` or `Memory` (percent of the instance's limit). Step and TargetTracking: this or
    /// `pushedMetric`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// Name of a metric pushed to the controller (`ms push-metric`), instead of `metric`. Its
    /// value is the group's total; thresholds and targets are per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_metric: Option<String>,
    /// `Average`.
    #[serde(default)]
    pub statistic: Statistic,
    /// Window over which samples are averaged. Default 60s.
    #[serde(default = "default_sampling_window")]
    pub sampling_window: DurationSpec,
    /// Step: how long the threshold must be breached before acting. Default 60s.
    #[serde(default = "default_breach_duration")]
    pub breach_duration: DurationSpec,
    /// Step: instances added on a breach of the upper threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_out_step: Option<u32>,
    /// Step: instances removed on a breach of the lower threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in_step: Option<u32>,
    /// Step: value (percent for CPU/Memory) above which to scale out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_threshold: Option<f64>,
    /// Step: value (percent for CPU/Memory) below which to scale in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_threshold: Option<f64>,
    /// TargetTracking: the value to keep the metric near (percent for CPU/Memory; per instance
    /// for a pushed metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_value: Option<f64>,
    /// TargetTracking: relative band around the target within which nothing changes, in
    /// percent. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// TargetTracking: scale in only to the highest recommendation of this window. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in_stabilization: Option<DurationSpec>,
    /// TargetTracking: at most this many instances added per evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale_out_step: Option<u32>,
    /// TargetTracking: at most this many instances removed per evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale_in_step: Option<u32>,
    /// Scheduled: the actions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<ScheduledAction>,
}

/// Accepts `80` as well as `{containerPort: 80, ...}`.
impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Full {
            container_port: u16,
            #[serde(default)]
            host_port: Option<u16>,
            #[serde(default)]
            host_ip: Option<String>,
            #[serde(default)]
            protocol: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Port(u16),
            Full(Full),
        }
        match Either::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "a port is a number (`80`) or a map with `containerPort` and optional `hostPort`, `hostIp`, `protocol`",
            )
        })? {
            Either::Port(p) => Ok(PortSpec { container_port: p, host_port: None, host_ip: None, protocol: None }),
            Either::Full(f) => Ok(PortSpec {
                container_port: f.container_port,
                host_port: f.host_port,
                host_ip: f.host_ip,
                protocol: f.protocol,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min: u32, max: u32, desired: Option<u32>) -> AutoScalingGroupSpec {
        serde_json::from_value(serde_json::json!({
            "launchConfiguration": "web",
            "minSize": min,
            "maxSize": max,
            "desiredCapacity": desired,
        }))
        .expect("a valid spec")
    }

    #[test]
    fn capacity_defaults_to_min_size_and_stays_within_the_bounds() {
        assert_eq!(spec(2, 5, None).capacity(), 2);
        assert_eq!(spec(2, 5, Some(4)).capacity(), 4);
        assert_eq!(spec(2, 5, Some(9)).capacity(), 5);
        assert_eq!(spec(2, 5, Some(0)).capacity(), 2);
        // A maximum below the minimum counts as the minimum (no panic in `clamp`).
        assert_eq!(spec(3, 1, Some(7)).capacity(), 3);
    }
}
