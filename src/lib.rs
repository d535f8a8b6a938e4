//! microscaler: autoscaling groups for Docker containers.
//!
//! # Layout
//! In pipeline order; a module imports only those above it in the layers of
//! `docs/architecture.md` (checked by `tests/architecture.rs`).
//! - [`util`]: leaves: locks that survive a panic, the e2e tests' failpoints, tickets.
//! - [`health`]: the controller's own health: heartbeats (`/healthz`), essential tasks (`/readyz`).
//! - [`manifest`]: the four manifest kinds, parsing with precise errors, validation, schemas.
//! - [`engine`]: the narrow engine trait, Docker and in-memory engines, per-zone observers, leases.
//! - [`files`]: byte-preserving edits of manifest files (status blocks, documents, atomic writes).
//! - [`wire`]: the HTTP API's JSON bodies and headers, shared by server and client.
//! - [`config`]: the controller's own configuration: zones, API limits, namespace limits.
//! - [`gitops`]: watched git checkouts: the status clean filter, index refresh, `ms gitops init`.
//! - [`watch`]: the manifest directory → desired-state snapshots (store, prune, directory lock).
//! - [`status`]: the status types, and the writer that puts status on the board and in files.
//! - [`autoscale`]: metrics and scaling policies → each group's effective capacity.
//! - [`lb`]: load balancers: a managed HAProxy whose members follow the groups' ready instances.
//! - [`reconcile`]: desired + observed → actions: runner, pass, plan, executor, conditions.
//! - [`apply`]: the HTTP API: reads everything, writes only manifest files.
//! - [`client`]: the HTTP client the `ms` command line uses.
//! - [`controller`]: wiring: one builder hands each part the handles it needs.
//! - [`cli`]: the `ms` command line.

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
pub mod lb;
pub mod manifest;
pub mod reconcile;
pub mod status;
pub mod util;
pub mod watch;
pub mod wire;
