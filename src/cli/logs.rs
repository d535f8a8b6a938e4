//! `ms logs INSTANCE | asg/NAME [-f] [--since 10m] [--tail N]` and `ms exec INSTANCE -- CMD...`:
//! through the controller, on the engine of the instance's zone.

use std::io::Write;

use clap::Args;
use serde_json::Value;

use super::{CmdResult, Failure, NamespaceArgs};
use crate::client::{Client, ClientError};
use crate::manifest::Kind;

/// Arguments of `ms logs`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ms logs web-a-1b2c3d                 # one instance (names from ms get instances)
  ms logs asg/web -f                   # every instance of group web, prefixed [instance], following
  ms logs asg/web --since 10m --tail 20")]
pub(crate) struct LogsArgs {
    /// An instance name, or `asg/NAME` for every instance of a group.
    target: String,
    /// Keep printing new output until interrupted.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only output of the last DURATION (`30s`, `10m`, `1h`).
    #[arg(long, value_parser = super::wait::parse_timeout, value_name = "DURATION")]
    since: Option<std::time::Duration>,
    /// Only the last N lines (of each instance).
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    #[command(flatten)]
    ns: NamespaceArgs,
}

/// Arguments of `ms exec`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ms exec web-a-1b2c3d -- cat /etc/hostname
  ms exec web-a-1b2c3d -n shop -- sh -c 'ls /data'
  ms exec -it web-a-1b2c3d -- sh          # an interactive shell
  ms exec -i web-a-1b2c3d -- sh < script.sh

Without -i the command gets no input; without -t no terminal. With -t the local terminal is in
raw mode while the command runs (Ctrl-C goes to the command) and window size changes follow.
The exit status of ms is the command's.")]
pub(crate) struct ExecArgs {
    /// The instance (names from `ms get instances`).
    pub(crate) instance: String,
    /// Pass standard input to the command.
    #[arg(short = 'i', long)]
    pub(crate) stdin: bool,
    /// Give the command a terminal (with -i: an interactive session).
    #[arg(short = 't', long)]
    pub(crate) tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
    #[command(flatten)]
    pub(crate) ns: NamespaceArgs,
}

/// `asg/web` → group `web`; anything else is an instance name.
fn target(s: &str) -> Result<(bool, String), Failure> {
    match s.split_once('/') {
        None => Ok((false, s.to_string())),
        Some((kind, name)) if Kind::parse(kind) == Some(Kind::AutoScalingGroup) => {
            Ok((true, name.to_string()))
        }
        Some((kind, name)) if ["instance", "instances", "inst"].contains(&kind) => {
            Ok((false, name.to_string()))
        }
        Some((kind, _)) => Err(Failure::Code(
            2,
            format!("`{kind}`: ms logs reads an instance (NAME) or a group (asg/NAME)"),
        )),
    }
}

pub(crate) async fn logs(client: Client, args: LogsArgs) -> CmdResult {
    let (group, name) = target(&args.target)?;
    let mut tail = args.tail;
    let since = args.since.map(|d| d.as_secs().max(1));
    loop {
        let mut stream = client
            .logs(&args.ns.namespace, &name, group, args.follow, since, tail)
            .await?;
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream.next_chunk().await? {
            if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                return Ok(()); // stdout closed (`| head`)
            }
        }
        if !args.follow {
            return Ok(());
        }
        // A following stream ends when the instances stop, or when the API closed a connection
        // silent for its idle timeout: follow again from now on while the target still exists.
        match client
            .logs(&args.ns.namespace, &name, group, false, Some(1), Some(0))
            .await
        {
            Ok(_) => tail = Some(0),
            Err(ClientError::Api { status: 404, .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub(crate) async fn exec(client: Client, args: ExecArgs) -> CmdResult {
    #[cfg(unix)]
    if args.stdin || args.tty {
        return super::exec_attach::run(client, args).await;
    }
    #[cfg(not(unix))]
    if args.stdin || args.tty {
        return Err(Failure::Message(
            "ms exec -i/-t needs a Unix terminal".into(),
        ));
    }
    let mut stream = client
        .exec(&args.ns.namespace, &args.instance, &args.command)
        .await?;
    let mut code: Option<i64> = None;
    let mut error = None;
    stream
        .lines(|line| {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                return true;
            };
            if let Some(data) = v["data"].as_str() {
                if v["stream"] == "stderr" {
                    eprint!("{data}");
                } else {
                    print!("{data}");
                    let _ = std::io::stdout().flush();
                }
            } else if let Some(e) = v["error"].as_str() {
                error = Some(e.to_string());
            } else if v.get("exitCode").is_some() {
                code = v["exitCode"].as_i64();
            }
            true
        })
        .await?;
    if let Some(e) = error {
        return Err(Failure::Message(e));
    }
    exit_status(code)
}

/// `ms exec`'s outcome for the command's exit code.
pub(crate) fn exit_status(code: Option<i64>) -> CmdResult {
    match code {
        Some(0) => Ok(()),
        Some(c) => Err(Failure::Quiet(u8::try_from(c.clamp(1, 255)).unwrap_or(1))),
        None => Err(Failure::Message(
            "the command's exit status is unknown (the engine did not report it)".into(),
        )),
    }
}
