//! `ms exec -it` end to end: the built `ms` under a real pseudo-terminal (openpty), a real
//! controller and engine: a shell's output, a window resize reaching the remote terminal, the
//! exit status passed through, the local terminal restored, and the token checks of exec.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cli::{group_doc, ms, sleeper, wait_running};
use crate::common::{Controller, ControllerOptions, TestNs};

const TOKEN: &str = "exec-tty-token-0123456789";
const OTHER: &str = "exec-tty-other-0123456789";

/// A pseudo-terminal: the master side this test types into and reads, the slave side `ms` runs
/// on as its controlling terminal.
struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
}

fn openpty(rows: u16, cols: u16) -> Pty {
    let (mut master, mut slave) = (0, 0);
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two new descriptors, owned from here on.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    unsafe {
        Pty {
            master: std::fs::File::from_raw_fd(master),
            slave: OwnedFd::from_raw_fd(slave),
        }
    }
}

fn set_size(fd: &std::fs::File, rows: u16, cols: u16) {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the struct; the kernel signals SIGWINCH to the terminal's
    // foreground process group (ms).
    assert_eq!(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        0
    );
}

fn lflag(fd: &OwnedFd) -> libc::tcflag_t {
    use std::os::fd::AsRawFd;
    // SAFETY: tcgetattr fills the struct we pass.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), &mut t), 0);
        t.c_lflag
    }
}

/// Everything read from the master side so far, as text.
struct Screen {
    rx: mpsc::Receiver<Vec<u8>>,
    text: String,
}

impl Screen {
    fn wait_for(&mut self, timeout: Duration, what: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !what(&self.text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(b) => self.text.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => return what(&self.text),
            }
        }
        true
    }
}

/// The lines of terminal output, without carriage returns.
fn lines(text: &str) -> Vec<String> {
    text.split('\n')
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

#[test]
fn exec_it_runs_an_interactive_shell_under_a_terminal_and_passes_its_exit_status() {
    let ns = TestNs::new();
    let mut ctl = Controller::start_with(ControllerOptions {
        extra_config: format!(
            "tokens:\n  - token: {TOKEN}\n    namespaces: [{ns}]\n  - token: {OTHER}\n    namespaces: [other-{ns}]\n",
            ns = ns.name
        ),
        ..Default::default()
    });
    ctl.wait_ready();
    let docs = format!(
        "{}---\n{}",
        sleeper(&ns, "web"),
        group_doc(&ns, "web", "web", 1, 2, 1)
    );
    crate::cli::ms_stdin(&ctl, &["--token", TOKEN, "apply", "-f", "-"], &docs).ok();
    wait_running(&ctl, &ns, "web", 1);
    let mut name = String::new();
    crate::common::wait_until(Duration::from_secs(30), || {
        name = ms(
            &ctl,
            &[
                "--token",
                TOKEN,
                "get",
                "instances",
                "-n",
                &ns.name,
                "-o",
                "jsonpath={.items[*].name}",
            ],
        )
        .stdout
        .trim()
        .to_string();
        !name.is_empty()
    });
    assert!(!name.is_empty(), "the instance is listed");

    // Another namespace's token is refused before any session opens (as for `ms exec`).
    let refused = ms(
        &ctl,
        &[
            "--token", OTHER, "exec", "-it", &name, "-n", &ns.name, "--", "sh",
        ],
    );
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(refused.stderr.contains("error: "), "{refused:#?}");

    // -i without a terminal: input passed, stdout and stderr kept apart, the status passed on.
    let piped = crate::cli::ms_stdin(
        &ctl,
        &[
            "--token",
            TOKEN,
            "exec",
            "-i",
            &name,
            "-n",
            &ns.name,
            "--",
            "sh",
            "-c",
            "read x; echo \"got $x\"; echo oops >&2; exit 4",
        ],
        "hello\n",
    );
    assert_eq!(piped.code, 4, "{piped:#?}");
    assert_eq!(piped.stdout, "got hello\n", "{piped:#?}");
    assert_eq!(piped.stderr, "oops\n", "{piped:#?}");

    let pty = openpty(30, 100);
    let cooked = lflag(&pty.slave);
    let mut cmd = ctl.ms_command(&[
        "--token", TOKEN, "exec", "-it", &name, "-n", &ns.name, "--", "sh",
    ]);
    cmd.env("XDG_CONFIG_HOME", ctl.tmp_path().join("no-login"))
        .env_remove("MS_TOKEN")
        .env_remove("MS_SERVER")
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    // SAFETY: setsid and TIOCSCTTY are async-signal-safe; they make the pty ms's controlling
    // terminal, as a shell would, so a resize signals it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("run ms exec -it");
    let (tx, rx) = mpsc::channel();
    let mut reader = pty.master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // Ends with EIO once every slave descriptor is closed.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Screen {
        rx,
        text: String::new(),
    };
    let mut master = pty.master.try_clone().unwrap();

    // The remote terminal has the local one's size from the start ...
    master.write_all(b"stty size\r").unwrap();
    assert!(
        screen.wait_for(Duration::from_secs(20), |t| lines(t)
            .iter()
            .any(|l| l == "30 100")),
        "no `30 100` from stty size: {:?}\n{}",
        screen.text,
        ctl.log()
    );
    // ... and follows it when the window changes.
    set_size(&pty.master, 50, 120);
    std::thread::sleep(Duration::from_millis(500));
    master.write_all(b"stty size; echo hi; exit 3\r").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ms exec -it did not end: {:?}",
            screen.text
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    screen.wait_for(Duration::from_secs(2), |t| t.contains("\nhi\r"));
    let out = lines(&screen.text);
    assert_eq!(
        status.code(),
        Some(3),
        "the shell's exit status: {:?}",
        screen.text
    );
    assert!(
        out.iter().any(|l| l == "hi"),
        "`hi` on a line of its own: {out:?}"
    );
    assert!(
        out.iter().any(|l| l == "50 120"),
        "the resize reached the shell: {out:?}"
    );
    assert_eq!(lflag(&pty.slave), cooked, "the local terminal is restored");
}
