//! `healthCheck:`: how the controller probes each instance (HTTP, TCP, Exec, or the image's own
//! Docker HEALTHCHECK), its bounds, and the readiness and liveness probes it resolves to.
//!
//! The top-level fields describe one probe used for both readiness and liveness; `readiness:`
//! and `liveness:` override it per role (a role's unset fields are taken from the top level), so
//! a readiness-only or liveness-only check writes just that role. A group's `healthCheck`
//! replaces its launch configuration's as a whole.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::DurationSpec;
use super::types::PortSpec;

/// Default time between two probes of one instance.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default time one probe may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default successes in a row before an instance is ready.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 1;
/// Default failures in a row before an instance is not ready / fails liveness.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// `healthCheckGracePeriod` when unset: no liveness verdict during the first minute.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// Shortest `interval` (bounds the probe load one group can ask for).
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest `interval`.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest `timeout`.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest `timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest `healthyThreshold` / `unhealthyThreshold`.
pub const MAX_THRESHOLD: u32 = 100;
/// Longest HTTP `path`, in bytes.
pub const MAX_PATH: usize = 1024;
/// At most this many arguments in an Exec `command`...
pub const MAX_COMMAND_ARGS: usize = 64;
/// ...of at most this many bytes together.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// At most this many codes or ranges in `expectStatus`.
pub const MAX_STATUS_RANGES: usize = 16;

/// How an instance is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HealthCheckType {
    /// `GET path` on the container's published `port`; healthy when the status is in `expectStatus`.
    #[serde(rename = "HTTP")]
    Http,
    /// A TCP connection to the container's published `port`.
    #[serde(rename = "TCP")]
    Tcp,
    /// `command` run in the container (the engine's exec); healthy when it exits with 0.
    Exec,
    /// The image's own HEALTHCHECK: an `unhealthy` container fails liveness and is replaced.
    Docker,
}

/// Expected HTTP status: a code (`200`) or a list of codes and ranges (`"200-399"`, `"200,204"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ExpectStatus {
    Code(u16),
    Ranges(String),
}

/// One probe as written: every field optional (defaults, or inherited from the top level).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeSpec {
    /// `HTTP`, `TCP`, `Exec` or `Docker`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub check_type: Option<HealthCheckType>,
    /// HTTP: the path to GET. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP and TCP: the container port; it must be published (`ports:`), since probes reach
    /// containers through their published port only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// HTTP: healthy status codes. Default `"200-399"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<ExpectStatus>,
    /// Exec: the command run in the container (no shell unless you name one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Time between two probes of one instance. Default 10s; 1s to 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationSpec>,
    /// Time one probe may take (then it failed). Default 2s; 100ms to 60s, at most `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// Successes in a row before a not-ready instance is ready. Default 1; 1 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    /// Failures in a row before an instance is not ready, or fails liveness (then it is
    /// replaced). Default 3; 1 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
}

/// `healthCheck:` of a launch configuration or a group (the group's replaces the launch
/// configuration's).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// The probe for both readiness and liveness: `HTTP`, `TCP`, `Exec` or `Docker`. Omitted:
    /// only `readiness` / `liveness` probe.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub check_type: Option<HealthCheckType>,
    /// HTTP: the path to GET. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP and TCP: the container port; it must be published (`ports:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// HTTP: healthy status codes. Default `"200-399"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<ExpectStatus>,
    /// Exec: the command run in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Time between two probes of one instance. Default 10s; 1s to 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationSpec>,
    /// Time one probe may take. Default 2s; 100ms to 60s, at most `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// Successes in a row before a not-ready instance is ready. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    /// Failures in a row before an instance is not ready, or fails liveness. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    /// Readiness only (gates the ready count, rollouts and metrics): overrides the fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ProbeSpec>,
    /// Liveness only (failing it `unhealthyThreshold` times in a row replaces the instance):
    /// overrides the fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<ProbeSpec>,
}

/// What one probe does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Check {
    /// `GET path` on the published `port`; healthy when the status is in one of `expect`.
    Http {
        path: String,
        port: u16,
        expect: Vec<(u16, u16)>,
    },
    /// A TCP connection to the published `port`.
    Tcp { port: u16 },
    /// `command` in the container exits with 0.
    Exec { command: Vec<String> },
    /// The engine's health status of the image's HEALTHCHECK.
    Docker,
}

