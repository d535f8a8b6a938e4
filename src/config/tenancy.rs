//! Namespaces as tenants: the limits the controller configuration sets per namespace (host
//! access, default container resources, quotas) and the checks that enforce them.
//!
//! # Rules
//! - Host access is the administrator's choice, not the tenant's: by default a manifest cannot
//!   use the `host` or `container:<id>` network modes, publish on anything but 127.0.0.1, or
//!   choose a host port outside `hostPortRange`; the controller's own port is never allowed.
//! - Every container has CPU and memory limits: a launch configuration without `instanceType`
//!   or `resources` gets the namespace's `defaultResources`, unless the namespace sets
//!   `allowUnlimitedResources: true`.
//! - Quotas count per namespace: objects (`maxObjects`), running containers and their CPU and
//!   memory limits (`maxContainers`, `maxCpus`, `maxMemoryMiB`), pushed metric names
//!   (`maxMetricNames`).
//! - Settings resolve field by field: the namespace's own entry, then the `"*"` entry, then the
//!   built-in default. Every refusal names the setting and the file it lives in.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::manifest::{
    LaunchConfigurationSpec, ManifestError, Object, ParsedFile, Problem, Resources, Severity,
};

/// The key of the entry that applies to every namespace without its own value.
pub const ANY_NAMESPACE: &str = "*";
/// Host ports a tenant may choose by default (Kubernetes' NodePort range: below Linux's
/// ephemeral ports, above the well-known ones and clear of the controller's 56785).
pub const DEFAULT_HOST_PORT_RANGE: PortRange = PortRange {
    first: 30000,
    last: 32767,
};
/// CPU limit of a container whose launch configuration sets none.
pub const DEFAULT_CPUS: f64 = 1.0;
/// Memory limit (MiB) of a container whose launch configuration sets none.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// Running containers per namespace.
pub const DEFAULT_MAX_CONTAINERS: u32 = 500;
/// Manifest objects per namespace.
pub const DEFAULT_MAX_OBJECTS: u32 = 500;
/// Distinct pushed metric names per namespace.
pub const DEFAULT_MAX_METRIC_NAMES: u32 = 100;

/// An inclusive range of ports, written `30000-32767` (or a single port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// Parses `A-B` or `A`.
    ///
    /// # Errors
    /// A sentence saying how to write a range.
    pub fn parse(s: &str) -> Result<PortRange, String> {
        let bad = || format!("`{s}` is not a port range: write e.g. `30000-32767`");
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PortRange::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One entry of `namespaces:` in the controller configuration; every field is optional and
/// falls back to the `"*"` entry, then to the built-in default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceLimits {
    /// `network: host` (the host's network stack, loopback services included). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_host_network: Option<bool>,
    /// `network: container:<id>` (another container's network stack). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_container_network: Option<bool>,
    /// Host addresses ports may be published on, besides 127.0.0.1 (always allowed).
    /// Default none. `0.0.0.0` means every address of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_host_ips: Option<Vec<IpAddr>>,
    /// Host ports a manifest may choose (`hostPort`). Default `30000-32767`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port_range: Option<PortRange>,
    /// Containers without `instanceType`/`resources` run without limits. Default false: they
    /// get `defaultResources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unlimited_resources: Option<bool>,
    /// Limits of containers whose launch configuration sets none. Default 1 CPU, 512 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_resources: Option<Resources>,
    /// Running containers at most. Default 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_containers: Option<u32>,
    /// Sum of the CPU limits of running containers at most. Default: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpus: Option<f64>,
    /// Sum of the memory limits (MiB) of running containers at most. Default: no cap.
    #[serde(
        default,
        rename = "maxMemoryMiB",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_memory_mib: Option<u64>,
    /// Manifest objects (launch configurations, groups, policies) at most. Default 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_objects: Option<u32>,
    /// Distinct pushed metric names at most. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_metric_names: Option<u32>,
}

/// CPU and memory (MiB) limits of one container; `None`: unlimited.
pub type ContainerLimits = (Option<f64>, Option<u64>);

/// What the containers of a namespace use (or a set of containers would add).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    pub containers: u32,
    pub cpus: f64,
    pub memory_mib: u64,
}

