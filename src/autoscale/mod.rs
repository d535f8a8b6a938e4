//! Elastic autoscaling: metrics collection, pushed metrics, policy decisions, the simulator.
//!
//! # Layout
//! - [`metrics`]: per-container CPU/memory samples from each zone's engine, group averages.
//! - [`pushed`]: values pushed to the controller for a group (`POST /v1/metrics/NS/GROUP`).
//! - [`policy`]: the pure decision code (step, target tracking, scheduled, guards).
//! - [`simulate`]: replays a CSV trace through [`policy`] (`ms simulate`).

pub mod policy;
