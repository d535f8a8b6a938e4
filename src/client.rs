//! HTTP client of the apply/read endpoint, used by the `ms` command line.
//!
//! Every failure becomes a [`ClientError`] whose `Display` is one line a user can act on; the CLI
//! prints it as `error: ...`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::{Kind, ManifestError};
use crate::wire::{ChangeResponse, ScaleRequest, FILENAME_HEADER};

/// Default server when nothing is configured (the original microscaler's port).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:56785";

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made.
    #[error("cannot reach the controller at {url}: is `ms controller` running?")]
    Unreachable { url: String },
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        status: u16,
        message: String,
        /// Manifest errors of a rejected apply (one per line for the user).
        errors: Vec<ManifestError>,
    },
    /// Any other transport problem.
    #[error("request to {url} failed: {message}")]
    Transport { url: String, message: String },
    /// The answer was not what this client understands (version mismatch?).
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
}

/// Result alias of this module.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Where `ms login` stores its target and token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Login {
    pub target: Option<String>,
    pub token: Option<String>,
    /// The CA that signed an `https://` target's certificate (`--certificate-authority`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<PathBuf>,
    /// Default namespace of client commands (`ms login --namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `$XDG_CONFIG_HOME/microscaler/login.json`, else `~/.config/microscaler/login.json`.
pub fn login_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("microscaler").join("login.json"))
}

