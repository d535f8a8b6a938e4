//! Load balancers on the real engine and a real HAProxy: busybox `httpd` instances that answer
//! their own name, behind a `LoadBalancer` on a free 127.0.0.1 port. Traffic goes to
//! 127.0.0.1 only, bounded in count and time.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
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

/// The hostnames answering through the load balancer in `tries` requests.
fn names_through(port: u16, tries: usize) -> BTreeSet<String> {
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

struct RunDir(PathBuf);

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
    let hostnames: BTreeSet<String> = names
        .iter()
        .map(|n| n.trim_start_matches(&format!("{}-", ns.name)).to_string())
        .collect();
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
    let (ok, failed, errors) = client.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed: {errors:?}",
        ok + failed
    );
    assert!(ok > 20, "the client loop made only {ok} requests");
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
    let (ok, failed, errors) = client.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed: {errors:?}",
        ok + failed
    );
    assert!(ok > 20, "the client loop made only {ok} requests");
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
