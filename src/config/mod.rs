//! The controller's own configuration: zones and their Docker endpoints, listen address, tokens.
//!
//! Works with no file at all: one zone `local` on the local Docker socket (`DOCKER_HOST` respected),
//! listening on 127.0.0.1:56785 with no tokens.
//!
//! # Layout
//! - This file: [`Config`], loading and validation.
//! - [`api`]: the `api:` section (connections, timeouts, per-token rates).
//! - [`tenancy`]: the `namespaces:` section (host access, default resources, quotas) and the
//!   checks that enforce it, used by the watcher, the reconciler and the API alike.
//! - [`api_tls`]: the API's own TLS and the rule for listening beyond loopback.
//! - [`registry`]: registry credentials for image pulls (`registryCredentials:`, Docker's config).
//! - [`zone_tls`]: a zone's `tls:` files and the start-up check of its engine address.
//! - [`load_balancers`]: the `loadBalancers:` section (managed HAProxy, allowed listen addresses).

pub mod api;
pub mod api_tls;
pub mod load_balancers;
pub mod registry;
pub mod tenancy;
pub mod zone_tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::tenancy::{NamespaceLimits, Tenancy};
use crate::manifest::DurationSpec;
use api::ApiLimits;

/// The original microscaler's port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:56785";

/// One availability zone: a Docker engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: String,
    /// `unix:///var/run/docker.sock`, `tcp://127.0.0.1:2375`; default: `DOCKER_HOST` or the local socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
    /// TLS files for a `tcp://` engine started with `--tlsverify`. See [`zone_tls`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<zone_tls::ZoneTls>,
}

impl ZoneConfig {
    /// How to reach this zone's engine (relative TLS paths from the configuration's directory).
    ///
    /// # Errors
    /// See [`zone_tls::endpoint`].
    pub fn endpoint(
        &self,
        config_file: Option<&Path>,
    ) -> Result<crate::engine::docker::endpoint::Endpoint, zone_tls::ZoneError> {
        let base = config_file.and_then(Path::parent);
        zone_tls::endpoint(
            &self.name,
            self.docker_host.as_deref(),
            self.tls.as_ref(),
            base,
        )
    }
}

/// A bearer token and the namespaces it may act on (`*` for all).
///
/// In the file, the token is given inline (`token:`), or better kept out of it: `tokenFile:` (a
/// file holding the token, e.g. a systemd credential or a mounted secret; surrounding
/// whitespace ignored) or `tokenEnv:` (the name of an environment variable holding it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "TokenSource")]
pub struct TokenConfig {
    pub token: String,
    pub namespaces: Vec<String>,
}

/// A token entry as written in the configuration file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenSource {
    token: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    namespaces: Vec<String>,
}

impl TryFrom<TokenSource> for TokenConfig {
    type Error = String;

    fn try_from(s: TokenSource) -> Result<Self, Self::Error> {
        let token = match (s.token, s.token_file, s.token_env) {
            (Some(t), None, None) => t,
            (None, Some(f), None) => std::fs::read_to_string(&f)
                .map_err(|e| format!("tokenFile {}: {e}", f.display()))?
                .trim()
                .to_string(),
            (None, None, Some(v)) => std::env::var(&v)
                .map_err(|_| format!("tokenEnv {v}: the environment variable is not set"))?
                .trim()
                .to_string(),
            _ => {
                return Err(
                    "give each token exactly one of `token`, `tokenFile` or `tokenEnv`".into(),
                )
            }
        };
        Ok(TokenConfig {
            token,
            namespaces: s.namespaces,
        })
    }
}

impl TokenConfig {
    pub fn allows(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|n| n == "*" || n == namespace)
    }
}

