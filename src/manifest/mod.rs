//! Manifest kinds (`LaunchConfiguration`, `AutoScalingGroup`, `ScalingPolicy`), their parsing and validation.
//!
//! The types here are the user's vocabulary: field names are camelCase as in the YAML, unknown
//! fields are rejected (`deny_unknown_fields`) so a typo is an error instead of a silent default.

pub mod duration;
pub mod instance_types;
pub mod parse;
pub mod schema;
pub mod types;
pub mod validate;
pub mod yamldoc;

pub use duration::DurationSpec;
pub use parse::{parse_file, parse_file_checked, ManifestError, ParsedFile, ParsedObject};
pub use types::*;
pub use validate::{did_you_mean, missing_references, validate, Problem, Severity};
