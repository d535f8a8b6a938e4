//! The API over TLS (rustls): the acceptor made from the configuration's `tls:` files, and the
//! handshake of each accepted connection, bounded by the header-read timeout so a client that
//! opens a connection and says nothing holds it no longer than a plain-HTTP one would.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::config::Config;

/// The acceptor when the configuration has `tls:`.
///
/// # Errors
/// The files, as [`crate::config::api_tls::ApiTls::server_config`] (already checked at
/// start-up, so only a file changed since).
pub fn acceptor(config: &Config) -> io::Result<Option<TlsAcceptor>> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let base = config.source.as_deref().and_then(std::path::Path::parent);
    let server = tls.server_config(base).map_err(io::Error::other)?;
    Ok(Some(TlsAcceptor::from(server)))
}

/// The TLS handshake of one connection; `None` (logged) when it fails or takes too long.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            debug!(error = %e, "API TLS handshake failed");
            None
        }
        Err(_) => {
            debug!("API TLS handshake timed out");
            None
        }
    }
}