/// One resolved probe: defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Probe {
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// The probes of a group: readiness and liveness (either may be absent).
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Probes {
    /// Gates readiness besides the image's HEALTHCHECK (which always does). Never `Docker`.
    pub readiness: Option<Probe>,
    /// Failing it replaces the instance.
    pub liveness: Option<Probe>,
}

impl Probes {
    pub fn is_empty(&self) -> bool {
        self.readiness.is_none() && self.liveness.is_none()
    }
}

impl HealthCheck {
    /// The top-level fields as a probe spec.
    fn top(&self) -> ProbeSpec {
        ProbeSpec {
            check_type: self.check_type,
            path: self.path.clone(),
            port: self.port,
            expect_status: self.expect_status.clone(),
            command: self.command.clone(),
            interval: self.interval,
            timeout: self.timeout,
            healthy_threshold: self.healthy_threshold,
            unhealthy_threshold: self.unhealthy_threshold,
        }
    }

    /// The effective spec of one role: the role's fields over the top level's.
    fn role(&self, role: Option<&ProbeSpec>) -> ProbeSpec {
        let top = self.top();
        let Some(r) = role else { return top };
        ProbeSpec {
            check_type: r.check_type.or(top.check_type),
            path: r.path.clone().or(top.path),
            port: r.port.or(top.port),
            expect_status: r.expect_status.clone().or(top.expect_status),
            command: r.command.clone().or(top.command),
            interval: r.interval.or(top.interval),
            timeout: r.timeout.or(top.timeout),
            healthy_threshold: r.healthy_threshold.or(top.healthy_threshold),
            unhealthy_threshold: r.unhealthy_threshold.or(top.unhealthy_threshold),
        }
    }

    /// The readiness and liveness probes, defaults filled in. Assumes a valid spec (see
    /// [`check`]); anything it cannot use resolves to no probe rather than a panic.
    pub fn resolve(&self) -> Probes {
        let uses_top = self.check_type.is_some();
        let readiness = (uses_top || self.readiness.is_some())
            .then(|| resolve_probe(&self.role(self.readiness.as_ref())))
            .flatten()
            // The image's HEALTHCHECK gates readiness anyway: `Docker` adds nothing there.
            .filter(|p| p.check != Check::Docker);
        let liveness = (uses_top || self.liveness.is_some())
            .then(|| resolve_probe(&self.role(self.liveness.as_ref())))
            .flatten();
        Probes {
            readiness,
            liveness,
        }
    }
}

fn resolve_probe(s: &ProbeSpec) -> Option<Probe> {
    let check = match s.check_type? {
        HealthCheckType::Http => Check::Http {
            path: s.path.clone().unwrap_or_else(|| "/".to_string()),
            port: s.port?,
            expect: match &s.expect_status {
                None => vec![(200, 399)],
                Some(e) => parse_expect(e).ok()?,
            },
        },
        HealthCheckType::Tcp => Check::Tcp { port: s.port? },
        HealthCheckType::Exec => Check::Exec {
            command: s.command.clone().filter(|c| !c.is_empty())?,
        },
        HealthCheckType::Docker => Check::Docker,
    };
    let interval = s.interval.map_or(DEFAULT_INTERVAL, |d| d.0);
    Some(Probe {
        check,
        interval,
        timeout: s.timeout.map_or(DEFAULT_TIMEOUT.min(interval), |d| d.0),
        healthy_threshold: s
            .healthy_threshold
            .unwrap_or(DEFAULT_HEALTHY_THRESHOLD)
            .max(1),
        unhealthy_threshold: s
            .unhealthy_threshold
            .unwrap_or(DEFAULT_UNHEALTHY_THRESHOLD)
            .max(1),
    })
}

/// Parses `expectStatus` into inclusive ranges.
pub fn parse_expect(e: &ExpectStatus) -> Result<Vec<(u16, u16)>, String> {
    let code = |s: &str| -> Result<u16, String> {
        match s.trim().parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(c),
            _ => Err(format!(
                "`{}` is not an HTTP status code (100-599)",
                s.trim()
            )),
        }
    };
    let text = match e {
        ExpectStatus::Code(c) => return code(&c.to_string()).map(|c| vec![(c, c)]),
        ExpectStatus::Ranges(s) => s,
    };
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() > MAX_STATUS_RANGES {
        return Err(format!(
            "{} codes or ranges are more than the limit of {MAX_STATUS_RANGES}",
            parts.len()
        ));
    }
    let mut out = Vec::new();
    for part in parts {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => {
                let c = code(part)?;
                (c, c)
            }
        };
        if lo > hi {
            return Err(format!(
                "range `{}` runs backwards: write the lower code first",
                part.trim()
            ));
        }
        out.push((lo, hi));
    }
    Ok(out)
}

