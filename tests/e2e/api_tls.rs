//! The controller's API over TLS: `ms` reaches an https:// controller with the CA that signed
//! its certificate (flag or `ms login`), refuses it without, and a plain-HTTP client gets
//! nothing; an attached `ms exec -i` (an upgraded connection) works over TLS too.

use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;
use crate::remote_engine::{make_ca, make_cert};

fn ms(args: &[&str], config_home: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ms"))
        .args(args)
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("MS_SERVER")
        .env_remove("MS_TOKEN")
        .env_remove("MS_CERTIFICATE_AUTHORITY")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn ms_talks_to_an_https_controller_it_can_verify_and_to_no_other() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    let ca = make_ca(d, "api");
    make_ca(d, "other");
    let (cert, key) = make_cert(d, "api", "controller", true);
    let opts = ControllerOptions {
        extra_config: format!(
            "tls: {{cert: {}, key: {}}}\n",
            cert.display(),
            key.display()
        ),
        ..Default::default()
    };
    let mut ctl = Controller::start_with(opts);
    let url = format!("https://127.0.0.1:{}", ctl.port);
    let home = d.join("home");
    let ca_arg = ca.display().to_string();

    // With the controller's CA: works (and waits until the controller answers).
    let mut last = None;
    let ok = wait_until(Duration::from_secs(30), || {
        let out = ms(
            &[
                "--server",
                &url,
                "--certificate-authority",
                &ca_arg,
                "get",
                "asgs",
                "-A",
            ],
            &home,
        );
        let ok = out.status.success();
        last = Some(out);
        ok
    });
    let last = last.unwrap();
    assert!(
        ok,
        "ms get over https: {}\nlog:\n{}",
        String::from_utf8_lossy(&last.stderr),
        ctl.log()
    );

    // Without it (the system's roots do not know this CA), or with another CA: refused.
    let other = d.join("other-ca.pem").display().to_string();
    for args in [
        vec!["--server", url.as_str(), "get", "asgs"],
        vec![
            "--server",
            url.as_str(),
            "--certificate-authority",
            other.as_str(),
            "get",
            "asgs",
        ],
    ] {
        let out = ms(&args, &home);
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error:"), "{err}");
    }
    // Plain HTTP to the TLS port: no answer.
    assert!(http_get(ctl.port, "/healthz").is_none_or(|(s, _)| s != 200));

    // `ms login` stores the CA with the target: later commands need no flags.
    let out = ms(
        &[
            "login",
            "--target",
            &url,
            "--certificate-authority",
            &ca_arg,
        ],
        &home,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ms(&["get", "asgs"], &home);
    assert!(
        out.status.success(),
        "after ms login: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An attached exec (`ms exec -i`) is an upgraded connection: over TLS too.
    let ns = TestNs::new();
    ctl.write_manifest(
        "web.yaml",
        &format!(
            "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: web, namespace: {ns}}}\n\
             spec:\n  image: {TEST_IMAGE}\n  command: [sleep, \"3600\"]\n  stopGracePeriod: 0s\n---\n\
             apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: web, namespace: {ns}}}\n\
             spec:\n  launchConfiguration: web\n  minSize: 1\n  maxSize: 1\n",
            ns = ns.name
        ),
    );
    let mut name = String::new();
    let listed = wait_until(Duration::from_secs(60), || {
        let out = ms(
            &[
                "get",
                "instances",
                "-n",
                &ns.name,
                "-o",
                "jsonpath={.items[*].name}",
            ],
            &home,
        );
        name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        !name.is_empty() && containers(&ns).iter().any(|c| c.state == "running")
    });
    assert!(listed, "no running instance; log:\n{}", ctl.log());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ms"))
        .args(["exec", "-i", &name, "-n", &ns.name, "--", "sh", "-c"])
        .arg("read x; echo \"got $x\"; exit 5")
        .env("XDG_CONFIG_HOME", &home)
        .env_remove("MS_SERVER")
        .env_remove("MS_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"over tls\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(5), "got over tls\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ctl.stop();
}

#[test]
fn listening_beyond_loopback_needs_tls_or_insecure_listen() {
    let token = "0123456789abcdef0123";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!("tokens: [{{token: {token}, namespaces: ['*']}}]\n"),
    )
    .unwrap();
    let port = free_port();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ms"))
            .args(["controller", "--create-dir", "--dir"])
            .arg(dir.path().join("m"))
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("0.0.0.0:{port}")])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without TLS") && err.contains("--insecure-listen"),
        "{err}"
    );
}
