//! The pure membership rule: the members a load balancer should have and the servers it has
//! now → the commands that correct it. Level-triggered: nothing here remembers what was sent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::driver::{Admin, Command, Member, Server, Want};

/// The commands that take `servers` (read back from the balancer) to `members`.
///
/// - A wanted ready member that is missing is added (in maintenance) and enabled; one in
///   drain or maintenance is set ready.
/// - A member whose instance is being terminated is set to drain (never added).
/// - A server nobody wants any more first drains; it is removed (maintenance, its last
///   connections closed, deleted) once it has no connection left or has drained `drain_timeout`.
/// - A server at another address than its member (a restarted instance) is removed at once, and
///   added back by the next pass.
pub fn diff(
    members: &[Member],
    servers: &[Server],
    drain_timeout: Duration,
    check: bool,
) -> Vec<Command> {
    let have: BTreeMap<&str, &Server> = servers.iter().map(|s| (s.name.as_str(), s)).collect();
    let want: BTreeMap<&str, &Member> = members.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut out = Vec::new();
    for m in want.values() {
        match (have.get(m.name.as_str()), m.want) {
            (None, Want::Ready) => {
                out.push(Command::Add {
                    server: m.name.clone(),
                    addr: m.addr,
                    check,
                });
                out.push(Command::Enable(m.name.clone()));
            }
            (None, Want::Drain) => {}
            (Some(s), _) if s.addr != Some(m.addr) => remove(s, &mut out),
            (Some(s), Want::Ready) => match s.admin {
                Admin::Ready => {}
                Admin::Drain => out.push(Command::Set(m.name.clone(), Admin::Ready)),
                // Enabling also restarts the health check a maintenance stopped.
                Admin::Maint => out.push(Command::Enable(m.name.clone())),
            },
            (Some(s), Want::Drain) => {
                if s.admin == Admin::Ready {
                    out.push(Command::Set(m.name.clone(), Admin::Drain));
                }
            }
        }
    }
    for s in servers {
        if want.contains_key(s.name.as_str()) {
            continue;
        }
        match s.admin {
            Admin::Ready if s.sessions > 0 => out.push(Command::Set(s.name.clone(), Admin::Drain)),
            Admin::Drain if s.sessions > 0 && s.since_change < drain_timeout => {}
            _ => remove(s, &mut out),
        }
    }
    out
}

/// [`diff`], where the servers named in `given_back` that no member wants have drained already,
/// whatever the balancer says: their instance went back to the warm pool after the group's
/// drain, and a connection left on a paused (or stopped) spare would hang until the load
/// balancer's own `drainTimeout`. They are removed at once, their connections closed, as a
/// stopped instance's would be.
pub fn diff_given_back(
    members: &[Member],
    servers: &[Server],
    drain_timeout: Duration,
    check: bool,
    given_back: &BTreeSet<String>,
) -> Vec<Command> {
    let (gone, rest): (Vec<Server>, Vec<Server>) = servers
        .iter()
        .cloned()
        .partition(|s| given_back.contains(&s.name) && !members.iter().any(|m| m.name == s.name));
    let mut out = diff(members, &rest, drain_timeout, check);
    for s in &gone {
        remove(s, &mut out);
    }
    out
}

