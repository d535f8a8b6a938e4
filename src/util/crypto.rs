//! One rustls crypto provider (ring) for the whole process.
//!
//! rustls refuses to pick a provider when it cannot be sure there is only one, and reqwest built
//! without its own panics when none is installed; every TLS or HTTP client in the crate calls
//! [`install_provider`] before it is built. Installing twice is harmless.

/// Installs ring as the process's rustls provider unless one is installed already.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
