//! The load balancer loop against an in-memory balancer that behaves like HAProxy where the
//! loop can tell (servers are added in maintenance, deleted only from maintenance, a restart
//! forgets everything but the seed).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::driver::{Admin, Command, DriverError, Frontend, LoadBalancerDriver, Seed, Server};
use super::members::{test_instance as instance, Settings};
use super::run::{pass_for_tests as pass, Context, Retry};
use crate::manifest::{Kind, ObjectKey};
use crate::status::{GroupStatus, InstanceStatus};

#[derive(Default)]
struct Memory {
    servers: Mutex<BTreeMap<String, Vec<Server>>>,
    running: Mutex<Option<Vec<Frontend>>>,
    refuse: AtomicBool,
    sent: Mutex<Vec<Command>>,
}

impl Memory {
    fn admin(&self, backend: &str) -> Vec<(String, Admin)> {
        self.servers.lock().unwrap()[backend]
            .iter()
            .map(|s| (s.name.clone(), s.admin))
            .collect()
    }
    /// What a restart does: the servers go back to the seed of the configuration (here none).
    fn restart(&self) {
        *self.running.lock().unwrap() = None;
    }
}

#[async_trait]
impl LoadBalancerDriver for Memory {
    async fn ensure(&self, frontends: &[Frontend], seed: &Seed) -> Result<(), DriverError> {
        let mut running = self.running.lock().unwrap();
        if running.as_deref() != Some(frontends) {
            let mut servers = self.servers.lock().unwrap();
            servers.clear();
            for f in frontends {
                let seeded = seed.get(&f.backend).into_iter().flatten().map(|m| Server {
                    name: m.name.clone(),
                    addr: Some(m.addr),
                    admin: Admin::Ready,
                    status: "no check".into(),
                    sessions: 0,
                    since_change: Duration::ZERO,
                });
                servers.insert(f.backend.clone(), seeded.collect());
            }
            *running = Some(frontends.to_vec());
        }
        Ok(())
    }

    async fn servers(&self) -> Result<BTreeMap<String, Vec<Server>>, DriverError> {
        Ok(self.servers.lock().unwrap().clone())
    }

    async fn apply(&self, backend: &str, c: &Command) -> Result<(), DriverError> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(DriverError::Refused("refused".into()));
        }
        self.sent.lock().unwrap().push(c.clone());
        let mut all = self.servers.lock().unwrap();
        let list = all
            .get_mut(backend)
            .ok_or(DriverError::Refused("no backend".into()))?;
        let find = |list: &mut Vec<Server>, n: &str| list.iter().position(|s| s.name == n);
        match c {
            Command::Add { server, addr, .. } => list.push(Server {
                name: server.clone(),
                addr: Some(*addr),
                admin: Admin::Maint,
                status: "MAINT".into(),
                sessions: 0,
                since_change: Duration::ZERO,
            }),
            Command::Enable(s) => {
                let i = find(list, s).ok_or(DriverError::Refused("no server".into()))?;
                list[i].admin = Admin::Ready;
                list[i].status = "no check".into();
            }
            Command::Set(s, a) => {
                let i = find(list, s).ok_or(DriverError::Refused("no server".into()))?;
                list[i].admin = *a;
                list[i].since_change = Duration::ZERO;
            }
            Command::ShutdownSessions(s) => {
                let i = find(list, s).ok_or(DriverError::Refused("no server".into()))?;
                list[i].sessions = 0;
            }
            Command::Del(s) => {
                let i = find(list, s).ok_or(DriverError::Refused("no server".into()))?;
                if list[i].admin != Admin::Maint {
                    return Err(DriverError::Refused("not in maintenance".into()));
                }
                list.remove(i);
            }
        }
        Ok(())
    }
}

/// A load balancer on `port`, a group naming it.
fn yaml(port: u16) -> String {
    format!("apiVersion: microscaler.io/v1\nkind: LoadBalancer\nmetadata: {{name: front}}\nspec: {{port: {port}, targetPort: 80, drainTimeout: 10s}}\n---\napiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: web}}\nspec: {{image: busybox}}\n---\napiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: web}}\nspec: {{launchConfiguration: web, minSize: 0, maxSize: 5, loadBalancers: [front]}}\n")
}
const BACKEND: &str = "default.front";

