//! The load balancer loop: it plans (pure) every [`PERIOD`]; when the plan changed, or every
//! [`RESYNC`] anyway, a pass makes the balancer run the right frontends, reads its servers back,
//! sends the commands that correct them and publishes each load balancer's status.
//! Level-triggered: an instance that becomes ready takes traffic within a period, and whatever
//! changed the balancer behind our back (a restart, a hand edit) is corrected within a resync.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::diff::diff_given_back;
use super::driver::{
    Command, DriverError, Frontend, LoadBalancerDriver, Member, Seed, Server, Want,
};
use super::members::{plan, Plan, Settings};
use super::{LbBoard, LbStatus, MemberStatus};
use crate::health::liveness::Beat;
use crate::manifest::ObjectKey;
use crate::status::{Condition, StatusBoard, READY};
use crate::util::unpoisoned::RwLockExt;
use crate::watch::store::DesiredReader;

/// How often the plan is recomputed: a change of the published instances (one becoming ready,
/// or draining) reaches the balancer within this.
pub const PERIOD: Duration = Duration::from_millis(100);
/// How often the balancer is read back and corrected even when the plan did not change (drift,
/// a restart, a drain that ended).
pub const RESYNC: Duration = Duration::from_secs(1);
/// Backoff of a load balancer whose commands the balancer refuses.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the loop reads and writes.
pub struct Context {
    pub desired: DesiredReader,
    /// The groups' published status (instances, their state and ports).
    pub status: Arc<StatusBoard>,
    /// Where each load balancer's status goes.
    pub board: Arc<LbBoard>,
    pub settings: Settings,
}

/// Per load balancer: refused commands in a row, and when to try again.
#[derive(Default)]
pub(super) struct Retry(
    BTreeMap<ObjectKey, (u32, Instant, String)>,
    /// The listeners the balancer served at the last read-back (backend, address, port).
    BTreeSet<(String, IpAddr, u16)>,
);

impl Retry {
    /// The last refusal, while its backoff runs.
    fn waiting(&self, key: &ObjectKey) -> Option<&str> {
        self.0
            .get(key)
            .filter(|(_, at, _)| Instant::now() < *at)
            .map(|(_, _, why)| why.as_str())
    }
    fn failed(&mut self, key: &ObjectKey, why: String) -> Duration {
        let n = self.0.get(key).map_or(0, |(n, _, _)| *n).saturating_add(1);
        let wait = RETRY_MIN
            .saturating_mul(1 << n.saturating_sub(1).min(16))
            .min(RETRY_MAX);
        let why = format!("{why} (next try in {:.1}s)", wait.as_secs_f32());
        self.0.insert(key.clone(), (n, Instant::now() + wait, why));
        wait
    }
    fn ok(&mut self, key: &ObjectKey) {
        self.0.remove(key);
    }
}

/// Runs passes until `shutdown`, and leaves the balancer running: a controller that stops (or
/// restarts, or is upgraded) does not stop its load balancers; the next one adopts them.
/// Nothing is done before the manifests are loaded (an empty desired state would stop them).
pub async fn run<D: LoadBalancerDriver + ?Sized>(
    ctx: Context,
    driver: Arc<D>,
    beat: Beat,
    shutdown: CancellationToken,
) {
    let mut retry = Retry::default();
    // The plan of the last pass, when it ran, and whether it sent commands (then the next
    // period reads their effect back at once).
    let mut last: Option<(Vec<Plan>, Instant, bool)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(PERIOD) => {}
        }
        beat.touch();
        if !ctx.desired.borrow().loaded {
            continue;
        }
        let plans = plans(&ctx);
        let due = match &last {
            Some((before, at, sent)) => *sent || *before != plans || at.elapsed() >= RESYNC,
            None => true,
        };
        if due {
            let sent = pass(&ctx, &plans, &*driver, &mut retry).await;
            last = Some((plans, Instant::now(), sent));
        }
    }
}

fn condition(ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: READY.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: Utc::now(),
    }
}

/// One pass with a fresh plan (the loop's tests).
#[cfg(test)]
pub(super) async fn pass_for_tests<D: LoadBalancerDriver + ?Sized>(
    ctx: &Context,
    driver: &D,
    retry: &mut Retry,
) -> bool {
    pass(ctx, &plans(ctx), driver, retry).await
}

/// Every load balancer's plan, from the latest desired state and published status.
fn plans(ctx: &Context) -> Vec<Plan> {
    let desired = ctx.desired.borrow().clone();
    let groups = ctx.status.read_locked();
    plan(&desired, &groups, &ctx.settings)
}

