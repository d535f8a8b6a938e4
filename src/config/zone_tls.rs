//! A zone's `tls:` section: the certificate files of an engine reached over TCP with TLS.
//!
//! ```yaml
//! zones:
//!   - name: b
//!     dockerHost: tcp://10.0.0.6:2376
//!     tls: { caCert: /etc/microscaler/b/ca.pem, cert: /etc/microscaler/b/cert.pem, key: /etc/microscaler/b/key.pem }
//! ```
//!
//! Relative paths are relative to the configuration file's directory. `verify` defaults to
//! `true`, and `false` is refused: an engine API whose certificate is not verified hands root on
//! that host to anyone in the middle.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::docker::endpoint::{Endpoint, EndpointError};
use crate::engine::docker::tls::TlsFiles;

/// The PEM files of a TLS zone, as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneTls {
    /// The CA that signed the engine's certificate (Docker's `ca.pem`).
    pub ca_cert: PathBuf,
    /// The client certificate (Docker's `cert.pem`); with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Its private key (Docker's `key.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Verify the engine's certificate against `caCert` (only `true` is accepted).
    #[serde(default = "yes")]
    pub verify: bool,
}

fn yes() -> bool {
    true
}

impl ZoneTls {
    /// The files, relative paths taken from `base` (the configuration file's directory).
    pub fn files(&self, base: Option<&Path>) -> TlsFiles {
        let abs = |p: &PathBuf| match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p.clone(),
        };
        TlsFiles {
            ca_cert: abs(&self.ca_cert),
            cert: self.cert.as_ref().map(abs),
            key: self.key.as_ref().map(abs),
        }
    }
}

/// Why a zone's engine address cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("zone `{zone}`: tls.verify: false is refused: microscaler always verifies the engine's certificate against caCert")]
    NoVerify { zone: String },
    #[error("zone `{zone}`: {source}")]
    Endpoint {
        zone: String,
        #[source]
        source: EndpointError,
    },
}

/// The endpoint of a zone: its `dockerHost` (default: Docker's variables) and `tls` files.
///
/// # Errors
/// `verify: false`, or Docker's variables asking for TLS without a certificate directory.
pub fn endpoint(
    zone: &str,
    docker_host: Option<&str>,
    tls: Option<&ZoneTls>,
    base: Option<&Path>,
) -> Result<Endpoint, ZoneError> {
    if tls.is_some_and(|t| !t.verify) {
        return Err(ZoneError::NoVerify { zone: zone.into() });
    }
    Endpoint::new(docker_host, tls.map(|t| t.files(base))).map_err(|source| ZoneError::Endpoint {
        zone: zone.into(),
        source,
    })
}

/// Everything start-up can check about a zone's address: the scheme, and that its TLS files
/// read and parse.
///
/// # Errors
/// As [`endpoint`] and [`Endpoint::check`].
pub fn check(
    zone: &str,
    docker_host: Option<&str>,
    tls: Option<&ZoneTls>,
    base: Option<&Path>,
) -> Result<(), ZoneError> {
    endpoint(zone, docker_host, tls, base)?
        .check()
        .map_err(|source| ZoneError::Endpoint {
            zone: zone.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_taken_from_the_configuration_directory() {
        let t: ZoneTls =
            serde_yaml_ng::from_str("{caCert: ca.pem, cert: /abs/cert.pem, key: k.pem}").unwrap();
        assert!(t.verify);
        let f = t.files(Some(Path::new("/etc/ms")));
        assert_eq!(f.ca_cert, PathBuf::from("/etc/ms/ca.pem"));
        assert_eq!(f.cert, Some(PathBuf::from("/abs/cert.pem")));
        assert_eq!(f.key, Some(PathBuf::from("/etc/ms/k.pem")));
    }

    #[test]
    fn verify_false_is_refused() {
        let t: ZoneTls = serde_yaml_ng::from_str("{caCert: ca.pem, verify: false}").unwrap();
        let err = check("b", Some("tcp://10.0.0.6:2376"), Some(&t), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("zone `b`: tls.verify: false is refused"),
            "{err}"
        );
    }
}
