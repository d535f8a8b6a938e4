//! Wiring: builds a running controller from its parts and hands each part the narrow handles it
//! needs. The only module that imports every stage, and nothing below it imports it: each stage
//! defines the context it wants (`reconcile::Context`, `apply::Context`, ...) and this module
//! fills it.
//!
//! # Layout
//! - [`shared`]: [`Shared`], the handles created once per controller (desired state, status
//!   board, readiness, rescans, confirmations, problems, limits, health).
//! - [`builder`]: [`Controller::builder`] → [`Builder::spawn`] → [`Handle`]: the one place the
//!   parts are wired, used by the binary, the scenario tests, the API tests and the scale model.
//! - [`mod@run`]: `ms controller`: the configuration, the directory and engine locks, the listener,
//!   signals; then the builder.

pub mod builder;
pub mod run;
pub mod shared;
pub mod standby;

pub use builder::{Builder, Controller, Handle};
pub use run::{run, RunOptions};
pub use shared::Shared;
