//! Load balancers on the real engine and a real HAProxy: busybox `httpd` instances that answer
//! their own name, behind a `LoadBalancer` on a free 127.0.0.1 port. Traffic goes to
//! 127.0.0.1 only, bounded in count and time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// A launch configuration of `httpd` instances answering their hostname on 8080 (published on
/// 127.0.0.1), a group of `desired` naming load balancer `front`, and `front` on `port`.
pub fn web_behind_lb(ns: &str, desired: u32, port: u16, lc_extra: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\n\
         kind: LaunchConfiguration\n\
         metadata:\n  name: web\n  namespace: {ns}\n\
         spec:\n  image: {TEST_IMAGE}\n  command: [\"sh\", \"-c\", \"hostname > /tmp/index.html && exec httpd -f -p 8080 -h /tmp\"]\n  ports: [8080]\n  stopGracePeriod: 1s\n{lc_extra}\
         ---\n\
         apiVersion: microscaler.io/v1\n\
         kind: AutoScalingGroup\n\
         metadata:\n  name: web\n  namespace: {ns}\n\
         spec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: 10\n  desiredCapacity: {desired}\n  maxSurge: 1\n  loadBalancers: [front]\n\
         ---\n\
         apiVersion: microscaler.io/v1\n\
         kind: LoadBalancer\n\
         metadata:\n  name: front\n  namespace: {ns}\n\
         spec:\n  port: {port}\n  targetPort: 8080\n  drainTimeout: 5s\n"
    )
}

/// The managed HAProxy's directory of controller `name` (the default run dir).
pub fn run_dir(controller: &str) -> PathBuf {
    std::env::temp_dir().join(format!("microscaler-lb-{controller}"))
}

/// One Runtime API command on the controller's HAProxy.
pub fn admin(controller: &str, command: &str) -> Option<String> {
    let mut s = UnixStream::connect(run_dir(controller).join("admin.sock")).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    writeln!(s, "{command}").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The HAProxy worker's pid (changes on a reload or a restart).
pub fn worker_pid(controller: &str) -> Option<u32> {
    admin(controller, "show info")?
        .lines()
        .find_map(|l| l.strip_prefix("Pid: "))
        .and_then(|p| p.trim().parse().ok())
}

/// `(server, admin state bits)` of backend `ns.front`.
pub fn servers(controller: &str, ns: &str) -> Vec<(String, u32)> {
    let backend = format!("{ns}.front");
    admin(controller, "show servers state")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 6 && f[1] == backend).then(|| (f[3].to_string(), f[6].parse().unwrap_or(0)))
        })
        .collect()
}

/// One server of backend `ns.front` as HAProxy shows it: its admin state bits, the port it
/// sends to, and its sessions now and in total (`scur`, `stot`: every connection, in HTTP mode
/// every request, the balancer gave it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerView {
    pub name: String,
    pub admin: u32,
    pub port: u16,
    pub scur: u64,
    pub stot: u64,
}

impl ServerView {
    /// Set to drain (`set server ... state drain`) and not in maintenance: it keeps its
    /// connections and is given no new one.
    pub fn draining(&self) -> bool {
        self.admin & 0x08 != 0 && self.admin & 0x67 == 0
    }
}

/// The rows of a Runtime API table (header line `# a b c`, fields split by `sep`), each as
/// header field → value.
fn rows(text: &str, sep: char) -> Vec<BTreeMap<String, String>> {
    let split = |l: &str| -> Vec<String> {
        match sep {
            ' ' => l.split_whitespace().map(str::to_string).collect(),
            _ => l.split(sep).map(str::to_string).collect(),
        }
    };
    let Some(header) = text.lines().find_map(|l| l.strip_prefix("# ")) else {
        return Vec::new();
    };
    let header = split(header);
    text.lines()
        .filter(|l| !l.starts_with('#') && l.split(sep).count() >= header.len())
        .map(|l| header.iter().cloned().zip(split(l)).collect())
        .collect()
}