/// The configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Watched manifest directory.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// HTTP listen address of the apply endpoint.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Zones; default one zone `local`.
    #[serde(default = "default_zones")]
    pub zones: Vec<ZoneConfig>,
    /// Bearer tokens; none means no authentication (only allowed on loopback).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Periodic resync of every group against the engines (safety net for missed events).
    #[serde(default = "default_resync")]
    pub resync_period: DurationSpec,
    /// Periodic rescan of the directory (safety net for missed file events).
    #[serde(default = "default_rescan")]
    pub rescan_period: DurationSpec,
    /// Quiet time after a file event before reloading (coalesces editor saves and `git checkout`).
    #[serde(default = "default_debounce")]
    pub debounce: DurationSpec,
    /// Allow a pass that deletes every group at once (directory emptied).
    #[serde(default)]
    pub allow_empty: bool,
    /// Name of this controller. Containers carry it in `io.microscaler.controller`, so several
    /// controllers can share a Docker engine without touching each other's containers.
    #[serde(default = "default_controller_name")]
    pub controller_name: String,
    /// Creations/removals in flight per group at most.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How often CPU/memory of every managed container is sampled and policies are evaluated.
    #[serde(default = "default_metrics_period")]
    pub metrics_period: DurationSpec,
    /// Pushed metric values older than this are missing (never zero).
    #[serde(default = "default_pushed_max_age")]
    pub pushed_metric_max_age: DurationSpec,
    /// Container stats requests in flight per zone at most.
    #[serde(default = "default_metrics_concurrency")]
    pub metrics_concurrency: usize,
    /// Where group status is written besides the API: `inline` (a `status:` block in each
    /// manifest, the default), `sidecar` (a parallel tree of `*.status.yaml` under `statusDir`,
    /// for repositories that must never be written) or `off`.
    #[serde(default)]
    pub status_mode: StatusMode,
    /// Root of the sidecar tree (`statusMode: sidecar`): the status of `<dir>/a/web.yaml` goes
    /// to `<statusDir>/a/web.status.yaml`. Best outside the watched directory; inside it, the
    /// watcher skips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_dir: Option<PathBuf>,
    /// Per-namespace limits (`"*"`: every namespace without its own entry): host access,
    /// default container resources, quotas. See [`crate::config::tenancy`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, NamespaceLimits>,
    /// The API's certificate and key: with them the API speaks only HTTPS. See [`api_tls`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<api_tls::ApiTls>,
    /// Listen beyond loopback without TLS (`--insecure-listen`): only on a trusted network.
    #[serde(default)]
    pub insecure_listen: bool,
    /// Per-namespace registry credentials: a Docker `config.json` file per namespace; other
    /// namespaces pull with the controller's own Docker config. See [`registry`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registry_credentials: BTreeMap<String, PathBuf>,
    /// Limits of the HTTP API: connections, timeouts, write rates. See [`api`].
    #[serde(default)]
    pub api: ApiLimits,
    /// The load balancers' managed HAProxy and what they may listen on. See [`load_balancers`].
    #[serde(default)]
    pub load_balancers: load_balancers::LoadBalancersConfig,
    /// The file this configuration was read from (for messages naming a setting).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Set on a standby's read-only controller: its API says so on every answer.
    #[serde(skip)]
    pub standby: bool,
}

/// The shortest bearer token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Where the controller writes group status (the API serves it in every mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusMode {
    /// A `status:` block in the group's own manifest document.
    #[default]
    Inline,
    /// `*.status.yaml` files in a parallel tree under `statusDir`; manifests are never written.
    Sidecar,
    /// Nowhere but the API.
    Off,
}

/// The directory a controller watches when neither `--dir` nor `dir:` names one: a directory of
/// its own (`$XDG_DATA_HOME/microscaler/manifests`, else `~/.local/share/microscaler/manifests`,
/// else `/var/lib/microscaler/manifests`), never the working directory, which in a checkout of
/// this repository would be the examples' parent (and git-tracked files).
pub fn default_dir() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    data.join("microscaler").join("manifests")
}
fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default address")
}
fn default_zones() -> Vec<ZoneConfig> {
    vec![ZoneConfig {
        name: "local".into(),
        docker_host: None,
        tls: None,
    }]
}
fn default_resync() -> DurationSpec {
    DurationSpec::from_secs(30)
}
fn default_rescan() -> DurationSpec {
    DurationSpec::from_secs(30)
}
fn default_debounce() -> DurationSpec {
    DurationSpec(Duration::from_millis(50))
}
fn default_controller_name() -> String {
    crate::engine::labels::DEFAULT_CONTROLLER.to_string()
}
fn default_concurrency() -> usize {
    16
}
fn default_metrics_period() -> DurationSpec {
    DurationSpec::from_secs(10)
}
fn default_pushed_max_age() -> DurationSpec {
    DurationSpec::from_secs(120)
}
fn default_metrics_concurrency() -> usize {
    8
}

impl Default for Config {
    fn default() -> Self {
        serde_yaml_ng::from_str("{}").expect("defaults parse")
    }
}

