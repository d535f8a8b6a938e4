//! Which load balancers can run and which instances are their members: a pure function of the
//! desired state, the published group status (`status::InstanceStatus`) and the settings.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::driver::{Check, Frontend, Member, Want};
use crate::config::load_balancers::LoadBalancersConfig;
use crate::manifest::{Kind, LoadBalancer, Object, ObjectKey};
use crate::status::{GroupStatus, InstanceStatus};
use crate::watch::store::Desired;

/// What the members are computed with: the configuration, as the controller read it.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub config: LoadBalancersConfig,
    /// Each zone's address for published ports (`None`: not reachable from here).
    pub zones: BTreeMap<String, Option<IpAddr>>,
    /// Ports this host already uses for the controller (its API): never a load balancer's.
    pub reserved: Vec<SocketAddr>,
}

/// A member with where it comes from (for `ms describe lb`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub member: Member,
    pub group: String,
    pub zone: String,
}

/// One load balancer's plan: its frontend (none when it cannot run, with why), its members, the
/// instances that cannot be members (with why), and the servers whose instance went back to the
/// warm pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub key: ObjectKey,
    pub url: String,
    pub drain_timeout: Duration,
    pub frontend: Result<Frontend, (&'static str, String)>,
    pub groups: Vec<String>,
    pub members: Vec<Placed>,
    pub skipped: Vec<String>,
    /// Server names (instance names) whose container is a warm pool spare now: given back
    /// after the group's drain, so their drain is over.
    pub given_back: BTreeSet<String>,
    /// Groups naming it whose status is not published yet (a controller that just started):
    /// until they are, the balancer's servers are left as they are, not removed.
    pub unpublished: Vec<String>,
}

/// The balancer's name of a load balancer's backend: `namespace.name` (both DNS labels, so
/// unique and valid in HAProxy).
pub fn backend_name(key: &ObjectKey) -> String {
    format!("{}.{}", key.namespace, key.name)
}

/// Whether an instance takes traffic: running and published ready (its readiness probe and
/// HEALTHCHECK passing), never one being terminated (`draining`: it drains).
fn want(i: &InstanceStatus) -> Option<Want> {
    match i.state.as_str() {
        "draining" => Some(Want::Drain),
        "running" => i.ready.then_some(Want::Ready),
        _ => None,
    }
}

/// The host address of an instance's published `container_port` (TCP), as reached from here.
pub fn target(
    ports: &[String],
    container_port: u16,
    zone_addr: Option<IpAddr>,
) -> Result<SocketAddr, String> {
    // `127.0.0.1:32768->80/tcp`, `0.0.0.0:32768->80/tcp`, `:::32768->80/tcp`.
    let mut found: Vec<(IpAddr, u16)> = ports
        .iter()
        .filter_map(|p| {
            let (host, inner) = p.split_once("->")?;
            let (cport, proto) = inner.split_once('/').unwrap_or((inner, "tcp"));
            if proto != "tcp" || cport.parse::<u16>().ok()? != container_port {
                return None;
            }
            let (ip, port) = host.rsplit_once(':')?;
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = if ip.is_empty() {
                "::".parse().ok()?
            } else {
                ip.parse().ok()?
            };
            Some((ip, port.parse().ok()?))
        })
        .collect();
    // IPv4 first: Docker lists `0.0.0.0` and `::` for one binding.
    found.sort_by_key(|(ip, _)| (ip.is_ipv6(), *ip));
    let Some((ip, port)) = found.first().copied() else {
        return Err(format!(
            "publishes no host port for container port {container_port}: add `ports: [{container_port}]` to its launch configuration"
        ));
    };
    let ip = if ip.is_unspecified() {
        zone_addr.ok_or("its zone's host has no known address: set loadBalancers.zoneAddresses in the controller configuration")?
    } else if ip.is_loopback() && !zone_addr.is_some_and(|z| z.is_loopback()) {
        return Err(format!(
            "is published on {ip} of another host, which this host cannot reach: publish it with `hostIp: 0.0.0.0` (or the host's address) and set loadBalancers.zoneAddresses"
        ));
    } else {
        ip
    };
    Ok(SocketAddr::new(ip, port))
}

