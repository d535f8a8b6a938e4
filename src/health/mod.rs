//! The controller's own health: [`liveness`] (`/healthz`: every loop's heartbeat) and
//! [`supervise`] (`/readyz`: an essential task that ends takes readiness, then the process, down)
//! and [`telemetry`] (the counters and latencies of `/metrics` recorded by the stages).
//!
//! A leaf below every stage, so the watcher, the observers and the autoscaler can each hold a
//! heartbeat, and the API can read both, without importing the wiring that starts them.

pub mod liveness;
pub mod supervise;
pub mod telemetry;
