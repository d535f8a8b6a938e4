//! The one real [`LoadBalancerDriver`]: HAProxy in managed mode. The controller writes the
//! base configuration (a frontend and backend per load balancer), runs one `haproxy -W` per
//! controller with an admin socket, restarts it with backoff when it dies, reloads it (without
//! dropping connections) only when the set of load balancers changes, and drives membership
//! through the Runtime API (`add server`, `set server state`, `enable server`, `del server`).
//!
//! HAProxy is the data plane: it keeps serving when the controller exits (`kill -9`, a crash,
//! SIGTERM, an upgrade), in its own session so a terminal's Ctrl-C does not reach it either. A
//! controller that starts finds the HAProxy it left running (see [`adopt`]) and drives it as it
//! is: no restart, a reload only when the set of load balancers differs. It is stopped only
//! when no load balancer is left in the manifests.

pub mod adopt;
pub mod config;
pub mod runtime;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::process::{Child, Command as Process};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use adopt::Adoption;

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
/// A live HAProxy whose admin socket stays silent this long is hung: stopped and restarted.
const HUNG_AFTER: Duration = Duration::from_secs(10);
/// How long a HAProxy left running may take to answer before it counts as not answering.
const ADOPT_PATIENCE: Duration = Duration::from_secs(2);
/// The first line of the configuration: a digest of the frontends it was written for, so a
/// controller that adopts a running HAProxy knows whether it must reload it.
const DIGEST_PREFIX: &str = "# microscaler frontends ";

/// The managed HAProxy of one controller.
pub struct Haproxy {
    controller: String,
    binary: PathBuf,
    dir: PathBuf,
    state: Mutex<State>,
}

/// The HAProxy master this driver drives: one it started (its child while this controller
/// runs) or one it adopted (started by a previous controller; not its child).
struct Master {
    pid: u32,
    child: Option<Child>,
}

#[derive(Default)]
struct State {
    master: Option<Master>,
    /// The frontends the running HAProxy was started or reloaded with.
    running: Vec<Frontend>,
    failures: u32,
    next_try: Option<Instant>,
    started: Option<Instant>,
    last_error: Option<String>,
    /// Since when the admin socket of a live master has not answered.
    silent_since: Option<Instant>,
}