impl Config {
    /// Loads the file, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read configuration {}: {e}", path.display()))?;
        let mut config: Config = serde_yaml_ng::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid configuration {}: {e}", path.display()))?;
        config.source = Some(path.to_path_buf());
        config.validate()?;
        Ok(config)
    }

    /// Refuses configurations that would be unsafe or meaningless.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.zones.is_empty() {
            anyhow::bail!("the configuration needs at least one zone");
        }
        let mut names: Vec<&str> = self.zones.iter().map(|z| z.name.as_str()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            anyhow::bail!("zone `{}` is configured twice", w[0]);
        }
        match (self.status_mode, &self.status_dir) {
            (StatusMode::Sidecar, None) => anyhow::bail!(
                "statusMode: sidecar needs statusDir: the directory for the `*.status.yaml` tree, \
                 outside the watched directory (for example /var/lib/microscaler/status)"
            ),
            (StatusMode::Sidecar, Some(d)) if d.as_os_str().is_empty() => {
                anyhow::bail!("statusDir is empty: name the directory for the status tree")
            }
            _ => {}
        }
        // Two spellings of one engine (`unix:///var/run/docker.sock`, `/var/run/docker.sock`)
        // would list every container twice. Engines reached differently (a TCP port forwarded
        // to a socket) are caught at start-up by their engine identity.
        let mut hosts: Vec<(String, &str)> = self
            .zones
            .iter()
            .map(|z| (normalized_host(z.docker_host.as_deref()), z.name.as_str()))
            .collect();
        hosts.sort();
        if let Some(w) = hosts.windows(2).find(|w| w[0].0 == w[1].0) {
            anyhow::bail!(
                "zones `{}` and `{}` are the same Docker engine ({}): configure each engine once",
                w[0].1,
                w[1].1,
                w[0].0
            );
        }
        let file = self
            .source
            .as_ref()
            .map(|p| format!(" in {}", p.display()))
            .unwrap_or_default();
        // Schemes and certificate files are checked now, never discovered at the first call.
        let base = self.source.as_deref().and_then(Path::parent);
        for z in &self.zones {
            zone_tls::check(&z.name, z.docker_host.as_deref(), z.tls.as_ref(), base)
                .map_err(|e| anyhow::anyhow!("invalid configuration{file}: {e}"))?;
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.chars().count() < MIN_TOKEN_LEN {
                anyhow::bail!(
                    "tokens[{i}]{file}: a token of {} characters is too easy to guess: use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 16`)",
                    t.token.chars().count()
                );
            }
        }
        self.registry_auth()
            .check()
            .map_err(|e| anyhow::anyhow!("invalid configuration{file}: {e}"))?;
        self.tenancy()
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration{file}: {e}"))?;
        self.api
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration{file}: {e}"))?;
        self.load_balancers
            .validate(&self.controller_name)
            .map_err(|e| anyhow::anyhow!("invalid configuration{file}: {e}"))?;
        if !self.listen.ip().is_loopback() && self.tokens.is_empty() {
            anyhow::bail!(
                "refusing to listen on {} without tokens: anyone on the network could change your groups. \
                 Add `tokens:` to the configuration or listen on 127.0.0.1",
                self.listen
            );
        }
        if let Some(tls) = &self.tls {
            tls.server_config(base)
                .map_err(|e| anyhow::anyhow!("invalid configuration{file}: {e}"))?;
        } else if !self.listen.ip().is_loopback() && !self.insecure_listen {
            anyhow::bail!(
                "refusing to listen on {} without TLS: the tokens would cross the network in clear. \
                 Add `tls: {{cert, key}}` to the configuration, or pass --insecure-listen on a trusted network",
                self.listen
            );
        }
        Ok(())
    }

    /// The per-namespace limits, naming this file in their messages; the controller's own port
    /// is never a tenant's.
    pub fn tenancy(&self) -> Tenancy {
        Tenancy::new(
            self.namespaces.clone(),
            self.source.clone(),
            vec![self.listen.port()],
        )
    }

    /// The registry credentials of every namespace (relative paths from this file's directory).
    pub fn registry_auth(&self) -> registry::RegistryCredentials {
        registry::RegistryCredentials::new(
            &self.registry_credentials,
            self.source.as_deref().and_then(Path::parent),
        )
    }

    /// Names of the configured zones, in order.
    pub fn zone_names(&self) -> Vec<String> {
        self.zones.iter().map(|z| z.name.clone()).collect()
    }
}

