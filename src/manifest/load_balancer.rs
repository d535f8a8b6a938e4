//! The `LoadBalancer` kind (a stable address in front of the instances of the groups that name
//! it) and its checks, which bound everything that reaches the balancer's configuration.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::DurationSpec;
use super::validate::{Problem, Severity};

/// The address a load balancer listens on when `listen` is not given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1";
/// How long a leaving member keeps its open connections by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest drain a load balancer may ask for.
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);
/// Health check interval bounds (HAProxy's `inter`).
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(300);
/// Longest health check path (it is written into the balancer's configuration).
pub const MAX_CHECK_PATH: usize = 256;
/// Most zones one load balancer may list.
pub const MAX_LB_ZONES: usize = 64;

/// `http` (layer 7: requests are retried on another member when a connection fails) or `tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LbMode {
    #[default]
    Http,
    Tcp,
}

impl LbMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LbMode::Http => "http",
            LbMode::Tcp => "tcp",
        }
    }
}

/// How a new connection picks its member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Each member in turn.
    #[default]
    Roundrobin,
    /// The member with the fewest open connections.
    Leastconn,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::Roundrobin => "roundrobin",
            Balance::Leastconn => "leastconn",
        }
    }
}

/// The balancer's own check of each member, on top of the group's readiness.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LbHealthCheck {
    /// Path of an HTTP `GET` that must answer 2xx or 3xx (mode `http` only); without it the
    /// check is a TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Time between two checks of a member. Default 2s (100ms to 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationSpec>,
    /// Passes in a row before a member takes traffic again. Default 2 (1 to 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    /// Failures in a row before a member stops taking traffic. Default 3 (1 to 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
}

/// A load balancer: one listening address in front of every ready instance of the groups that
/// list it in `loadBalancers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSpec {
    /// Address to listen on. Default `127.0.0.1`; any other address only when the controller
    /// configuration lists it in `loadBalancers.allowedListenAddresses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Port to listen on.
    pub port: u16,
    /// `http` (default) or `tcp`.
    #[serde(default)]
    pub mode: LbMode,
    /// The container port traffic goes to: each instance's published host port for it is the
    /// member's address, so the launch configuration must publish it.
    pub target_port: u16,
    /// `roundrobin` (default) or `leastconn`.
    #[serde(default)]
    pub balance: Balance,
    /// The balancer's own check of each member. Without it, membership follows the group's
    /// readiness alone (an instance joins when ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<LbHealthCheck>,
    /// How long a member leaving the pool keeps its open connections (no new ones reach it)
    /// before they are closed and it is removed. Default 30s, at most 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<DurationSpec>,
    /// Zones whose instances it fronts; default every zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

impl LoadBalancerSpec {
    /// The listen address as given, or the default.
    pub fn listen_addr(&self) -> &str {
        self.listen.as_deref().unwrap_or(DEFAULT_LISTEN)
    }

    /// `http://127.0.0.1:8080` (mode http) or `tcp://127.0.0.1:8080`; IPv6 in brackets.
    pub fn url(&self) -> String {
        let host = match self.listen_addr().parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => self.listen_addr().to_string(),
        };
        format!("{}://{host}:{}", self.mode.as_str(), self.port)
    }

    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0)
    }
}

/// Whether a health check path is safe to write into a configuration line: printable ASCII
/// without spaces, quotes or backslashes.
fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!(
            "path `{path}` must start with `/`, e.g. `/healthz`"
        ));
    }
    if path.len() > MAX_CHECK_PATH {
        return Some(format!(
            "path is {} characters long: use at most {MAX_CHECK_PATH}",
            path.len()
        ));
    }
    let bad = path
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\'' | '\\' | '#'));
    bad.map(|c| {
        format!(
            "path `{}` contains {c:?}: use letters, digits and URL punctuation only (percent-encode the rest)",
            path.escape_default()
        )
    })
}

