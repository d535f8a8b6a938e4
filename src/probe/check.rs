//! One probe of one instance: an HTTP GET or a TCP connection to its published port, or a
//! command run in it through the engine, bounded by the probe's timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::engine::Engine;
use crate::manifest::health_check::Check;

/// Bytes of an HTTP answer read for its status line.
const STATUS_LINE_MAX: usize = 1024;
/// Bytes of an Exec's output kept.
const EXEC_OUTPUT_MAX: usize = 512;
/// Characters of output a verdict shows.
const SHOWN_MAX: usize = 160;
/// How long a TCP check waits to see whether a connection accepted by the engine's port proxy
/// is closed at once (nothing listens behind it).
const PROXY_CLOSE_WAIT: Duration = Duration::from_millis(100);

/// How one probe went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The instance passed; with what it said.
    Pass(String),
    /// The instance failed; why.
    Fail(String),
    /// No verdict: the controller could not probe (engine unreachable, port not published yet).
    /// Counts neither way, so the controller's own trouble never replaces an instance.
    Unknown(String),
}

impl Outcome {
    /// What it said, whatever it was.
    pub fn text(&self) -> &str {
        match self {
            Outcome::Pass(t) | Outcome::Fail(t) | Outcome::Unknown(t) => t,
        }
    }
}

/// Where one probe goes.
pub enum Target {
    /// A published port: (address, host port), and the container port it stands for.
    Address(String, u16),
    /// The container, through its engine (Exec).
    Container(Arc<dyn Engine>, String),
    /// A container whose published ports are not known yet (seen through an event only): its
    /// engine is asked (one inspect), then the port's address is probed.
    Lookup {
        engine: Arc<dyn Engine>,
        id: String,
        port: u16,
        host: String,
    },
    /// Nowhere, with why (a port not published, no engine).
    Missing(String),
}

/// Runs `check` against `target` within `timeout`.
pub async fn probe(check: &Check, target: Target, timeout: Duration) -> Outcome {
    let what = describe(check);
    match tokio::time::timeout(timeout, async {
        let target = match target {
            Target::Missing(why) => return Outcome::Unknown(why),
            Target::Lookup {
                engine,
                id,
                port,
                host,
            } => match engine.inspect(&id).await {
                Ok(o) => match super::target::published(&o.ports, port, &host) {
                    Some((addr, p)) => Target::Address(addr, p),
                    None => return Outcome::Unknown(super::target::not_published(port)),
                },
                Err(e) => return Outcome::Unknown(format!("{what}: {e}")),
            },
            t => t,
        };
        run(check, target).await
    })
    .await
    {
        Ok(o) => o,
        Err(_) => Outcome::Fail(format!(
            "{what}: no answer within {}",
            crate::manifest::DurationSpec(timeout)
        )),
    }
}

/// `GET /healthz`, `TCP port 80`, `exec cat /tmp/ok`.
pub fn describe(check: &Check) -> String {
    match check {
        Check::Http { path, .. } => format!("GET {path}"),
        Check::Tcp { port } => format!("TCP port {port}"),
        Check::Exec { command } => shown(&format!("exec {}", command.join(" "))),
        Check::Docker => "Docker HEALTHCHECK".to_string(),
    }
}

async fn run(check: &Check, target: Target) -> Outcome {
    match (check, target) {
        (Check::Http { path, expect, .. }, Target::Address(host, port)) => {
            http(&host, port, path, expect).await
        }
        (Check::Tcp { port: inner }, Target::Address(host, port)) => tcp(&host, port, *inner).await,
        (Check::Exec { command }, Target::Container(engine, id)) => {
            exec(engine.as_ref(), &id, command).await
        }
        _ => Outcome::Unknown("no way to run this check".to_string()),
    }
}

async fn http(host: &str, port: u16, path: &str, expect: &[(u16, u16)]) -> Outcome {
    let what = format!("GET {path}");
    let mut stream = match TcpStream::connect((host, port)).await {
        Ok(s) => s,
        Err(e) => return Outcome::Fail(format!("{what}: {e} ({host}:{port})")),
    };
    let _ = stream.set_nodelay(true);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: microscaler-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return Outcome::Fail(format!("{what}: {e}"));
    }
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(2).any(|w| w == b"\r\n") || buf.len() >= STATUS_LINE_MAX {
                    break;
                }
            }
            Err(e) => return Outcome::Fail(format!("{what}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or("");
    let code = line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok());
    match code {
        None if buf.is_empty() => Outcome::Fail(format!(
            "{what}: connection closed without an answer (nothing listens on the container port?)"
        )),
        None => Outcome::Fail(format!("{what}: not an HTTP answer: {}", shown(line))),
        Some(c) if expect.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) => {
            Outcome::Pass(format!("HTTP {c} from {what}"))
        }
        Some(c) => Outcome::Fail(format!("HTTP {c} from {what}")),
    }
}

async fn tcp(host: &str, port: u16, inner: u16) -> Outcome {
    let what = format!("TCP port {inner}");
    let mut stream = match TcpStream::connect((host, port)).await {
        Ok(s) => s,
        Err(e) => return Outcome::Fail(format!("{what}: {e} ({host}:{port})")),
    };
    // Docker's port proxy accepts every connection, then closes it when nothing listens in the
    // container: a connection closed at once is a failure, one left open (or talked on) a pass.
    let mut one = [0u8; 1];
    match tokio::time::timeout(PROXY_CLOSE_WAIT, stream.read(&mut one)).await {
        Ok(Ok(0)) => Outcome::Fail(format!(
            "{what}: connection closed at once (nothing listens in the container)"
        )),
        Ok(Err(e)) => Outcome::Fail(format!("{what}: {e}")),
        Ok(Ok(_)) | Err(_) => Outcome::Pass(format!("{what}: connected")),
    }
}

async fn exec(engine: &dyn Engine, id: &str, command: &[String]) -> Outcome {
    let what = describe(&Check::Exec {
        command: command.to_vec(),
    });
    match engine.exec_wait(id, command, EXEC_OUTPUT_MAX).await {
        Ok(o) => {
            let out = last_line(&o.output);
            let said = if out.is_empty() {
                String::new()
            } else {
                format!(": {out}")
            };
            match o.exit_code {
                Some(0) => Outcome::Pass(shown(&format!("{what} exited 0{said}"))),
                Some(c) => Outcome::Fail(shown(&format!("{what} exited {c}{said}"))),
                None => Outcome::Unknown(format!("{what}: the engine gave no exit code")),
            }
        }
        // The container is going, the engine is away or refuses: the controller could not
        // probe, which is never the instance's failure (only the command's exit code is).
        Err(e) => Outcome::Unknown(shown(&format!("{what}: {e}"))),
    }
}

fn last_line(s: &str) -> &str {
    s.trim_end().lines().last().unwrap_or("").trim()
}

/// At most [`SHOWN_MAX`] characters, control characters as spaces.
pub fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(SHOWN_MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > SHOWN_MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
