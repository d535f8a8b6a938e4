//! Running one lifecycle hook (`postStart`, `preStop`) against an instance: a command in the
//! container through its engine, or an HTTP GET through the port it publishes on 127.0.0.1
//! (never the container's own address), always within the hook's timeout.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::Engine;
use crate::manifest::Hook;

/// The host port on 127.0.0.1 that publishes `container_port` (from `127.0.0.1:32768->80/tcp`).
pub(super) fn published_port(ports: &[String], container_port: u16) -> Option<u16> {
    ports.iter().find_map(|p| {
        let (host, inner) = p.split_once("->")?;
        let inner_port: u16 = inner.split('/').next()?.parse().ok()?;
        if inner_port != container_port {
            return None;
        }
        let (ip, port) = host.rsplit_once(':')?;
        // Only a binding reachable on loopback (127.0.0.1, or every address).
        matches!(ip, "127.0.0.1" | "0.0.0.0" | "" | "[::]" | "::")
            .then(|| port.parse().ok())
            .flatten()
    })
}

/// Runs `hook` against container `id` (publishing `ports`); `Ok` with a short note, or `Err`
/// saying what failed, in words for an activity.
pub(super) async fn run(
    engine: &Arc<dyn Engine>,
    id: &str,
    ports: &[String],
    hook: &Hook,
) -> Result<String, String> {
    let timeout = hook.timeout();
    let work = async {
        if let Some(e) = &hook.exec {
            return match engine.run_hook(id, &e.command).await {
                Ok((0, _)) => Ok("exit 0".to_string()),
                Ok((code, out)) => Err(format!(
                    "`{}` exited with {code}: {}",
                    e.command.join(" "),
                    last_line(&out)
                )),
                Err(e) => Err(e.to_string()),
            };
        }
        if let Some(g) = &hook.http_get {
            let Some(port) = published_port(ports, g.port) else {
                return Err(format!(
                    "container port {} is not published on 127.0.0.1",
                    g.port
                ));
            };
            let path = g.path.as_deref().unwrap_or("/");
            let url = format!("http://127.0.0.1:{port}{path}");
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?;
            return match client.get(&url).send().await {
                Ok(r) if r.status().is_success() || r.status().is_redirection() => {
                    Ok(format!("HTTP {}", r.status().as_u16()))
                }
                Ok(r) => Err(format!("HTTP {} from GET {path}", r.status().as_u16())),
                Err(e) => Err(format!("GET {path}: {e}")),
            };
        }
        Err("the hook has no action".to_string())
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}", secs(timeout))),
    }
}

fn last_line(out: &str) -> String {
    let line = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    line.chars().take(200).collect()
}

/// `5 s`, `1.5 s`.
pub(super) fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_port_on_loopback_is_found() {
        let ports = vec![
            "127.0.0.1:32768->80/tcp".to_string(),
            "10.0.0.5:4000->81/tcp".to_string(),
            "0.0.0.0:5000->82/tcp".to_string(),
        ];
        assert_eq!(published_port(&ports, 80), Some(32768));
        assert_eq!(published_port(&ports, 81), None, "not on loopback");
        assert_eq!(published_port(&ports, 82), Some(5000));
        assert_eq!(published_port(&ports, 83), None);
    }
}
