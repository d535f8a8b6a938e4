//! Shared e2e helpers: engine addresses, per-test namespaces that clean up after themselves, a
//! running `ms controller`, the `ms` CLI, polling, and `docker` CLI views of containers.
//!
//! Tests talk to real engines: zone `a` on `MS_DOCKER_HOST_A` (else `DOCKER_HOST`, else the local
//! socket) and zone `b` on `MS_DOCKER_HOST_B` (else `unix:///run/microscaler-zone-b.sock`).
//! A missing engine fails the test with a message saying how to start one; it never passes.

#![allow(dead_code)] // Each test module uses a different part of the harness.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The image every e2e test runs (built locally by `scripts/make-test-image`).
pub const TEST_IMAGE: &str = "microscaler/busybox:latest";
/// Label that scopes a container to a test namespace.
pub const NAMESPACE_LABEL: &str = "io.microscaler.namespace";
/// Where `scripts/dockerd-up` puts zone `b`.
pub const DEFAULT_HOST_B: &str = "unix:///run/microscaler-zone-b.sock";
const DEFAULT_HOST_A: &str = "unix:///var/run/docker.sock";

/// Docker address of zone `a`.
pub fn docker_host_a() -> String {
    non_empty_env("MS_DOCKER_HOST_A")
        .or_else(|| non_empty_env("DOCKER_HOST"))
        .unwrap_or_else(|| DEFAULT_HOST_A.to_string())
}

