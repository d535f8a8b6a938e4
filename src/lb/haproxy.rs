//! The one real [`LoadBalancerDriver`]: HAProxy in managed mode. The controller writes the
//! base configuration (a frontend and backend per load balancer), runs one `haproxy -W` per
//! controller with an admin socket, restarts it with backoff when it dies, reloads it (without
//! dropping connections) only when the set of load balancers changes, and drives membership
//! through the Runtime API (`add server`, `set server state`, `enable server`, `del server`).
//!
//! A previous copy left behind by a controller killed with `kill -9` is found by its pid file
//! (and its command line naming this configuration) and stopped before a new one starts.

pub mod config;
pub mod runtime;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::process::{Child, Command as Process};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::driver::{Command, DriverError, Frontend, LoadBalancerDriver, Seed, Server};

/// Backoff between restarts of a HAProxy that keeps dying.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A HAProxy that ran this long is healthy again: its next death restarts at once.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long a started or reloaded HAProxy may take to answer on its admin socket.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest Unix socket path (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The managed HAProxy of one controller.
pub struct Haproxy {
    controller: String,
    binary: PathBuf,
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    child: Option<Child>,
    /// The frontends the running HAProxy was started or reloaded with.
    running: Vec<Frontend>,
    failures: u32,
    next_try: Option<Instant>,
    started: Option<Instant>,
    last_error: Option<String>,
}

fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_MIN.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

