//! The `api:` section of the controller configuration: connection limits, timeouts and the
//! per-token rates of changes and pushed metric values (enforced by [`crate::apply`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manifest::DurationSpec;

/// The `api:` section of the controller configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiLimits {
    /// Open connections at most; more are refused when accepted. Lowered at start to half the
    /// process's file-descriptor limit, so the engines and the directory always have the rest.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A request's headers must arrive within this (an idle keep-alive connection too).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: DurationSpec,
    /// A connection without any traffic for this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: DurationSpec,
    /// Changes (apply, delete, scale, start, stop) per second per token, on average.
    #[serde(default = "default_writes_per_second")]
    pub writes_per_second: f64,
    /// Changes a token may make at once before `writesPerSecond` applies.
    #[serde(default = "default_write_burst")]
    pub write_burst: u32,
    /// Pushed metric values per second per token, on average.
    #[serde(default = "default_pushes_per_second")]
    pub pushes_per_second: f64,
    /// Pushed values a token may send at once before `pushesPerSecond` applies.
    #[serde(default = "default_push_burst")]
    pub push_burst: u32,
}

fn default_max_connections() -> usize {
    512
}
fn default_header_read_timeout() -> DurationSpec {
    DurationSpec::from_secs(10)
}
fn default_idle_timeout() -> DurationSpec {
    DurationSpec::from_secs(60)
}
fn default_writes_per_second() -> f64 {
    10.0
}
fn default_write_burst() -> u32 {
    50
}
fn default_pushes_per_second() -> f64 {
    100.0
}
fn default_push_burst() -> u32 {
    500
}

impl Default for ApiLimits {
    fn default() -> Self {
        serde_yaml_ng::from_str("{}").expect("defaults parse")
    }
}

impl ApiLimits {
    /// Refuses limits that would disable the API or the protection.
    ///
    /// # Errors
    /// One sentence naming the `api.*` key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("api.maxConnections must be at least 1".into());
        }
        for (key, d) in [
            ("headerReadTimeout", self.header_read_timeout),
            ("idleTimeout", self.idle_timeout),
        ] {
            if d.0.is_zero() || d.0 > Duration::from_secs(3600) {
                return Err(format!("api.{key} must be above 0 and at most 1h, not {d}"));
            }
        }
        for (key, r) in [
            ("writesPerSecond", self.writes_per_second),
            ("pushesPerSecond", self.pushes_per_second),
        ] {
            if !(r.is_finite() && r > 0.0) {
                return Err(format!("api.{key} must be a number above 0, not {r}"));
            }
        }
        if self.write_burst == 0 || self.push_burst == 0 {
            return Err("api.writeBurst and api.pushBurst must be at least 1".into());
        }
        Ok(())
    }
}
