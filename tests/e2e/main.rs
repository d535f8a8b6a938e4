//! End-to-end tests against real Docker engines (start them with `scripts/dockerd-up`).
//!
//! One test binary, one module per area; shared helpers live in `common`.

mod api_tls;
mod autoscale;
mod cli;
mod common;
mod dashboard;
mod engine_docker;
mod exec_tty;
mod gitops;
mod health;
mod lifecycle;
mod load_balancer;
mod ops;
mod pull;
mod pull_progress;
mod reconcile;
mod registry;
mod remote;
mod remote_engine;
mod safety;
mod standby;
mod status_files;
mod tenants;
mod torture;
mod warm_pool;