/// Docker address of zone `b`.
pub fn docker_host_b() -> String {
    non_empty_env("MS_DOCKER_HOST_B").unwrap_or_else(|| DEFAULT_HOST_B.to_string())
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A `docker` CLI command aimed at `host`.
pub fn docker(host: &str) -> Command {
    let mut c = Command::new(std::env::var("MS_DOCKER_CLI").unwrap_or_else(|_| "docker".into()));
    c.arg("-H").arg(host);
    c
}

/// Runs `docker -H host args...` and returns stdout; panics with stderr on failure.
pub fn docker_ok(host: &str, args: &[&str]) -> String {
    let out = docker(host)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the docker CLI: {e}"));
    assert!(
        out.status.success(),
        "docker -H {host} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when an engine answers at `host` (`docker info` succeeds).
pub fn engine_answers(host: &str) -> bool {
    docker(host)
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Hosts already known to answer, so each is checked once per test binary.
static ANSWERING: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Panics unless an engine answers at `host` and has the test image: a missing engine is a
/// failure, never a silent pass.
pub fn require_engine(host: &str) {
    if ANSWERING.lock().unwrap().iter().any(|h| h == host) {
        return;
    }
    assert!(
        engine_answers(host),
        "no Docker engine at {host}: run scripts/dockerd-up or .ci/run"
    );
    let image = docker(host)
        .args(["image", "inspect", "--format", "{{.Id}}", TEST_IMAGE])
        .output()
        .expect("docker CLI runs");
    assert!(
        image.status.success(),
        "the engine at {host} has no {TEST_IMAGE}: run scripts/make-test-image {host}"
    );
    ANSWERING.lock().unwrap().push(host.to_string());
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique namespace for one test. Dropping it removes every container labelled with it, on
/// both engines, whatever the test did.
pub struct TestNs {
    pub name: String,
}

impl TestNs {
    /// A fresh namespace `e2e-<pid>-<counter>-<rand>`; requires the zone `a` engine.
    pub fn new() -> TestNs {
        require_engine(&docker_host_a());
        let n = NS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let rand: u16 = rand::random();
        TestNs {
            name: format!("e2e-{}-{n}-{rand:04x}", std::process::id()),
        }
    }

    /// `io.microscaler.namespace=<name>`, for `docker ps --filter label=...`.
    pub fn label(&self) -> String {
        format!("{NAMESPACE_LABEL}={}", self.name)
    }

    /// The namespace label as an engine filter.
    pub fn filter(&self) -> Vec<(String, String)> {
        vec![(NAMESPACE_LABEL.to_string(), self.name.clone())]
    }

    /// A container name unique to this namespace.
    pub fn container_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        for host in [docker_host_a(), docker_host_b()] {
            remove_namespace(&host, &self.name);
        }
    }
}

/// Force-removes every container of namespace `ns` on `host`; silent when the engine is away.
pub fn remove_namespace(host: &str, ns: &str) {
    let Ok(out) = docker(host)
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label={NAMESPACE_LABEL}={ns}"),
        ])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return;
    }
    let _ = docker(host)
        .args(["rm", "-f", "-v"])
        .args(&ids)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// One container as `docker inspect` shows it.
#[derive(Debug, Clone)]
pub struct DockerContainer {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub image: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or empty without a health check.
    pub health: String,
    pub exit_code: i64,
    pub labels: BTreeMap<String, String>,
    /// `127.0.0.1:32768->80/tcp`.
    pub ports: Vec<String>,
    /// Docker's RFC 3339 creation time (sorts chronologically).
    pub created: String,
    pub env: Vec<String>,
    pub nano_cpus: i64,
    pub memory: i64,
}

/// Containers of namespace `ns` on zone `a`.
pub fn containers(ns: &TestNs) -> Vec<DockerContainer> {
    containers_on(&docker_host_a(), &ns.name)
}

/// Containers of namespace `ns` on `host`, oldest first.
pub fn containers_on(host: &str, ns: &str) -> Vec<DockerContainer> {
    let ids = docker_ok(
        host,
        &[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label={NAMESPACE_LABEL}={ns}"),
        ],
    );
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let out = docker(host)
        .arg("inspect")
        .args(&ids)
        .output()
        .expect("docker CLI runs");
    // A container removed between ps and inspect makes inspect fail but still print the others.
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Array(Vec::new()));
    let mut list: Vec<DockerContainer> = json
        .as_array()
        .map(|a| a.iter().map(container_from_inspect).collect())
        .unwrap_or_default();
    list.sort_by(|a, b| a.created.cmp(&b.created));
    list
}

fn container_from_inspect(v: &serde_json::Value) -> DockerContainer {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string()
    };
    let i = |p: &str| v.pointer(p).and_then(|x| x.as_i64()).unwrap_or(0);
    let labels = v
        .pointer("/Config/Labels")
        .and_then(|l| l.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    if let Some(map) = v
        .pointer("/NetworkSettings/Ports")
        .and_then(|p| p.as_object())
    {
        for (inner, bindings) in map {
            for b in bindings.as_array().into_iter().flatten() {
                let ip = b["HostIp"].as_str().unwrap_or("");
                let port = b["HostPort"].as_str().unwrap_or("");
                ports.push(format!("{ip}:{port}->{inner}"));
            }
        }
    }
    ports.sort();
    DockerContainer {
        id: s("/Id"),
        name: s("/Name").trim_start_matches('/').to_string(),
        image: s("/Config/Image"),
        state: s("/State/Status"),
        health: s("/State/Health/Status"),
        exit_code: i("/State/ExitCode"),
        labels,
        ports,
        created: s("/Created"),
        env: v
            .pointer("/Config/Env")
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        nano_cpus: i("/HostConfig/NanoCpus"),
        memory: i("/HostConfig/Memory"),
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_until`] for async tests: sleeps on tokio time between polls.
pub async fn wait_until_async<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Status code and body of `GET http://127.0.0.1:<port><path>`, or `None` when nothing answers.
/// Plain HTTP/1.0 over std so the harness needs no client library and no runtime.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("address"),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // One write: `write!` sends each piece on its own, and Nagle's algorithm with the peer's
    // delayed ACK then holds the last piece for ~40 ms (HAProxy waits for the whole request).
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    http_answer(s)
}

/// Status code and body of the HTTP/1.0 answer read from `s` up to its end (the request is
/// sent), or `None` when the connection fails or closes without an answer.
pub fn http_answer(mut s: TcpStream) -> Option<(u16, String)> {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// How to start a controller.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Zone name and Docker address, in order.
    pub zones: Vec<(String, String)>,
    /// Extra top-level YAML appended to the configuration (e.g. `resyncPeriod: 1s`).
    pub extra_config: String,
    /// Extra arguments after `ms controller ...`.
    pub args: Vec<String>,
    /// `RUST_LOG` of the controller.
    pub rust_log: String,
    /// Its `controllerName` (default: unique per controller).
    pub controller_name: Option<String>,
    /// The watched directory (default: a fresh one in the controller's scratch directory; a
    /// given one is not created).
    pub dir: Option<PathBuf>,
    /// A command the controller runs under (e.g. `setpriv ...`).
    pub wrapper: Vec<String>,
    /// Extra environment variables (e.g. `MS_FAILPOINTS`).
    pub env: Vec<(String, String)>,
    /// Soft and hard `RLIMIT_NOFILE` of the controller process (default: inherited).
    pub nofile: Option<u64>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            zones: vec![("a".to_string(), docker_host_a())],
            extra_config: String::new(),
            args: Vec::new(),
            rust_log: "info,microscaler=debug".to_string(),
            controller_name: None,
            dir: None,
            wrapper: Vec::new(),
            env: Vec::new(),
            nofile: None,
        }
    }
}

