//! The `warmPool` of an AutoScalingGroup: spare containers prepared before they are needed
//! (EC2 Auto Scaling's warm pools, for containers), and the one rule for its size.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DurationSpec;

/// Default of `prepareTime`.
pub const DEFAULT_PREPARE_TIME: Duration = Duration::from_secs(1);
/// Upper bound of `prepareTime`.
pub const MAX_PREPARE_TIME: Duration = Duration::from_secs(600);

/// Spares kept prepared (created, started once, then paused, stopped or left running) with the
/// group's current launch configuration. Scale-out and the replacement of a failed instance
/// take a spare first (unpause: tens of milliseconds instead of a cold create and start), and
/// the pool is refilled in the background. Spares are not instances: not counted in capacity,
/// metrics or readiness, never behind a load balancer; they do count in the namespace's quotas.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmPool {
    /// Spares kept prepared. Default 0: no pool.
    #[serde(default)]
    pub min_size: u32,
    /// At most this many spares. Default `maxSize` − desired capacity: the pool never holds
    /// more than the group could scale out to (set it to keep spares at `maxSize`, for
    /// self-healing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prepared: Option<u32>,
    /// What a spare is while it waits. Default `Paused`.
    #[serde(default)]
    pub state: WarmPoolState,
    /// How long a new spare runs before it is paused or stopped, so its process initializes
    /// (and, when the image has a health check, until it is healthy, for at most a minute
    /// more). Default 1s, at most 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_time: Option<DurationSpec>,
    /// A scaled-in instance goes back to the pool (when it runs the current launch
    /// configuration, is ready, and the pool has room) instead of being removed. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reuse_on_scale_in: bool,
}

/// The state a warm pool member waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum WarmPoolState {
    /// Created, started, then paused: its process is initialized and holds its memory; taken
    /// with an unpause (fastest).
    #[default]
    Paused,
    /// Created, started once, then stopped: holds no memory or CPU; taken with a start.
    Stopped,
    /// Started and left running, out of service: taken at once, costs what an instance costs.
    Running,
}

impl WarmPoolState {
    /// The name shown in status and `ms describe`.
    pub fn as_str(self) -> &'static str {
        match self {
            WarmPoolState::Paused => "Paused",
            WarmPoolState::Stopped => "Stopped",
            WarmPoolState::Running => "Running",
        }
    }
}

impl WarmPool {
    /// How long a new spare runs before it waits (`prepareTime`, default 1s).
    pub fn prepare_time(&self) -> Duration {
        self.prepare_time.map_or(DEFAULT_PREPARE_TIME, |d| d.0)
    }

    /// How many spares to keep for a group of `max_size` converging to `desired`:
    /// `minSize`, at most `maxPrepared` (default `max_size − desired`).
    pub fn size(&self, max_size: u32, desired: u32) -> u32 {
        let cap = self
            .max_prepared
            .unwrap_or_else(|| max_size.saturating_sub(desired));
        self.min_size.min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_min_size_within_its_cap() {
        let pool = |min, max_prepared| WarmPool {
            min_size: min,
            max_prepared,
            ..WarmPool::default()
        };
        // Default cap: what the group could still scale out to.
        assert_eq!(pool(5, None).size(10, 2), 5);
        assert_eq!(pool(5, None).size(10, 8), 2);
        assert_eq!(pool(5, None).size(10, 10), 0);
        // An explicit cap keeps spares at maxSize too (self-healing).
        assert_eq!(pool(2, Some(2)).size(3, 3), 2);
        assert_eq!(pool(5, Some(1)).size(10, 0), 1);
        // Off by default; a desired above maxSize never underflows.
        assert_eq!(pool(0, None).size(10, 0), 0);
        assert_eq!(pool(3, None).size(2, 5), 0);
    }

    #[test]
    fn a_manifest_may_say_just_min_size() {
        let p: WarmPool = serde_json::from_value(serde_json::json!({"minSize": 2})).unwrap();
        assert_eq!(p.state, WarmPoolState::Paused);
        assert!(!p.reuse_on_scale_in);
        assert!(serde_json::from_value::<WarmPool>(serde_json::json!({"size": 2})).is_err());
    }
}