struct Setup {
    ctx: Context,
    _tx: tokio::sync::watch::Sender<Arc<crate::watch::store::Desired>>,
    lb: ObjectKey,
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

fn setup() -> Setup {
    setup_on(free_port())
}

fn setup_on(port: u16) -> Setup {
    let desired = Arc::new(crate::watch::store::test_snapshot(&yaml(port)));
    let (tx, rx) = tokio::sync::watch::channel(desired);
    let ctx = Context {
        desired: rx,
        status: Arc::default(),
        board: Arc::default(),
        settings: Settings {
            zones: [("a".to_string(), Some([127, 0, 0, 1].into()))].into(),
            ..Default::default()
        },
    };
    Setup {
        ctx,
        _tx: tx,
        lb: ObjectKey::new(Kind::LoadBalancer, "default", "front"),
    }
}

fn publish(ctx: &Context, instances: Vec<InstanceStatus>) {
    ctx.status.write().unwrap().insert(
        ObjectKey::new(Kind::AutoScalingGroup, "default", "web"),
        GroupStatus {
            instances,
            ..Default::default()
        },
    );
}

/// Passes until nothing is sent any more (at most 5).
async fn converge(ctx: &Context, d: &Memory, retry: &mut Retry) {
    for _ in 0..5 {
        if !pass(ctx, d, retry).await {
            return;
        }
    }
    panic!("no convergence in 5 passes: {:?}", d.sent.lock().unwrap());
}

fn ready(ctx: &Context, key: &ObjectKey) -> (String, String) {
    let board = ctx.board.read().unwrap();
    let c = &board[key].conditions[0];
    (c.status.clone(), c.reason.clone())
}

#[tokio::test]
async fn members_follow_the_published_instances_and_survive_a_restart() {
    let s = setup();
    let d = Memory::default();
    let mut retry = Retry::default();
    publish(
        &s.ctx,
        vec![
            instance("web-1", "running", 101),
            instance("web-2", "created", 102),
        ],
    );
    converge(&s.ctx, &d, &mut retry).await;
    assert_eq!(d.admin(BACKEND), [("web-1".to_string(), Admin::Ready)]);
    assert_eq!(ready(&s.ctx, &s.lb), ("True".into(), "Serving".into()));

    // web-2 becomes ready: added and enabled.
    publish(
        &s.ctx,
        vec![
            instance("web-1", "running", 101),
            instance("web-2", "running", 102),
        ],
    );
    converge(&s.ctx, &d, &mut retry).await;
    assert_eq!(d.admin(BACKEND).len(), 2);

    // The balancer restarts with nothing: the next passes put both back.
    d.restart();
    d.servers.lock().unwrap().clear();
    converge(&s.ctx, &d, &mut retry).await;
    assert_eq!(
        d.admin(BACKEND),
        [
            ("web-1".to_string(), Admin::Ready),
            ("web-2".to_string(), Admin::Ready)
        ]
    );
    let board = s.ctx.board.read().unwrap();
    assert!(board[&s.lb].members.iter().all(|m| m.state == "no check"));
}

#[tokio::test]
async fn a_draining_instance_drains_and_a_gone_one_leaves_after_its_connections() {
    let s = setup();
    let d = Memory::default();
    let mut retry = Retry::default();
    publish(
        &s.ctx,
        vec![
            instance("web-1", "running", 101),
            instance("web-2", "running", 102),
        ],
    );
    converge(&s.ctx, &d, &mut retry).await;

    publish(
        &s.ctx,
        vec![
            instance("web-1", "running", 101),
            instance("web-2", "draining", 102),
        ],
    );
    converge(&s.ctx, &d, &mut retry).await;
    assert_eq!(d.admin(BACKEND)[1], ("web-2".to_string(), Admin::Drain));

    // Gone, with two connections open: it stays draining within the drain timeout...
    d.servers.lock().unwrap().get_mut(BACKEND).unwrap()[1].sessions = 2;
    publish(&s.ctx, vec![instance("web-1", "running", 101)]);
    converge(&s.ctx, &d, &mut retry).await;
    assert_eq!(d.admin(BACKEND).len(), 2);
    // ...and leaves once it has drained 10 s.
    d.servers.lock().unwrap().get_mut(BACKEND).unwrap()[1].since_change = Duration::from_secs(10);
    converge(&s.ctx, &d, &mut retry).await;
    assert_eq!(d.admin(BACKEND), [("web-1".to_string(), Admin::Ready)]);
    assert!(d.sent.lock().unwrap().ends_with(&[
        Command::Set("web-2".into(), Admin::Maint),
        Command::ShutdownSessions("web-2".into()),
        Command::Del("web-2".into()),
    ]));
}

#[tokio::test]
async fn a_port_another_process_holds_is_refused_and_visible() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let s = setup_on(held.local_addr().unwrap().port());
    let d = Memory::default();
    let mut retry = Retry::default();
    publish(&s.ctx, vec![instance("web-1", "running", 101)]);
    assert!(!pass(&s.ctx, &d, &mut retry).await);
    assert_eq!(ready(&s.ctx, &s.lb), ("False".into(), "PortInUse".into()));
    assert!(
        d.servers.lock().unwrap().is_empty(),
        "not given to the balancer"
    );
    // Released: configured and served on the next pass.
    drop(held);
    converge(&s.ctx, &d, &mut retry).await;
    assert_eq!(ready(&s.ctx, &s.lb), ("True".into(), "Serving".into()));
}