/// One pass over every load balancer; returns whether it sent commands.
async fn pass<D: LoadBalancerDriver + ?Sized>(
    ctx: &Context,
    plans: &[Plan],
    driver: &D,
    retry: &mut Retry,
) -> bool {
    // A new listener on an address another process holds would keep HAProxy from starting or
    // reloading, for every load balancer: it is left out and says why, the others go on.
    // A balancer left running by a previous controller holds our listeners: read it back first,
    // so its own ports do not count as held by another process.
    if retry.1.is_empty() && plans.iter().any(|p| p.frontend.is_ok()) {
        if let Ok(all) = driver.servers().await {
            retry.1 = plans
                .iter()
                .filter_map(|p| p.frontend.as_ref().ok())
                .filter(|f| all.contains_key(&f.backend))
                .map(|f| (f.backend.clone(), f.listen, f.port))
                .collect();
        }
    }
    let mut blocked: BTreeMap<ObjectKey, String> = BTreeMap::new();
    let frontends: Vec<Frontend> = plans
        .iter()
        .filter_map(|p| p.frontend.as_ref().ok())
        .filter(|f| {
            if retry.1.contains(&(f.backend.clone(), f.listen, f.port)) {
                return true;
            }
            match std::net::TcpListener::bind((f.listen, f.port)) {
                Ok(_) => true,
                Err(e) => {
                    let why = format!(
                        "cannot listen on {}: {e} (another process holds the port?): choose another port",
                        SocketAddr::new(f.listen, f.port)
                    );
                    blocked.insert(f.key.clone(), why);
                    false
                }
            }
        })
        .cloned()
        .collect();
    let seed: Seed = plans
        .iter()
        .filter_map(|p| {
            let f = p.frontend.as_ref().ok()?;
            Some((
                f.backend.clone(),
                p.members.iter().map(|m| m.member.clone()).collect(),
            ))
        })
        .collect();
    // The servers are read back even when (re)configuring failed: the load balancers HAProxy
    // still serves keep being corrected.
    let ensured = driver.ensure(&frontends, &seed).await;
    let servers = match (&ensured, frontends.is_empty()) {
        (_, true) => Ok(BTreeMap::new()),
        (Ok(()), false) => driver.servers().await,
        (Err(e), false) => driver.servers().await.map_err(|_| e.clone()),
    };
    retry.1 = match &servers {
        Ok(all) => frontends
            .iter()
            .filter(|f| all.contains_key(&f.backend))
            .map(|f| (f.backend.clone(), f.listen, f.port))
            .collect(),
        Err(_) => BTreeSet::new(),
    };
    let not_loaded = ensured.err();
    // A deleted load balancer's backoff goes with it.
    retry.0.retain(|k, _| plans.iter().any(|p| &p.key == k));
    let mut statuses = BTreeMap::new();
    let mut sent = false;
    // Once the balancer stops answering, the rest of the pass sends nothing (each call would
    // wait for its timeout): the next pass finds it down, or back.
    let mut down: Option<DriverError> = None;
    for p in plans {
        let (status, n) = match (blocked.get(&p.key), &down) {
            (Some(why), _) => (not_running(p, "PortInUse", why.clone()), 0),
            (None, Some(e)) => (not_running(p, "BalancerDown", e.to_string()), 0),
            (None, None) => {
                let servers = servers.as_ref().map_err(Clone::clone);
                let r = reconcile_one(p, &servers, not_loaded.as_ref(), driver, retry).await;
                if let Some(e @ DriverError::Down(_)) = r.2 {
                    down = Some(e);
                }
                (r.0, r.1)
            }
        };
        sent |= n > 0;
        statuses.insert(p.key.clone(), status);
    }
    let mut board = ctx.board.write_locked();
    for (key, st) in statuses.iter_mut() {
        // A condition keeps its transition time while its status stays.
        if let Some(old) = board.get(key) {
            for c in &mut st.conditions {
                if let Some(o) = old.conditions.iter().find(|o| o.type_ == c.type_) {
                    if o.status == c.status {
                        c.last_transition_time = o.last_transition_time;
                    }
                }
            }
        }
    }
    *board = statuses;
    sent
}

/// The status of a load balancer the balancer does not run.
fn not_running(p: &Plan, reason: &str, message: String) -> LbStatus {
    LbStatus {
        url: p.url.clone(),
        groups: p.groups.clone(),
        problems: p.skipped.clone(),
        members: members_status(p, &[]),
        conditions: vec![condition(false, reason, message)],
    }
}