impl Haproxy {
    /// A driver for controller `controller`, running `binary` with its files in `dir`.
    pub fn new(controller: &str, binary: PathBuf, dir: PathBuf) -> Haproxy {
        Haproxy {
            controller: controller.to_string(),
            binary,
            dir,
            state: Mutex::new(State::default()),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }
    fn config_path(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }
    fn pid_path(&self) -> PathBuf {
        self.dir.join("haproxy.pid")
    }
    fn log_path(&self) -> PathBuf {
        self.dir.join("haproxy.log")
    }

    /// The pid of the HAProxy master this driver runs (what an operator would kill).
    pub async fn master_pid(&self) -> Option<u32> {
        self.state.lock().await.child.as_ref().and_then(Child::id)
    }

    /// The pid of the worker serving now (`show info`): it changes on a reload or restart.
    pub async fn worker_pid(&self) -> Option<u32> {
        let info = runtime::call(&self.socket(), "show info").await.ok()?;
        runtime::parse_pid(&info)
    }

    /// The last lines HAProxy wrote (its alerts), for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    fn write_config(&self, frontends: &[Frontend], seed: &Seed) -> Result<(), DriverError> {
        let text = config::render(&self.controller, &self.socket(), frontends, seed);
        let tmp = self.dir.join("haproxy.cfg.new");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, self.config_path()))
            .map_err(|e| {
                DriverError::Refused(format!(
                    "cannot write {}: {e}",
                    self.config_path().display()
                ))
            })
    }

    /// `haproxy -c`: a configuration HAProxy refuses never replaces the running one.
    async fn check_config(&self) -> Result<(), DriverError> {
        let out = Process::new(&self.binary)
            .arg("-c")
            .arg("-q")
            .arg("-f")
            .arg(self.config_path())
            .output()
            .await
            .map_err(|e| {
                DriverError::Down(format!(
                    "cannot run {}: {e} (install HAProxy, e.g. `apt-get install haproxy`, or set loadBalancers.haproxy)",
                    self.binary.display()
                ))
            })?;
        if out.status.success() {
            return Ok(());
        }
        let why = String::from_utf8_lossy(&out.stderr);
        let why: Vec<&str> = why
            .lines()
            .filter(|l| l.contains("ALERT"))
            .take(3)
            .collect();
        Err(DriverError::Refused(format!(
            "HAProxy refused its configuration: {}",
            why.join(" | ")
        )))
    }

    /// Stops a HAProxy a previous controller left running with this configuration.
    async fn stop_stale(&self) {
        let Ok(text) = std::fs::read_to_string(self.pid_path()) else {
            return;
        };
        let Ok(pid) = text.trim().parse::<i32>() else {
            return;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|a| Path::new(a) == self.config_path());
        if !ours || pid <= 1 {
            return;
        }
        warn!(
            pid,
            "stopping the HAProxy a previous controller left running"
        );
        // SAFETY: kill(2) on a pid whose command line names our own configuration.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..40 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }

    /// Waits until the admin socket answers with a worker other than `old`.
    async fn wait_answering(&self, old: Option<u32>) -> Option<u32> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(pid) = self.worker_pid().await {
                if Some(pid) != old {
                    return Some(pid);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    async fn start(
        &self,
        st: &mut State,
        frontends: &[Frontend],
        seed: &Seed,
    ) -> Result<(), DriverError> {
        if self.socket().as_os_str().len() > MAX_SOCKET_PATH {
            return Err(DriverError::Refused(format!(
                "the admin socket path {} is longer than {MAX_SOCKET_PATH} bytes: set a shorter loadBalancers.runDir",
                self.socket().display()
            )));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| DriverError::Down(format!("cannot create {}: {e}", self.dir.display())))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        }
        self.stop_stale().await;
        self.write_config(frontends, seed)?;
        self.check_config().await?;
        let log = std::fs::File::create(self.log_path()).map_err(|e| {
            DriverError::Down(format!("cannot create {}: {e}", self.log_path().display()))
        })?;
        let mut cmd = Process::new(&self.binary);
        cmd.arg("-W")
            .arg("-f")
            .arg(self.config_path())
            .arg("-p")
            .arg(self.pid_path())
            .stdin(std::process::Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| DriverError::Down(e.to_string()))?,
            )
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: only prctl between fork and exec, which is async-signal-safe. HAProxy stops
        // when the controller dies, so a `kill -9` of the controller leaves no listener behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            DriverError::Down(format!(
                "cannot run {}: {e} (install HAProxy, e.g. `apt-get install haproxy`, or set loadBalancers.haproxy)",
                self.binary.display()
            ))
        })?;
        let pid = child.id();
        st.child = Some(child);
        match self.wait_answering(None).await {
            Some(worker) => {
                info!(master = ?pid, worker, frontends = frontends.len(), "HAProxy started");
                st.running = frontends.to_vec();
                st.started = Some(Instant::now());
                st.last_error = None;
                Ok(())
            }
            None => {
                if let Some(mut c) = st.child.take() {
                    let _ = c.kill().await;
                }
                Err(DriverError::Down(format!(
                    "HAProxy did not answer on {} within {START_TIMEOUT:?}: {}",
                    self.socket().display(),
                    self.log_tail()
                )))
            }
        }
    }

    /// Re-reads the configuration in the running HAProxy (SIGUSR2 to the master): the old
    /// worker finishes its connections while the new one serves.
    async fn reload(
        &self,
        st: &mut State,
        frontends: &[Frontend],
        seed: &Seed,
    ) -> Result<(), DriverError> {
        self.write_config(frontends, seed)?;
        self.check_config().await?;
        let old = self.worker_pid().await;
        let Some(pid) = st.child.as_ref().and_then(Child::id) else {
            return Err(DriverError::Down("HAProxy is not running".into()));
        };
        // SAFETY: kill(2) on the child this driver spawned and still holds.
        unsafe { libc::kill(pid as i32, libc::SIGUSR2) };
        match self.wait_answering(old).await {
            Some(worker) => {
                info!(worker, frontends = frontends.len(), "HAProxy reloaded");
                st.running = frontends.to_vec();
                Ok(())
            }
            None => Err(DriverError::Down(format!(
                "HAProxy did not come back after a reload: {}",
                self.log_tail()
            ))),
        }
    }

    fn failed(&self, st: &mut State, e: &DriverError) {
        st.failures = st.failures.saturating_add(1);
        let wait = backoff(st.failures);
        st.next_try = Some(Instant::now() + wait);
        st.last_error = Some(format!("{e}; next try in {}s", wait.as_secs_f32()));
        warn!(error = %e, retry_in = ?wait, "HAProxy failed");
    }
}