impl Usage {
    /// `n` containers with `limits` each.
    pub fn of(n: u32, limits: ContainerLimits) -> Usage {
        Usage {
            containers: n,
            cpus: limits.0.unwrap_or(0.0) * f64::from(n),
            memory_mib: limits.1.unwrap_or(0).saturating_mul(u64::from(n)),
        }
    }

    pub fn add(&mut self, other: Usage) {
        self.containers = self.containers.saturating_add(other.containers);
        self.cpus += other.cpus;
        self.memory_mib = self.memory_mib.saturating_add(other.memory_mib);
    }

    pub fn sub(&mut self, other: Usage) {
        self.containers = self.containers.saturating_sub(other.containers);
        self.cpus = (self.cpus - other.cpus).max(0.0);
        self.memory_mib = self.memory_mib.saturating_sub(other.memory_mib);
    }
}

/// The limits of every namespace, from the controller configuration.
#[derive(Debug, Clone, Default)]
pub struct Tenancy {
    namespaces: BTreeMap<String, NamespaceLimits>,
    /// The configuration file, for messages (`None`: built-in defaults, no file).
    config_file: Option<PathBuf>,
    /// Host ports nobody may publish on: the controller's own (a container holding it would
    /// receive the administrators' requests while the controller restarts).
    reserved_ports: Vec<u16>,
}

impl Tenancy {
    /// Limits from `namespaces`, read from `config_file`, never granting `reserved_ports`.
    pub fn new(
        namespaces: BTreeMap<String, NamespaceLimits>,
        config_file: Option<PathBuf>,
        reserved_ports: Vec<u16>,
    ) -> Tenancy {
        Tenancy {
            namespaces,
            config_file,
            reserved_ports,
        }
    }

    /// The value of a setting for `ns`: its own entry's, else the `"*"` entry's.
    fn pick<T>(&self, ns: &str, get: impl Fn(&NamespaceLimits) -> Option<T>) -> Option<T> {
        self.namespaces
            .get(ns)
            .and_then(&get)
            .or_else(|| self.namespaces.get(ANY_NAMESPACE).and_then(&get))
    }

    /// Where the setting `key` of `ns` is configured, for messages: the file and the key, or
    /// how to set it when the default applies.
    pub fn origin(&self, ns: &str, key: &str) -> String {
        let file = match &self.config_file {
            Some(f) => f.display().to_string(),
            None => "the controller configuration (ms controller --config FILE)".to_string(),
        };
        let has = |entry: &str| {
            self.namespaces
                .get(entry)
                .and_then(|l| serde_json::to_value(l).ok())
                .is_some_and(|v| v.get(key).is_some())
        };
        if has(ns) {
            format!("set by `namespaces.{ns}.{key}` in {file}")
        } else if has(ANY_NAMESPACE) {
            format!("set by `namespaces.\"*\".{key}` in {file}")
        } else {
            format!("the default; an administrator can change it with `namespaces.{ns}.{key}` in {file}")
        }
    }

    pub fn allow_host_network(&self, ns: &str) -> bool {
        self.pick(ns, |l| l.allow_host_network).unwrap_or(false)
    }

    pub fn allow_container_network(&self, ns: &str) -> bool {
        self.pick(ns, |l| l.allow_container_network)
            .unwrap_or(false)
    }

    /// Host IPs besides 127.0.0.1 that ports may be published on.
    pub fn allowed_host_ips(&self, ns: &str) -> Vec<IpAddr> {
        self.pick(ns, |l| l.allowed_host_ips.clone())
            .unwrap_or_default()
    }

    pub fn host_port_range(&self, ns: &str) -> PortRange {
        self.pick(ns, |l| l.host_port_range)
            .unwrap_or(DEFAULT_HOST_PORT_RANGE)
    }

    pub fn allow_unlimited_resources(&self, ns: &str) -> bool {
        self.pick(ns, |l| l.allow_unlimited_resources)
            .unwrap_or(false)
    }

    /// CPU and memory limits given to containers whose launch configuration sets none.
    pub fn default_resources(&self, ns: &str) -> (f64, u64) {
        let cpus = self
            .pick(ns, |l| l.default_resources.as_ref().and_then(|r| r.cpus))
            .unwrap_or(DEFAULT_CPUS);
        let memory = self
            .pick(ns, |l| {
                l.default_resources.as_ref().and_then(|r| r.memory_mib)
            })
            .unwrap_or(DEFAULT_MEMORY_MIB);
        (cpus, memory)
    }