impl ControllerOptions {
    /// Zones `a` and `b` on the two test engines.
    pub fn two_zones() -> Self {
        ControllerOptions {
            zones: vec![
                ("a".to_string(), docker_host_a()),
                ("b".to_string(), docker_host_b()),
            ],
            ..Default::default()
        }
    }
}

/// A running `ms controller` process on 127.0.0.1, with its own manifest directory and config.
/// Killed on drop; its log is printed when the test is failing.
pub struct Controller {
    child: Option<Child>,
    /// Its `controllerName` (unique per test controller, so parallel tests sharing an engine
    /// never touch each other's containers).
    pub name: String,
    pub port: u16,
    /// The watched manifest directory.
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// Owns `dir`, the config and the log.
    tmp: tempfile::TempDir,
}

impl Controller {
    /// Starts a controller with one zone `a`.
    pub fn start() -> Controller {
        Controller::start_with(ControllerOptions::default())
    }

    /// Starts a controller with these options (checks the zones' engines first).
    pub fn start_with(opts: ControllerOptions) -> Controller {
        let mut c = Controller::prepare_with(&opts);
        c.spawn(&opts);
        c
    }

    /// A controller's directory, configuration and port, not started yet (a test prepares the
    /// manifest directory first, e.g. as a git clone, then calls [`Controller::spawn`]).
    pub fn prepare_with(opts: &ControllerOptions) -> Controller {
        for (_, host) in &opts.zones {
            // The docker CLI wants a scheme; a bare socket path is a valid zone address.
            match host.starts_with('/') {
                true => require_engine(&format!("unix://{host}")),
                false => require_engine(host),
            }
        }
        let tmp = tempfile::Builder::new()
            .prefix("ms-e2e-")
            .tempdir()
            .expect("temp dir");
        // A directory given by the test is used as it is (it may be missing on purpose).
        let dir = opts.dir.clone().unwrap_or_else(|| {
            let dir = tmp.path().join("manifests");
            std::fs::create_dir_all(&dir).expect("manifest dir");
            dir
        });
        let config_path = tmp.path().join("config.yaml");
        let log_path = tmp.path().join("controller.log");
        let name = opts.controller_name.clone().unwrap_or_else(|| {
            format!(
                "e2e-{}-{}",
                std::process::id(),
                NS_COUNTER.fetch_add(1, Ordering::Relaxed)
            )
        });
        let mut config = format!("controllerName: {name}\nzones:\n");
        for (name, host) in &opts.zones {
            config.push_str(&format!("  - name: {name}\n    dockerHost: \"{host}\"\n"));
        }
        // Protections and drains of this controller stay in its scratch directory.
        config.push_str(&format!(
            "stateDir: \"{}\"\n",
            tmp.path().join("state").display()
        ));
        config.push_str(&opts.extra_config);
        std::fs::write(&config_path, config).expect("write config");
        let port = free_port();
        Controller {
            child: None,
            name,
            port,
            dir,
            config_path,
            log_path,
            tmp,
        }
    }