/// The servers of backend `ns.front` now (`show servers state` and `show stat`).
pub fn server_views(controller: &str, ns: &str) -> Vec<ServerView> {
    let backend = format!("{ns}.front");
    let stat = rows(&admin(controller, "show stat").unwrap_or_default(), ',');
    let state = rows(
        &admin(controller, "show servers state").unwrap_or_default(),
        ' ',
    );
    let field = |r: &BTreeMap<String, String>, k: &str| r.get(k).cloned().unwrap_or_default();
    state
        .iter()
        .filter(|r| field(r, "be_name") == backend)
        .map(|r| {
            let name = field(r, "srv_name");
            let counter = |k: &str| {
                stat.iter()
                    .find(|s| field(s, "pxname") == backend && field(s, "svname") == name)
                    .and_then(|s| field(s, k).parse().ok())
                    .unwrap_or(0)
            };
            ServerView {
                admin: field(r, "srv_admin_state").parse().unwrap_or(0),
                port: field(r, "srv_port").parse().unwrap_or(0),
                scur: counter("scur"),
                stot: counter("stot"),
                name,
            }
        })
        .collect()
}

/// The host port a container publishes its port 8080 on (`127.0.0.1:32768->8080/tcp`).
pub fn published_8080(c: &DockerContainer) -> u16 {
    c.ports
        .iter()
        .find_map(|p| {
            p.strip_suffix("->8080/tcp")?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{} publishes no port 8080: {:?}", c.name, c.ports))
}

/// `(name, state)` of container `id` on zone `a` (name without the leading `/`), or `None`
/// once it is gone.
pub fn name_and_state(id: &str) -> Option<(String, String)> {
    let out = docker(&docker_host_a())
        .args(["inspect", "--format", "{{.Name}} {{.State.Status}}", id])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (name, state) = text.trim().split_once(' ')?;
    Some((name.trim_start_matches('/').to_string(), state.to_string()))
}

/// What a test of a load balancer starts with: a namespace, a ready controller, its HAProxy's
/// run directory (removed when dropped) and a free port for the load balancer.
pub fn lb_setup() -> (TestNs, Controller, RunDir, u16) {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let dir = RunDir(run_dir(&ctl.name));
    (ns, ctl, dir, free_port())
}

/// `yaml` (of [`web_behind_lb`]) with `lines` (2-space indented) added to the group's spec.
pub fn with_group_lines(yaml: &str, lines: &str) -> String {
    yaml.replace(
        "loadBalancers: [front]\n",
        &format!("loadBalancers: [front]\n{lines}"),
    )
}

/// Writes `yaml` (a scale-in) to `file` and waits up to 10 s for a server of `ns.front` to go
/// to drain: that server as it was then, and how long after the write it was seen.
pub fn scale_in_until_drain(
    ctl: &Controller,
    ns: &str,
    file: &Path,
    yaml: &str,
) -> (ServerView, Duration) {
    let written = Instant::now();
    std::fs::write(file, yaml).unwrap();
    let mut victim = None;
    let found = wait_until(Duration::from_secs(10), || {
        victim = server_views(&ctl.name, ns)
            .into_iter()
            .find(|s| s.draining());
        victim.is_some()
    });
    assert!(
        found,
        "no server went to drain: {:?}\n{}",
        server_views(&ctl.name, ns),
        ctl.log()
    );
    (victim.unwrap(), written.elapsed())
}

/// The hostname (`<group>-<suffix>`, what it answers) of container `name` of namespace `ns`
/// (`<namespace>-<group>-<suffix>`).
pub fn hostname(ns: &TestNs, name: &str) -> String {
    name.trim_start_matches(&format!("{}-", ns.name))
        .to_string()
}

/// The hostnames answering through the load balancer in `tries` requests.
pub fn names_through(port: u16, tries: usize) -> BTreeSet<String> {
    (0..tries)
        .filter_map(|_| http_get(port, "/"))
        .filter(|(code, _)| *code == 200)
        .map(|(_, body)| body.trim().to_string())
        .collect()
}

/// A client loop on 127.0.0.1: one request every `pace` until stopped, at most `max` requests
/// and `limit` long. Counts answers other than 200 (and no answer) as failures.
pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl ClientLoop {
    pub fn start(port: u16, pace: Duration, max: u64, limit: Duration) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut errors = Vec::new();
            let mut n = 0;
            while !s.load(Ordering::Relaxed) && n < max && start.elapsed() < limit {
                n += 1;
                match http_get(port, "/") {
                    Some((200, _)) => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        f.fetch_add(1, Ordering::Relaxed);
                        if errors.len() < 10 {
                            errors.push(format!("{:?} at {:?}", other, start.elapsed()));
                        }
                    }
                }
                std::thread::sleep(pace);
            }
            errors
        });
        ClientLoop {
            stop,
            ok,
            failed,
            handle: Some(handle),
        }
    }

    /// Stops the loop and asserts that no request failed and that it made more than 20;
    /// returns how many it made.
    pub fn finish_without_failures(self) -> u64 {
        let (ok, failed, errors) = self.finish();
        assert_eq!(
            failed,
            0,
            "{failed} of {} requests failed: {errors:?}",
            ok + failed
        );
        assert!(ok > 20, "the client loop made only {ok} requests");
        ok
    }

    /// Stops the loop; returns (ok, failed, first errors).
    pub fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self
            .handle
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// A keep-alive HTTP/1.1 connection to the load balancer: one request, its answer.
fn keep_alive_request(s: &mut TcpStream) -> Option<String> {
    write!(s, "GET / HTTP/1.1\r\nHost: lb\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return head
                    .starts_with("HTTP/1.1 200")
                    .then(|| body[..len].to_string());
            }
        }
    }
}