/// The problems of `h` at `at` (e.g. `spec.healthCheck`), as (field, message) pairs. `ports`
/// are the launch configuration's published ports when known (a group's override is checked
/// against them when the reconciler resolves the group).
pub fn check(h: &HealthCheck, ports: Option<&[PortSpec]>, at: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let top = h.top();
    check_fields(&top, at, &mut out);
    for (name, role) in [("readiness", &h.readiness), ("liveness", &h.liveness)] {
        if let Some(r) = role {
            check_fields(r, &format!("{at}.{name}"), &mut out);
        }
    }
    if h.check_type.is_none() && h.readiness.is_none() && h.liveness.is_none() {
        out.push((
            format!("{at}.type"),
            "a health check needs a `type`: HTTP, TCP, Exec or Docker (or a `readiness` / `liveness` probe with one)".to_string(),
        ));
        return out;
    }
    for (name, role) in [("readiness", &h.readiness), ("liveness", &h.liveness)] {
        let used = h.check_type.is_some() || role.is_some();
        if !used {
            continue;
        }
        let field = if role.is_some() {
            format!("{at}.{name}")
        } else {
            at.to_string()
        };
        let eff = h.role(role.as_ref());
        let mut found = Vec::new();
        check_effective(&eff, &field, ports, &mut found);
        // A problem of an inherited field is the top level's: reported once, where written.
        for (path, message) in found {
            let inherited = role.as_ref().and_then(|r| {
                let f = path.strip_prefix(&format!("{field}."))?;
                (f != "type" && !sets(r, f)).then(|| format!("{at}.{f}"))
            });
            out.push((inherited.unwrap_or(path), message));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

/// Whether `s` writes field `f` itself.
fn sets(s: &ProbeSpec, f: &str) -> bool {
    match f {
        "path" => s.path.is_some(),
        "port" => s.port.is_some(),
        "expectStatus" => s.expect_status.is_some(),
        "command" => s.command.is_some(),
        "interval" => s.interval.is_some(),
        "timeout" => s.timeout.is_some(),
        "healthyThreshold" => s.healthy_threshold.is_some(),
        "unhealthyThreshold" => s.unhealthy_threshold.is_some(),
        _ => s.check_type.is_some(),
    }
}

/// Bounds of the fields as written (each role and the top level on its own).
fn check_fields(s: &ProbeSpec, at: &str, out: &mut Vec<(String, String)>) {
    let mut err = |f: &str, m: String| out.push((format!("{at}.{f}"), m));
    if let Some(d) = s.interval {
        if d.0 < MIN_INTERVAL || d.0 > MAX_INTERVAL {
            err(
                "interval",
                format!("interval {d} is outside 1s to 1h: probe at most once a second, at least once an hour"),
            );
        }
    }
    if let Some(d) = s.timeout {
        if d.0 < MIN_TIMEOUT || d.0 > MAX_TIMEOUT {
            err(
                "timeout",
                format!("timeout {d} is outside 100ms to 60s: use e.g. `2s`"),
            );
        }
    }
    for (name, v) in [
        ("healthyThreshold", s.healthy_threshold),
        ("unhealthyThreshold", s.unhealthy_threshold),
    ] {
        if let Some(n) = v {
            if n == 0 || n > MAX_THRESHOLD {
                err(
                    name,
                    format!("{name} {n} is outside 1 to {MAX_THRESHOLD}: count at least 1 probe, at most {MAX_THRESHOLD}"),
                );
            }
        }
    }
    if let Some(p) = &s.path {
        if !p.starts_with('/') {
            err(
                "path",
                format!("path `{}` must start with `/`, e.g. `/healthz`", clip(p)),
            );
        } else if p.len() > MAX_PATH {
            err(
                "path",
                format!("path is {} bytes long: use at most {MAX_PATH}", p.len()),
            );
        } else if !p.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            err(
                "path",
                format!(
                    "path `{}` has spaces or control or non-ASCII characters: percent-encode them",
                    clip(p)
                ),
            );
        }
    }
    if s.port == Some(0) {
        err("port", "port 0 is not a port: use 1-65535".to_string());
    }
    if let Some(e) = &s.expect_status {
        if let Err(why) = parse_expect(e) {
            err(
                "expectStatus",
                format!("expectStatus: {why}; write e.g. `200`, `\"200-399\"` or `\"200,204\"`"),
            );
        }
    }
    if let Some(c) = &s.command {
        let bytes: usize = c.iter().map(String::len).sum();
        if c.is_empty() || c.iter().all(|a| a.trim().is_empty()) {
            err(
                "command",
                "command must not be empty: e.g. `[\"cat\", \"/tmp/healthy\"]`".to_string(),
            );
        } else if c.len() > MAX_COMMAND_ARGS || bytes > MAX_COMMAND_BYTES {
            err(
                "command",
                format!("command has {} arguments, {bytes} bytes: use at most {MAX_COMMAND_ARGS} arguments and {MAX_COMMAND_BYTES} bytes", c.len()),
            );
        } else if c.iter().any(|a| a.contains('\0')) {
            err(
                "command",
                "command arguments must not contain NUL bytes".to_string(),
            );
        }
    }
}

/// The rules of one role once inherited fields are filled in.
fn check_effective(
    s: &ProbeSpec,
    at: &str,
    ports: Option<&[PortSpec]>,
    out: &mut Vec<(String, String)>,
) {
    let Some(t) = s.check_type else {
        out.push((
            format!("{at}.type"),
            "this probe needs a `type` (here or at the top of healthCheck): HTTP, TCP, Exec or Docker".to_string(),
        ));
        return;
    };
    let name = match t {
        HealthCheckType::Http => "HTTP",
        HealthCheckType::Tcp => "TCP",
        HealthCheckType::Exec => "Exec",
        HealthCheckType::Docker => "Docker",
    };
    let mut not_for = |f: &str, present: bool, belongs: &str| {
        if present {
            out.push((
                format!("{at}.{f}"),
                format!("{f} belongs to {belongs} checks, not to a {name} check: remove it or change `type`"),
            ));
        }
    };
    let net = matches!(t, HealthCheckType::Http | HealthCheckType::Tcp);
    not_for(
        "path",
        s.path.is_some() && t != HealthCheckType::Http,
        "HTTP",
    );
    not_for(
        "expectStatus",
        s.expect_status.is_some() && t != HealthCheckType::Http,
        "HTTP",
    );
    not_for("port", s.port.is_some() && !net, "HTTP and TCP");
    not_for(
        "command",
        s.command.is_some() && t != HealthCheckType::Exec,
        "Exec",
    );
    if t == HealthCheckType::Exec && s.command.is_none() {
        out.push((
            format!("{at}.command"),
            "an Exec check needs a `command`, e.g. `[\"cat\", \"/tmp/healthy\"]`".to_string(),
        ));
    }
    if net {
        match s.port {
            None => out.push((
                format!("{at}.port"),
                format!("a {name} check needs a `port`: the container port to probe (published in `ports:`)"),
            )),
            Some(p) if p != 0 => {
                if let Some(problem) = ports.and_then(|ps| unpublished(p, ps)) {
                    out.push((format!("{at}.port"), problem));
                }
            }
            Some(_) => {}
        }
    }
    if let (Some(t), Some(i)) = (s.timeout, s.interval) {
        if t.0 > i.0 {
            out.push((
                format!("{at}.timeout"),
                format!("timeout {t} is longer than interval {i}: a probe must end before the next starts"),
            ));
        }
    } else if let (Some(t), None) = (s.timeout, s.interval) {
        if t.0 > DEFAULT_INTERVAL {
            out.push((
                format!("{at}.timeout"),
                format!(
                    "timeout {t} is longer than the default interval of 10s: set `interval` too"
                ),
            ));
        }
    }
}

/// Why container port `port` cannot be probed with the launch configuration's `ports`, if so.
pub fn unpublished(port: u16, ports: &[PortSpec]) -> Option<String> {
    let published = ports
        .iter()
        .any(|p| p.container_port == port && p.protocol.as_deref().unwrap_or("tcp") == "tcp");
    (!published).then(|| {
        format!(
            "container port {port} is not published as TCP in the launch configuration's `ports`: the controller probes containers only through their published ports on 127.0.0.1 (never container addresses), so add `ports: [{port}]`"
        )
    })
}

/// At most 60 characters of user text, for messages.
fn clip(s: &str) -> String {
    let mut c: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        c.push('…');
    }
    c
}

#[cfg(test)]
mod tests;
