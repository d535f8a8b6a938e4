//! `ms controller --standby`: a second controller with the same configuration waits, serving
//! reads, until the active one's directory lock and engine leases are free, then becomes active.
//!
//! # How
//! Every second the standby tries what a start does: the directory lock (released by the kernel
//! when the holder dies, even by `kill -9`), then every zone's lease
//! ([`crate::engine::lease`]: a holder on this machine whose pid is gone is taken over at once,
//! one on another machine after [`crate::engine::lease::TAKEOVER_AFTER`] without answering).
//! Held by another live controller: release whatever it got and wait; anything else (a wrong
//! configuration, two zones on one engine) ends the standby with that error.
//!
//! While waiting it serves the API on its own address with the watcher and the observers only:
//! no reconciler, no autoscaler, no status writer, no leases, so it never acts on an engine or
//! writes a status (writes through its API edit the shared manifest files, which the active
//! controller applies). At takeover that read-only controller stops and the full one starts on
//! the same listening socket.
//!
//! # Caveats
//! The old active, restarted with `--standby`, becomes the standby; restarted without it, it is
//! refused at start (the lease is held), as any second controller is. A holder cut off but not
//! dead fences itself at its next engine call (see the lease's `# Fencing`).

use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::builder::{Controller, Handle};
use crate::config::Config;
use crate::engine::docker::DockerEngine;
use crate::engine::lease::{Identity, LeaseError, Leases};
use crate::engine::observe::Connector;
use crate::engine::Engine;
use crate::watch::dirlock::{self, DirLock, DirLockError};

/// What an active controller holds: the directory lock, the leases, the fenced zones.
pub type Turn = (DirLock, Arc<Leases>, Vec<(String, Connector)>);

/// How often the standby tries to take over.
const RETRY: Duration = Duration::from_secs(1);

/// Waits, serving reads on a copy of `listener`, until this controller can be the active one.
///
/// # Errors
/// Any refusal other than "another live controller holds it".
pub async fn wait_turn(
    config: &Config,
    listener: &TcpListener,
    me: &Identity,
) -> anyhow::Result<Turn> {
    let mut reads: Option<(CancellationToken, Handle)> = None;
    loop {
        let held = match dirlock::lock(&config.dir, listener.local_addr()?, &config.controller_name)
        {
            Err(DirLockError::Held { holder, .. }) => holder,
            Err(e) => return Err(e.into()),
            Ok(dir_lock) => {
                let leases = Leases::new(me.clone());
                match super::run::connect_zones(config, &leases).await {
                    Ok(zones) => {
                        if let Some((stop, handle)) = reads.take() {
                            stop.cancel();
                            let _ = handle.wait().await;
                        }
                        info!("standby: the leases are ours; this controller is now active");
                        return Ok((dir_lock, leases, zones));
                    }
                    Err(e) => {
                        leases.release().await;
                        match leases.lost() {
                            Some(LeaseError::HeldByOther { holder, .. }) => holder,
                            _ => return Err(e),
                        }
                    }
                }
            }
        };
        if reads.is_none() {
            info!(active = %held, "standby: another controller is active; serving reads and waiting to take over");
            reads = Some(serve_reads(config, listener)?);
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// The read-only controller of a standby, on a duplicate of the listening socket.
fn serve_reads(
    config: &Config,
    listener: &TcpListener,
) -> anyhow::Result<(CancellationToken, Handle)> {
    // SAFETY: dup returns a new descriptor we own (or -1, checked); the socket stays the same,
    // so the active controller later accepts on the original one.
    let fd = unsafe { libc::dup(listener.as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let copy = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    copy.set_nonblocking(true)?;
    let copy = TcpListener::from_std(copy)?;
    let zones = config
        .zones
        .iter()
        .map(|z| {
            let endpoint = z
                .endpoint(config.source.as_deref())
                .map_err(|e| e.to_string());
            let connect: Connector = Arc::new(move || {
                let endpoint = endpoint.clone();
                Box::pin(async move {
                    let endpoint = endpoint.map_err(crate::engine::EngineError::Other)?;
                    Ok(Arc::new(DockerEngine::connect_endpoint(&endpoint).await?)
                        as Arc<dyn Engine>)
                })
            });
            (z.name.clone(), connect)
        })
        .collect();
    let stop = CancellationToken::new();
    let mut config = config.clone();
    config.standby = true;
    let handle = Controller::builder(config)
        .zones(zones)
        .serve(copy)
        .without_reconciler()
        .without_autoscaler()
        .without_status_writer()
        .spawn(stop.clone());
    Ok((stop, handle))
}