    /// Starts the `ms controller` process.
    pub fn spawn(&mut self, opts: &ControllerOptions) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the controller log");
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_ms"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_ms")),
        };
        if let Some(n) = opts.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit between fork and exec, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .arg("controller")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&opts.args)
            .env("RUST_LOG", &opts.rust_log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn ms controller");
        self.child = Some(child);
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The scratch directory holding the manifests, config and log.
    pub fn tmp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// The controller's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until `GET /readyz` answers 200 (at most 30 s); panics with the log otherwise.
    pub fn wait_ready(&mut self) -> &mut Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = http_get(self.port, "/readyz") {
                return self;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the controller exited ({status}) before it was ready; its log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "the controller was not ready within 30 s; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `ms --server <url> args...`.
    pub fn ms(&self, args: &[&str]) -> Output {
        self.ms_command(args).output().expect("run ms")
    }

    /// Runs `ms --server <url> args...` with `input` on stdin.
    pub fn ms_with_stdin(&self, args: &[&str], input: &str) -> Output {
        output_with_stdin(self.ms_command(args), input)
    }

    /// The `ms` command aimed at this controller, for custom runs.
    pub fn ms_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ms"));
        c.arg("--server")
            .arg(self.url())
            .args(args)
            .env("NO_COLOR", "1");
        c
    }

    /// Writes a manifest file into the watched directory.
    pub fn write_manifest(&self, file: &str, yaml: &str) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(&path, yaml).expect("write manifest");
        path
    }

    /// The controller's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits up to `timeout` for the controller to exit by itself; its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the controller (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the controller with SIGTERM and waits up to 10 s for it to exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Starts the controller again after [`kill`](Self::kill) or [`stop`](Self::stop), same
    /// directory, config and port.
    pub fn restart(&mut self, opts: &ControllerOptions) -> &mut Self {
        self.kill();
        self.spawn(opts);
        self
    }
}

