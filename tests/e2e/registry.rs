//! A real image registry on 127.0.0.1 (Debian's `docker-registry`, basic auth with an htpasswd
//! file) that the tests push the test image to. Dropping it stops the registry and removes its
//! storage; the tags the test pushed or pulled are removed from both engines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

pub const USER: &str = "ci";
pub const PASSWORD: &str = "registry-pass-1234";

pub struct Registry {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// References pushed or pulled, removed from the engines at the end.
    pub references: Vec<String>,
}

impl Registry {
    /// Starts a registry that wants `USER`/`PASSWORD`.
    pub fn start() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("ms-registry-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let out = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .expect("htpasswd runs (apache2-utils)");
        assert!(out.status.success());
        std::fs::write(d.join("htpasswd"), out.stdout).unwrap();
        let port = free_port();
        std::fs::write(
            d.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: microscaler-test\n    path: {htpasswd}\n",
                root = d.join("data").display(),
                htpasswd = d.join("htpasswd").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry runs");
        let registry = Registry {
            port,
            child: Some(child),
            dir,
            references: Vec::new(),
        };
        assert!(
            wait_until(Duration::from_secs(20), || http_get(port, "/v2/").is_some()),
            "the registry did not answer"
        );
        registry
    }

    /// `127.0.0.1:<port>/<path>`.
    pub fn reference(&self, path: &str) -> String {
        format!("127.0.0.1:{}/{path}", self.port)
    }

    /// A Docker config directory whose `config.json` logs in to this registry.
    pub fn write_docker_config(&self, dir: &Path) -> PathBuf {
        use base64::Engine as _;
        std::fs::create_dir_all(dir).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{auth}"}}}}}}"#,
                self.port
            ),
        )
        .unwrap();
        path
    }

    /// Tags the test image on zone a as `path` and pushes it (logged in with a config of its own).
    pub fn push_test_image(&mut self, path: &str) -> String {
        self.push_image(TEST_IMAGE, path)
    }

    /// Tags `local` (an image on zone a) as `path` and pushes it.
    pub fn push_image(&mut self, local: &str, path: &str) -> String {
        let reference = self.reference(path);
        let login = self.dir.path().join("login");
        self.write_docker_config(&login);
        docker_ok(&docker_host_a(), &["tag", local, &reference]);
        let out = docker(&docker_host_a())
            .env("DOCKER_CONFIG", &login)
            .args(["push", &reference])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker push {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Only the registry has it now: the tests' engines must pull it.
        docker_ok(&docker_host_a(), &["rmi", &reference]);
        self.references.push(reference.clone());
        reference
    }

    /// Whether the engine at `host` has `reference`.
    pub fn engine_has(host: &str, reference: &str) -> bool {
        docker(host)
            .args(["image", "inspect", reference])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in [docker_host_a(), docker_host_b()] {
            for r in &self.references {
                let _ = docker(&host)
                    .args(["rmi", r])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}
