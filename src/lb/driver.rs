//! The narrow trait between the load balancer reconciler and a real balancer, and the shapes
//! it speaks in: frontends (structure), members (wanted), servers (as the balancer has them) and
//! membership commands.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;

use crate::manifest::{Balance, LbMode, ObjectKey};

/// One load balancer as the balancer must front it: its listener and backend, never its
/// members (which change without touching this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    pub key: ObjectKey,
    /// The balancer's name for its backend: unique per load balancer.
    pub backend: String,
    pub listen: IpAddr,
    pub port: u16,
    pub mode: LbMode,
    pub balance: Balance,
    pub check: Option<Check>,
}

/// The balancer's own health check of each member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// HTTP path (mode http), or a TCP connect.
    pub path: Option<String>,
    pub interval: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// The members a (re)started balancer begins with, per backend.
pub type Seed = std::collections::BTreeMap<String, Vec<Member>>;

/// What a member should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Want {
    /// Taking new connections.
    Ready,
    /// Keeping its connections, taking no new ones (its instance is being terminated).
    Drain,
}

/// A member the load balancer should have: one instance's published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The server name: the instance's container name (unique).
    pub name: String,
    pub addr: SocketAddr,
    pub want: Want,
}

/// The administrative state of a server in the balancer (what the controller sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Ready,
    Drain,
    Maint,
}

/// A server as the balancer has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub addr: Option<SocketAddr>,
    pub admin: Admin,
    /// The balancer's own word for it (`UP`, `DOWN`, `DRAIN`, `MAINT`, `no check`, ...).
    pub status: String,
    /// Connections open to it now.
    pub sessions: u64,
    /// Time since its status last changed (how long it has drained).
    pub since_change: Duration,
}

/// One membership change, applied to a running balancer without a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Adds a server, in maintenance (it takes no traffic until enabled).
    Add {
        server: String,
        addr: SocketAddr,
        check: bool,
    },
    /// Takes it out of maintenance (and starts its health check).
    Enable(String),
    Set(String, Admin),
    /// Closes the connections still open to it.
    ShutdownSessions(String),
    /// Removes it (it must be in maintenance).
    Del(String),
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Add { server, addr, .. } => write!(f, "add {server} ({addr})"),
            Command::Enable(s) => write!(f, "enable {s}"),
            Command::Set(s, a) => write!(f, "set {s} {a:?}"),
            Command::ShutdownSessions(s) => write!(f, "close sessions of {s}"),
            Command::Del(s) => write!(f, "delete {s}"),
        }
    }
}

/// A failure of the balancer or of one call to it, said for an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The balancer is not running (yet, or again): why, and when it is tried next.
    #[error("{0}")]
    Down(String),
    /// The balancer refused a configuration or a command.
    #[error("{0}")]
    Refused(String),
}

/// A real load balancer, driven level-triggered: the reconciler says which frontends exist
/// ([`ensure`](LoadBalancerDriver::ensure)), reads the servers back
/// ([`servers`](LoadBalancerDriver::servers)) and sends the commands that correct them
/// ([`apply`](LoadBalancerDriver::apply)). One implementation: HAProxy (`super::haproxy`).
/// The balancer is the data plane: it keeps running when the controller stops.
#[async_trait]
pub trait LoadBalancerDriver: Send + Sync {
    /// Makes the balancer run with exactly `frontends`, (re)starting it when it is not running
    /// (or adopting the one a previous controller left running) and reloading it only when the
    /// set of frontends changed; no frontend stops it; `seed` gives the members a
    /// (re)started balancer begins with (membership changes never come through here).
    async fn ensure(&self, frontends: &[Frontend], seed: &Seed) -> Result<(), DriverError>;

    /// The servers of every backend as the balancer has them now.
    async fn servers(&self)
        -> Result<std::collections::BTreeMap<String, Vec<Server>>, DriverError>;

    /// Applies one membership command to `backend`.
    async fn apply(&self, backend: &str, command: &Command) -> Result<(), DriverError>;
}
