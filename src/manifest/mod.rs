//! Manifest kinds (`LaunchConfiguration`, `AutoScalingGroup`, `ScalingPolicy`), their parsing and validation.
//!
//! The types here are the user's vocabulary: field names are camelCase as in the YAML, unknown
//! fields are rejected (`deny_unknown_fields`) so a typo is an error instead of a silent default.
//!
//! # Layout
//! - [`types`]: the kinds and their fields; [`duration`], [`instance_types`]: their value types;
//!   [`health_check`]: `healthCheck` (probes, their bounds, readiness and liveness).
//!   [`lifecycle`]: hooks, draining and termination policies.
//! - [`yamldoc`]: splits a file into its YAML documents (byte ranges, comments kept).
//! - [`parse`]: a file → objects, with file:line:column errors; [`mod@validate`]: bounds and
//!   references; [`schema`]: the JSON Schemas under `schema/`.

pub mod duration;
pub mod health_check;
pub mod instance_types;
pub mod lifecycle;
pub mod load_balancer;
pub mod parse;
pub mod schema;
pub mod types;
pub mod validate;
pub mod warm_pool;
pub mod yamldoc;

pub use duration::DurationSpec;
pub use health_check::HealthCheck;
pub use lifecycle::{Hook, Lifecycle, TerminationPolicy};
pub use load_balancer::{Balance, LbHealthCheck, LbMode, LoadBalancerSpec};
pub use parse::{parse_file, parse_file_checked, ManifestError, ParsedFile, ParsedObject};
pub use types::*;
pub use validate::{did_you_mean, missing_references, validate, Problem, Severity};
pub use warm_pool::{WarmPool, WarmPoolState};