    pub fn max_containers(&self, ns: &str) -> u32 {
        self.pick(ns, |l| l.max_containers)
            .unwrap_or(DEFAULT_MAX_CONTAINERS)
    }

    pub fn max_cpus(&self, ns: &str) -> Option<f64> {
        self.pick(ns, |l| l.max_cpus)
    }

    pub fn max_memory_mib(&self, ns: &str) -> Option<u64> {
        self.pick(ns, |l| l.max_memory_mib)
    }

    pub fn max_objects(&self, ns: &str) -> u32 {
        self.pick(ns, |l| l.max_objects)
            .unwrap_or(DEFAULT_MAX_OBJECTS)
    }

    pub fn max_metric_names(&self, ns: &str) -> u32 {
        self.pick(ns, |l| l.max_metric_names)
            .unwrap_or(DEFAULT_MAX_METRIC_NAMES)
    }

    /// The limits each container of `lc` (in namespace `ns`) runs with: the launch
    /// configuration's own, completed with the namespace's defaults unless it allows unlimited.
    pub fn container_limits(&self, ns: &str, lc: &LaunchConfigurationSpec) -> ContainerLimits {
        let (cpus, memory) = lc.limits();
        if self.allow_unlimited_resources(ns) {
            return (cpus, memory);
        }
        let (dc, dm) = self.default_resources(ns);
        (cpus.or(Some(dc)), memory.or(Some(dm)))
    }

    /// How many of `wanted` more containers with `each` limits fit the quotas of `ns` on top
    /// of `used`, and, when not all do, why (naming the limit and where it is configured).
    pub fn room(
        &self,
        ns: &str,
        used: Usage,
        wanted: u32,
        each: ContainerLimits,
    ) -> (u32, Option<String>) {
        let mut fit = wanted;
        let mut why = None;
        let max = self.max_containers(ns);
        let by_count = max.saturating_sub(used.containers);
        if by_count < fit {
            fit = by_count;
            why = Some(format!(
                "namespace `{ns}` may run at most {max} containers (maxContainers, {}); {} run or are starting",
                self.origin(ns, "maxContainers"),
                used.containers
            ));
        }
        if let (Some(max), Some(c)) = (self.max_cpus(ns), each.0.filter(|c| *c > 0.0)) {
            let by_cpu = ((max - used.cpus) / c + 1e-9).floor().max(0.0);
            if by_cpu < f64::from(fit) {
                fit = by_cpu as u32;
                why = Some(format!(
                    "namespace `{ns}` may use at most {max} CPUs (maxCpus, {}); its containers use {:.2}, and each new one {c}",
                    self.origin(ns, "maxCpus"),
                    used.cpus
                ));
            }
        }
        if let (Some(max), Some(m)) = (self.max_memory_mib(ns), each.1.filter(|m| *m > 0)) {
            let by_mem = max.saturating_sub(used.memory_mib) / m;
            if by_mem < u64::from(fit) {
                fit = by_mem as u32;
                why = Some(format!(
                    "namespace `{ns}` may use at most {max} MiB of memory (maxMemoryMiB, {}); its containers use {} MiB, and each new one {m} MiB",
                    self.origin(ns, "maxMemoryMiB"),
                    used.memory_mib
                ));
            }
        }
        (fit, why)
    }