impl Login {
    /// Reads the stored login; a missing or unreadable file is an empty login.
    pub fn load() -> Login {
        login_path()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Stores the login with mode 0600 (it holds a token); returns the path written.
    pub fn save(&self) -> std::io::Result<PathBuf> {
        let path = login_path()
            .ok_or_else(|| std::io::Error::other("neither XDG_CONFIG_HOME nor HOME is set"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self).expect("login serializes");
        write_private(&path, &text)?;
        Ok(path)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only on creation: tighten a file that existed before.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// A client of one controller.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Percent-encodes a path segment or query value (names are simple; this guards the rest).
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds `?a=b&c=d` from the pairs whose value is set.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The URL path segment of a kind (`asgs`, `lcs`, `policies`).
pub fn kind_path(kind: Kind) -> &'static str {
    match kind {
        Kind::AutoScalingGroup => "asgs",
        Kind::LaunchConfiguration => "lcs",
        Kind::ScalingPolicy => "policies",
        Kind::LoadBalancer => "lbs",
    }
}

impl Client {
    /// A client of the controller at `server` (`http://host:port`).
    pub fn new(server: &str, token: Option<String>) -> Client {
        crate::util::crypto::install_provider();
        Client {
            base: server.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            http: reqwest::Client::new(),
        }
    }

    /// Trusts only the CA in `pem_file` for an `https://` controller (a controller's own CA is
    /// rarely in the system's roots).
    ///
    /// # Errors
    /// The file cannot be read or holds no PEM certificate.
    pub fn with_certificate_authority(mut self, pem_file: &Path) -> Result<Client, String> {
        use rustls::pki_types::pem::PemObject;
        let bytes = std::fs::read(pem_file).map_err(|e| {
            format!(
                "cannot read the certificate authority {}: {e}",
                pem_file.display()
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| format!("{}: not PEM: {e:?}", pem_file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", pem_file.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{} holds no certificate", pem_file.display()));
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        self.http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
        Ok(self)
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        if resp
            .headers()
            .get(crate::wire::ROLE_HEADER)
            .is_some_and(|v| v == "standby")
        {
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                eprintln!(
                    "Warning: {} is a standby controller: it shows what the active controller acts on",
                    self.base
                );
            }
        }
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport(e))?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| ClientError::Decode {
                url: self.base.clone(),
                message: e.to_string(),
            });
        }
        Err(self.api_error(status, &text))
    }

    /// A request whose answer is read as a stream ([`Stream::next_chunk`]); an error answer
    /// becomes a [`ClientError`] as for every other request.
    async fn open(&self, req: reqwest::RequestBuilder) -> Result<Stream> {
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Stream {
                resp,
                client: self.clone(),
            });
        }
        let text = resp.text().await.map_err(|e| self.transport(e))?;
        Err(self.api_error(status, &text))
    }

    fn api_error(&self, status: reqwest::StatusCode, text: &str) -> ClientError {
        #[derive(Deserialize)]
        struct ErrorBody {
            error: String,
            #[serde(default)]
            errors: Vec<ManifestError>,
        }
        match serde_json::from_str::<ErrorBody>(text) {
            Ok(b) => ClientError::Api {
                status: status.as_u16(),
                message: b.error,
                errors: b.errors,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                message: format!(
                    "the controller answered {status}: {}",
                    text.lines().next().unwrap_or("").trim()
                ),
                errors: Vec::new(),
            },
        }
    }

    /// `GET /v1/watch`: the current state, then every change, as JSON lines.
    pub async fn watch(&self, kinds: &str, namespace: Option<&str>) -> Result<Stream> {
        let path = format!(
            "/v1/watch{}",
            query(&[("kind", Some(kinds)), ("namespace", namespace)])
        );
        self.open(self.request(reqwest::Method::GET, &path)).await
    }

    /// `GET /v1/logs/{ns}/{instance}` or, with `group`, `GET /v1/logs/{ns}/asg/{group}`.
    pub async fn logs(
        &self,
        namespace: &str,
        name: &str,
        group: bool,
        follow: bool,
        since_secs: Option<u64>,
        tail: Option<usize>,
    ) -> Result<Stream> {
        let since = since_secs.map(|s| s.to_string());
        let tail = tail.map(|t| t.to_string());
        let path = format!(
            "/v1/logs/{}/{}{}{}",
            enc(namespace),
            if group { "asg/" } else { "" },
            enc(name),
            query(&[
                ("follow", follow.then_some("true")),
                ("since", since.as_deref()),
                ("tail", tail.as_deref()),
            ])
        );
        self.open(self.request(reqwest::Method::GET, &path)).await
    }

    /// `POST /v1/exec/{ns}/{instance}`: output chunks and the exit code, as JSON lines.
    pub async fn exec(
        &self,
        namespace: &str,
        instance: &str,
        command: &[String],
    ) -> Result<Stream> {
        let path = format!("/v1/exec/{}/{}", enc(namespace), enc(instance));
        let req = self
            .request(reqwest::Method::POST, &path)
            .json(&serde_json::json!({ "command": command }));
        self.open(req).await
    }

    /// `POST /v1/exec/{ns}/{instance}/attach`: runs `command` with its input attached (and a
    /// terminal of `size` rows × columns with `tty`); the upgraded connection then carries
    /// [`crate::wire::tty`] frames.
    pub async fn exec_attach(
        &self,
        namespace: &str,
        instance: &str,
        command: &[String],
        tty: bool,
        size: Option<(u16, u16)>,
    ) -> Result<reqwest::Upgraded> {
        let command = serde_json::to_string(command).expect("strings serialize");
        let (rows, cols) = (size.map(|s| s.0.to_string()), size.map(|s| s.1.to_string()));
        let path = format!(
            "/v1/exec/{}/{}/attach{}",
            enc(namespace),
            enc(instance),
            query(&[
                ("command", Some(&command)),
                ("tty", tty.then_some("true")),
                ("rows", rows.as_deref()),
                ("cols", cols.as_deref()),
            ])
        );
        let req = self
            .request(reqwest::Method::POST, &path)
            .header(reqwest::header::CONNECTION, "Upgrade")
            .header(reqwest::header::UPGRADE, crate::wire::tty::PROTOCOL);
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return resp.upgrade().await.map_err(|e| self.transport(e));
        }
        let text = resp.text().await.map_err(|e| self.transport(e))?;
        Err(self.api_error(status, &text))
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        if e.is_connect() {
            ClientError::Unreachable {
                url: self.base.clone(),
            }
        } else {
            // The innermost cause is the informative part ("connection reset", ...).
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message = s.to_string();
                source = s.source();
            }
            ClientError::Transport {
                url: self.base.clone(),
                message,
            }
        }
    }

    /// `POST /v1/apply`: applies the YAML `text` read from `filename`.
    pub async fn apply(
        &self,
        filename: &str,
        text: String,
        dry_run: bool,
    ) -> Result<ChangeResponse> {
        let path = format!(
            "/v1/apply{}",
            query(&[("dryRun", dry_run.then_some("true"))])
        );
        let req = self
            .request(reqwest::Method::POST, &path)
            .header(FILENAME_HEADER, filename)
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(text);
        self.send(req).await
    }

    /// `GET /v1/{asgs|lcs|policies}`: the items of a kind, optionally in one namespace.
    pub async fn list(&self, kind: Kind, namespace: Option<&str>) -> Result<Vec<Value>> {
        let path = format!(
            "/v1/{}{}",
            kind_path(kind),
            query(&[("namespace", namespace)])
        );
        self.items(&path).await
    }

    /// `GET /v1/{kind}/{ns}/{name}`: one object.
    pub async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value> {
        let path = format!("/v1/{}/{}/{}", kind_path(kind), enc(namespace), enc(name));
        self.send(self.request(reqwest::Method::GET, &path)).await
    }

    /// `GET /v1/instances`.
    pub async fn instances(
        &self,
        namespace: Option<&str>,
        group: Option<&str>,
    ) -> Result<Vec<Value>> {
        let path = format!(
            "/v1/instances{}",
            query(&[("namespace", namespace), ("group", group)])
        );
        self.items(&path).await
    }

    /// `POST /v1/metrics/{ns}/{group}`: records a pushed metric value for a group.
    pub async fn push_metric(
        &self,
        namespace: &str,
        group: &str,
        name: &str,
        value: f64,
    ) -> Result<Value> {
        let path = format!("/v1/metrics/{}/{}", enc(namespace), enc(group));
        let req = self
            .request(reqwest::Method::POST, &path)
            .json(&serde_json::json!({ "name": name, "value": value }));
        self.send(req).await
    }

    /// `GET /v1/top`: the latest CPU/memory of every instance.
    pub async fn top(&self, namespace: Option<&str>, group: Option<&str>) -> Result<Vec<Value>> {
        let path = format!(
            "/v1/top{}",
            query(&[("namespace", namespace), ("group", group)])
        );
        self.items(&path).await
    }

    /// `GET /v1/instancetypes`.
    pub async fn instance_types(&self) -> Result<Vec<Value>> {
        self.items("/v1/instancetypes").await
    }

    /// `GET /v1/problems`: `{fileErrors, conflicts, held}`.
    pub async fn problems(&self) -> Result<Value> {
        self.send(self.request(reqwest::Method::GET, "/v1/problems"))
            .await
    }

    async fn items(&self, path: &str) -> Result<Vec<Value>> {
        #[derive(Deserialize)]
        struct Items {
            items: Vec<Value>,
        }
        let r: Items = self.send(self.request(reqwest::Method::GET, path)).await?;
        Ok(r.items)
    }

    /// `DELETE /v1/{asg|lc|policy}/{ns}/{name}`.
    pub async fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<ChangeResponse> {
        let short = match kind {
            Kind::AutoScalingGroup => "asg",
            Kind::LaunchConfiguration => "lc",
            Kind::ScalingPolicy => "policy",
            Kind::LoadBalancer => "lb",
        };
        let path = format!("/v1/{short}/{}/{}", enc(namespace), enc(name));
        self.send(self.request(reqwest::Method::DELETE, &path))
            .await
    }

    /// `POST /v1/asgs/{ns}/{name}/scale`.
    pub async fn scale(&self, namespace: &str, name: &str, desired: u32) -> Result<ChangeResponse> {
        let path = format!("/v1/asgs/{}/{}/scale", enc(namespace), enc(name));
        let body = serde_json::to_string(&ScaleRequest { desired }).expect("serializes");
        let req = self
            .request(reqwest::Method::POST, &path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(req).await
    }

    /// `POST /v1/asgs/{ns}/{name}/start` (`start = true`) or `/stop`.
    pub async fn set_started(
        &self,
        namespace: &str,
        name: &str,
        start: bool,
    ) -> Result<ChangeResponse> {
        let verb = if start { "start" } else { "stop" };
        let path = format!("/v1/asgs/{}/{}/{verb}", enc(namespace), enc(name));
        self.send(self.request(reqwest::Method::POST, &path)).await
    }

    /// `GET /readyz`: whether the controller has loaded its directory.
    pub async fn ready(&self) -> Result<bool> {
        let resp = self
            .request(reqwest::Method::GET, "/readyz")
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        Ok(resp.status().is_success())
    }
}