/// Checks one load balancer on its own (whether its address is allowed is the controller
/// configuration's, checked when it is configured).
pub(super) fn validate_load_balancer(s: &LoadBalancerSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut error = |field: &str, message: String| {
        out.push(Problem {
            field: field.to_string(),
            message,
            severity: Severity::Error,
        })
    };
    if let Some(listen) = &s.listen {
        if listen.parse::<IpAddr>().is_err() {
            error(
                "spec.listen",
                format!(
                    "listen `{}` is not an IP address: use e.g. `127.0.0.1` (the default) or `::1`",
                    listen.escape_default()
                ),
            );
        }
    }
    if s.port == 0 {
        error(
            "spec.port",
            "port 0 is not a port to listen on: use 1-65535, e.g. 8080".into(),
        );
    }
    if s.target_port == 0 {
        error(
            "spec.targetPort",
            "targetPort 0 is not a container port: use the port the containers serve on (1-65535), e.g. 80".into(),
        );
    }
    if let Some(hc) = &s.health_check {
        if let Some(path) = &hc.path {
            if s.mode == LbMode::Tcp {
                error(
                    "spec.healthCheck.path",
                    "an HTTP path check needs mode `http`: remove `path` (a TCP connect is checked) or set `mode: http`".into(),
                );
            } else if let Some(why) = path_problem(path) {
                error("spec.healthCheck.path", why);
            }
        }
        if let Some(i) = hc.interval {
            if i.0 < MIN_CHECK_INTERVAL || i.0 > MAX_CHECK_INTERVAL {
                error(
                    "spec.healthCheck.interval",
                    format!("interval {i} is out of bounds: use 100ms to 5m"),
                );
            }
        }
        for (field, v) in [
            ("spec.healthCheck.rise", hc.rise),
            ("spec.healthCheck.fall", hc.fall),
        ] {
            if let Some(v) = v {
                if !(1..=10).contains(&v) {
                    error(field, format!("{v} is out of bounds: use 1 to 10"));
                }
            }
        }
    }
    if let Some(d) = s.drain_timeout {
        if d.0 > MAX_DRAIN_TIMEOUT {
            error(
                "spec.drainTimeout",
                format!("drainTimeout {d} is longer than the limit of 1h: use at most 1h"),
            );
        }
    }
    if s.zones.len() > MAX_LB_ZONES {
        error(
            "spec.zones",
            format!(
                "{} zones listed: list at most {MAX_LB_ZONES}",
                s.zones.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, zone) in s.zones.iter().enumerate() {
        if zone.trim().is_empty() {
            error(
                &format!("spec.zones[{i}]"),
                "a zone name must not be empty: use the name of a zone from the controller configuration".into(),
            );
        } else if !seen.insert(zone.as_str()) {
            error(
                &format!("spec.zones[{i}]"),
                format!("zone `{zone}` is listed twice: list each zone once"),
            );
        }
    }
    out
}

/// Most load balancers one group may list.
pub const MAX_GROUP_LOAD_BALANCERS: usize = 16;

/// Checks a group's `loadBalancers` list: names, no repeats, a bounded count.
pub(super) fn validate_group_load_balancers(names: &[String]) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut error = |field: String, message: String| {
        out.push(Problem {
            field,
            message,
            severity: Severity::Error,
        })
    };
    if names.len() > MAX_GROUP_LOAD_BALANCERS {
        error(
            "spec.loadBalancers".into(),
            format!(
                "{} load balancers listed: list at most {MAX_GROUP_LOAD_BALANCERS}",
                names.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !valid {
            error(
                format!("spec.loadBalancers[{i}]"),
                format!(
                    "`{}` is not a load balancer name: use the metadata.name of a LoadBalancer in the same namespace",
                    name.escape_default()
                ),
            );
        } else if !seen.insert(name.as_str()) {
            error(
                format!("spec.loadBalancers[{i}]"),
                format!("`{name}` is listed twice: list each load balancer once"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> LoadBalancerSpec {
        let mut v = serde_json::json!({"port": 8080, "targetPort": 80});
        if let (Some(m), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            m.extend(e);
        }
        serde_json::from_value(v).expect("a spec")
    }

    fn fields(s: &LoadBalancerSpec) -> Vec<String> {
        validate_load_balancer(s)
            .into_iter()
            .map(|p| p.field)
            .collect()
    }

    #[test]
    fn defaults_listen_on_loopback_over_http() {
        let s = spec(serde_json::json!({}));
        assert!(fields(&s).is_empty());
        assert_eq!(s.url(), "http://127.0.0.1:8080");
        assert_eq!(s.drain_timeout(), DEFAULT_DRAIN_TIMEOUT);
        let v6 = spec(serde_json::json!({"listen": "::1", "mode": "tcp"}));
        assert_eq!(v6.url(), "tcp://[::1]:8080");
    }

    #[test]
    fn hostile_values_are_refused_with_their_field() {
        let s = spec(serde_json::json!({
            "listen": "localhost",
            "port": 0,
            "targetPort": 0,
            "healthCheck": {"path": "/x\nbind :1", "interval": "10ms", "rise": 0, "fall": 99},
            "drainTimeout": "2h",
            "zones": ["a", "a", ""],
        }));
        assert_eq!(
            fields(&s),
            [
                "spec.listen",
                "spec.port",
                "spec.targetPort",
                "spec.healthCheck.path",
                "spec.healthCheck.interval",
                "spec.healthCheck.rise",
                "spec.healthCheck.fall",
                "spec.drainTimeout",
                "spec.zones[1]",
                "spec.zones[2]",
            ]
        );
        for path in ["healthz", "/a b", "/a\"b", "/a#b"] {
            assert!(path_problem(path).is_some(), "{path}");
        }
        assert!(path_problem("/healthz?full=1&x=%20").is_none());
        let tcp_path = spec(serde_json::json!({"mode": "tcp", "healthCheck": {"path": "/"}}));
        assert_eq!(fields(&tcp_path), ["spec.healthCheck.path"]);
    }

    #[test]
    fn a_groups_load_balancer_list_is_checked() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(validate_group_load_balancers(&names(&["front", "api-2"])).is_empty());
        let p = validate_group_load_balancers(&names(&["front", "front", "Bad_Name", ""]));
        let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.loadBalancers[1]",
                "spec.loadBalancers[2]",
                "spec.loadBalancers[3]"
            ]
        );
        let many: Vec<String> = (0..17).map(|i| format!("lb{i}")).collect();
        assert_eq!(
            validate_group_load_balancers(&many)[0].field,
            "spec.loadBalancers"
        );
    }

    #[test]
    fn unknown_modes_and_algorithms_do_not_parse() {
        for bad in [
            serde_json::json!({"port": 1, "targetPort": 1, "mode": "udp"}),
            serde_json::json!({"port": 1, "targetPort": 1, "balance": "random"}),
            serde_json::json!({"port": 70000, "targetPort": 1}),
            serde_json::json!({"port": 1, "targetPort": 1, "backend": "x"}),
        ] {
            assert!(serde_json::from_value::<LoadBalancerSpec>(bad).is_err());
        }
    }
}