/// Maintenance, close what is left, delete.
fn remove(s: &Server, out: &mut Vec<Command>) {
    if s.admin != Admin::Maint {
        out.push(Command::Set(s.name.clone(), Admin::Maint));
    }
    if s.sessions > 0 {
        out.push(Command::ShutdownSessions(s.name.clone()));
    }
    out.push(Command::Del(s.name.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn member(name: &str, port: u16, want: Want) -> Member {
        Member {
            name: name.into(),
            addr: addr(port),
            want,
        }
    }

    fn server(name: &str, port: u16, admin: Admin, sessions: u64, secs: u64) -> Server {
        Server {
            name: name.into(),
            addr: Some(addr(port)),
            admin,
            status: String::new(),
            sessions,
            since_change: Duration::from_secs(secs),
        }
    }

    const DRAIN: Duration = Duration::from_secs(30);

    fn set(s: &str, a: Admin) -> Command {
        Command::Set(s.into(), a)
    }

    #[test]
    fn converged_membership_sends_nothing() {
        let members = [member("a", 1, Want::Ready), member("b", 2, Want::Drain)];
        let servers = [
            server("a", 1, Admin::Ready, 3, 100),
            server("b", 2, Admin::Drain, 1, 5),
        ];
        assert_eq!(diff(&members, &servers, DRAIN, false), []);
    }

    #[test]
    fn a_new_ready_member_is_added_then_enabled() {
        let out = diff(&[member("a", 1, Want::Ready)], &[], DRAIN, true);
        assert_eq!(
            out,
            [
                Command::Add {
                    server: "a".into(),
                    addr: addr(1),
                    check: true
                },
                Command::Enable("a".into()),
            ]
        );
        // One being terminated is never added.
        assert_eq!(diff(&[member("a", 1, Want::Drain)], &[], DRAIN, true), []);
    }

    #[test]
    fn admin_state_drift_is_corrected_both_ways() {
        let ready = [member("a", 1, Want::Ready)];
        let drain = [member("a", 1, Want::Drain)];
        let s = |admin| [server("a", 1, admin, 0, 0)];
        assert_eq!(
            diff(&ready, &s(Admin::Drain), DRAIN, false),
            [set("a", Admin::Ready)]
        );
        assert_eq!(
            diff(&ready, &s(Admin::Maint), DRAIN, false),
            [Command::Enable("a".into())]
        );
        assert_eq!(
            diff(&drain, &s(Admin::Ready), DRAIN, false),
            [set("a", Admin::Drain)]
        );
        // A draining member left in maintenance by hand stays there.
        assert_eq!(diff(&drain, &s(Admin::Maint), DRAIN, false), []);
    }

    #[test]
    fn an_unwanted_server_drains_until_idle_or_timed_out_then_goes() {
        // Busy and serving: drain first.
        assert_eq!(
            diff(&[], &[server("a", 1, Admin::Ready, 2, 0)], DRAIN, false),
            [set("a", Admin::Drain)]
        );
        // Busy and draining within the timeout: wait.
        assert_eq!(
            diff(&[], &[server("a", 1, Admin::Drain, 2, 29)], DRAIN, false),
            []
        );
        // Idle: removed at once.
        for admin in [Admin::Ready, Admin::Drain] {
            assert_eq!(
                diff(&[], &[server("a", 1, admin, 0, 0)], DRAIN, false),
                [set("a", Admin::Maint), Command::Del("a".into())]
            );
        }
        // Drained past the timeout: its last connections are closed.
        assert_eq!(
            diff(&[], &[server("a", 1, Admin::Drain, 2, 30)], DRAIN, false),
            [
                set("a", Admin::Maint),
                Command::ShutdownSessions("a".into()),
                Command::Del("a".into())
            ]
        );
        assert_eq!(
            diff(&[], &[server("a", 1, Admin::Maint, 0, 0)], DRAIN, false),
            [Command::Del("a".into())]
        );
    }

    #[test]
    fn a_server_given_back_to_the_warm_pool_goes_at_once_unless_wanted_again() {
        let given_back: BTreeSet<String> = ["a".to_string()].into();
        // Still busy, well within the load balancer's drain: removed, its connections closed.
        assert_eq!(
            diff_given_back(
                &[],
                &[
                    server("a", 1, Admin::Drain, 2, 5),
                    server("b", 2, Admin::Drain, 2, 5)
                ],
                DRAIN,
                false,
                &given_back
            ),
            [
                set("a", Admin::Maint),
                Command::ShutdownSessions("a".into()),
                Command::Del("a".into())
            ]
        );
        // Taken back from the pool before its server was removed: it serves again.
        assert_eq!(
            diff_given_back(
                &[member("a", 1, Want::Ready)],
                &[server("a", 1, Admin::Drain, 2, 5)],
                DRAIN,
                false,
                &given_back
            ),
            [set("a", Admin::Ready)]
        );
    }

    #[test]
    fn a_member_at_a_new_address_is_removed_and_comes_back_next_pass() {
        let members = [member("a", 2, Want::Ready)];
        let out = diff(
            &members,
            &[server("a", 1, Admin::Ready, 0, 0)],
            DRAIN,
            false,
        );
        assert_eq!(out, [set("a", Admin::Maint), Command::Del("a".into())]);
        // The next pass reads it gone and adds it at its new address.
        let out = diff(&members, &[], DRAIN, false);
        assert!(matches!(&out[0], Command::Add { addr: a, .. } if *a == addr(2)));
    }

    #[test]
    fn after_a_balancer_restart_everything_is_added_back() {
        let members: Vec<Member> = (0..5)
            .map(|i| member(&format!("m{i}"), 100 + i, Want::Ready))
            .collect();
        let out = diff(&members, &[], DRAIN, false);
        assert_eq!(
            out.iter()
                .filter(|c| matches!(c, Command::Add { .. }))
                .count(),
            5
        );
        assert_eq!(
            out.iter()
                .filter(|c| matches!(c, Command::Enable(_)))
                .count(),
            5
        );
    }
}
