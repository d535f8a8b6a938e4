//! Resolution and bounds of `healthCheck`.

use super::*;

fn hc(yaml: &str) -> HealthCheck {
    serde_yaml_ng::from_str(yaml).expect("parses")
}

fn ports(list: &[u16]) -> Vec<PortSpec> {
    list.iter()
        .map(|p| PortSpec {
            container_port: *p,
            host_port: None,
            host_ip: None,
            protocol: None,
        })
        .collect()
}

fn fields(problems: &[(String, String)]) -> Vec<&str> {
    problems.iter().map(|(f, _)| f.as_str()).collect()
}

#[test]
fn one_probe_serves_both_roles_with_defaults() {
    let p = hc("type: HTTP\nport: 80\n").resolve();
    let want = Probe {
        check: Check::Http {
            path: "/".into(),
            port: 80,
            expect: vec![(200, 399)],
        },
        interval: DEFAULT_INTERVAL,
        timeout: DEFAULT_TIMEOUT,
        healthy_threshold: 1,
        unhealthy_threshold: 3,
    };
    assert_eq!(p.readiness.as_ref(), Some(&want));
    assert_eq!(p.liveness.as_ref(), Some(&want));
}

#[test]
fn roles_override_the_top_level_and_inherit_the_rest() {
    let p = hc("type: HTTP\nport: 8080\ninterval: 5s\nreadiness:\n  path: /ready\nliveness:\n  type: TCP\n  unhealthyThreshold: 2\n")
        .resolve();
    let r = p.readiness.unwrap();
    assert_eq!(
        r.check,
        Check::Http {
            path: "/ready".into(),
            port: 8080,
            expect: vec![(200, 399)]
        }
    );
    assert_eq!(r.interval, Duration::from_secs(5));
    let l = p.liveness.unwrap();
    assert_eq!(l.check, Check::Tcp { port: 8080 });
    assert_eq!(l.unhealthy_threshold, 2);
    assert_eq!(l.interval, Duration::from_secs(5));
}

#[test]
fn a_role_alone_has_no_other_role() {
    let p = hc("readiness:\n  type: Exec\n  command: [cat, /tmp/ready]\n").resolve();
    assert!(p.liveness.is_none());
    assert_eq!(
        p.readiness.unwrap().check,
        Check::Exec {
            command: vec!["cat".into(), "/tmp/ready".into()]
        }
    );
}

#[test]
fn docker_is_liveness_only_since_the_image_check_gates_readiness_anyway() {
    let p = hc("type: Docker\n").resolve();
    assert!(p.readiness.is_none());
    assert_eq!(p.liveness.unwrap().check, Check::Docker);
}

#[test]
fn a_short_interval_caps_the_default_timeout() {
    let p = hc("type: TCP\nport: 80\ninterval: 1s\n").resolve();
    assert_eq!(p.liveness.unwrap().timeout, Duration::from_secs(1));
}