fn frontend(
    key: &ObjectKey,
    lb: &LoadBalancer,
    settings: &Settings,
    taken: &mut BTreeMap<u16, Vec<(IpAddr, ObjectKey)>>,
) -> Result<Frontend, (&'static str, String)> {
    let s = &lb.spec;
    let listen: IpAddr = s.listen_addr().parse().map_err(|_| {
        (
            "Invalid",
            format!("listen `{}` is not an IP address", s.listen_addr()),
        )
    })?;
    if !settings.config.allows_listen(listen) {
        return Err((
            "ListenNotAllowed",
            format!(
                "listening on {listen} is not allowed by the controller configuration: add it to loadBalancers.allowedListenAddresses, or listen on 127.0.0.1"
            ),
        ));
    }
    let overlaps = |a: IpAddr, b: IpAddr| a == b || a.is_unspecified() || b.is_unspecified();
    if settings
        .reserved
        .iter()
        .any(|r| r.port() == s.port && overlaps(r.ip(), listen))
    {
        return Err((
            "PortConflict",
            format!(
                "port {} is the controller's own: choose another port",
                s.port
            ),
        ));
    }
    let same_port = taken.entry(s.port).or_default();
    if let Some((_, other)) = same_port.iter().find(|(ip, _)| overlaps(*ip, listen)) {
        return Err((
            "PortConflict",
            format!(
                "{listen}:{} is already the address of load balancer {}/{}: choose another port",
                s.port, other.namespace, other.name
            ),
        ));
    }
    same_port.push((listen, key.clone()));
    let check = s.health_check.as_ref().map(|h| Check {
        path: h.path.clone(),
        interval: h.interval.map_or(Duration::from_secs(2), |d| d.0),
        rise: h.rise.unwrap_or(2),
        fall: h.fall.unwrap_or(3),
    });
    Ok(Frontend {
        key: key.clone(),
        backend: backend_name(key),
        listen,
        port: s.port,
        mode: s.mode,
        balance: s.balance,
        check,
    })
}

/// Every load balancer of `desired` with its frontend and members, in key order (the first of
/// two on one address keeps it).
pub fn plan(
    desired: &Desired,
    board: &BTreeMap<ObjectKey, GroupStatus>,
    settings: &Settings,
) -> Vec<Plan> {
    let mut taken = BTreeMap::new();
    let mut out = Vec::new();
    for (key, entry) in &desired.objects {
        let Object::LoadBalancer(lb) = &entry.object else {
            continue;
        };
        let mut plan = Plan {
            key: key.clone(),
            url: lb.spec.url(),
            drain_timeout: lb.spec.drain_timeout(),
            frontend: frontend(key, lb, settings, &mut taken),
            groups: Vec::new(),
            members: Vec::new(),
            skipped: Vec::new(),
            given_back: BTreeSet::new(),
            unpublished: Vec::new(),
        };
        let zones: BTreeSet<&str> = lb.spec.zones.iter().map(String::as_str).collect();
        let mut names = BTreeSet::new();
        for (gkey, group, _) in desired.groups() {
            if gkey.namespace != key.namespace || !group.spec.load_balancers.contains(&key.name) {
                continue;
            }
            plan.groups.push(gkey.name.clone());
            let Some(status) = board.get(gkey) else {
                plan.unpublished.push(gkey.name.clone());
                continue;
            };
            for i in &status.instances {
                if i.state == crate::status::WARM {
                    if let Some(name) = crate::engine::warm::instance_name(&i.name) {
                        plan.given_back.insert(name.to_string());
                    }
                    continue;
                }
                if !zones.is_empty() && !zones.contains(i.zone.as_str()) {
                    continue;
                }
                let Some(want) = want(i) else { continue };
                let zone_addr = settings.zones.get(&i.zone).copied().flatten();
                match target(&i.ports, lb.spec.target_port, zone_addr) {
                    Ok(addr) if names.insert(i.name.clone()) => plan.members.push(Placed {
                        member: Member {
                            name: i.name.clone(),
                            addr,
                            want,
                        },
                        group: gkey.name.clone(),
                        zone: i.zone.clone(),
                    }),
                    Ok(_) => {}
                    Err(why) => plan.skipped.push(format!("instance {} {why}", i.name)),
                }
            }
        }
        out.push(plan);
    }
    out
}

/// The keys of the groups' load balancers that do not exist, for warnings.
pub fn missing(desired: &Desired) -> Vec<(ObjectKey, String)> {
    let mut out = Vec::new();
    for (gkey, group, _) in desired.groups() {
        for name in &group.spec.load_balancers {
            let key = ObjectKey::new(Kind::LoadBalancer, gkey.namespace.clone(), name.clone());
            if !desired.objects.contains_key(&key) {
                out.push((gkey.clone(), name.clone()));
            }
        }
    }
    out
}

