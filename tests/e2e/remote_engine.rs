//! A third Docker engine the tests start themselves, listening on 127.0.0.1 over TCP with
//! `--tlsverify`, and the certificates for it (made with the openssl CLI): a CA, the engine's
//! certificate, a client certificate, and a second CA that signed nothing the engine trusts.
//!
//! Everything lives under one temporary directory (data root, exec root, certificates) and on one
//! bridge of its own; dropping [`TlsEngine`] stops the engine and removes both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// Runs openssl with `args` in `dir`; panics with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI runs");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `name` (`name-ca.pem`, `name-ca-key.pem`) in `dir`.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let key = format!("{name}-ca-key.pem");
    let cert = format!("{name}-ca.pem");
    openssl(dir, &["genrsa", "-out", &key, "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-out",
            &cert,
        ],
    );
    dir.join(cert)
}

/// A certificate `name` (`name.pem`, `name-key.pem`) signed by CA `ca`, for 127.0.0.1 (server)
/// or as a client.
pub fn make_cert(dir: &Path, ca: &str, name: &str, server: bool) -> (PathBuf, PathBuf) {
    let key = format!("{name}-key.pem");
    let csr = format!("{name}.csr");
    let cert = format!("{name}.pem");
    let ext = format!("{name}.ext");
    openssl(dir, &["genrsa", "-out", &key, "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &csr,
        ],
    );
    let usage = if server {
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    } else {
        "extendedKeyUsage=clientAuth\n"
    };
    std::fs::write(dir.join(&ext), usage).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca-key.pem"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    (dir.join(cert), dir.join(key))
}

/// A dockerd with `--tlsverify` on `tcp://127.0.0.1:<port>`.
pub struct TlsEngine {
    pub host: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A CA the engine does not trust, with a client certificate of its own.
    pub wrong_ca: PathBuf,
    child: Option<Child>,
    bridge: String,
    dir: tempfile::TempDir,
}

impl TlsEngine {
    /// Makes the certificates, a bridge and starts the engine; waits until it answers and loads
    /// the test image into it from zone a.
    pub fn start() -> TlsEngine {
        let dir = tempfile::Builder::new()
            .prefix("ms-tls-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let ca = make_ca(d, "good");
        make_ca(d, "wrong");
        let (server_cert, server_key) = make_cert(d, "good", "server", true);
        let (cert, key) = make_cert(d, "good", "client", false);
        let port = free_port();
        let n = std::process::id() % 200 + 20;
        let bridge = format!("ms-tls-{}", std::process::id() % 100_000);
        let _ = Command::new("ip").args(["link", "del", &bridge]).status();
        assert!(Command::new("ip")
            .args(["link", "add", &bridge, "type", "bridge"])
            .status()
            .unwrap()
            .success());
        Command::new("ip")
            .args(["addr", "add", &format!("172.31.{n}.1/24"), "dev", &bridge])
            .status()
            .unwrap();
        Command::new("ip")
            .args(["link", "set", &bridge, "up"])
            .status()
            .unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let host = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("dockerd")
            .args(["--tlsverify", "--host", &host])
            .arg("--tlscacert")
            .arg(&ca)
            .arg("--tlscert")
            .arg(&server_cert)
            .arg("--tlskey")
            .arg(&server_key)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("x"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .args([
                "--bridge",
                &bridge,
                "--ip",
                "127.0.0.1",
                "--iptables=false",
                "--ip-masq=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        let engine = TlsEngine {
            host,
            ca,
            cert,
            key,
            wrong_ca: d.join("wrong-ca.pem"),
            child: Some(child),
            bridge,
            dir,
        };
        let answered = wait_until(Duration::from_secs(60), || {
            engine
                .docker()
                .args(["info", "--format", "{{.ID}}"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(
            answered,
            "the TLS engine did not answer: {}",
            std::fs::read_to_string(engine.dir.path().join("dockerd.log")).unwrap_or_default()
        );
        let mut save = docker(&docker_host_a())
            .args(["save", TEST_IMAGE])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let loaded = engine
            .docker()
            .arg("load")
            .stdin(save.stdout.take().unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            save.wait().unwrap().success(),
            "docker save from zone a failed"
        );
        assert!(loaded.success(), "docker load into the TLS engine failed");
        engine
    }

    /// The docker CLI aimed at this engine with the right certificates.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("--tlsverify")
            .arg("--tlscacert")
            .arg(&self.ca)
            .arg("--tlscert")
            .arg(&self.cert)
            .arg("--tlskey")
            .arg(&self.key)
            .arg("-H")
            .arg(&self.host);
        c
    }

    /// Names of running containers labelled `io.microscaler.namespace=<ns>`.
    pub fn running(&self, ns: &str) -> Vec<String> {
        let out = self
            .docker()
            .args([
                "ps",
                "--filter",
                &format!("label={NAMESPACE_LABEL}={ns}"),
                "--format",
                "{{.Names}}",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker ps on the TLS engine: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TlsEngine {
    fn drop(&mut self) {
        // Containers first (their shims would keep the exec root busy), then the engine.
        let ids = self
            .docker()
            .args(["ps", "-aq"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = self
                .docker()
                .args(["rm", "-f", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if !wait_until(Duration::from_secs(20), || {
                child.try_wait().ok().flatten().is_some()
            }) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        // Overlay mounts left behind would make the directory's removal fail.
        let data = self.dir.path().join("data");
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                data.display()
            ))
            .status();
    }
}