/// One load balancer's commands and status: (status, commands sent, the error that stopped
/// them).
async fn reconcile_one<D: LoadBalancerDriver + ?Sized>(
    p: &Plan,
    servers: &Result<&BTreeMap<String, Vec<Server>>, DriverError>,
    not_loaded: Option<&DriverError>,
    driver: &D,
    retry: &mut Retry,
) -> (LbStatus, usize, Option<DriverError>) {
    let mut st = LbStatus {
        url: p.url.clone(),
        groups: p.groups.clone(),
        problems: p.skipped.clone(),
        ..Default::default()
    };
    let frontend = match &p.frontend {
        Ok(f) => f,
        Err((reason, message)) => {
            st.conditions
                .push(condition(false, reason, message.clone()));
            st.members = members_status(p, &[]);
            return (st, 0, None);
        }
    };
    let have: &[Server] = match servers {
        Ok(all) => match all.get(&frontend.backend) {
            Some(have) => have,
            None => {
                let why = not_loaded.map_or("HAProxy has not loaded it yet".into(), |e| {
                    format!("HAProxy did not load it: {e}")
                });
                return (not_running(p, "NotConfigured", why), 0, None);
            }
        },
        Err(e) => {
            st.conditions
                .push(condition(false, "BalancerDown", e.to_string()));
            st.members = members_status(p, &[]);
            return (st, 0, None);
        }
    };
    st.members = members_status(p, have);
    if !p.unpublished.is_empty() {
        // Right after a start the groups' instances are not known yet: removing the servers
        // HAProxy has (an adopted one serves) would cut traffic for nothing.
        let why = format!(
            "waiting for the first status of group(s) {}; the balancer's servers are kept until then",
            p.unpublished.join(", ")
        );
        st.conditions.push(condition(false, "Converging", why));
        return (st, 0, None);
    }
    let wanted: Vec<Member> = p.members.iter().map(|m| m.member.clone()).collect();
    let commands = diff_given_back(
        &wanted,
        have,
        p.drain_timeout,
        frontend.check.is_some(),
        &p.given_back,
    );
    let mut refused = None;
    let mut sent = 0;
    if let (false, Some(why)) = (commands.is_empty(), retry.waiting(&p.key)) {
        refused = Some(DriverError::Refused(why.to_string()));
    } else if !commands.is_empty() {
        for c in &commands {
            sent += 1;
            match driver.apply(&frontend.backend, c).await {
                Ok(()) => log_command(&p.key, c),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        match &refused {
            Some(e) => {
                let wait = retry.failed(&p.key, e.to_string());
                warn!(lb = %p.key, error = %e, retry_in = ?wait, "load balancer command failed");
            }
            None => retry.ok(&p.key),
        }
    }
    let serving = have
        .iter()
        .filter(|s| {
            p.members
                .iter()
                .any(|m| m.member.name == s.name && m.member.want == Want::Ready)
        })
        .filter(|s| s.status.starts_with("UP") || s.status == "no check")
        .count();
    let c = match (&refused, serving) {
        (Some(e), _) => condition(false, "CommandFailed", e.to_string()),
        (None, 0) if p.members.iter().all(|m| m.member.want != Want::Ready) => condition(
            false,
            "NoMembers",
            format!(
                "no ready instance in {}",
                if p.groups.is_empty() {
                    "any group (no group lists it in loadBalancers)".to_string()
                } else {
                    format!("group(s) {}", p.groups.join(", "))
                }
            ),
        ),
        (None, 0) => condition(false, "Converging", "members are being added".into()),
        (None, n) => condition(true, "Serving", format!("{n} member(s) serving")),
    };
    st.conditions.push(c);
    (st, sent, refused)
}

fn log_command(key: &ObjectKey, c: &Command) {
    info!(lb = %key, "load balancer: {c}");
}

/// The members wanted (with the balancer's state of each) and the servers being removed.
fn members_status(p: &Plan, have: &[Server]) -> Vec<MemberStatus> {
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    let mut out: Vec<MemberStatus> = p
        .members
        .iter()
        .map(|m| {
            let s = have.iter().find(|s| s.name == m.member.name);
            MemberStatus {
                name: m.member.name.clone(),
                group: m.group.clone(),
                zone: m.zone.clone(),
                address: m.member.addr.to_string(),
                desired: match m.member.want {
                    Want::Ready => "ready",
                    Want::Drain => "drain",
                }
                .into(),
                state: s.map_or("absent".into(), |s| s.status.clone()),
                sessions: s.map_or(0, |s| s.sessions),
            }
        })
        .collect();
    for s in have {
        if !p.members.iter().any(|m| m.member.name == s.name) {
            out.push(MemberStatus {
                name: s.name.clone(),
                address: addr(s.addr),
                desired: "remove".into(),
                state: s.status.clone(),
                sessions: s.sessions,
                ..Default::default()
            });
        }
    }
    out
}