/// Removes the lease containers of controller `name` on both zones: a killed controller could
/// not release them, so they are its test's debris.
pub fn remove_leases(name: &str) {
    let lease = format!("microscaler-lease-{name}");
    for host in [docker_host_a(), docker_host_b()] {
        let _ = docker(&host)
            .args(["rm", "-f", &lease])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Stops the managed HAProxy of controller `name`, which outlives its controller by design:
/// every `haproxy` whose command line reads a configuration in that controller's run directory
/// (unique per test controller), found through /proc so it works after the directory is gone.
pub fn stop_haproxy_of(name: &str) {
    let dir = format!("/microscaler-lb-{name}/haproxy.cfg");
    let ours = |pid: i32| {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = String::from_utf8_lossy(&raw)
            .split('\0')
            .map(str::to_string)
            .collect();
        args.first().is_some_and(|a| a.contains("haproxy"))
            && args
                .windows(2)
                .any(|w| w[0] == "-f" && w[1].ends_with(&dir))
    };
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|p: &i32| *p > 1 && ours(*p))
                .collect()
        })
        .unwrap_or_default();
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let left: Vec<i32> = pids.iter().copied().filter(|p| ours(*p)).collect();
        if left.is_empty() {
            return;
        }
        for pid in &left {
            // SAFETY: kill(2) on a HAProxy reading this test controller's configuration.
            unsafe { libc::kill(*pid, signal) };
        }
        wait_until(Duration::from_secs(2), || !pids.iter().any(|p| ours(*p)));
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
        stop_haproxy_of(&self.name);
        remove_leases(&self.name);
        if std::thread::panicking() {
            eprintln!(
                "----- controller log ({}) -----\n{}\n----- end of controller log -----",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// Asserts a command succeeded, showing its output otherwise; returns stdout.
pub fn assert_success(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops zone b's dockerd (SIGTERM, as an operator or a crash would) and waits until it is gone.
pub fn stop_engine_b() {
    let pidfile = "/run/microscaler-zone-b.pid";
    let pid = std::fs::read_to_string(pidfile).unwrap_or_else(|e| {
        panic!("cannot read {pidfile} (was zone b started by scripts/dockerd-up?): {e}")
    });
    let pid = pid.trim().to_string();
    let alive = |pid: &str| {
        Command::new("kill")
            .args(["-0", pid])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs")
        .success());
    assert!(
        wait_until(Duration::from_secs(40), || !alive(&pid)),
        "zone b's dockerd {pid} did not stop"
    );
}

/// Starts zone b's dockerd again with `scripts/dockerd-up` (recorded in `MS_ENGINES_DIR`, so
/// the run that started the engines also stops this one).
pub fn start_engine_b() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dockerd-up");
    let mut cmd = Command::new(script);
    if let Some(dir) = non_empty_env("MS_ENGINES_DIR") {
        cmd.arg(dir);
    }
    let out = cmd.output().expect("run scripts/dockerd-up");
    assert!(
        out.status.success(),
        "scripts/dockerd-up failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        engine_answers(&docker_host_b()),
        "zone b does not answer after dockerd-up"
    );
}

/// Serializes the tests that use zone b: some stop and restart its engine.
static ZONE_B: Mutex<()> = Mutex::new(());

/// Zone b held by one test: the in-process mutex for this test binary, and an exclusive lock on
/// a file shared by every test process on the machine (two checkouts running their suites at once
/// must not restart zone b under each other's tests).
pub struct ZoneBLock {
    _file: std::fs::File,
    _guard: std::sync::MutexGuard<'static, ()>,
}

/// Holds zone b for one test (a panicking holder does not poison it for the others).
pub fn zone_b_lock() -> ZoneBLock {
    let guard = ZONE_B.lock().unwrap_or_else(|p| p.into_inner());
    let path = std::env::temp_dir().join("microscaler-zone-b.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    // Released when the file is closed, also when the test process dies.
    file.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    ZoneBLock {
        _file: file,
        _guard: guard,
    }
}

/// Runs `cmd` with `input` on its stdin and collects its output.
pub fn output_with_stdin(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the command");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for the command")
}

/// Every file below `dir` (recursively) and its bytes: to check that nothing was modified.
pub fn snapshot_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// A launch configuration and a group of `sleep 3600` containers (stop grace 0 s) in namespace
/// `ns`; `lc_extra` and `group_extra` are lines added to each spec (2-space indented by the
/// caller). The manifest most e2e tests start from.
pub fn sleepers(ns: &str, desired: u32, max: u32, lc_extra: &str, group_extra: &str) -> String {
    format!(
        "apiVersion: microscaler.io/v1\n\
         kind: LaunchConfiguration\n\
         metadata:\n  name: web\n  namespace: {ns}\n\
         spec:\n  image: {TEST_IMAGE}\n  command: [\"sleep\", \"3600\"]\n  stopGracePeriod: 0s\n{lc_extra}\
         ---\n\
         apiVersion: microscaler.io/v1\n\
         kind: AutoScalingGroup\n\
         metadata:\n  name: web\n  namespace: {ns}\n\
         spec:\n  launchConfiguration: web\n  minSize: 0\n  maxSize: {max}\n  desiredCapacity: {desired}\n{group_extra}"
    )
}

/// Waits for `what`, failing the test with the controller's view when it does not happen.
pub fn expect(
    ctl: &Controller,
    ns: &TestNs,
    what: &str,
    timeout: Duration,
    cond: impl FnMut() -> bool,
) {
    if !wait_until(timeout, cond) {
        let out = ctl.ms(&["describe", "asg", "web", "-n", &ns.name]);
        panic!(
            "timed out after {timeout:?} waiting for: {what}\ncontainers: {:#?}\nms describe:\n{}{}",
            containers(ns).iter().map(|c| (&c.name, &c.state)).collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Kills the container's main process with SIGKILL (as `docker kill` would, without the
/// engine knowing beforehand).
pub fn kill9(c: &DockerContainer) {
    let pid = docker_ok(
        &docker_host_a(),
        &["inspect", "--format", "{{.State.Pid}}", &c.id],
    );
    let status = Command::new("kill")
        .arg("-9")
        .arg(pid.trim())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -9 {} failed", pid.trim());
}
