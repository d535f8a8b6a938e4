//! Engines over TCP with TLS: the certificate files of a zone and the rustls client made of them.
//!
//! The files are read at every connection (not once at start-up), so a renewed certificate is
//! picked up at the next reconnection; start-up only checks that they can be read
//! ([`TlsFiles::check`]), so a typo in a path is refused then, never discovered later.
//!
//! # Rules
//! - The engine's certificate is always verified against `caCert` alone (not the system's
//!   roots): an engine API is root on its host, and a public CA vouches for names, not engines.
//! - The client certificate is optional here; an engine started with `--tlsverify` refuses a
//!   client without one, and that refusal is the zone's condition (`ZoneUnreachable`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard::{BollardRequest, Docker, API_DEFAULT_VERSION};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The PEM files of one TLS zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed the engine's certificate (`ca.pem`).
    pub ca_cert: PathBuf,
    /// The client certificate (`cert.pem`); with `key`, or neither.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (`key.pem`).
    pub key: Option<PathBuf>,
}

/// Why a zone's certificate files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {} holds no PEM {expected}", path.display())]
    NoPem {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{what} {} is not valid: {message}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("tls needs both `cert` and `key` (the client certificate and its key), or neither")]
    HalfClientCert,
}

impl TlsFiles {
    /// Reads and parses every file, as a connection would: used at start-up.
    ///
    /// # Errors
    /// A missing or unreadable file, a file without the expected PEM block, a key that does not
    /// match its certificate's algorithm, or `cert` without `key`.
    pub fn check(&self) -> Result<(), TlsError> {
        self.client_config().map(|_| ())
    }

    /// The rustls client: roots from `caCert`, the client certificate when given.
    fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in read_certs("caCert", &self.ca_cert)? {
            roots.add(ca).map_err(|e| TlsError::Invalid {
                what: "caCert",
                path: self.ca_cert.clone(),
                message: e.to_string(),
            })?;
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        match (&self.cert, &self.key) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                let chain = read_certs("cert", cert)?;
                let bytes = read("key", key)?;
                let key_der =
                    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::NoPem {
                        what: "key",
                        path: key.clone(),
                        expected: "private key",
                    })?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| TlsError::Invalid {
                        what: "key",
                        path: key.clone(),
                        message: e.to_string(),
                    })
            }
            _ => Err(TlsError::HalfClientCert),
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Invalid {
            what,
            path: path.to_path_buf(),
            message: format!("{e:?}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            what,
            path: path.to_path_buf(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

/// A bollard client for `https://host:port` over rustls with these files.
///
/// # Errors
/// The files, as [`TlsFiles::check`]; the connection itself is made at the first request.
pub fn connect(addr: &str, files: &TlsFiles, timeout_secs: u64) -> Result<Docker, TlsError> {
    let config = files.client_config()?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnector::from((http, config));
    let mut builder = Client::builder(TokioExecutor::new());
    // The engine may restart (or be another engine after a failover): never reuse a stale
    // connection, as bollard's own clients do.
    builder.pool_max_idle_per_host(0);
    let client = Arc::new(builder.build(https));
    let host_port = addr
        .strip_prefix("tcp://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr)
        .trim_end_matches('/');
    Docker::connect_with_custom_transport(
        move |req: BollardRequest| {
            let client = Arc::clone(&client);
            async move {
                client
                    .request(req)
                    .await
                    .map_err(bollard::errors::Error::from)
            }
        },
        Some(format!("https://{host_port}")),
        timeout_secs,
        API_DEFAULT_VERSION,
    )
    .map_err(|e| TlsError::Invalid {
        what: "address",
        path: PathBuf::from(addr),
        message: e.to_string(),
    })
}
