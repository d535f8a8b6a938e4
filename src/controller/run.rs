//! `ms controller`: checks the configuration and the manifest directory, takes the directory
//! lock and the engine leases, listens, then starts the parts with the [builder](super::builder)
//! and runs until SIGINT/SIGTERM or an essential task's end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::builder::Controller;
use crate::config::Config;
use crate::engine::docker::pull::RegistryAuth;
use crate::engine::docker::DockerEngine;
use crate::engine::lease::{Identity, Leases};
use crate::engine::observe::Connector;
use crate::engine::Engine;
use crate::util::unpoisoned::LockExt;

/// Options of `ms controller` (flags override the configuration file).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub allow_empty: bool,
    /// Create the manifest directory when it does not exist (otherwise an error).
    pub create_dir: bool,
    /// Listen beyond loopback without TLS.
    pub insecure_listen: bool,
    /// Wait for the leases as a standby instead of refusing to start.
    pub standby: bool,
}

/// Runs the controller until SIGINT/SIGTERM.
///
/// # Errors
/// An invalid configuration, a missing manifest directory (without `create_dir`), another
/// controller on the same directory or engine, a listen address in use, or an essential task
/// that ended before shutdown.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let mut config = Config::load(opts.config.as_deref())?;
    if let Some(d) = opts.dir {
        config.dir = d;
    }
    if let Some(l) = opts.listen {
        config.listen = l;
    }
    config.allow_empty |= opts.allow_empty;
    config.insecure_listen |= opts.insecure_listen;
    config.validate()?;
    // A directory that is not there is a mistake (a typo in --dir, a volume not mounted), not
    // an empty desired state.
    // The default directory is ours to create; one the user named must be there already.
    if !config.dir.is_dir() {
        anyhow::ensure!(
            opts.create_dir || config.dir == crate::config::default_dir(),
            "the manifest directory {} does not exist (a typo in --dir, or a volume not mounted?); \
             create it, or pass --create-dir",
            config.dir.display()
        );
        std::fs::create_dir_all(&config.dir).with_context(|| {
            format!(
                "cannot create the manifest directory {}",
                config.dir.display()
            )
        })?;
    }
    config.dir = std::fs::canonicalize(&config.dir)?;
    prepare_status_dir(&mut config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another controller running?)",
                config.listen
            )
        })?;
    let me =
        Identity::of_this_process(&config.controller_name, listener.local_addr()?, &config.dir);
    let (_dir_lock, leases, connectors) = if opts.standby {
        super::standby::wait_turn(&config, &listener, &me).await?
    } else {
        let dir_lock = crate::watch::dirlock::lock(
            &config.dir,
            listener.local_addr()?,
            &config.controller_name,
        )?;
        // Every engine that answers must be ours (its lease taken) before anything acts.
        let leases = Leases::new(me);
        match connect_zones(&config, &leases).await {
            Ok(c) => (dir_lock, leases, c),
            Err(refused) => {
                leases.release().await;
                return Err(refused);
            }
        }
    };
    info!(dir = %config.dir.display(), listen = %listener.local_addr()?, zones = ?config.zone_names(), "controller starting");
    info!(
        url = %format!(
            "{}://{}/",
            if config.tls.is_some() { "https" } else { "http" },
            listener.local_addr()?
        ),
        "web dashboard"
    );
    // Descriptor headroom: the soft limit up to the hard one, and API connections capped at
    // half of it, so a connection flood can never starve the engines or the directory.
    let fd_limit = crate::apply::serve::raise_fd_limit();
    crate::apply::serve::log_limits(
        &crate::apply::serve::ConnLimits::new(&config.api, fd_limit),
        fd_limit,
    );

    let shutdown = CancellationToken::new();
    let handle = Controller::builder(config)
        .zones(connectors)
        .leases(leases.clone())
        .serve(listener)
        .spawn(shutdown.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down; containers keep running and are adopted at the next start");
        stop.cancel();
    });
    let outcome = handle.wait().await;
    leases.release().await;
    outcome?;
    Ok(())
}

/// The connector of every zone, each fenced by the zone's lease. Zones that answer now are
/// connected and leased here, so that a zone held by another controller, or two zones on one
/// engine, refuse the start; the others take their lease when they answer.
///
/// # Errors
/// A lease held by another live controller, or two zones that are one engine.
pub(super) async fn connect_zones(
    config: &Config,
    leases: &Arc<Leases>,
) -> anyhow::Result<Vec<(String, Connector)>> {
    let mut out = Vec::new();
    for z in &config.zones {
        // Checked by the configuration's validation already; an error here is Docker's
        // variables changing in between.
        let endpoint = z.endpoint(config.source.as_deref())?;
        let shown = endpoint.host.clone();
        let auth: Arc<dyn RegistryAuth> = Arc::new(config.registry_auth());
        let plain: Connector = Arc::new(move || {
            let endpoint = endpoint.clone();
            let auth = Arc::clone(&auth);
            Box::pin(async move {
                let e = DockerEngine::connect_endpoint(&endpoint)
                    .await?
                    .with_registry_auth(auth);
                Ok(Arc::new(e) as Arc<dyn Engine>)
            })
        });
        let fenced = leases.zone(&z.name, &shown).connector(plain);
        match tokio::time::timeout(Duration::from_secs(10), fenced()).await {
            Ok(Ok(engine)) => {
                // The observer's first connection is this one.
                let first = std::sync::Mutex::new(Some(engine));
                let connect: Connector = Arc::new(move || {
                    let ready = first.locked().take();
                    match ready {
                        Some(e) => Box::pin(async move { Ok(e) }),
                        None => fenced(),
                    }
                });
                out.push((z.name.clone(), connect));
            }
            Ok(Err(e)) => {
                if let Some(refused) = leases.lost() {
                    return Err(refused.into());
                }
                warn!(zone = %z.name, error = %e, "zone unreachable at start; its lease is taken when it answers");
                out.push((z.name.clone(), fenced));
            }
            Err(_) => {
                warn!(zone = %z.name, "zone did not answer within 10 s at start; its lease is taken when it answers");
                out.push((z.name.clone(), fenced));
            }
        }
    }
    Ok(out)
}

/// Makes the sidecar status directory absolute and creates it (the builder has the watcher skip
/// it when the user put it inside the watched directory).
fn prepare_status_dir(config: &mut Config) -> anyhow::Result<()> {
    if config.status_mode != crate::config::StatusMode::Sidecar {
        return Ok(());
    }
    let Some(root) = config.status_dir.clone() else {
        return Ok(()); // refused by validation
    };
    std::fs::create_dir_all(&root)
        .with_context(|| format!("cannot create the status directory {}", root.display()))?;
    let root = std::fs::canonicalize(&root)?;
    if root == config.dir {
        anyhow::bail!(
            "statusDir {} is the watched directory itself: choose a directory outside it",
            root.display()
        );
    }
    config.status_dir = Some(root);
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
