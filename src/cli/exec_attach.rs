//! `ms exec -i/-t`: a command with the local input attached and, with `-t`, a terminal, over the
//! API's upgraded connection ([`crate::wire::tty`] frames).

use std::io::{IsTerminal, Read, Write};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::logs::{exit_status, ExecArgs};
use super::terminal::{self, RawMode};
use super::{CmdResult, Failure};
use crate::client::Client;
use crate::wire::tty::{Decoder, Frame};

/// Reads standard input on a thread of its own (a blocking read must not hold the runtime at
/// exit); `None` once it ends.
fn read_stdin() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// The local terminal's size: stdout's, else stdin's.
fn local_size() -> Option<(u16, u16)> {
    terminal::size(libc::STDOUT_FILENO).or_else(|| terminal::size(libc::STDIN_FILENO))
}

pub(crate) async fn run(client: Client, args: ExecArgs) -> CmdResult {
    let stdin_terminal = std::io::stdin().is_terminal();
    let mut tty = args.tty;
    if tty && args.stdin && !stdin_terminal {
        // As kubectl: a terminal session needs a terminal to read keys from.
        eprintln!("Unable to use a TTY - input is not a terminal; running without one");
        tty = false;
    }
    let size = if tty { local_size() } else { None };
    let upgraded = client
        .exec_attach(&args.ns.namespace, &args.instance, &args.command, tty, size)
        .await?;
    // Raw only once the session is open, so an error above prints on a sane terminal; the
    // guard restores it on every way out of this function (and the panic hook on a panic).
    let _raw =
        if tty && args.stdin {
            Some(RawMode::enter(libc::STDIN_FILENO).map_err(|e| {
                Failure::Message(format!("cannot put the terminal into raw mode: {e}"))
            })?)
        } else {
            None
        };
    let (mut rd, mut wr) = tokio::io::split(upgraded);
    let mut input = if args.stdin { Some(read_stdin()) } else { None };
    let mut resized = signal(SignalKind::window_change())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminated = signal(SignalKind::terminate())?;
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 16 * 1024];
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let mut exit: Option<Option<i64>> = None;
    let mut error: Option<String> = None;
    'session: loop {
        tokio::select! {
            n = rd.read(&mut buf) => {
                let n = match n {
                    Ok(0) | Err(_) => break 'session,
                    Ok(n) => n,
                };
                decoder.push(&buf[..n]);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(Frame::Stdout(b))) => {
                            if stdout.write_all(&b).and_then(|()| stdout.flush()).is_err() {
                                break 'session; // stdout closed
                            }
                        }
                        Ok(Some(Frame::Stderr(b))) => {
                            let _ = stderr.write_all(&b);
                        }
                        Ok(Some(Frame::Exit(code))) => {
                            exit = Some(code);
                            break 'session;
                        }
                        Ok(Some(Frame::Error(m))) => error = Some(m),
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            error = Some(format!("the controller sent a bad frame: {e}"));
                            break 'session;
                        }
                    }
                }
            }
            chunk = async { input.as_mut().expect("guarded").recv().await }, if input.is_some() => {
                let frames = match chunk.flatten() {
                    Some(data) => Frame::chunks(&data, Frame::Stdin),
                    None => {
                        input = None;
                        vec![Frame::StdinEnd]
                    }
                };
                for f in frames {
                    if wr.write_all(&f.encode()).await.is_err() {
                        break 'session;
                    }
                }
            }
            _ = resized.recv(), if tty => {
                if let Some((rows, cols)) = local_size() {
                    let _ = wr.write_all(&Frame::Resize { rows, cols }.encode()).await;
                }
            }
            _ = hangup.recv() => break 'session,
            _ = terminated.recv() => break 'session,
        }
    }
    drop(_raw);
    if let Some(e) = error {
        return Err(Failure::Message(e));
    }
    match exit {
        Some(code) => exit_status(code),
        None => Err(Failure::Message(
            "the session ended before the command's exit status arrived".into(),
        )),
    }
}
