//! Whether a running HAProxy is this controller's, so that a restarted controller adopts it
//! (its connections go on) rather than starting another one. Only a process proven ours is ever
//! signalled: the pid file in our run directory names it, its command line is `haproxy -W`
//! with our configuration file, it is alive (not a zombie), and our admin socket answers with a
//! worker whose parent is that process.

use std::path::Path;

/// What the controller saw of a possible previous HAProxy (read by [`look`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The pid file's text, when it exists.
    pub pid_file: Option<String>,
    /// The command line of the pid it names (`None`: no such process).
    pub cmdline: Option<Vec<String>>,
    /// Its state letter from `/proc/PID/stat` (`Z`: a zombie, dead).
    pub state: Option<char>,
    /// The parent of the worker our admin socket answers with (`None`: the socket is dead).
    pub worker_parent: Option<i32>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// Ours and answering: drive it as it is.
    Adopt(i32),
    /// Ours (its command line names our configuration) but its admin socket does not answer: it
    /// cannot be driven and holds our ports, so it is stopped and a new one started.
    Stop(i32),
    /// Nothing to adopt, and nothing to signal: why (a stale pid file, another process...).
    Nothing(&'static str),
}

/// Whether `cmdline` is a master-worker HAProxy running `config`.
pub fn runs_config(cmdline: &[String], config: &Path) -> bool {
    let haproxy = cmdline.first().is_some_and(|a| {
        Path::new(a)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("haproxy"))
    });
    let master_worker = cmdline.iter().any(|a| a == "-W");
    let ours = cmdline
        .windows(2)
        .any(|w| w[0] == "-f" && Path::new(&w[1]) == config);
    haproxy && master_worker && ours
}

/// The decision from what was seen (pure).
pub fn decide(seen: &Seen, config: &Path) -> Adoption {
    let Some(text) = &seen.pid_file else {
        return Adoption::Nothing("no pid file");
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Adoption::Nothing("the pid file does not hold a pid");
    };
    if pid <= 1 {
        return Adoption::Nothing("the pid file does not hold a pid");
    }
    let Some(cmdline) = &seen.cmdline else {
        return Adoption::Nothing("stale pid file: no such process");
    };
    if matches!(seen.state, None | Some('Z' | 'X')) {
        return Adoption::Nothing("stale pid file: the process is dead");
    }
    if !runs_config(cmdline, config) {
        return Adoption::Nothing("the pid file names a process that is not our HAProxy");
    }
    match seen.worker_parent {
        Some(parent) if parent == pid => Adoption::Adopt(pid),
        // The socket is answered by another process: not provably this one's.
        Some(_) => Adoption::Nothing("our admin socket is answered by another HAProxy"),
        None => Adoption::Stop(pid),
    }
}

