//! The API's own TLS (`tls: {cert, key}` at the top of the configuration) and the rule for
//! listening beyond loopback.
//!
//! # Rules
//! - With `tls:`, the API speaks only HTTPS (rustls) with this certificate chain and key; the
//!   files are read at start-up, so a wrong path or a key that does not match is refused then.
//! - Listening beyond loopback needs tokens (who may act) and TLS (so the tokens are not sent in
//!   clear), unless `--insecure-listen` (or `insecureListen: true`) says the network is trusted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// The API's certificate files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiTls {
    /// The certificate chain (PEM), the server's own certificate first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl ApiTls {
    /// The rustls server configuration (HTTP/1.1), relative paths from `base`.
    ///
    /// # Errors
    /// A file that cannot be read, holds no PEM certificate or key, or a key that does not
    /// match the certificate.
    pub fn server_config(&self, base: Option<&Path>) -> Result<Arc<rustls::ServerConfig>, String> {
        let abs = |p: &PathBuf| match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p.clone(),
        };
        let (cert, key) = (abs(&self.cert), abs(&self.key));
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| format!("tls.{what}: cannot read {}: {e}", p.display()))
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read("cert", &cert)?)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("tls.cert: {} is not PEM: {e:?}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("tls.cert: {} holds no certificate", cert.display()));
        }
        let key_der = PrivateKeyDer::from_pem_slice(&read("key", &key)?)
            .map_err(|_| format!("tls.key: {} holds no PEM private key", key.display()))?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| {
                format!(
                    "tls: {} and {} do not go together: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