/// A digest of `frontends` that stays the same across controller versions (FNV-1a of their
/// debug text): equal digests, same load balancers.
pub fn digest(frontends: &[Frontend]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{frontends:?}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
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
        self.state.lock().await.master.as_ref().map(|m| m.pid)
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

    /// Writes the configuration for `frontends`; it replaces the one HAProxy reads only once
    /// `haproxy -c` accepts it (so the file always is what HAProxy runs or will run).
    async fn write_config(&self, frontends: &[Frontend], seed: &Seed) -> Result<(), DriverError> {
        let text = format!(
            "{DIGEST_PREFIX}{}\n{}",
            digest(frontends),
            config::render(&self.controller, &self.socket(), frontends, seed)
        );
        let tmp = self.dir.join("haproxy.cfg.new");
        let cannot = |e: std::io::Error| {
            DriverError::Refused(format!(
                "cannot write {}: {e}",
                self.config_path().display()
            ))
        };
        std::fs::write(&tmp, text).map_err(cannot)?;
        self.check_config(&tmp).await?;
        std::fs::rename(&tmp, self.config_path()).map_err(cannot)
    }

    /// The digest the configuration on disk was written with.
    fn written_digest(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.config_path()).ok()?;
        Some(
            text.lines()
                .next()?
                .strip_prefix(DIGEST_PREFIX)?
                .to_string(),
        )
    }

    /// `haproxy -c`: a configuration HAProxy refuses never replaces the running one.
    async fn check_config(&self, path: &Path) -> Result<(), DriverError> {
        let out = Process::new(&self.binary)
            .arg("-c")
            .arg("-q")
            .arg("-f")
            .arg(path)
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

    /// Looks for the HAProxy a previous controller (or this one before a restart) left
    /// running: adopts it when it is provably ours and answers, stops it when it is ours but
    /// cannot be driven, and never touches anything else.
    async fn find_previous(&self, st: &mut State, frontends: &[Frontend]) {
        if !self.pid_path().exists() {
            return;
        }
        let mut worker = self.worker_pid().await;
        let deadline = Instant::now() + ADOPT_PATIENCE;
        let mut seen = adopt::look(&self.pid_path(), worker);
        // One that is ours and alive may be between workers (a reload): give it a moment.
        while worker.is_none()
            && Instant::now() < deadline
            && matches!(adopt::decide(&seen, &self.config_path()), Adoption::Stop(_))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            worker = self.worker_pid().await;
            seen = adopt::look(&self.pid_path(), worker);
        }
        match adopt::decide(&seen, &self.config_path()) {
            Adoption::Adopt(pid) => {
                let same = self.written_digest() == Some(digest(frontends));
                info!(
                    master = pid,
                    worker,
                    reload = !same,
                    "adopted the HAProxy left running"
                );
                st.master = Some(Master {
                    pid: pid as u32,
                    child: None,
                });
                // Unknown frontends (an empty list) make the next step reload it.
                st.running = if same { frontends.to_vec() } else { Vec::new() };
                st.started = Some(Instant::now());
                st.silent_since = None;
            }
            Adoption::Stop(pid) => {
                warn!(
                    pid,
                    "the HAProxy left running does not answer on its admin socket: stopping it"
                );
                self.terminate(Master {
                    pid: pid as u32,
                    child: None,
                })
                .await;
            }
            Adoption::Nothing(why) => debug!(why, "no HAProxy to adopt"),
        }
    }

    /// Stops `master` (SIGTERM, SIGKILL after 2 s): only ever one started or adopted as ours.
    async fn terminate(&self, master: Master) {
        let pid = master.pid as i32;
        let config = self.config_path();
        // SAFETY: kill(2) on our child, or on a process proven ours (adopt::decide).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let gone = |child: &mut Option<Child>| match child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => !adopt::alive(pid, &config),
        };
        let mut child = master.child;
        for _ in 0..40 {
            if gone(&mut child) {
                let _ = std::fs::remove_file(self.pid_path());
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match child.as_mut() {
            Some(c) => {
                let _ = c.kill().await;
            }
            None if adopt::alive(pid, &config) => {
                // SAFETY: as above, checked again just now.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            None => {}
        }
        let _ = std::fs::remove_file(self.pid_path());
    }

    /// Notices a master that died (our child exited, an adopted one is gone) or that stopped
    /// answering on its admin socket for [`HUNG_AFTER`] (stopped): the next step restarts it
    /// with backoff.
    async fn supervise(&self, st: &mut State) {
        let config = self.config_path();
        let Some(m) = st.master.as_mut() else {
            return;
        };
        let dead = match m.child.as_mut() {
            Some(c) => match c.try_wait() {
                Ok(Some(status)) => Some(format!("exited ({status})")),
                _ => None,
            },
            None => (!adopt::alive(m.pid as i32, &config)).then(|| "is gone".to_string()),
        };
        if let Some(how) = dead {
            st.master = None;
            st.silent_since = None;
            let e = DriverError::Down(format!("HAProxy {how}: {}", self.log_tail()));
            self.failed(st, &e);
            return;
        }
        if self.worker_pid().await.is_some() {
            st.silent_since = None;
            return;
        }
        let since = *st.silent_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= HUNG_AFTER {
            if let Some(m) = st.master.take() {
                warn!(
                    pid = m.pid,
                    "HAProxy does not answer on its admin socket: stopping it"
                );
                self.terminate(m).await;
            }
            st.silent_since = None;
            let e = DriverError::Down(format!(
                "HAProxy did not answer on {} for {HUNG_AFTER:?}: stopped",
                self.socket().display()
            ));
            self.failed(st, &e);
        }
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
        self.write_config(frontends, seed).await?;
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
            .kill_on_drop(false);
        // SAFETY: only setsid(2) between fork and exec, which is async-signal-safe. HAProxy gets
        // its own session and process group: it outlives the controller (no death signal), and
        // a terminal's Ctrl-C or hang-up, sent to the controller's group, does not reach it.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            DriverError::Down(format!(
                "cannot run {}: {e} (install HAProxy, e.g. `apt-get install haproxy`, or set loadBalancers.haproxy)",
                self.binary.display()
            ))
        })?;
        let pid = child.id().unwrap_or_default();
        st.master = Some(Master {
            pid,
            child: Some(child),
        });
        match self.wait_answering(None).await {
            Some(worker) => {
                info!(
                    master = pid,
                    worker,
                    frontends = frontends.len(),
                    "HAProxy started"
                );
                st.running = frontends.to_vec();
                st.started = Some(Instant::now());
                st.silent_since = None;
                st.last_error = None;
                Ok(())
            }
            None => {
                if let Some(m) = st.master.take() {
                    self.terminate(m).await;
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
        self.write_config(frontends, seed).await?;
        let old = self.worker_pid().await;
        let Some(pid) = st.master.as_ref().map(|m| m.pid) else {
            return Err(DriverError::Down("HAProxy is not running".into()));
        };
        // SAFETY: kill(2) on the master this driver started, or adopted as proven ours.
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
        if st.master.is_none() {
            self.find_previous(&mut st, frontends).await;
        }
        if frontends.is_empty() {
            // No load balancer left in the manifests: no process (a controller without load
            // balancers needs no HAProxy), including one adopted just now.
            if let Some(m) = st.master.take() {
                info!(master = m.pid, "no load balancer left: stopping HAProxy");
                self.terminate(m).await;
            }
            st.running.clear();
            return Ok(());
        }
        self.supervise(&mut st).await;
        if st.master.is_some() {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frontend(port: u16) -> Frontend {
        Frontend {
            key: crate::manifest::ObjectKey::new(crate::manifest::Kind::LoadBalancer, "ns", "a"),
            backend: "ns.a".into(),
            listen: "127.0.0.1".parse().unwrap(),
            port,
            mode: crate::manifest::LbMode::Http,
            balance: crate::manifest::Balance::Roundrobin,
            check: None,
        }
    }

    #[test]
    fn an_adopted_haproxy_is_reloaded_only_when_the_load_balancers_differ() {
        // The digest is what a restarted controller compares with the configuration on disk.
        assert_eq!(digest(&[frontend(80)]), digest(&[frontend(80)]));
        assert_ne!(digest(&[frontend(80)]), digest(&[frontend(81)]));
        assert_ne!(digest(&[frontend(80)]), digest(&[]));
        assert_eq!(digest(&[]).len(), 16);
    }

    #[test]
    fn restarts_back_off_exponentially_up_to_a_bound() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
