//! The local terminal of `ms exec -t`: raw mode while the session lasts (restored when it ends,
//! on an error and on a panic), and its window size.

use std::sync::{Mutex, Once};

/// The settings to restore, while a [`RawMode`] is in force (read by the panic hook).
static SAVED: Mutex<Option<(i32, libc::termios)>> = Mutex::new(None);
static HOOK: Once = Once::new();

fn restore_saved() {
    let saved = SAVED
        .lock()
        .map(|mut s| s.take())
        .unwrap_or_else(|p| p.into_inner().take());
    if let Some((fd, termios)) = saved {
        // SAFETY: tcsetattr reads the struct we pass; fd is the terminal we changed.
        unsafe {
            libc::tcsetattr(fd, libc::TCSANOW, &termios);
        }
    }
}

/// Raw mode on a terminal until dropped: every key goes to the remote command as typed (Ctrl-C
/// included), and nothing is echoed or translated locally (the remote terminal does that).
pub(crate) struct RawMode {
    _private: (),
}

impl RawMode {
    /// Puts the terminal `fd` into raw mode.
    ///
    /// # Errors
    /// `fd` is not a terminal, or its settings cannot be changed.
    pub(crate) fn enter(fd: i32) -> std::io::Result<RawMode> {
        // SAFETY: termios is plain data; tcgetattr fills it, cfmakeraw and tcsetattr read it.
        let saved = unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut raw = t;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            t
        };
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some((fd, saved));
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // A panic message printed in raw mode would be mangled, and the user's shell
                // left unusable: restore first.
                restore_saved();
                previous(info);
            }));
        });
        Ok(RawMode { _private: () })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_saved();
    }
}

/// The window size (rows, columns) of the terminal `fd`, if it is one.
pub(crate) fn size(fd: i32) -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass.
    let ws = unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) != 0 {
            return None;
        }
        ws
    };
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-terminal pair, closed on drop.
    struct Pty {
        master: i32,
        slave: i32,
    }

    impl Pty {
        fn open(rows: u16, cols: u16) -> Pty {
            let (mut master, mut slave) = (0, 0);
            let ws = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: openpty writes two descriptors; the name and termios pointers may be null.
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
            Pty { master, slave }
        }

        fn lflag(&self) -> libc::tcflag_t {
            // SAFETY: as in RawMode::enter.
            unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                assert_eq!(libc::tcgetattr(self.slave, &mut t), 0);
                t.c_lflag
            }
        }
    }

    impl Drop for Pty {
        fn drop(&mut self) {
            // SAFETY: closing descriptors this test opened.
            unsafe {
                libc::close(self.master);
                libc::close(self.slave);
            }
        }
    }

    #[test]
    fn raw_mode_is_restored_when_dropped_and_sizes_are_read() {
        let pty = Pty::open(33, 101);
        assert_eq!(size(pty.slave), Some((33, 101)));
        let cooked = pty.lflag();
        assert_ne!(cooked & libc::ECHO, 0, "a new terminal echoes");
        {
            let _raw = RawMode::enter(pty.slave).unwrap();
            assert_eq!(
                pty.lflag() & (libc::ECHO | libc::ICANON),
                0,
                "raw: no echo, no lines"
            );
        }
        assert_eq!(pty.lflag(), cooked, "restored as it was");
    }

    #[test]
    fn a_descriptor_that_is_not_a_terminal_is_refused() {
        let f = tempfile::tempfile().unwrap();
        use std::os::fd::AsRawFd;
        assert!(RawMode::enter(f.as_raw_fd()).is_err());
        assert_eq!(size(f.as_raw_fd()), None);
    }
}
