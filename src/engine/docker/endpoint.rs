//! Where a zone's engine is and how to reach it: the address's scheme, TLS, Docker's variables.
//!
//! # Rules
//! - `unix:///path` (or a bare `/path`): the local socket.
//! - `tcp://host:port` with TLS files: the engine over TLS; `https://host:port` is the same and
//!   insists on TLS.
//! - `tcp://` without TLS only on loopback (127.0.0.0/8, `::1`, `localhost`): a plain TCP engine
//!   API is root on its host for anyone who can reach the port.
//! - `ssh://` is refused: bollard's SSH transport shells out to an ssh agent set-up we cannot
//!   check at start-up. Forward the socket instead (`ssh -nNT -L /run/zone.sock:/var/run/docker.sock
//!   user@host`) and use `unix:///run/zone.sock`.
//! - Every other scheme is refused, at start-up, naming the zone.
//!
//! The default zone honours Docker's own variables: `DOCKER_HOST`, and with
//! `DOCKER_TLS_VERIFY` set, `ca.pem`, `cert.pem` and `key.pem` from `DOCKER_CERT_PATH`
//! (default `~/.docker`), as the docker CLI does.

use std::net::IpAddr;
use std::path::PathBuf;

use super::tls::{TlsError, TlsFiles};
use super::DEFAULT_SOCKET;

/// A Docker engine's address and, for TCP, its TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As written: `unix:///var/run/docker.sock`, `tcp://10.0.0.5:2376`.
    pub host: String,
    pub tls: Option<TlsFiles>,
}

/// How an address is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A Unix socket at this path.
    Unix(String),
    /// Plain HTTP to `tcp://host:port` (loopback only).
    Tcp(String),
    /// HTTPS to `tcp://host:port` with these files.
    Tls(String, TlsFiles),
}

/// Why an endpoint cannot be used; refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("`{0}`: ssh:// engines are not supported; forward the socket with `ssh -nNT -L /run/zone.sock:/var/run/docker.sock user@host` and use unix:///run/zone.sock, or run the engine with --tlsverify and use tcp:// with tls")]
    Ssh(String),
    #[error("unsupported Docker address `{0}`: use unix:///path/to/docker.sock, or tcp://host:port with tls")]
    Scheme(String),
    #[error("`{0}` is plain TCP beyond loopback: anyone who reaches the port is root on that host; add tls (caCert, cert, key) with an engine started with --tlsverify")]
    PlainTcp(String),
    #[error("`{0}` is a Unix socket: tls applies to tcp:// addresses only")]
    TlsOnUnix(String),
    #[error("`{0}` asks for https but no tls files are configured (caCert, cert, key)")]
    HttpsWithoutTls(String),
    #[error("DOCKER_TLS_VERIFY is set but DOCKER_CERT_PATH and HOME are not: cannot find ca.pem, cert.pem and key.pem")]
    NoCertPath,
    #[error("`{host}`: {source}")]
    Tls {
        host: String,
        #[source]
        source: TlsError,
    },
}

