//! The managed HAProxy's base configuration: a frontend and a backend per load balancer, the
//! admin socket, and the members a (re)started HAProxy begins with. Rewritten only when the set
//! of load balancers changes; membership changes go through the Runtime API.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use crate::lb::driver::{Check, Frontend, Seed, Want};
use crate::manifest::LbMode;

/// How long a reloaded HAProxy's old process may keep serving its open connections.
pub const HARD_STOP_AFTER: Duration = Duration::from_secs(3600);

fn ms(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// `inter 2000 rise 2 fall 3`: the check settings of one server (dynamic servers do not
/// inherit `default-server`, so every server line carries them).
pub fn check_args(check: &Check) -> String {
    format!(
        "check inter {} rise {} fall {}",
        ms(check.interval),
        check.rise,
        check.fall
    )
}

/// The configuration text. `seed[backend]` gives the members a (re)started HAProxy begins with.
pub fn render(controller: &str, socket: &Path, frontends: &[Frontend], seed: &Seed) -> String {
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Written by the microscaler controller `{controller}`: one frontend and backend per\n\
         # LoadBalancer. Members are added and removed through the admin socket, without reloads.\n\
         global\n    \
         stats socket {} mode 600 level admin\n    \
         stats timeout 30s\n    \
         hard-stop-after {}s\n\n\
         defaults\n    \
         timeout connect 2s\n    \
         timeout client 60s\n    \
         timeout server 60s\n    \
         timeout queue 10s\n    \
         # A connection refused by a member that just went away is retried on another one.\n    \
         retries 3\n    \
         option redispatch 1",
        socket.display(),
        HARD_STOP_AFTER.as_secs(),
    );
    for f in frontends {
        let mode = f.mode.as_str();
        let bind = match f.listen {
            std::net::IpAddr::V6(v6) => format!("[{v6}]:{}", f.port),
            ip => format!("{ip}:{}", f.port),
        };
        let _ = writeln!(
            c,
            "\nfrontend {b}\n    mode {mode}\n    bind {bind}\n    default_backend {b}",
            b = f.backend
        );
        let _ = writeln!(
            c,
            "\nbackend {}\n    mode {mode}\n    balance {}",
            f.backend,
            f.balance.as_str()
        );
        if f.mode == LbMode::Http {
            // Requests that never reached a member, or got no answer, are retried elsewhere;
            // only idempotent ones.
            c.push_str(
                "    retry-on conn-failure empty-response response-timeout\n    \
                 http-request disable-l7-retry if !METH_GET !METH_HEAD\n",
            );
        }
        if let Some(Check {
            path: Some(path), ..
        }) = &f.check
        {
            let _ = writeln!(c, "    option httpchk GET {path}");
        }
        for m in seed.get(&f.backend).into_iter().flatten() {
            if m.want != Want::Ready {
                continue;
            }
            let check = f.check.as_ref().map(check_args).unwrap_or_default();
            let addr = m.addr;
            let _ = writeln!(c, "    server {} {addr} {check}", m.name);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::driver::Member;
    use crate::manifest::{Balance, Kind, ObjectKey};

    #[test]
    fn one_frontend_and_backend_per_load_balancer_seeded_with_ready_members() {
        let f = Frontend {
            key: ObjectKey::new(Kind::LoadBalancer, "team", "front"),
            backend: "team.front".into(),
            listen: "127.0.0.1".parse().unwrap(),
            port: 8080,
            mode: LbMode::Http,
            balance: Balance::Leastconn,
            check: Some(Check {
                path: Some("/healthz".into()),
                interval: Duration::from_millis(500),
                rise: 1,
                fall: 2,
            }),
        };
        let tcp = Frontend {
            backend: "team.raw".into(),
            listen: "::1".parse().unwrap(),
            mode: LbMode::Tcp,
            check: None,
            port: 9000,
            ..f.clone()
        };
        let seed: Seed = [(
            "team.front".to_string(),
            vec![
                Member {
                    name: "web-1".into(),
                    addr: "127.0.0.1:32768".parse().unwrap(),
                    want: Want::Ready,
                },
                Member {
                    name: "web-2".into(),
                    addr: "127.0.0.1:32769".parse().unwrap(),
                    want: Want::Drain,
                },
            ],
        )]
        .into();
        let text = render("c1", Path::new("/run/x/admin.sock"), &[f, tcp], &seed);
        assert!(text.contains("stats socket /run/x/admin.sock mode 600 level admin"));
        assert!(text.contains("frontend team.front\n    mode http\n    bind 127.0.0.1:8080\n    default_backend team.front\n"));
        assert!(text.contains("balance leastconn"));
        assert!(text.contains("option httpchk GET /healthz"));
        assert!(text.contains("server web-1 127.0.0.1:32768 check inter 500 rise 1 fall 2\n"));
        assert!(!text.contains("web-2"), "a draining member is not seeded");
        assert!(text.contains("bind [::1]:9000"));
        let raw = text.split("backend team.raw").nth(1).unwrap();
        assert!(!raw.contains("retry-on") && !raw.contains("server "));
    }
}