/// The command line of `pid` (`None`: no such process).
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .split('\0')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// `(state, parent)` of `pid` from `/proc/PID/stat`.
pub fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ppid ...`: comm may hold spaces and parentheses, so split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let parent = f.next()?.parse().ok()?;
    Some((state, parent))
}

/// Whether `pid` is still a live HAProxy running `config` (the supervision of an adopted one,
/// which is not our child: its pid could be reused by another process).
pub fn alive(pid: i32, config: &Path) -> bool {
    matches!(stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
        && cmdline(pid).is_some_and(|c| runs_config(&c, config))
}

/// What is there now: the pid file, its process, and the parent of the worker `worker` (the
/// pid our admin socket reported, if it answered).
pub fn look(pid_path: &Path, worker: Option<u32>) -> Seen {
    let pid_file = std::fs::read_to_string(pid_path).ok();
    let pid = pid_file
        .as_deref()
        .and_then(|t| t.trim().parse::<i32>().ok());
    let (cmdline, state) = match pid.filter(|p| *p > 1) {
        Some(p) => (cmdline(p), stat(p).map(|s| s.0)),
        None => (None, None),
    };
    let worker_parent = worker.and_then(|w| stat(w as i32)).map(|s| s.1);
    Seen {
        pid_file,
        cmdline,
        state,
        worker_parent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "/tmp/microscaler-lb-c1/haproxy.cfg";

    fn args(a: &[&str]) -> Option<Vec<String>> {
        Some(a.iter().map(|s| s.to_string()).collect())
    }

    fn ours(pid: i32) -> Seen {
        Seen {
            pid_file: Some(format!("{pid}\n")),
            cmdline: args(&[
                "/usr/sbin/haproxy",
                "-W",
                "-f",
                CFG,
                "-p",
                "/tmp/microscaler-lb-c1/haproxy.pid",
            ]),
            state: Some('S'),
            worker_parent: Some(pid),
        }
    }

    #[test]
    fn ours_and_answering_is_adopted() {
        assert_eq!(decide(&ours(4242), Path::new(CFG)), Adoption::Adopt(4242));
    }

    #[test]
    fn a_process_that_is_not_ours_is_never_signalled() {
        let config = Path::new(CFG);
        // Another controller's HAProxy (another configuration).
        let mut other = ours(4242);
        other.cmdline = args(&["haproxy", "-W", "-f", "/tmp/microscaler-lb-c2/haproxy.cfg"]);
        assert!(matches!(decide(&other, config), Adoption::Nothing(_)));
        // The pid was reused by something else entirely.
        let mut reused = ours(4242);
        reused.cmdline = args(&["/usr/bin/sleep", "100", "-f", CFG, "-W"]);
        assert!(matches!(decide(&reused, config), Adoption::Nothing(_)));
        // Our configuration, but not master-worker (not how the controller runs it).
        let mut plain = ours(4242);
        plain.cmdline = args(&["haproxy", "-f", CFG]);
        assert!(matches!(decide(&plain, config), Adoption::Nothing(_)));
        // The config path only as a prefix of another path.
        let mut prefix = ours(4242);
        prefix.cmdline = args(&[
            "haproxy",
            "-W",
            "-f",
            "/tmp/microscaler-lb-c1/haproxy.cfg.x",
        ]);
        assert!(matches!(decide(&prefix, config), Adoption::Nothing(_)));
        // Our admin socket answered by a worker of another master.
        let mut foreign = ours(4242);
        foreign.worker_parent = Some(777);
        assert!(matches!(decide(&foreign, config), Adoption::Nothing(_)));
        // pid 1 or garbage.
        for text in ["1", "0", "-5", "abc", ""] {
            let mut bad = ours(4242);
            bad.pid_file = Some(text.into());
            assert!(
                matches!(decide(&bad, config), Adoption::Nothing(_)),
                "{text}"
            );
        }
    }

    #[test]
    fn a_stale_pid_file_adopts_nothing() {
        let config = Path::new(CFG);
        let mut gone = ours(4242);
        gone.cmdline = None;
        gone.state = None;
        assert_eq!(
            decide(&gone, config),
            Adoption::Nothing("stale pid file: no such process")
        );
        let mut zombie = ours(4242);
        zombie.state = Some('Z');
        assert_eq!(
            decide(&zombie, config),
            Adoption::Nothing("stale pid file: the process is dead")
        );
        let none = Seen::default();
        assert_eq!(decide(&none, config), Adoption::Nothing("no pid file"));
    }

    #[test]
    fn ours_with_a_dead_socket_is_stopped_and_replaced() {
        let mut dead = ours(4242);
        dead.worker_parent = None;
        assert_eq!(decide(&dead, Path::new(CFG)), Adoption::Stop(4242));
    }

    #[test]
    fn proc_stat_is_read_past_a_command_name_with_spaces() {
        let me = std::process::id() as i32;
        let (state, parent) = stat(me).expect("our own /proc stat");
        assert!(state == 'R' || state == 'S', "{state}");
        assert!(parent >= 0);
        assert!(!alive(me, Path::new(CFG)), "the test runner is no HAProxy");
    }
}
