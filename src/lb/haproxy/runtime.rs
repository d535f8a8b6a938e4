//! HAProxy's Runtime API over its admin socket: one connection per command, the membership
//! commands, and the parsers of `show servers state` and `show stat`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::lb::driver::{Admin, Command, Server};

/// How long one Runtime API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer read (a `show stat` of many servers stays far below).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Sends one command and returns HAProxy's answer.
pub async fn call(socket: &Path, command: &str) -> std::io::Result<String> {
    let io = async {
        let mut s = UnixStream::connect(socket).await?;
        s.write_all(command.as_bytes()).await?;
        s.write_all(b"\n").await?;
        let mut out = String::new();
        s.take(MAX_ANSWER).read_to_string(&mut out).await?;
        Ok(out)
    };
    tokio::time::timeout(CALL_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {CALL_TIMEOUT:?}"),
            ))
        })
}

/// The Runtime API line of a membership command on `backend`, with the check settings new
/// servers get.
pub fn command_line(backend: &str, command: &Command, check: &str) -> String {
    match command {
        Command::Add {
            server,
            addr,
            check: with_check,
        } => {
            let check = if *with_check { check } else { "" };
            format!("add server {backend}/{server} {addr} {check}")
                .trim_end()
                .to_string()
        }
        Command::Enable(s) => format!("enable server {backend}/{s}"),
        Command::Set(s, admin) => {
            let state = match admin {
                Admin::Ready => "ready",
                Admin::Drain => "drain",
                Admin::Maint => "maint",
            };
            format!("set server {backend}/{s} state {state}")
        }
        Command::ShutdownSessions(s) => format!("shutdown sessions server {backend}/{s}"),
        Command::Del(s) => format!("del server {backend}/{s}"),
    }
}

/// Whether an answer to a membership command says it worked (HAProxy answers errors in words
/// on the same socket).
pub fn accepted(command: &Command, answer: &str) -> bool {
    let a = answer.trim();
    match command {
        Command::Add { .. } => a.starts_with("New server registered"),
        Command::Del(_) => a.starts_with("Server deleted"),
        _ => a.is_empty(),
    }
}

/// Rows of a whitespace table whose header line starts with `# ` (`show servers state`).
fn table(text: &str, sep: char) -> Vec<BTreeMap<&str, &str>> {
    let mut header: Vec<&str> = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            header = match sep {
                ' ' => h.split_whitespace().collect(),
                _ => h.split(sep).collect(),
            };
            continue;
        }
        if header.is_empty() || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = match sep {
            ' ' => line.split_whitespace().collect(),
            _ => line.split(sep).collect(),
        };
        rows.push(header.iter().copied().zip(fields).collect());
    }
    rows
}

/// The servers of every backend, from `show servers state` (addresses, admin state, time since
/// the last change) and `show stat` (open sessions, status in words).
pub fn parse_servers(state: &str, stat: &str) -> BTreeMap<String, Vec<Server>> {
    let mut sessions: BTreeMap<(&str, &str), (u64, &str)> = BTreeMap::new();
    for row in table(stat, ',') {
        let (Some(px), Some(sv)) = (row.get("pxname"), row.get("svname")) else {
            continue;
        };
        if *sv == "BACKEND" || *sv == "FRONTEND" {
            continue;
        }
        let scur = row.get("scur").and_then(|v| v.parse().ok()).unwrap_or(0);
        sessions.insert((px, sv), (scur, row.get("status").copied().unwrap_or("")));
    }
    let mut out: BTreeMap<String, Vec<Server>> = BTreeMap::new();
    for row in table(state, ' ') {
        let (Some(be), Some(name)) = (row.get("be_name"), row.get("srv_name")) else {
            continue;
        };
        let admin_bits: u32 = row
            .get("srv_admin_state")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Any maintenance flag (forced, inherited, from the configuration, resolution) wins
        // over a drain flag (forced or inherited).
        let admin = if admin_bits & (0x01 | 0x02 | 0x04 | 0x20 | 0x40) != 0 {
            Admin::Maint
        } else if admin_bits & (0x08 | 0x10) != 0 {
            Admin::Drain
        } else {
            Admin::Ready
        };
        let addr = match (row.get("srv_addr"), row.get("srv_port")) {
            (Some(a), Some(p)) => format!("{a}:{p}")
                .parse::<SocketAddr>()
                .or_else(|_| format!("[{a}]:{p}").parse())
                .ok(),
            _ => None,
        };
        let since = row
            .get("srv_time_since_last_change")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (scur, status) = sessions.get(&(*be, *name)).copied().unwrap_or((0, ""));
        out.entry(be.to_string()).or_default().push(Server {
            name: name.to_string(),
            addr,
            admin,
            status: status.to_string(),
            sessions: scur,
            since_change: Duration::from_secs(since),
        });
    }
    out
}

/// The worker's pid from `show info` (changes on a reload or restart, so tests can tell).
pub fn parse_pid(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|l| l.strip_prefix("Pid: "))
        .and_then(|p| p.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from HAProxy 2.6 (`show servers state` and `show stat -1 4 -1`).
    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 be_x 1 s0 127.0.0.1 0 5 1 1 2 1 0 0 8 0 0 0 - 1 - 0 0 - - 0\n3 be_x 2 m1 127.0.0.1 2 8 1 1 7 1 0 0 2 0 0 0 - 39200 - 0 0 - - 0\n3 be_x 3 m2 127.0.0.1 2 0 1 1 90 1 0 0 2 0 0 0 - 39201 - 0 0 - - 0\n\n";
    const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\nbe_x,s0,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1\nbe_x,m1,0,0,4,0,,0,0,0,,0,,0,0,0,0,DRAIN,1\nbe_x,m2,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1\n";

    #[test]
    fn servers_are_read_with_their_admin_state_address_and_sessions() {
        let all = parse_servers(STATE, STAT);
        let s = &all["be_x"];
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].admin, Admin::Maint);
        assert_eq!(s[1].admin, Admin::Drain);
        assert_eq!(s[1].sessions, 4);
        assert_eq!(s[1].status, "DRAIN");
        assert_eq!(s[1].since_change, Duration::from_secs(7));
        assert_eq!(s[2].admin, Admin::Ready);
        assert_eq!(s[2].addr, Some("127.0.0.1:39201".parse().unwrap()));
    }

    #[test]
    fn commands_are_runtime_api_lines() {
        let add = Command::Add {
            server: "web-1".into(),
            addr: "127.0.0.1:32768".parse().unwrap(),
            check: true,
        };
        assert_eq!(
            command_line("ns.lb", &add, "check inter 2000 rise 2 fall 3"),
            "add server ns.lb/web-1 127.0.0.1:32768 check inter 2000 rise 2 fall 3"
        );
        assert_eq!(
            command_line("ns.lb", &Command::Set("w".into(), Admin::Drain), ""),
            "set server ns.lb/w state drain"
        );
        assert!(accepted(&add, "New server registered.\n\n"));
        assert!(!accepted(
            &add,
            "Already exists a server with the same name in backend.\n"
        ));
        assert!(accepted(&Command::Enable("w".into()), "\n"));
        assert!(!accepted(&Command::Enable("w".into()), "No such server.\n"));
        assert_eq!(parse_pid("Name: HAProxy\nPid: 4242\n"), Some(4242));
    }
}