/// The managed HAProxy's run directory, removed when the test ends.
pub struct RunDir(pub PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stdout(out: std::process::Output) -> String {
    String::from_utf8_lossy(&assert_success(&out).into_bytes()).to_string()
}

#[test]
fn a_load_balancer_follows_the_group_without_reloads_or_lost_requests() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let _dir = RunDir(run_dir(&ctl.name));
    let port = free_port();
    let file = ctl.write_manifest("web.yaml", &web_behind_lb(&ns.name, 2, port, ""));

    // Every instance answers through the load balancer.
    let served = wait_until(Duration::from_secs(60), || {
        names_through(port, 6).len() == 2
    });
    assert!(
        served,
        "2 instances never answered through the LB: {:?}\n{}",
        names_through(port, 6),
        ctl.log()
    );
    // Hostnames are `<group>-<suffix>`, container names `<namespace>-<group>-<suffix>`.
    let names: BTreeSet<String> = containers(&ns).into_iter().map(|c| c.name).collect();
    let hostnames: BTreeSet<String> = names.iter().map(|n| hostname(&ns, n)).collect();
    assert_eq!(names_through(port, 6), hostnames);
    let pid = worker_pid(&ctl.name).expect("HAProxy answers on its admin socket");

    // What a user sees: the URL, the members and their state.
    let url = format!("http://127.0.0.1:{port}");
    let lbs = || stdout(ctl.ms(&["get", "lbs", "-n", &ns.name]));
    let shown = wait_until(Duration::from_secs(5), || {
        let t = lbs();
        t.contains(&url) && t.contains("2/2") && t.contains("True")
    });
    assert!(shown, "{}", lbs());
    let wide = stdout(ctl.ms(&["get", "asgs", "-o", "wide", "-n", &ns.name]));
    assert!(wide.contains("URL") && wide.contains(&url), "{wide}");
    let describe = stdout(ctl.ms(&["describe", "lb", "front", "-n", &ns.name]));
    for n in &names {
        assert!(describe.contains(n.as_str()), "{n} missing:\n{describe}");
    }

    // Scale out under a client loop with a keep-alive connection open: the new member is
    // added at run time (same HAProxy worker), the open connection keeps working.
    let mut kept = TcpStream::connect(("127.0.0.1", port)).expect("connect to the LB");
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(keep_alive_request(&mut kept).is_some());
    let client = ClientLoop::start(
        port,
        Duration::from_millis(10),
        6000,
        Duration::from_secs(60),
    );
    std::fs::write(&file, web_behind_lb(&ns.name, 3, port, "")).unwrap();
    let three = wait_until(Duration::from_secs(60), || {
        names_through(port, 9).len() == 3
    });
    assert!(
        three,
        "the third instance never answered through the LB\n{}",
        ctl.log()
    );
    assert_eq!(worker_pid(&ctl.name), Some(pid), "HAProxy was reloaded");
    assert!(
        keep_alive_request(&mut kept).is_some(),
        "the open connection was dropped by the scale-out"
    );

    // A killed instance (SIGKILL) leaves the pool and its replacement joins, under the loop.
    let victim = containers(&ns).remove(0);
    docker_ok(&docker_host_a(), &["kill", &victim.id]);
    let replaced = wait_until(Duration::from_secs(60), || {
        let s = servers(&ctl.name, &ns.name);
        s.len() == 3
            && s.iter()
                .all(|(n, admin_bits)| *n != victim.name && *admin_bits == 0)
    });
    assert!(
        replaced,
        "{:?}\n{}",
        servers(&ctl.name, &ns.name),
        ctl.log()
    );

    // Scale in: the two removed members leave HAProxy, no request fails.
    std::fs::write(&file, web_behind_lb(&ns.name, 1, port, "")).unwrap();
    let one = wait_until(Duration::from_secs(60), || {
        servers(&ctl.name, &ns.name).len() == 1 && containers(&ns).len() == 1
    });
    assert!(
        one,
        "members after scale-in: {:?}\n{}",
        servers(&ctl.name, &ns.name),
        ctl.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    client.finish_without_failures();
    assert_eq!(worker_pid(&ctl.name), Some(pid), "HAProxy was reloaded");
    let log = ctl.log();
    assert!(!log.contains("load balancer command failed"), "{log}");
}

#[test]
fn hand_edits_and_a_killed_haproxy_are_corrected() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let _dir = RunDir(run_dir(&ctl.name));
    let port = free_port();
    ctl.write_manifest("web.yaml", &web_behind_lb(&ns.name, 2, port, ""));
    assert!(
        wait_until(Duration::from_secs(60), || names_through(port, 6).len()
            == 2),
        "{}",
        ctl.log()
    );
    // Drift by hand through the admin socket: a member put in maintenance, another deleted.
    let backend = format!("{}.front", ns.name);
    let names: Vec<String> = servers(&ctl.name, &ns.name)
        .into_iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(names.len(), 2);
    admin(
        &ctl.name,
        &format!("set server {backend}/{} state maint", names[0]),
    );
    admin(
        &ctl.name,
        &format!("set server {backend}/{} state maint", names[1]),
    );
    let deleted =
        admin(&ctl.name, &format!("del server {backend}/{}", names[1])).unwrap_or_default();
    assert!(deleted.contains("Server deleted"), "{deleted}");
    let corrected = wait_until(Duration::from_secs(10), || {
        let s = servers(&ctl.name, &ns.name);
        s.len() == 2 && s.iter().all(|(_, admin_bits)| *admin_bits == 0)
    });
    assert!(corrected, "{:?}", servers(&ctl.name, &ns.name));

    let old = worker_pid(&ctl.name).expect("HAProxy answers");
    let master: i32 = std::fs::read_to_string(run_dir(&ctl.name).join("haproxy.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    let status = std::process::Command::new("kill")
        .args(["-9", &master.to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // Back, with both members, without anyone touching the group.
    let back = wait_until(Duration::from_secs(30), || {
        worker_pid(&ctl.name).is_some_and(|p| p != old) && names_through(port, 6).len() == 2
    });
    assert!(back, "HAProxy not back with its members\n{}", ctl.log());
    assert_eq!(servers(&ctl.name, &ns.name).len(), 2);
    let lbs = || stdout(ctl.ms(&["get", "lbs", "-n", &ns.name]));
    assert!(
        wait_until(Duration::from_secs(5), || lbs().contains("True")),
        "{}",
        lbs()
    );
}

#[test]
fn a_listen_address_beyond_loopback_needs_the_configuration() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let _dir = RunDir(run_dir(&ctl.name));
    let port = free_port();
    let yaml = web_behind_lb(&ns.name, 0, port, "").replace(
        &format!("port: {port}"),
        &format!("listen: 0.0.0.0\n  port: {port}"),
    );
    ctl.write_manifest("web.yaml", &yaml);
    let refused = wait_until(Duration::from_secs(30), || {
        let out = ctl.ms(&["get", "problems"]);
        String::from_utf8_lossy(&out.stdout).contains("ListenNotAllowed")
    });
    assert!(refused, "{}", ctl.log());
    let describe = stdout(ctl.ms(&["describe", "lb", "front", "-n", &ns.name]));
    assert!(describe.contains("allowedListenAddresses"), "{describe}");
    // Nothing listens there.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// `groups` of the group `web` as `ms get asgs -o json` shows it: (current, updated, ready).
fn group_counts(ctl: &Controller, ns: &str) -> (u64, u64, u64) {
    let out = ctl.ms(&["get", "asg", "web", "-n", ns, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let n = |k: &str| v["status"][k].as_u64().unwrap_or(0);
    (n("current"), n("updated"), n("ready"))
}

#[test]
fn a_rolling_update_behind_a_health_checked_load_balancer_loses_no_request() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let _dir = RunDir(run_dir(&ctl.name));
    let port = free_port();
    let checked = |lc_extra: &str| {
        web_behind_lb(&ns.name, 3, port, lc_extra).replace(
            "drainTimeout: 5s\n",
            "drainTimeout: 5s\n  healthCheck: {path: /, interval: 500ms, rise: 1, fall: 2}\n",
        )
    };
    let file = ctl.write_manifest("web.yaml", &checked(""));
    assert!(
        wait_until(Duration::from_secs(60), || names_through(port, 9).len()
            == 3),
        "{}",
        ctl.log()
    );
    let old: BTreeSet<String> = containers(&ns).into_iter().map(|c| c.name).collect();
    let pid = worker_pid(&ctl.name);

    let client = ClientLoop::start(
        port,
        Duration::from_millis(10),
        6000,
        Duration::from_secs(60),
    );
    std::fs::write(&file, checked("  env:\n    ROLLOUT: \"2\"\n")).unwrap();
    let rolled = wait_until(Duration::from_secs(60), || {
        let now: BTreeSet<String> = containers(&ns).into_iter().map(|c| c.name).collect();
        now.len() == 3 && now.is_disjoint(&old) && group_counts(&ctl, &ns.name) == (3, 3, 3)
    });
    assert!(rolled, "the rollout did not finish\n{}", ctl.log());
    // The old members are gone from HAProxy, the new ones serve.
    assert!(
        wait_until(Duration::from_secs(15), || {
            let s = servers(&ctl.name, &ns.name);
            s.len() == 3 && s.iter().all(|(n, _)| !old.contains(n))
        }),
        "{:?}",
        servers(&ctl.name, &ns.name)
    );
    std::thread::sleep(Duration::from_millis(500));
    client.finish_without_failures();
    assert_eq!(worker_pid(&ctl.name), pid, "HAProxy was reloaded");
    let describe = stdout(ctl.ms(&["describe", "lb", "front", "-n", &ns.name]));
    assert!(
        describe.contains("HTTP GET /") && describe.contains("UP"),
        "{describe}"
    );
}

#[test]
fn a_port_another_process_holds_blocks_only_its_own_load_balancer() {
    let ns = TestNs::new();
    let mut ctl = Controller::start();
    ctl.wait_ready();
    let _dir = RunDir(run_dir(&ctl.name));
    let port = free_port();
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let held_port = held.local_addr().unwrap().port();
    let yaml = web_behind_lb(&ns.name, 2, port, "").replace(
        "loadBalancers: [front]",
        "loadBalancers: [front, blocked]",
    ) + &format!(
        "---\napiVersion: microscaler.io/v1\nkind: LoadBalancer\nmetadata:\n  name: blocked\n  namespace: {}\nspec:\n  port: {held_port}\n  targetPort: 8080\n  mode: tcp\n  balance: leastconn\n",
        ns.name
    );
    ctl.write_manifest("web.yaml", &yaml);
    // The other load balancer serves; the blocked one says why.
    assert!(
        wait_until(Duration::from_secs(60), || names_through(port, 6).len()
            == 2),
        "{}",
        ctl.log()
    );
    let problems = || String::from_utf8_lossy(&ctl.ms(&["get", "problems"]).stdout).to_string();
    assert!(
        wait_until(Duration::from_secs(10), || problems().contains("PortInUse")),
        "{}",
        problems()
    );
    let pid = worker_pid(&ctl.name);

    // Released: HAProxy is reloaded with it (a new listener needs one), and both serve (this
    // one in TCP mode).
    drop(held);
    assert!(
        wait_until(Duration::from_secs(30), || names_through(held_port, 6)
            .len()
            == 2),
        "{}",
        ctl.log()
    );
    assert_ne!(
        worker_pid(&ctl.name),
        pid,
        "a new listener comes with a reload"
    );
    assert_eq!(names_through(port, 6).len(), 2);
    assert!(!problems().contains("PortInUse"), "{}", problems());
}

/// A request through the load balancer sent up to its last header line: httpd waits for the
/// blank line, so the connection stays open (and counted on its server) until [`finish_held`].
pub fn hold(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the LB");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.0\r\nHost: lb\r\n").expect("send the request's head");
    s
}

/// Ends a held request: the status and body of its answer, `None` when the connection was cut.
pub fn finish_held(mut s: TcpStream) -> Option<(u16, String)> {
    s.write_all(b"\r\n").ok()?;
    http_answer(s)
}

/// In TCP mode HAProxy cannot retry for the client, so only the group's drain keeps a scale-in
/// from cutting connections: the instance chosen goes to `drain` at once, a connection it holds
/// is still served during the drain while new ones go to the other instance, and it stops (and
/// leaves HAProxy) only after `drainTimeout`.
#[test]
fn a_tcp_load_balancer_keeps_serving_a_held_connection_through_the_group_drain() {
    const DRAIN: Duration = Duration::from_secs(8);
    let (ns, ctl, _dir, port) = lb_setup();
    let yaml = |desired: u32| {
        with_group_lines(
            &web_behind_lb(&ns.name, desired, port, ""),
            &format!("  drainTimeout: {}s\n", DRAIN.as_secs()),
        )
        .replace(
            "targetPort: 8080\n",
            "targetPort: 8080\n  mode: tcp\n  balance: leastconn\n",
        )
    };
    let file = ctl.write_manifest("web.yaml", &yaml(2));
    assert!(
        wait_until(Duration::from_secs(60), || names_through(port, 6).len()
            == 2
            && server_views(&ctl.name, &ns.name)
                .iter()
                .all(|s| s.admin == 0)),
        "2 instances never answered through the LB\n{}",
        ctl.log()
    );
    let by_name: BTreeMap<String, DockerContainer> = containers(&ns)
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect();

    // One request held open on each instance (least connections: one each).
    let held = [hold(port), hold(port)];
    assert!(
        wait_until(Duration::from_secs(5), || {
            let s = server_views(&ctl.name, &ns.name);
            s.len() == 2 && s.iter().all(|s| s.scur == 1)
        }),
        "the held connections are not one per instance: {:?}",
        server_views(&ctl.name, &ns.name)
    );
    let client = ClientLoop::start(
        port,
        Duration::from_millis(10),
        6000,
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(300));

    // The instance chosen goes to drain while it still runs.
    let scaled_in = Instant::now();
    let (victim, to_drain) = scale_in_until_drain(&ctl, &ns.name, &file, &yaml(1));
    let container = by_name
        .get(&victim.name)
        .unwrap_or_else(|| panic!("server {} is no instance of {by_name:?}", victim.name));
    let running = || name_and_state(&container.id).is_some_and(|(_, s)| s == "running");
    assert!(running(), "{} stopped before its drain", victim.name);

    // Two seconds into the drain the held requests end: both answered, one by the instance
    // that drains, which still runs.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(scaled_in.elapsed()));
    let answers: BTreeSet<String> = held
        .into_iter()
        .map(|s| match finish_held(s) {
            Some((200, body)) => body.trim().to_string(),
            other => panic!(
                "a held connection was not served during the drain: {other:?} after {:?}\n{}",
                scaled_in.elapsed(),
                ctl.log()
            ),
        })
        .collect();
    let served_at = scaled_in.elapsed();
    let hostname = hostname(&ns, &victim.name);
    assert!(
        answers.contains(&hostname),
        "{hostname} did not answer its held request: {answers:?}"
    );
    assert!(
        served_at < DRAIN && running(),
        "the held request was answered after {served_at:?}, not within the drain of {DRAIN:?}"
    );

    // Until the drain ends: no new connection for the victim, the instance runs; then it stops
    // and leaves HAProxy.
    let (mut stopped_at, mut removed_at) = (None, None);
    let mut new_sessions = Vec::new();
    let done = wait_until(Duration::from_secs(40), || {
        let views = server_views(&ctl.name, &ns.name);
        match views.iter().find(|s| s.name == victim.name) {
            Some(s) if s.draining() && s.stot != victim.stot => new_sessions.push(s.clone()),
            Some(_) => {}
            None => {
                removed_at.get_or_insert(scaled_in.elapsed());
            }
        }
        if !running() {
            stopped_at.get_or_insert(scaled_in.elapsed());
        }
        removed_at.is_some() && stopped_at.is_some() && views.len() == 1
    });
    assert!(
        done,
        "the victim did not stop and leave HAProxy: {:?}\n{}",
        server_views(&ctl.name, &ns.name),
        ctl.log()
    );
    let (stopped_at, removed_at) = (stopped_at.unwrap(), removed_at.unwrap());
    assert!(
        new_sessions.is_empty(),
        "the draining server got new connections (it had {} at the drain): {:?}",
        victim.stot,
        &new_sessions[..new_sessions.len().min(3)]
    );
    assert!(
        stopped_at >= DRAIN && removed_at >= DRAIN,
        "the victim stopped after {stopped_at:?} and left HAProxy after {removed_at:?}, before the drain of {DRAIN:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let ok = client.finish_without_failures();
    eprintln!(
        "tcp drain: drain seen after {to_drain:?}, held requests answered after {served_at:?}, \
         stopped after {stopped_at:?}, left HAProxy after {removed_at:?}, {ok} requests, 0 failed"
    );
}

/// The master pid in the managed HAProxy's pid file of controller `name`.
fn master_pid(controller: &str) -> Option<i32> {
    std::fs::read_to_string(run_dir(controller).join("haproxy.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether process `pid` exists and is not a zombie.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s[s.rfind(')')? + 1..].trim_start().starts_with(['Z', 'X'])))
        == Some(false)
}

#[test]
fn the_load_balancer_keeps_serving_while_its_controller_is_down_and_is_adopted_after() {
    let (ns, mut ctl, _dir, port) = lb_setup();
    ctl.write_manifest("web.yaml", &web_behind_lb(&ns.name, 2, port, ""));
    assert!(
        wait_until(Duration::from_secs(60), || names_through(port, 6).len()
            == 2),
        "2 instances never answered through the LB\n{}",
        ctl.log()
    );
    let master = master_pid(&ctl.name).expect("the HAProxy pid file");
    let worker = worker_pid(&ctl.name).expect("HAProxy answers");
    let client = ClientLoop::start(
        port,
        Duration::from_millis(10),
        9000,
        Duration::from_secs(90),
    );

    // kill -9: HAProxy goes on serving the two members while nothing manages it.
    ctl.kill();
    let down_from = client.ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(3));
    let while_down = client.ok.load(Ordering::Relaxed) - down_from;
    assert!(running(master), "HAProxy died with its controller");
    assert_eq!(worker_pid(&ctl.name), Some(worker));
    assert_eq!(names_through(port, 6).len(), 2);
    assert!(
        while_down > 20,
        "only {while_down} requests while the controller was down"
    );

    // The restarted controller adopts it: same master, same worker (same load balancers, so
    // no reload), and it manages membership again (a scale-out joins).
    let started = Instant::now();
    ctl.spawn(&ControllerOptions::default());
    ctl.wait_ready();
    ctl.write_manifest("web.yaml", &web_behind_lb(&ns.name, 3, port, ""));
    assert!(
        wait_until(Duration::from_secs(60), || names_through(port, 9).len()
            == 3),
        "the scale-out after the restart never joined the LB\n{}",
        ctl.log()
    );
    let joined = started.elapsed();
    assert_eq!(master_pid(&ctl.name), Some(master), "HAProxy was replaced");
    assert!(running(master));
    assert_eq!(worker_pid(&ctl.name), Some(worker), "HAProxy was reloaded");
    assert!(
        ctl.log().contains("adopted the HAProxy left running"),
        "{}",
        ctl.log()
    );

    // SIGTERM is a controller stop, not a load balancer stop.
    let status = ctl.stop().expect("the controller exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    let stopped_from = client.ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    let after_stop = client.ok.load(Ordering::Relaxed) - stopped_from;
    assert!(running(master), "HAProxy stopped with its controller");
    assert_eq!(names_through(port, 9).len(), 3);
    let total = client.finish_without_failures();
    eprintln!(
        "adoption: {total} requests, 0 failed; {while_down} while killed (3 s), {after_stop} after SIGTERM (2 s); restart → scale-out joined in {:.1} s; master {master}, worker {worker} unchanged",
        joined.as_secs_f32()
    );

    // Back once more: an adopted HAProxy (not the controller's child) that dies is noticed and
    // restarted with its members.
    ctl.spawn(&ControllerOptions::default());
    ctl.wait_ready();
    assert!(
        wait_until(Duration::from_secs(10), || ctl
            .log()
            .matches("adopted the HAProxy left running")
            .count()
            == 2),
        "{}",
        ctl.log()
    );
    // SAFETY: kill(2) on the HAProxy master of this test's controller (its pid file).
    unsafe { libc::kill(master, libc::SIGKILL) };
    assert!(
        wait_until(Duration::from_secs(30), || {
            master_pid(&ctl.name).is_some_and(|p| p != master && running(p))
                && names_through(port, 9).len() == 3
        }),
        "the adopted HAProxy was not restarted with its members\n{}",
        ctl.log()
    );
    let master = master_pid(&ctl.name).expect("the new HAProxy's pid file");

    // The load balancer leaves the manifests: HAProxy is stopped.
    let without_lb = web_behind_lb(&ns.name, 3, port, "");
    let without_lb = without_lb
        .split("---\n")
        .take(2)
        .collect::<Vec<_>>()
        .join("---\n")
        .replace("  loadBalancers: [front]\n", "");
    ctl.write_manifest("web.yaml", &without_lb);
    assert!(
        wait_until(Duration::from_secs(20), || !running(master)),
        "HAProxy still runs without any load balancer\n{}",
        ctl.log()
    );
    assert!(http_get(port, "/").is_none(), "something still listens");
}
