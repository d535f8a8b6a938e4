//! Zones beyond one machine: an engine over TCP with `--tlsverify` (started by the test), reached
//! with the right certificates, with a CA it did not sign, and without a client certificate;
//! addresses and files that cannot work are refused at start-up.

use std::time::Duration;

use microscaler::engine::docker::endpoint::Endpoint;
use microscaler::engine::docker::tls::TlsFiles;
use microscaler::engine::docker::DockerEngine;
use microscaler::engine::{Engine, EngineError};

use crate::common::*;
use crate::remote_engine::TlsEngine;

fn group(ns: &str, zone: &str, desired: u32) -> String {
    sleepers(
        ns,
        desired,
        4,
        "",
        &format!("  availabilityZones: [{zone}]\n"),
    )
}

/// A controller whose configuration is `zones` (YAML lines under `zones:`).
fn controller_with_zones(
    zones: &str,
    env: Vec<(String, String)>,
) -> (Controller, ControllerOptions) {
    let opts = ControllerOptions {
        env,
        ..Default::default()
    };
    let mut ctl = Controller::prepare_with(&opts);
    let config = format!("controllerName: {}\nzones:\n{zones}", ctl.name);
    std::fs::write(&ctl.config_path, config).unwrap();
    ctl.spawn(&opts);
    (ctl, opts)
}

#[tokio::test]
async fn a_tls_engine_is_reached_with_its_certificates_and_refuses_anyone_else() {
    let engine = TlsEngine::start();
    let files = |ca: &std::path::Path, client: bool| TlsFiles {
        ca_cert: ca.to_path_buf(),
        cert: client.then(|| engine.cert.clone()),
        key: client.then(|| engine.key.clone()),
    };
    let at = |tls| Endpoint {
        host: engine.host.clone(),
        tls: Some(tls),
    };

    // The right CA and a client certificate: a working engine.
    let good = DockerEngine::connect_endpoint(&at(files(&engine.ca, true)))
        .await
        .expect("the TLS engine answers with the right certificates");
    good.ping().await.unwrap();
    assert!(!good.identity().await.unwrap().id.is_empty());

    // A CA that did not sign the engine's certificate: the engine is not trusted.
    let err = DockerEngine::connect_endpoint(&at(files(&engine.wrong_ca, true)))
        .await
        .expect_err("an engine signed by another CA is refused");
    assert!(
        matches!(&err, EngineError::Unreachable(m) if m.contains("certificate")),
        "{err:?}"
    );

    // No client certificate: the engine refuses us.
    let err = DockerEngine::connect_endpoint(&at(files(&engine.ca, false)))
        .await
        .expect_err("an engine with --tlsverify refuses a client without a certificate");
    assert!(matches!(&err, EngineError::Unreachable(_)), "{err:?}");

    // Through the controller: the default zone from Docker's variables (DOCKER_HOST,
    // DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) launches there...
    let certs = engine.dir().join("docker-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&engine.ca, certs.join("ca.pem")).unwrap();
    std::fs::copy(&engine.cert, certs.join("cert.pem")).unwrap();
    std::fs::copy(&engine.key, certs.join("key.pem")).unwrap();
    let ns = TestNs::new();
    let env = vec![
        ("DOCKER_HOST".to_string(), engine.host.clone()),
        ("DOCKER_TLS_VERIFY".to_string(), "1".to_string()),
        ("DOCKER_CERT_PATH".to_string(), certs.display().to_string()),
    ];
    let (mut ctl, _) = controller_with_zones("  - name: t\n", env);
    ctl.wait_ready();
    ctl.write_manifest("web.yaml", &group(&ns.name, "t", 2));
    let launched = wait_until(Duration::from_secs(60), || {
        engine.running(&ns.name).len() == 2
    });
    assert!(
        launched,
        "two instances on the TLS engine; log:\n{}",
        ctl.log()
    );
    ctl.stop();

    // ...and a zone configured with the wrong CA is the group's condition, not a crash.
    let zones = format!(
        "  - name: w\n    dockerHost: {}\n    tls: {{caCert: {}, cert: {}, key: {}}}\n",
        engine.host,
        engine.wrong_ca.display(),
        engine.cert.display(),
        engine.key.display()
    );
    let (mut ctl, _) = controller_with_zones(&zones, Vec::new());
    ctl.wait_ready();
    let ns2 = TestNs::new();
    ctl.write_manifest("web.yaml", &group(&ns2.name, "w", 1));
    let mut shown = String::new();
    let reported = wait_until(Duration::from_secs(60), || {
        let out = ctl.ms(&["describe", "asg", "web", "-n", &ns2.name]);
        shown = String::from_utf8_lossy(&out.stdout).into_owned();
        shown.contains("ZoneUnreachable") && shown.contains("certificate")
    });
    assert!(
        reported,
        "the zone's TLS refusal is a condition:\n{shown}\nlog:\n{}",
        ctl.log()
    );
    assert!(ctl.pid().is_some(), "the controller is still running");
    assert!(engine.running(&ns2.name).is_empty());
}

#[test]
fn unusable_engine_addresses_and_missing_certificates_are_refused_at_start() {
    for (zones, expected) in [
        (
            "  - name: r\n    dockerHost: tcp://127.0.0.1:2376\n    tls: {caCert: /nonexistent/ca.pem, cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}\n",
            "cannot read caCert /nonexistent/ca.pem",
        ),
        ("  - name: r\n    dockerHost: ssh://ops@10.0.0.5\n", "ssh:// engines are not supported"),
        ("  - name: r\n    dockerHost: tcp://10.0.0.5:2375\n", "plain TCP beyond loopback"),
        ("  - name: r\n    dockerHost: fd://\n", "unsupported Docker address"),
    ] {
        let (mut ctl, _) = controller_with_zones(zones, Vec::new());
        let status = ctl.wait_exit(Duration::from_secs(30)).expect("the controller exits");
        assert!(!status.success());
        let log = ctl.log();
        assert!(log.contains(expected), "expected `{expected}` in:\n{log}");
    }
}