impl Endpoint {
    /// The default zone's engine: `DOCKER_HOST` (else the local socket), with TLS from
    /// `DOCKER_CERT_PATH` when `DOCKER_TLS_VERIFY` is set to anything but empty.
    ///
    /// # Errors
    /// `DOCKER_TLS_VERIFY` set with neither `DOCKER_CERT_PATH` nor `HOME`.
    pub fn from_env() -> Result<Endpoint, EndpointError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let host = var("DOCKER_HOST").unwrap_or_else(|| DEFAULT_SOCKET.to_string());
        let tls = match var("DOCKER_TLS_VERIFY") {
            None => None,
            Some(_) => {
                let dir = var("DOCKER_CERT_PATH")
                    .map(PathBuf::from)
                    .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".docker")))
                    .ok_or(EndpointError::NoCertPath)?;
                Some(TlsFiles {
                    ca_cert: dir.join("ca.pem"),
                    cert: Some(dir.join("cert.pem")),
                    key: Some(dir.join("key.pem")),
                })
            }
        };
        Ok(Endpoint {
            host: host.trim().to_string(),
            tls,
        })
    }

    /// A configured address (`None` or blank: [`Endpoint::from_env`]) with its TLS files.
    ///
    /// # Errors
    /// As [`Endpoint::from_env`].
    pub fn new(host: Option<&str>, tls: Option<TlsFiles>) -> Result<Endpoint, EndpointError> {
        match host.map(str::trim).filter(|h| !h.is_empty()) {
            Some(h) => Ok(Endpoint {
                host: h.to_string(),
                tls,
            }),
            None => {
                let mut e = Endpoint::from_env()?;
                if tls.is_some() {
                    e.tls = tls;
                }
                Ok(e)
            }
        }
    }

    /// How to reach it, without reading any file.
    ///
    /// # Errors
    /// An unsupported scheme, `ssh://`, plain TCP beyond loopback, TLS on a socket.
    pub fn transport(&self) -> Result<Transport, EndpointError> {
        let host = self.host.as_str();
        let unix = host
            .strip_prefix("unix://")
            .or_else(|| host.starts_with('/').then_some(host));
        if let Some(path) = unix {
            return match self.tls {
                Some(_) => Err(EndpointError::TlsOnUnix(host.to_string())),
                None => Ok(Transport::Unix(path.to_string())),
            };
        }
        if host.starts_with("ssh://") {
            return Err(EndpointError::Ssh(host.to_string()));
        }
        let (tcp, https) = match (host.strip_prefix("tcp://"), host.strip_prefix("https://")) {
            (Some(a), _) => (a, false),
            (_, Some(a)) => (a, true),
            _ => match host.strip_prefix("http://") {
                Some(a) => (a, false),
                None => return Err(EndpointError::Scheme(host.to_string())),
            },
        };
        match (&self.tls, https) {
            (Some(files), _) => Ok(Transport::Tls(host.to_string(), files.clone())),
            (None, true) => Err(EndpointError::HttpsWithoutTls(host.to_string())),
            (None, false) if is_loopback(tcp) => Ok(Transport::Tcp(host.to_string())),
            (None, false) => Err(EndpointError::PlainTcp(host.to_string())),
        }
    }

    /// Everything start-up can check: the scheme, and that the TLS files read and parse.
    ///
    /// # Errors
    /// As [`Endpoint::transport`] and [`TlsFiles::check`].
    pub fn check(&self) -> Result<(), EndpointError> {
        if let Transport::Tls(host, files) = self.transport()? {
            files
                .check()
                .map_err(|source| EndpointError::Tls { host, source })?;
        }
        Ok(())
    }
}

/// Whether `host:port` names this machine.
fn is_loopback(addr: &str) -> bool {
    let addr = addr.trim_end_matches('/');
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str) -> Endpoint {
        Endpoint {
            host: host.into(),
            tls: None,
        }
    }
    fn files() -> TlsFiles {
        TlsFiles {
            ca_cert: "/nonexistent/ca.pem".into(),
            cert: None,
            key: None,
        }
    }

    #[test]
    fn sockets_and_loopback_tcp_need_no_tls() {
        assert_eq!(
            at("unix:///var/run/docker.sock").transport().unwrap(),
            Transport::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            at("/run/x.sock").transport().unwrap(),
            Transport::Unix("/run/x.sock".into())
        );
        for h in [
            "tcp://127.0.0.1:2375",
            "tcp://localhost:2375",
            "tcp://[::1]:2375",
        ] {
            assert!(matches!(at(h).transport(), Ok(Transport::Tcp(_))), "{h}");
        }
    }

    #[test]
    fn plain_tcp_beyond_loopback_ssh_and_unknown_schemes_are_refused() {
        let err = at("tcp://10.0.0.5:2375")
            .transport()
            .unwrap_err()
            .to_string();
        assert!(err.contains("plain TCP beyond loopback"), "{err}");
        let err = at("ssh://ops@host").transport().unwrap_err().to_string();
        assert!(err.contains("ssh:// engines are not supported"), "{err}");
        let err = at("npipe:////./pipe/docker")
            .transport()
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported Docker address"), "{err}");
        let err = at("https://10.0.0.5:2376")
            .transport()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no tls files"), "{err}");
    }

    #[test]
    fn tls_goes_with_tcp_only() {
        let mut e = at("tcp://10.0.0.5:2376");
        e.tls = Some(files());
        assert!(matches!(e.transport(), Ok(Transport::Tls(..))));
        let mut e = at("unix:///var/run/docker.sock");
        e.tls = Some(files());
        assert!(matches!(e.transport(), Err(EndpointError::TlsOnUnix(_))));
    }

    #[test]
    fn missing_certificate_files_are_refused_by_the_check() {
        let mut e = at("tcp://10.0.0.5:2376");
        e.tls = Some(files());
        let err = e.check().unwrap_err().to_string();
        assert!(
            err.contains("cannot read caCert /nonexistent/ca.pem"),
            "{err}"
        );
    }
}