/// A Docker address in one spelling: `unix:///x` and `/x` are the same socket; no address
/// means `DOCKER_HOST`, else the local socket.
fn normalized_host(host: Option<&str>) -> String {
    let host = host
        .map(str::to_string)
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| crate::engine::docker::DEFAULT_SOCKET.to_string());
    let host = host.trim();
    let path = host.strip_prefix("unix://").unwrap_or(host);
    match path
        .strip_prefix("tcp://")
        .or_else(|| path.strip_prefix("http://"))
        .or_else(|| path.strip_prefix("https://"))
    {
        Some(addr) => format!("tcp://{}", addr.trim_end_matches('/')),
        None => format!("unix://{}", path.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_has_one_local_zone_on_loopback() {
        let c = Config::default();
        assert_eq!(c.zone_names(), vec!["local".to_string()]);
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        c.validate().unwrap();
    }

    #[test]
    fn status_mode_defaults_to_inline_and_sidecar_needs_a_directory() {
        assert_eq!(Config::default().status_mode, StatusMode::Inline);
        let c: Config = serde_yaml_ng::from_str("statusMode: sidecar\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("statusDir"), "{err}");
        let c: Config =
            serde_yaml_ng::from_str("statusMode: sidecar\nstatusDir: /var/lib/ms/status\n")
                .unwrap();
        c.validate().unwrap();
        let c: Config = serde_yaml_ng::from_str("statusMode: off\n").unwrap();
        assert_eq!(c.status_mode, StatusMode::Off);
        assert!(serde_yaml_ng::from_str::<Config>("statusMode: files\n").is_err());
    }

    #[test]
    fn the_default_directory_is_not_the_working_directory() {
        let d = default_dir();
        assert!(d.is_absolute(), "{}", d.display());
        assert!(d.ends_with("microscaler/manifests"), "{}", d.display());
    }

    #[test]
    fn one_engine_spelled_twice_is_refused() {
        let zone = |name: &str, host: &str| ZoneConfig {
            name: name.into(),
            docker_host: Some(host.into()),
            tls: None,
        };
        let c = Config {
            zones: vec![
                zone("a", "unix:///var/run/docker.sock"),
                zone("b", "/var/run/docker.sock"),
            ],
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("zones `a` and `b` are the same Docker engine"),
            "{err}"
        );
        let c = Config {
            zones: vec![
                zone("a", "unix:///var/run/docker.sock"),
                zone("b", "unix:///run/microscaler-zone-b.sock"),
            ],
            ..Config::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn listening_beyond_loopback_without_tokens_is_refused() {
        let mut c = Config {
            listen: "0.0.0.0:56785".parse().unwrap(),
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("without tokens"), "{err}");
        c.tokens.push(TokenConfig {
            token: "0123456789abcdef".into(),
            namespaces: vec!["*".into()],
        });
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("without TLS"), "{err}");
        c.insecure_listen = true;
        c.validate().unwrap();
    }

    #[test]
    fn tokens_come_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        std::env::set_var("MS_TEST_TOKEN_14", "fedcba9876543210fedc");
        let yaml = format!(
            "tokens:\n  - tokenFile: {}\n    namespaces: [a]\n  - tokenEnv: MS_TEST_TOKEN_14\n    namespaces: [b]\n",
            file.display()
        );
        let c: Config = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(c.tokens[0].token, "0123456789abcdef0123");
        assert_eq!(c.tokens[1].token, "fedcba9876543210fedc");
        let both = "tokens:\n  - token: x\n    tokenEnv: Y\n    namespaces: [a]\n";
        let err = serde_yaml_ng::from_str::<Config>(both)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one of"), "{err}");
        let missing = "tokens:\n  - tokenEnv: MS_TEST_NOT_SET_14\n    namespaces: [a]\n";
        let err = serde_yaml_ng::from_str::<Config>(missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("MS_TEST_NOT_SET_14"), "{err}");
    }

    #[test]
    fn short_tokens_are_refused_at_start() {
        let c = Config {
            tokens: vec![TokenConfig {
                token: "s3cret".into(),
                namespaces: vec!["*".into()],
            }],
            source: Some("/etc/ms.yaml".into()),
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("tokens[0] in /etc/ms.yaml: a token of 6 characters is too easy to guess: use at least 16"),
            "{err}"
        );
    }
}
