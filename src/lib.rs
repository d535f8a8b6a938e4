//! microscaler: autoscaling groups for Docker containers.
//!
//! # Layout
//! - [`manifest`]: the three manifest kinds, parsing with precise errors, validation.
//! - [`config`]: the controller's own configuration (zones, listen address, tokens).
//! - [`store`]: the desired state, as immutable snapshots.
//! - [`watch`]: loads and watches the manifest directory, publishes snapshots.
//! - [`prune`]: when a group may be deleted for lack of a manifest, and confirmations.
//! - [`statusfile`]: writes `status:` blocks (and CLI edits) into manifest files, byte-preserving.
//! - [`status_sync`]: hands status to the API and to the files (inline, sidecar tree, or off).
//! - [`gitops`]: watched git checkouts: the status clean filter, index refresh, `ms gitops init`.
//! - [`status`]: the status types.
//! - [`engine`]: the narrow engine trait, its Docker (bollard) and in-memory implementations.
//! - [`plan`]: the pure planning function (desired + observed → create/remove).
//! - [`reconcile`]: the level-triggered runner that executes plans.
//! - [`apply`]: the HTTP apply/read endpoint.
//! - [`client`] and [`cli`]: the `ms` command line.
//! - [`controller`]: wiring of a running controller.
//! - [`dirlock`]: one controller per manifest directory.
//! - [`lease`]: one controller per `controllerName` per engine (a lease container, fencing).
//! - [`supervise`]: essential tasks; one ending early fails readiness and exits non-zero.
//! - [`failpoint`]: fault injection for end-to-end tests (`MS_FAILPOINTS`).

pub mod apply;
pub mod autoscale;
pub mod cli;
pub mod client;
pub mod config;
pub mod controller;
pub mod engine;
pub mod files;
pub mod gitops;
pub mod health;
pub mod manifest;
pub mod reconcile;
pub mod status;
pub mod util;
pub mod watch;
pub mod wire;