/// An instance as the status publishes it (through serde, so fields added later take their
/// defaults), in zone `a`, publishing container port 80 on `127.0.0.1:port`.
#[cfg(test)]
pub(super) fn test_instance(name: &str, state: &str, port: u16) -> InstanceStatus {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "containerId": "",
        "zone": "a",
        "state": state,
        "ready": state == "running",
        "ports": [format!("127.0.0.1:{port}->80/tcp")],
        "upToDate": true,
    }))
    .expect("an instance status")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LO: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    fn ports(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_target_is_the_published_port_of_the_target_container_port() {
        let p = ports(&["127.0.0.1:32768->80/tcp", "127.0.0.1:32769->443/tcp"]);
        assert_eq!(
            target(&p, 80, LO).unwrap(),
            "127.0.0.1:32768".parse().unwrap()
        );
        assert_eq!(
            target(&p, 443, LO).unwrap(),
            "127.0.0.1:32769".parse().unwrap()
        );
        assert!(target(&p, 8080, LO).unwrap_err().contains("ports: [8080]"));
        // UDP is not a target.
        assert!(target(&ports(&["127.0.0.1:1->80/udp"]), 80, LO).is_err());
    }

    #[test]
    fn an_unspecified_binding_is_reached_at_the_zone_address() {
        let p = ports(&[":::32770->80/tcp", "0.0.0.0:32770->80/tcp"]);
        assert_eq!(
            target(&p, 80, LO).unwrap(),
            "127.0.0.1:32770".parse().unwrap()
        );
        let remote = Some(IpAddr::from([10, 0, 0, 5]));
        assert_eq!(
            target(&p, 80, remote).unwrap(),
            "10.0.0.5:32770".parse().unwrap()
        );
        assert!(target(&p, 80, None).unwrap_err().contains("zoneAddresses"));
        // Loopback of another host is out of reach.
        let lo = ports(&["127.0.0.1:32771->80/tcp"]);
        assert!(target(&lo, 80, remote).unwrap_err().contains("hostIp"));
    }

    fn desired(yaml: &str) -> Desired {
        crate::watch::store::test_snapshot(yaml)
    }

    const LBS: &str = "apiVersion: microscaler.io/v1\nkind: LoadBalancer\nmetadata: {name: front}\nspec: {port: 8080, targetPort: 80}\n---\napiVersion: microscaler.io/v1\nkind: LoadBalancer\nmetadata: {name: same-port}\nspec: {port: 8080, targetPort: 80}\n---\napiVersion: microscaler.io/v1\nkind: LoadBalancer\nmetadata: {name: wide}\nspec: {listen: 0.0.0.0, port: 9090, targetPort: 80}\n---\napiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {name: web}\nspec: {image: busybox}\n---\napiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {name: web}\nspec: {launchConfiguration: web, minSize: 0, maxSize: 5, loadBalancers: [front]}\n";

    use super::test_instance as instance;

    #[test]
    fn members_are_the_running_and_draining_instances_of_the_groups_naming_it() {
        let d = desired(LBS);
        let mut board = BTreeMap::new();
        board.insert(
            ObjectKey::new(Kind::AutoScalingGroup, "default", "web"),
            GroupStatus {
                instances: vec![
                    instance("web-1", "running", 101),
                    instance("web-2", "draining", 102),
                    instance("web-3", "created", 103),
                    instance("web-4", "exited", 104),
                    // A warm pool spare is never load-balanced.
                    instance("web-5-warm", crate::status::WARM, 105),
                ],
                ..Default::default()
            },
        );
        let settings = Settings {
            zones: [("a".to_string(), LO)].into(),
            ..Default::default()
        };
        let plans = plan(&d, &board, &settings);
        let names: Vec<&str> = plans.iter().map(|p| p.key.name.as_str()).collect();
        assert_eq!(names, ["front", "same-port", "wide"]);
        let front = &plans[0];
        assert!(front.frontend.is_ok());
        assert_eq!(front.groups, ["web"]);
        let members: Vec<(&str, Want)> = front
            .members
            .iter()
            .map(|p| (p.member.name.as_str(), p.member.want))
            .collect();
        assert_eq!(members, [("web-1", Want::Ready), ("web-2", Want::Drain)]);
        // Its instance's server, if the balancer still has one, has drained already.
        assert_eq!(front.given_back, ["web-5".to_string()].into());
        // The second load balancer on one address, and one beyond loopback, do not run.
        assert_eq!(plans[1].frontend.as_ref().unwrap_err().0, "PortConflict");
        assert_eq!(
            plans[2].frontend.as_ref().unwrap_err().0,
            "ListenNotAllowed"
        );
        assert!(plans[2].members.is_empty());
    }

    #[test]
    fn allowed_addresses_and_the_controllers_own_port() {
        let d = desired(LBS);
        let mut settings = Settings::default();
        settings
            .config
            .allowed_listen_addresses
            .push("0.0.0.0".parse().unwrap());
        settings.reserved.push("127.0.0.1:8080".parse().unwrap());
        let plans = plan(&d, &BTreeMap::new(), &settings);
        assert_eq!(plans[0].frontend.as_ref().unwrap_err().0, "PortConflict");
        assert!(plans[2].frontend.is_ok());
        assert!(missing(&d).is_empty());
    }
}