#[test]
fn expect_status_takes_codes_lists_and_ranges() {
    assert_eq!(
        parse_expect(&ExpectStatus::Code(204)).unwrap(),
        vec![(204, 204)]
    );
    assert_eq!(
        parse_expect(&ExpectStatus::Ranges("200-299, 404".into())).unwrap(),
        vec![(200, 299), (404, 404)]
    );
    for bad in [
        "",
        "abc",
        "99",
        "600",
        "300-200",
        "200-",
        &"200,".repeat(20),
    ] {
        assert!(
            parse_expect(&ExpectStatus::Ranges(bad.to_string())).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn a_valid_check_has_no_problems() {
    let p = check(
        &hc("type: HTTP\nport: 80\npath: /healthz\nexpectStatus: \"200-299\"\ninterval: 5s\ntimeout: 1s\nhealthyThreshold: 2\nunhealthyThreshold: 3\n"),
        Some(&ports(&[80])),
        "spec.healthCheck",
    );
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn hostile_values_are_refused_with_their_field() {
    let p = check(
        &hc("type: HTTP\nport: 80\npath: \"no-slash\"\ninterval: 0s\ntimeout: 5m\nhealthyThreshold: 0\nunhealthyThreshold: 1000000\n"),
        Some(&ports(&[80])),
        "spec.healthCheck",
    );
    let f = fields(&p);
    for want in [
        "spec.healthCheck.path",
        "spec.healthCheck.interval",
        "spec.healthCheck.timeout",
        "spec.healthCheck.healthyThreshold",
        "spec.healthCheck.unhealthyThreshold",
    ] {
        assert!(f.contains(&want), "{want} missing in {p:?}");
    }
    let long = format!("type: HTTP\nport: 80\npath: /{}\n", "a".repeat(MAX_PATH));
    assert_eq!(
        fields(&check(&hc(&long), Some(&ports(&[80])), "h")),
        vec!["h.path"]
    );
    let spaces = check(
        &hc("type: HTTP\nport: 80\npath: \"/a b\"\n"),
        Some(&ports(&[80])),
        "h",
    );
    assert_eq!(fields(&spaces), vec!["h.path"]);
    let args = format!(
        "type: Exec\ncommand: [{}]\n",
        vec!["x"; MAX_COMMAND_ARGS + 1].join(",")
    );
    assert_eq!(fields(&check(&hc(&args), None, "h")), vec!["h.command"]);
}

#[test]
fn fields_of_another_type_and_missing_ones_are_named() {
    let p = check(
        &hc("type: TCP\nport: 80\npath: /x\ncommand: [true]\n"),
        Some(&ports(&[80])),
        "h",
    );
    assert_eq!(fields(&p), vec!["h.path", "h.command"]);
    assert_eq!(
        fields(&check(&hc("type: HTTP\n"), None, "h")),
        vec!["h.port"]
    );
    assert_eq!(
        fields(&check(&hc("type: Exec\n"), None, "h")),
        vec!["h.command"]
    );
    assert_eq!(fields(&check(&hc("port: 80\n"), None, "h")), vec!["h.type"]);
    assert_eq!(
        fields(&check(&hc("liveness:\n  port: 80\n"), None, "h")),
        vec!["h.liveness.type"]
    );
}

#[test]
fn an_unpublished_port_is_an_error_that_says_how_to_publish_it() {
    let p = check(&hc("type: HTTP\nport: 8080\n"), Some(&ports(&[80])), "h");
    assert_eq!(fields(&p), vec!["h.port"]);
    assert!(p[0].1.contains("add `ports: [8080]`"), "{}", p[0].1);
    // A udp port does not count.
    let mut udp = ports(&[8080]);
    udp[0].protocol = Some("udp".into());
    assert_eq!(
        fields(&check(&hc("type: TCP\nport: 8080\n"), Some(&udp), "h")),
        vec!["h.port"]
    );
    // Unknown ports (a group's override) are checked later.
    assert!(check(&hc("type: TCP\nport: 8080\n"), None, "h").is_empty());
}

#[test]
fn a_timeout_longer_than_the_interval_is_refused() {
    let p = check(
        &hc("type: TCP\nport: 80\ninterval: 2s\ntimeout: 3s\n"),
        Some(&ports(&[80])),
        "h",
    );
    assert_eq!(fields(&p), vec!["h.timeout"]);
}

#[test]
fn unknown_fields_and_types_are_parse_errors() {
    assert!(serde_yaml_ng::from_str::<HealthCheck>("type: HTTP\nintervall: 5s\n").is_err());
    assert!(serde_yaml_ng::from_str::<HealthCheck>("type: GRPC\n").is_err());
}

#[test]
fn a_problem_of_an_inherited_field_is_reported_once_where_it_is_written() {
    let p = check(
        &hc("type: HTTP\nport: 8080\nreadiness:\n  path: /ready\nliveness:\n  port: 9090\n"),
        Some(&ports(&[80])),
        "h",
    );
    assert_eq!(fields(&p), vec!["h.port", "h.liveness.port"], "{p:?}");
}