#[tokio::test]
async fn refused_commands_are_visible_and_backed_off() {
    let s = setup();
    let d = Memory::default();
    let mut retry = Retry::default();
    publish(&s.ctx, vec![]);
    converge(&s.ctx, &d, &mut retry).await;
    d.refuse.store(true, Ordering::Relaxed);
    publish(&s.ctx, vec![instance("web-1", "running", 101)]);
    assert!(pass(&s.ctx, &d, &mut retry).await);
    assert_eq!(ready(&s.ctx, &s.lb).1, "CommandFailed");
    // Within the backoff nothing is sent; the condition stays visible.
    assert!(!pass(&s.ctx, &d, &mut retry).await);
    assert_eq!(ready(&s.ctx, &s.lb).1, "CommandFailed");
    d.refuse.store(false, Ordering::Relaxed);
    retry = Retry::default();
    converge(&s.ctx, &d, &mut retry).await;
    assert_eq!(ready(&s.ctx, &s.lb), ("True".into(), "Serving".into()));
}

#[tokio::test]
async fn a_restarted_controller_keeps_the_servers_until_its_groups_are_published() {
    // The balancer a previous controller left running serves web-1 and web-2.
    let s = setup();
    let d = Memory::default();
    let mut retry = Retry::default();
    publish(
        &s.ctx,
        vec![
            instance("web-1", "running", 101),
            instance("web-2", "running", 102),
        ],
    );
    converge(&s.ctx, &d, &mut retry).await;
    d.sent.lock().unwrap().clear();

    // A new controller: nothing published yet. Nothing is removed, and it says why.
    s.ctx.status.write().unwrap().clear();
    let mut retry = Retry::default();
    assert!(!pass(&s.ctx, &d, &mut retry).await);
    assert!(d.sent.lock().unwrap().is_empty());
    assert_eq!(d.admin(BACKEND).len(), 2);
    let (status, reason) = ready(&s.ctx, &s.lb);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Converging"));
    let message = s.ctx.board.read().unwrap()[&s.lb].conditions[0]
        .message
        .clone();
    assert!(message.contains("group(s) web"), "{message}");

    // Once published, membership is managed again: web-2 is gone now, so it leaves.
    publish(&s.ctx, vec![instance("web-1", "running", 101)]);
    converge(&s.ctx, &d, &mut retry).await;
    assert_eq!(d.admin(BACKEND), [("web-1".to_string(), Admin::Ready)]);
}
