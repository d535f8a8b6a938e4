//! Registry credentials for image pulls: the controller's Docker config, or a namespace's own.
//!
//! ```yaml
//! registryCredentials:
//!   team-a: /etc/microscaler/registry/team-a.json   # a Docker config.json: {"auths": {...}}
//! ```
//!
//! # Rules
//! - A namespace listed under `registryCredentials` pulls with that file only, so one tenant's
//!   images are never pulled with another's password; every other namespace uses the
//!   controller's own Docker config (`$DOCKER_CONFIG/config.json`, else
//!   `~/.docker/config.json`), as `docker pull` run by the controller's user would.
//! - Credentials live in files, never in manifests: a manifest is readable by whoever can read
//!   the repository.
//! - The files are read at every pull (a rotated password is used at once); a namespace's
//!   file is checked at start-up, so a wrong path is refused then.
//! - `auths` entries are matched by registry (`127.0.0.1:5000`, also spelled
//!   `https://127.0.0.1:5000` or `http://...`; Docker Hub also as
//!   `https://index.docker.io/v1/`), with `auth` (base64 `user:password`) or `username` and
//!   `password`. Credential helpers (`credsStore`, `credHelpers`) are not run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::engine::docker::pull::{Credentials, RegistryAuth};

/// A Docker config file, as far as pulls need it.
#[derive(Debug, Default, Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Reads the credentials for `registry` from a Docker config file; a missing controller file
/// means anonymous pulls.
///
/// # Errors
/// An unreadable or malformed file, or an `auth` that is not base64 `user:password`.
pub fn credentials_in(path: &Path, registry: &str) -> Result<Option<Credentials>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read registry credentials {}: {e}", path.display()))?;
    let file: DockerConfigFile = serde_json::from_str(&text).map_err(|e| {
        format!(
            "registry credentials {} are not a Docker config.json: {e}",
            path.display()
        )
    })?;
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ];
    if registry == "docker.io" {
        keys.push("https://index.docker.io/v1/".into());
        keys.push("index.docker.io".into());
    }
    let Some(entry) = keys.iter().find_map(|k| file.auths.get(k)) else {
        return Ok(None);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let bad = || {
            format!(
                "registry credentials {}: the `auth` of {registry} is not base64 of user:password",
                path.display()
            )
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials {
            username: username.into(),
            password: password.into(),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

/// The controller's own Docker config file.
pub fn controller_docker_config() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    var("DOCKER_CONFIG")
        .map(|d| PathBuf::from(d).join("config.json"))
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")))
}

/// The credentials of every namespace: its own file, else the controller's Docker config.
#[derive(Debug, Clone)]
pub struct RegistryCredentials {
    per_namespace: BTreeMap<String, PathBuf>,
    controller: Option<PathBuf>,
}

impl RegistryCredentials {
    /// `per_namespace` as configured (relative paths from `base`), the controller's Docker
    /// config otherwise.
    pub fn new(per_namespace: &BTreeMap<String, PathBuf>, base: Option<&Path>) -> Self {
        let per_namespace = per_namespace
            .iter()
            .map(|(ns, p)| {
                let p = match base {
                    Some(b) if p.is_relative() => b.join(p),
                    _ => p.clone(),
                };
                (ns.clone(), p)
            })
            .collect();
        RegistryCredentials {
            per_namespace,
            controller: controller_docker_config(),
        }
    }

    /// Checks that every namespace's file reads and parses (start-up).
    ///
    /// # Errors
    /// The first file that does not.
    pub fn check(&self) -> Result<(), String> {
        for (ns, path) in &self.per_namespace {
            credentials_in(path, "docker.io")
                .map_err(|e| format!("registryCredentials.{ns}: {e}"))?;
        }
        Ok(())
    }
}

impl RegistryAuth for RegistryCredentials {
    fn credentials(&self, namespace: &str, registry: &str) -> Result<Option<Credentials>, String> {
        match self.per_namespace.get(namespace) {
            Some(path) => credentials_in(path, registry),
            None => match &self.controller {
                Some(path) if path.exists() => credentials_in(path, registry),
                _ => Ok(None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), json).unwrap();
        f
    }

    #[test]
    fn auths_are_found_by_registry_in_any_spelling() {
        // base64("ci:s3cret")
        let f = file(
            r#"{"auths": {"https://127.0.0.1:5000": {"auth": "Y2k6czNjcmV0"}, "reg.example.com": {"username": "u", "password": "p"}}}"#,
        );
        let c = credentials_in(f.path(), "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("ci", "s3cret"));
        let c = credentials_in(f.path(), "reg.example.com")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "u");
        assert_eq!(credentials_in(f.path(), "other:5000").unwrap(), None);
    }

    #[test]
    fn a_namespace_with_its_own_file_never_uses_the_controllers() {
        let own = file(r#"{"auths": {}}"#);
        let mut map = BTreeMap::new();
        map.insert("team-a".to_string(), own.path().to_path_buf());
        let controller = file(r#"{"auths": {"127.0.0.1:5000": {"auth": "Y2k6czNjcmV0"}}}"#);
        let mut creds = RegistryCredentials::new(&map, None);
        creds.controller = Some(controller.path().to_path_buf());
        assert_eq!(creds.credentials("team-a", "127.0.0.1:5000").unwrap(), None);
        assert!(creds
            .credentials("team-b", "127.0.0.1:5000")
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_missing_namespace_file_is_refused_at_start() {
        let mut map = BTreeMap::new();
        map.insert(
            "team-a".to_string(),
            PathBuf::from("/nonexistent/team-a.json"),
        );
        let err = RegistryCredentials::new(&map, None).check().unwrap_err();
        assert!(err.contains("registryCredentials.team-a: cannot read registry credentials /nonexistent/team-a.json"), "{err}");
    }
}