    /// What the groups among `objects` (one namespace's) ask for: each started group's desired
    /// capacity (clamped to its bounds) times the limits of its launch configuration's
    /// containers. Groups waiting for their launch configuration ask for nothing yet.
    pub fn desired_usage<'a>(
        &self,
        ns: &str,
        objects: impl IntoIterator<Item = &'a Object>,
    ) -> Usage {
        let objects: Vec<&Object> = objects.into_iter().collect();
        let mut usage = Usage::default();
        for o in &objects {
            let Object::AutoScalingGroup(g) = o else {
                continue;
            };
            if g.spec.state == crate::manifest::GroupState::Stopped {
                continue;
            }
            let lc = objects.iter().find_map(|o| match o {
                Object::LaunchConfiguration(l)
                    if l.metadata.name == g.spec.launch_configuration =>
                {
                    Some(l)
                }
                _ => None,
            });
            let Some(lc) = lc else { continue };
            let n = g.spec.capacity();
            usage.add(Usage::of(n, self.container_limits(ns, &lc.spec)));
        }
        usage
    }

    /// Refuses a change of `ns` from `before` to `after` that goes beyond a quota (a change
    /// that lowers the usage of a namespace already beyond one is fine).
    ///
    /// # Errors
    /// A sentence naming the quota and where it is configured.
    pub fn check_usage(&self, ns: &str, before: Usage, after: Usage) -> Result<(), String> {
        let max = self.max_containers(ns);
        if after.containers > max && after.containers > before.containers {
            return Err(format!(
                "namespace `{ns}` may run at most {max} containers (maxContainers, {}); its groups would ask for {}",
                self.origin(ns, "maxContainers"),
                after.containers
            ));
        }
        if let Some(max) = self.max_cpus(ns) {
            if after.cpus > max + 1e-9 && after.cpus > before.cpus + 1e-9 {
                return Err(format!(
                    "namespace `{ns}` may use at most {max} CPUs (maxCpus, {}); its groups would ask for {:.2}",
                    self.origin(ns, "maxCpus"),
                    after.cpus
                ));
            }
        }
        if let Some(max) = self.max_memory_mib(ns) {
            if after.memory_mib > max && after.memory_mib > before.memory_mib {
                return Err(format!(
                    "namespace `{ns}` may use at most {max} MiB of memory (maxMemoryMiB, {}); its groups would ask for {} MiB",
                    self.origin(ns, "maxMemoryMiB"),
                    after.memory_mib
                ));
            }
        }
        Ok(())
    }

    /// Refuses a change that takes `ns` from `before` to `after` objects beyond `maxObjects`.
    ///
    /// # Errors
    /// A sentence naming the quota and where it is configured.
    pub fn check_object_count(&self, ns: &str, before: usize, after: usize) -> Result<(), String> {
        let max = self.max_objects(ns);
        if after > max as usize && after > before {
            return Err(format!(
                "namespace `{ns}` may hold at most {max} objects (maxObjects, {}); this would make {after}",
                self.origin(ns, "maxObjects")
            ));
        }
        Ok(())
    }

    /// Problems of one object against its namespace's host-access and per-container limits
    /// (quotas over several objects are checked where they are counted).
    pub fn check_object(&self, object: &Object) -> Vec<Problem> {
        let mut out = Vec::new();
        let Object::LaunchConfiguration(lc) = object else {
            return out;
        };
        let ns = lc.metadata.namespace.as_str();
        let spec = &lc.spec;
        let mut error = |field: String, message: String| {
            out.push(Problem {
                field,
                message,
                severity: Severity::Error,
            })
        };
        if let Some(network) = &spec.network {
            if network == "host" && !self.allow_host_network(ns) {
                error(
                    "spec.network".into(),
                    format!(
                        "network `host` is not allowed in namespace `{ns}`: it would share the host's network, the controller's API included (allowHostNetwork is false, {})",
                        self.origin(ns, "allowHostNetwork")
                    ),
                );
            }
            if network.starts_with("container:") && !self.allow_container_network(ns) {
                error(
                    "spec.network".into(),
                    format!(
                        "network `{network}` is not allowed in namespace `{ns}`: it would join another container's network (allowContainerNetwork is false, {})",
                        self.origin(ns, "allowContainerNetwork")
                    ),
                );
            }
        }
        let allowed = self.allowed_host_ips(ns);
        let range = self.host_port_range(ns);
        for (i, port) in spec.ports.iter().enumerate() {
            if let Some(ip) = port
                .host_ip
                .as_deref()
                .and_then(|s| s.parse::<IpAddr>().ok())
            {
                if ip != IpAddr::V4(Ipv4Addr::LOCALHOST) && !allowed.contains(&ip) {
                    let list: Vec<String> = std::iter::once("127.0.0.1".to_string())
                        .chain(allowed.iter().map(|a| a.to_string()))
                        .collect();
                    error(
                        format!("spec.ports[{i}].hostIp"),
                        format!(
                            "hostIp {ip} is not allowed in namespace `{ns}`: use one of {} (allowedHostIps, {})",
                            list.join(", "),
                            self.origin(ns, "allowedHostIps")
                        ),
                    );
                }
            }
            if let Some(hp) = port.host_port.filter(|p| *p != 0) {
                if self.reserved_ports.contains(&hp) {
                    error(
                        format!("spec.ports[{i}].hostPort"),
                        format!("hostPort {hp} is the controller's own port: choose another, or omit hostPort for a port chosen by Docker"),
                    );
                } else if !range.contains(hp) {
                    error(
                        format!("spec.ports[{i}].hostPort"),
                        format!(
                            "hostPort {hp} is outside the range {range} allowed in namespace `{ns}` (hostPortRange, {}): choose a port in it, or omit hostPort for a port chosen by Docker",
                            self.origin(ns, "hostPortRange")
                        ),
                    );
                }
            }
        }
        let (cpus, memory) = self.container_limits(ns, spec);
        let field = if spec.resources.is_some() {
            "spec.resources"
        } else if spec.instance_type.is_some() {
            "spec.instanceType"
        } else {
            "spec"
        };
        if let (Some(max), Some(c)) = (self.max_cpus(ns), cpus) {
            if c > max {
                error(
                    field.into(),
                    format!(
                        "one container would use {c} CPUs, more than namespace `{ns}` may use in all (maxCpus {max}, {})",
                        self.origin(ns, "maxCpus")
                    ),
                );
            }
        }
        if let (Some(max), Some(m)) = (self.max_memory_mib(ns), memory) {
            if m > max {
                error(
                    field.into(),
                    format!(
                        "one container would use {m} MiB, more than namespace `{ns}` may use in all (maxMemoryMiB {max}, {})",
                        self.origin(ns, "maxMemoryMiB")
                    ),
                );
            }
        }
        out
    }

    /// Enforces `maxObjects` over a directory load: files are counted in path order, and a file
    /// whose objects would take a namespace beyond its limit contributes an error instead (what
    /// it defined before keeps running, as for any file error).
    pub fn limit_objects(&self, files: &mut BTreeMap<PathBuf, ParsedFile>) {
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for (path, parsed) in files.iter_mut() {
            if !parsed.errors.is_empty() {
                continue;
            }
            let mut adds: BTreeMap<&str, u32> = BTreeMap::new();
            for o in &parsed.objects {
                *adds
                    .entry(o.object.metadata().namespace.as_str())
                    .or_default() += 1;
            }
            let over = adds.iter().find(|(ns, n)| {
                counts.get(**ns).copied().unwrap_or(0).saturating_add(**n) > self.max_objects(ns)
            });
            if let Some((ns, _)) = over {
                let ns = ns.to_string();
                let first = parsed
                    .objects
                    .iter()
                    .find(|o| o.object.metadata().namespace == ns);
                let line = first.map_or(1, |o| o.line);
                parsed.errors.push(ManifestError {
                    file: path.clone(),
                    line,
                    column: 1,
                    field: "metadata.namespace".into(),
                    message: format!(
                        "namespace `{ns}` may hold at most {} objects (maxObjects, {}): this file's objects are not loaded",
                        self.max_objects(&ns),
                        self.origin(&ns, "maxObjects")
                    ),
                });
                parsed.objects.clear();
                continue;
            }
            for (ns, n) in adds {
                *counts.entry(ns.to_string()).or_default() += n;
            }
        }
    }

    /// Refuses settings that make no sense (at start, with the configuration file's name).
    ///
    /// # Errors
    /// One sentence naming the entry and the field.
    pub fn validate(&self) -> Result<(), String> {
        for (ns, l) in &self.namespaces {
            let at = |f: &str| format!("namespaces.{ns}.{f}");
            if ns != ANY_NAMESPACE
                && !(!ns.is_empty()
                    && ns.len() <= 63
                    && ns
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
            {
                return Err(format!(
                    "namespaces: `{ns}` is not a namespace name (lower-case letters, digits and `-`), nor `\"*\"` for every namespace"
                ));
            }
            if let Some(c) = l.max_cpus {
                if !(c.is_finite() && c > 0.0) {
                    return Err(format!(
                        "{}: must be a number of CPUs above 0, not {c}",
                        at("maxCpus")
                    ));
                }
            }
            if let Some(r) = &l.default_resources {
                if let Some(c) = r.cpus {
                    if !(c.is_finite() && c > 0.0 && c <= crate::manifest::validate::MAX_CPUS) {
                        return Err(format!(
                            "{}: must be above 0 and at most {}, not {c}",
                            at("defaultResources.cpus"),
                            crate::manifest::validate::MAX_CPUS
                        ));
                    }
                }
                if let Some(m) = r.memory_mib {
                    if !(crate::manifest::validate::MIN_MEMORY_MIB
                        ..=crate::manifest::validate::MAX_MEMORY_MIB)
                        .contains(&m)
                    {
                        return Err(format!(
                            "{}: must be from {} to {} MiB, not {m}",
                            at("defaultResources.memoryMiB"),
                            crate::manifest::validate::MIN_MEMORY_MIB,
                            crate::manifest::validate::MAX_MEMORY_MIB
                        ));
                    }
                }
            }
            if l.allow_unlimited_resources == Some(true)
                && (l.max_cpus.is_some() || l.max_memory_mib.is_some())
            {
                return Err(format!(
                    "{}: unlimited containers cannot be counted against maxCpus or maxMemoryMiB; set one or the other",
                    at("allowUnlimitedResources")
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_file;

    fn tenancy(yaml: &str) -> Tenancy {
        let namespaces: BTreeMap<String, NamespaceLimits> = serde_yaml_ng::from_str(yaml).unwrap();
        Tenancy::new(namespaces, Some("/etc/ms.yaml".into()), vec![56785])
    }

    fn lc(ns: &str, spec: &str) -> Object {
        let text = format!(
            "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  image: busybox\n{spec}"
        );
        let parsed = parse_file(std::path::Path::new("lc.yaml"), &text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        parsed.objects.into_iter().next().unwrap().object
    }

    fn messages(t: &Tenancy, o: &Object) -> Vec<String> {
        t.check_object(o)
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect()
    }

    #[test]
    fn host_access_is_refused_by_default_and_names_the_setting() {
        let t = tenancy("{}");
        let m = messages(&t, &lc("team-a", "  network: host\n"));
        assert!(
            m[0].contains("spec.network: network `host` is not allowed in namespace `team-a`"),
            "{m:?}"
        );
        assert!(
            m[0].contains("`namespaces.team-a.allowHostNetwork` in /etc/ms.yaml"),
            "{m:?}"
        );
        let m = messages(&t, &lc("team-a", "  network: container:abc\n"));
        assert!(m[0].contains("allowContainerNetwork"), "{m:?}");
        let m = messages(
            &t,
            &lc(
                "team-a",
                "  ports: [{containerPort: 80, hostIp: 0.0.0.0, hostPort: 8080}]\n",
            ),
        );
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].contains("spec.ports[0].hostIp: hostIp 0.0.0.0 is not allowed"),
            "{m:?}"
        );
        assert!(
            m[1].contains("hostPort 8080 is outside the range 30000-32767"),
            "{m:?}"
        );
        let m = messages(
            &t,
            &lc(
                "team-a",
                "  ports: [{containerPort: 80, hostPort: 56785}]\n",
            ),
        );
        assert!(m[0].contains("the controller's own port"), "{m:?}");
        // Loopback, an ephemeral port or one in the range: fine.
        let ok = lc(
            "team-a",
            "  network: bridge\n  ports: [80, {containerPort: 81, hostIp: 127.0.0.1, hostPort: 31000}]\n",
        );
        assert!(messages(&t, &ok).is_empty());
    }

    #[test]
    fn an_administrator_grants_exceptions_per_namespace_or_for_all() {
        let t = tenancy(
            "{team-a: {allowHostNetwork: true, allowedHostIps: [0.0.0.0], hostPortRange: 8000-8999}, '*': {allowContainerNetwork: true}}",
        );
        let o = lc(
            "team-a",
            "  network: host\n  ports: [{containerPort: 80, hostIp: 0.0.0.0, hostPort: 8080}]\n",
        );
        assert!(messages(&t, &o).is_empty());
        assert!(messages(&t, &lc("team-b", "  network: container:x\n")).is_empty());
        let m = messages(&t, &lc("team-b", "  network: host\n"));
        assert!(m[0].contains("the default; an administrator can change it with `namespaces.team-b.allowHostNetwork`"), "{m:?}");
        assert!(t
            .origin("team-b", "allowContainerNetwork")
            .contains("`namespaces.\"*\".allowContainerNetwork` in /etc/ms.yaml"));
    }

    #[test]
    fn containers_get_default_limits_unless_unlimited_is_allowed() {
        let t = tenancy(
            "{free: {allowUnlimitedResources: true}, small: {defaultResources: {cpus: 0.25}}}",
        );
        let bare = match lc("x", "") {
            Object::LaunchConfiguration(l) => l.spec,
            _ => unreachable!(),
        };
        assert_eq!(t.container_limits("team-a", &bare), (Some(1.0), Some(512)));
        assert_eq!(t.container_limits("small", &bare), (Some(0.25), Some(512)));
        assert_eq!(t.container_limits("free", &bare), (None, None));
        let mut half = bare.clone();
        half.resources = Some(Resources {
            cpus: None,
            memory_mib: Some(64),
        });
        assert_eq!(t.container_limits("team-a", &half), (Some(1.0), Some(64)));
    }

    #[test]
    fn room_counts_containers_cpus_and_memory_and_says_which_limit_binds() {
        let t = tenancy("{team-a: {maxContainers: 5, maxCpus: 2, maxMemoryMiB: 1024}}");
        let used = Usage::of(1, (Some(0.5), Some(128)));
        assert_eq!(t.room("team-a", used, 2, (Some(0.5), Some(128))).0, 2);
        let (n, why) = t.room("team-a", used, 10, (Some(0.5), Some(128)));
        assert_eq!(n, 3);
        assert!(why.unwrap().contains(
            "at most 2 CPUs (maxCpus, set by `namespaces.team-a.maxCpus` in /etc/ms.yaml)"
        ));
        let (n, why) = t.room("team-a", used, 10, (Some(0.1), Some(512)));
        assert_eq!(n, 1);
        assert!(why.unwrap().contains("maxMemoryMiB"));
        let (n, why) = t.room("team-a", used, 10, (Some(0.1), Some(8)));
        assert_eq!(n, 4);
        assert!(why.unwrap().contains("at most 5 containers (maxContainers"));
        let (n, why) = t.room("team-b", Usage::default(), 3, (None, None));
        assert_eq!((n, why), (3, None));
    }

    #[test]
    fn one_container_above_the_namespace_total_is_refused() {
        let t = tenancy("{team-a: {maxCpus: 2, maxMemoryMiB: 256}}");
        let m = messages(
            &t,
            &lc("team-a", "  resources: {cpus: 4, memoryMiB: 1024}\n"),
        );
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].contains("spec.resources: one container would use 4 CPUs"),
            "{m:?}"
        );
        // The default memory (512 MiB) counts too.
        let m = messages(&t, &lc("team-a", ""));
        assert!(m[0].contains("512 MiB"), "{m:?}");
    }

    #[test]
    fn nonsense_settings_are_refused_at_start() {
        for (yaml, words) in [
            ("{Team_A: {}}", "not a namespace name"),
            ("{a: {maxCpus: 0}}", "namespaces.a.maxCpus"),
            (
                "{a: {defaultResources: {memoryMiB: 1}}}",
                "defaultResources.memoryMiB",
            ),
            (
                "{a: {allowUnlimitedResources: true, maxCpus: 4}}",
                "cannot be counted",
            ),
        ] {
            let err = tenancy(yaml).validate().unwrap_err();
            assert!(err.contains(words), "{yaml}: {err}");
        }
        assert!(
            serde_yaml_ng::from_str::<BTreeMap<String, NamespaceLimits>>(
                "{a: {hostPortRange: 9-1}}"
            )
            .is_err()
        );
        tenancy("{'*': {maxContainers: 10}, team-a: {hostPortRange: '8080'}}")
            .validate()
            .unwrap();
    }
}