/// The body of a streamed answer, read chunk by chunk or line by line.
pub struct Stream {
    resp: reqwest::Response,
    client: Client,
}

impl Stream {
    /// The next chunk of the body; `None` at its end.
    ///
    /// # Errors
    /// A transport error (the connection broke).
    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        self.resp
            .chunk()
            .await
            .map_err(|e| self.client.transport(e))
    }

    /// Reads the body line by line, calling `line` with each (without its `\n`) until the end
    /// or until `line` returns false.
    ///
    /// # Errors
    /// A transport error.
    pub async fn lines(&mut self, mut line: impl FnMut(&str) -> bool) -> Result<()> {
        let mut partial: Vec<u8> = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            partial.extend_from_slice(&chunk);
            while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                let l: Vec<u8> = partial.drain(..=end).collect();
                if !line(String::from_utf8_lossy(&l[..l.len() - 1]).as_ref()) {
                    return Ok(());
                }
            }
        }
        if !partial.is_empty() {
            line(String::from_utf8_lossy(&partial).as_ref());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_skips_unset_values_and_encodes_the_rest() {
        assert_eq!(query(&[("namespace", None)]), "");
        assert_eq!(
            query(&[
                ("namespace", Some("a b")),
                ("group", None),
                ("x", Some("w"))
            ]),
            "?namespace=a%20b&x=w"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_server_and_the_fix() {
        // Bind then drop a listener: the port is free and nothing answers on it.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = Client::new(&format!("http://127.0.0.1:{port}"), None);
        let err = c.list(Kind::AutoScalingGroup, None).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot reach the controller at http://127.0.0.1:{port}: is `ms controller` running?")
        );
    }
}
