//! The `loadBalancers:` section: where the managed HAProxy runs, which listen addresses
//! beyond loopback a `LoadBalancer` may use, and how each zone's published ports are reached.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings of the load balancers this controller runs (one managed HAProxy).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancersConfig {
    /// The `haproxy` binary; default `haproxy` from `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haproxy: Option<PathBuf>,
    /// Directory of the managed HAProxy's configuration, admin socket, pid file and log;
    /// default `<temp dir>/microscaler-lb-<controllerName>`. Its path must stay short (a Unix
    /// socket path has at most 107 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
    /// Addresses beyond loopback a `LoadBalancer` may listen on (e.g. `0.0.0.0` or a LAN
    /// address). Loopback is always allowed; anything else only when listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_listen_addresses: Vec<IpAddr>,
    /// For each zone whose engine is on another host: the address at which that host's
    /// published ports are reached from this one. Default: `127.0.0.1` for a local socket, the
    /// engine's address for `tcp://IP:port`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zone_addresses: BTreeMap<String, IpAddr>,
}

impl LoadBalancersConfig {
    /// Whether a load balancer may listen on `ip`.
    pub fn allows_listen(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.allowed_listen_addresses.contains(&ip)
    }

    /// The run directory for controller `controller_name`.
    pub fn run_dir(&self, controller_name: &str) -> PathBuf {
        self.run_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("microscaler-lb-{controller_name}"))
        })
    }

    /// Refuses settings that cannot work, at start-up rather than at the first load balancer.
    ///
    /// # Errors
    /// A run directory whose admin socket path is too long for a Unix socket.
    pub fn validate(&self, controller_name: &str) -> Result<(), String> {
        let socket = self.run_dir(controller_name).join("admin.sock");
        if socket.as_os_str().len() > 107 {
            return Err(format!(
                "loadBalancers.runDir: the HAProxy admin socket {} would be longer than 107 bytes (the limit of a Unix socket path): set a shorter loadBalancers.runDir",
                socket.display()
            ));
        }
        Ok(())
    }

    /// The haproxy binary.
    pub fn haproxy(&self) -> PathBuf {
        self.haproxy
            .clone()
            .unwrap_or_else(|| PathBuf::from("haproxy"))
    }
}

/// The address at which the published ports of a zone's engine are reached from here: the
/// configured one, else loopback for a local socket, else the IP of a `tcp://` engine (a host
/// name gives none: configure `zoneAddresses`).
pub fn zone_address(
    config: &LoadBalancersConfig,
    zone: &str,
    docker_host: Option<&str>,
) -> Option<IpAddr> {
    if let Some(ip) = config.zone_addresses.get(zone) {
        return Some(*ip);
    }
    let host = docker_host
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()));
    let Some(host) = host else {
        return Some(IpAddr::from([127, 0, 0, 1]));
    };
    let rest = ["tcp://", "http://", "https://"]
        .iter()
        .find_map(|p| host.strip_prefix(p));
    let Some(rest) = rest else {
        // unix:// or a socket path: this host.
        return Some(IpAddr::from([127, 0, 0, 1]));
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_addresses_come_from_the_engine_address_unless_configured() {
        let mut c = LoadBalancersConfig::default();
        let lo = Some(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            zone_address(&c, "a", Some("unix:///var/run/docker.sock")),
            lo
        );
        assert_eq!(zone_address(&c, "a", Some("/run/x.sock")), lo);
        assert_eq!(
            zone_address(&c, "b", Some("tcp://10.0.0.5:2376")),
            Some(IpAddr::from([10, 0, 0, 5]))
        );
        assert_eq!(
            zone_address(&c, "b", Some("tcp://[fd00::5]:2376")),
            Some("fd00::5".parse().unwrap())
        );
        assert_eq!(zone_address(&c, "b", Some("tcp://engine-b:2376")), None);
        c.zone_addresses
            .insert("b".into(), IpAddr::from([192, 168, 1, 9]));
        assert_eq!(
            zone_address(&c, "b", Some("tcp://engine-b:2376")),
            Some(IpAddr::from([192, 168, 1, 9]))
        );
    }

    #[test]
    fn a_run_dir_too_long_for_a_socket_is_refused() {
        let mut c = LoadBalancersConfig::default();
        assert!(c.validate("ms").is_ok());
        c.run_dir = Some(PathBuf::from(format!("/{}", "d".repeat(120))));
        assert!(c.validate("ms").unwrap_err().contains("107 bytes"));
    }

    #[test]
    fn only_loopback_is_allowed_without_configuration() {
        let mut c = LoadBalancersConfig::default();
        assert!(c.allows_listen("127.0.0.1".parse().unwrap()));
        assert!(c.allows_listen("::1".parse().unwrap()));
        assert!(!c.allows_listen("0.0.0.0".parse().unwrap()));
        c.allowed_listen_addresses.push("0.0.0.0".parse().unwrap());
        assert!(c.allows_listen("0.0.0.0".parse().unwrap()));
        assert!(!c.allows_listen("10.0.0.1".parse().unwrap()));
    }
}
