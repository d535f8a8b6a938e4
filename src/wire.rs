//! The HTTP API's wire types: the JSON bodies and headers the server ([`crate::apply`]) and the
//! client ([`crate::client`]) share, so the client never imports the server.

pub mod tty;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::manifest::{Kind, ManifestError};

/// Header carrying the name of the file the client read, so errors name the user's file.
pub const FILENAME_HEADER: &str = "x-ms-filename";
/// Response header of a standby controller (`standby`): it serves reads while another acts.
pub const ROLE_HEADER: &str = "x-ms-role";

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectResult {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// `created`, `configured`, `unchanged`, `deleted`, `scaled`, `started`, `stopped`.
    pub action: String,
    pub file: PathBuf,
}

/// Body of every successful change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChangeResponse {
    pub results: Vec<ObjectResult>,
    #[serde(default)]
    pub warnings: Vec<ManifestError>,
    #[serde(default, rename = "dryRun")]
    pub dry_run: bool,
}

/// Body of `POST /v1/asgs/{ns}/{name}/scale`.
#[derive(Debug, Deserialize, Serialize)]
pub struct ScaleRequest {
    pub desired: u32,
}

/// Body of `POST /v1/metrics/{ns}/{group}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushedValue {
    /// Metric name, as a policy's `pushedMetric`.
    pub name: String,
    /// The group's current total (e.g. queue depth).
    pub value: f64,
}

impl PushedValue {
    /// Checks name and value.
    ///
    /// # Errors
    /// One sentence for the caller.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(why) = crate::manifest::validate::metric_name_problem(&self.name) {
            return Err(format!("metric name {why}"));
        }
        if !self.value.is_finite() {
            return Err(format!("value must be a finite number, not {}", self.value));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushed_values_need_a_name_and_a_finite_value() {
        let ok = PushedValue {
            name: "queue_depth".into(),
            value: 12.5,
        };
        assert!(ok.validate().is_ok());
        let bad_name = PushedValue {
            name: "queue depth".into(),
            value: 1.0,
        };
        assert!(bad_name
            .validate()
            .unwrap_err()
            .contains("may contain only"));
        let bad_value = PushedValue {
            name: "q".into(),
            value: f64::NAN,
        };
        assert!(bad_value.validate().unwrap_err().contains("finite"));
    }
}
