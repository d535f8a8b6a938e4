//! Where a probe connects: the host port a container port is published on (from the engine's
//! `127.0.0.1:32768->80/tcp` strings), on the controller's loopback or the zone's engine host,
//! never a container's own address.

/// The host address and port container port `port` (TCP) is published on, from `ports` as the
/// engine reports them; `engine_host` replaces a wildcard bind (`0.0.0.0`, `::`), which is
/// 127.0.0.1 for a local engine. `None` when the port is not published.
pub fn published(ports: &[String], port: u16, engine_host: &str) -> Option<(String, u16)> {
    ports.iter().find_map(|p| {
        let (host, inner) = p.split_once("->")?;
        let (inner_port, proto) = inner.split_once('/').unwrap_or((inner, "tcp"));
        if proto != "tcp" || inner_port.parse::<u16>().ok()? != port {
            return None;
        }
        let (ip, host_port) = host.rsplit_once(':')?;
        let host_port = host_port.parse::<u16>().ok()?;
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let addr = match ip {
            "" | "0.0.0.0" | "::" => engine_host.to_string(),
            other => other.to_string(),
        };
        Some((addr, host_port))
    })
}

/// Why a probe of container port `port` cannot run.
pub fn not_published(port: u16) -> String {
    format!(
        "container port {port} is not published (probes reach containers only through ports published on the host: add it to the launch configuration's `ports`)"
    )
}

/// The address published ports are reached at for an engine at `docker_host`: the host of a
/// `tcp://` (or `http(s)://`) address, else (a local socket) 127.0.0.1.
pub fn engine_host(docker_host: Option<&str>) -> String {
    let local = || "127.0.0.1".to_string();
    let Some(h) = docker_host else {
        return local();
    };
    let rest = ["tcp://", "http://", "https://"]
        .iter()
        .find_map(|s| h.strip_prefix(s));
    let Some(rest) = rest else { return local() };
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() {
        local()
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_port_is_found_by_its_container_port() {
        let ports = vec![
            "127.0.0.1:32768->80/tcp".to_string(),
            "127.0.0.1:32769->53/udp".to_string(),
            "0.0.0.0:32770->8080/tcp".to_string(),
            ":::32771->9090/tcp".to_string(),
        ];
        assert_eq!(
            published(&ports, 80, "127.0.0.1"),
            Some(("127.0.0.1".into(), 32768))
        );
        assert_eq!(published(&ports, 53, "127.0.0.1"), None, "udp");
        assert_eq!(
            published(&ports, 8080, "engine-b"),
            Some(("engine-b".into(), 32770))
        );
        assert_eq!(
            published(&ports, 9090, "127.0.0.1"),
            Some(("127.0.0.1".into(), 32771))
        );
        assert_eq!(published(&ports, 81, "127.0.0.1"), None);
    }

    #[test]
    fn a_remote_engine_is_reached_at_its_host_a_local_one_at_loopback() {
        assert_eq!(engine_host(None), "127.0.0.1");
        assert_eq!(
            engine_host(Some("unix:///var/run/docker.sock")),
            "127.0.0.1"
        );
        assert_eq!(engine_host(Some("tcp://10.0.0.5:2376")), "10.0.0.5");
        assert_eq!(engine_host(Some("tcp://[fd00::1]:2376")), "fd00::1");
        assert_eq!(engine_host(Some("https://docker-b:2376/")), "docker-b");
    }
}
