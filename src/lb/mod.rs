//! Load balancers: a stable address in front of the ready instances of the groups that name a
//! `LoadBalancer`, on a real balancer driven without reloads.
//!
//! # Layout
//! - [`driver`]: the narrow [`LoadBalancerDriver`] trait and the shapes it speaks in.
//! - [`members`]: which load balancers can run and who their members are (pure: the desired
//!   state and the published `status::InstanceStatus` of each group).
//! - [`diff`]: members wanted vs servers read back from the balancer → commands (pure).
//! - [`haproxy`]: the one driver, a managed HAProxy (config, process, Runtime API).
//! - [`run`]: the level-triggered loop: plan, ensure the balancer, read back, correct, publish
//!   each load balancer's status on the [`LbBoard`] (served by the API).
//!
//! Membership follows the published instance view: an instance joins when it is ready
//! (running), is set to drain while its state is `draining` (being terminated), and is
//! removed once gone. Each member is its instance's published host port, reached at
//! `127.0.0.1` for a local engine; for a remote zone the instances must publish on an address
//! this host can reach (`hostIp: 0.0.0.0` or the host's address) and the zone's address comes
//! from its `tcp://IP:port` or `loadBalancers.zoneAddresses`.

pub mod diff;
pub mod driver;
pub mod haproxy;
pub mod members;
pub mod run;
#[cfg(test)]
mod run_tests;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use driver::LoadBalancerDriver;

use crate::manifest::ObjectKey;
use crate::status::Condition;

/// The latest status of every load balancer: written by [`run`] only, read by the API.
pub type LbBoard = std::sync::RwLock<BTreeMap<ObjectKey, LbStatus>>;

/// Status of a `LoadBalancer`, served by the API (`ms get lbs`, `ms describe lb`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LbStatus {
    /// `http://127.0.0.1:8080`: where clients connect.
    pub url: String,
    /// The groups that name it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Instances that cannot be members, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One member (or server being removed) of a load balancer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The instance (container) name.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// `127.0.0.1:32768`.
    pub address: String,
    /// What the controller wants: `ready`, `drain` or `remove`.
    pub desired: String,
    /// What the balancer says: `UP`, `DOWN`, `DRAIN`, `MAINT`, `no check` (no health check of
    /// its own), or `absent` (not added yet).
    pub state: String,
    /// Connections open to it.
    pub sessions: u64,
}