#[async_trait]
impl LoadBalancerDriver for Haproxy {
    async fn ensure(&self, frontends: &[Frontend], seed: &Seed) -> Result<(), DriverError> {
        let mut st = self.state.lock().await;
        if frontends.is_empty() {
            // Nothing to front: no process (a controller without load balancers needs no HAProxy).
            if let Some(mut c) = st.child.take() {
                let _ = c.kill().await;
            }
            st.running.clear();
            return Ok(());
        }
        if let Some(child) = st.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                st.child = None;
                let e =
                    DriverError::Down(format!("HAProxy exited ({status}): {}", self.log_tail()));
                self.failed(&mut st, &e);
            }
        }
        if st.child.is_some() {
            if st.started.is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
                st.failures = 0;
            }
            if st.running == frontends {
                return Ok(());
            }
            // A reload that failed (the old worker keeps serving) is retried with backoff.
            if let Some(at) = st.next_try {
                if Instant::now() < at {
                    let why = st.last_error.clone().unwrap_or_default();
                    return Err(DriverError::Refused(why));
                }
            }
            return match self.reload(&mut st, frontends, seed).await {
                Ok(()) => {
                    st.next_try = None;
                    Ok(())
                }
                Err(e) => {
                    self.failed(&mut st, &e);
                    Err(DriverError::Refused(
                        st.last_error.clone().unwrap_or_default(),
                    ))
                }
            };
        }
        if let Some(at) = st.next_try {
            if Instant::now() < at {
                let why = st.last_error.clone().unwrap_or_default();
                return Err(DriverError::Down(why));
            }
        }
        match self.start(&mut st, frontends, seed).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.failed(&mut st, &e);
                Err(DriverError::Down(st.last_error.clone().unwrap_or_default()))
            }
        }
    }

    async fn servers(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Vec<Server>>, DriverError> {
        let socket = self.socket();
        let down = |e: std::io::Error| {
            DriverError::Down(format!("HAProxy admin socket {}: {e}", socket.display()))
        };
        let state = runtime::call(&socket, "show servers state")
            .await
            .map_err(down)?;
        let stat = runtime::call(&socket, "show stat -1 4 -1")
            .await
            .map_err(down)?;
        let backends = runtime::call(&socket, "show backend").await.map_err(down)?;
        let mut all = runtime::parse_servers(&state, &stat);
        // Backends without a server are listed too: loaded, with no member yet.
        for b in backends
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            all.entry(b.trim().to_string()).or_default();
        }
        Ok(all)
    }

    async fn apply(&self, backend: &str, command: &Command) -> Result<(), DriverError> {
        let check = {
            let st = self.state.lock().await;
            st.running
                .iter()
                .find(|f| f.backend == backend)
                .and_then(|f| f.check.as_ref())
                .map(config::check_args)
        };
        let line = runtime::command_line(backend, command, check.as_deref().unwrap_or(""));
        let socket = self.socket();
        let answer = runtime::call(&socket, &line)
            .await
            .map_err(|e| DriverError::Down(format!("HAProxy admin socket: {e}")))?;
        if !runtime::accepted(command, &answer) {
            return Err(DriverError::Refused(format!("`{line}`: {}", answer.trim())));
        }
        if let (Command::Enable(server), Some(_)) = (command, &check) {
            let line = format!("enable health {backend}/{server}");
            let answer = runtime::call(&socket, &line)
                .await
                .map_err(|e| DriverError::Down(format!("HAProxy admin socket: {e}")))?;
            if !answer.trim().is_empty() {
                return Err(DriverError::Refused(format!("`{line}`: {}", answer.trim())));
            }
        }
        Ok(())
    }

    async fn stop(&self) {
        let mut st = self.state.lock().await;
        if let Some(mut c) = st.child.take() {
            if let Some(pid) = c.id() {
                // SAFETY: kill(2) on the child this driver spawned and still holds.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            if tokio::time::timeout(Duration::from_secs(2), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
        let _ = std::fs::remove_file(self.pid_path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_exponentially_up_to_a_bound() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
