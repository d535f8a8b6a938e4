//! What the controller remembers about single instances across restarts: scale-in protection
//! and the drains in progress, in one JSON file the controller owns
//! (`<stateDir>/<controllerName>.json`, written atomically at every change), plus the secret
//! that signs each container's self-protection token.
//!
//! # Why a file and not the manifest's status
//! A protection must hold the moment `ms protect` answers, and a drain must resume after a
//! `kill -9`: the status reaches the manifest only after a debounce (and not at all with
//! `statusMode: off`). The user's manifest is never touched; the status shows both
//! (`protectedUntil`, state `draining`).
//!
//! # Restart
//! A drain record names the container, its group, why it goes, and when its drain began. After
//! a restart the group's first pass finds the record, hides the container from planning again
//! and resumes the drain for the time that is left (never a new full drain, never a second
//! victim). A record whose container is gone is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::manifest::ObjectKey;
use crate::util::unpoisoned::LockExt;

/// One protected instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protection {
    pub namespace: String,
    /// The instance's group (protections of a group's gone instances are dropped by its pass).
    pub group: String,
    /// `None`: until unprotected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// `user` (the API) or `instance` (the container's own token).
    pub by: String,
}

impl Protection {
    /// In force at `now`.
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|u| u > now)
    }
}

/// One drain in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    pub namespace: String,
    pub group: String,
    pub name: String,
    pub zone: String,
    /// The activity cause of the termination.
    pub cause: String,
    /// `ScaleIn`, `Rollout`, ... (the planner's reason, for the resumed removal).
    pub reason: String,
    pub since: DateTime<Utc>,
    /// The drain's length when it began (whole seconds).
    pub drain_secs: u64,
}

/// One quarantined instance: stopped, kept, outside capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quarantined {
    pub namespace: String,
    pub group: String,
    pub name: String,
    pub zone: String,
    /// Why it failed.
    pub why: String,
    pub since: DateTime<Utc>,
    /// Removed then.
    pub until: DateTime<Utc>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    #[serde(default)]
    secret: String,
    /// By container name.
    #[serde(default)]
    protections: BTreeMap<String, Protection>,
    /// By container id.
    #[serde(default)]
    drains: BTreeMap<String, Drain>,
    /// By container id.
    #[serde(default)]
    quarantined: BTreeMap<String, Quarantined>,
}

/// The instance state of one controller.
pub struct InstanceState {
    /// `None`: kept in memory only (tests, or a state directory that cannot be written).
    path: Option<PathBuf>,
    stored: Mutex<Stored>,
    /// Drains recorded but not saved yet.
    dirty: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceState")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Default for InstanceState {
    fn default() -> Self {
        InstanceState::in_memory()
    }
}

impl InstanceState {
    /// State kept in memory only, with a fresh secret.
    pub fn in_memory() -> Self {
        InstanceState {
            path: None,
            stored: Mutex::new(Stored {
                secret: new_secret(),
                ..Stored::default()
            }),
            dirty: Default::default(),
        }
    }

    /// The state in `path`, read now (created with a fresh secret when missing).
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or a new one that cannot be written: said with the
    /// path and what to do.
    pub fn open(path: &Path) -> Result<Self, String> {
        let mut stored = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str::<Stored>(&text).map_err(|e| {
                format!(
                    "{}: not a microscaler instance state file ({e}); move it away to start with no protections",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
        };
        let fresh = stored.secret.len() < 32;
        if fresh {
            stored.secret = new_secret();
        }
        let state = InstanceState {
            path: Some(path.to_path_buf()),
            stored: Mutex::new(stored),
            dirty: Default::default(),
        };
        if fresh {
            state.save()?;
        }
        Ok(state)
    }

    /// Writes the state (a temporary file renamed over the old one, mode 0600: it holds the
    /// secret).
    fn save(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        // Held while writing: two saves never interleave in the temporary file, and a later
        // state is never overwritten by an earlier one.
        let stored = self.stored.locked();
        let text = serde_json::to_string_pretty(&*stored).expect("serializable");
        write_private(path, &text).map_err(|e| format!("{}: cannot write: {e}", path.display()))
    }

    fn save_or_warn(&self) {
        if let Err(e) = self.save() {
            warn!("instance state not saved (drains will not resume after a restart): {e}");
        }
    }

    /// The self-protection token of container `name` in `namespace`: an HMAC-SHA256 with the
    /// controller's secret, valid for that one container only.
    pub fn token(&self, namespace: &str, name: &str) -> String {
        let secret = self.stored.locked().secret.clone();
        hex(&hmac_sha256(
            secret.as_bytes(),
            format!("protect\n{namespace}\n{name}").as_bytes(),
        ))
    }

    /// Whether `token` is the self-protection token of `name` in `namespace` (constant time).
    pub fn token_valid(&self, namespace: &str, name: &str, token: &str) -> bool {
        let want = self.token(namespace, name);
        want.len() == token.len()
            && want
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Protects `name` (saved before returning).
    ///
    /// # Errors
    /// The state file cannot be written: the protection is not in force.
    pub fn protect(&self, name: &str, p: Protection) -> Result<(), String> {
        let old = self.stored.locked().protections.insert(name.to_string(), p);
        self.save().inspect_err(|_| {
            let mut st = self.stored.locked();
            match old {
                Some(o) => st.protections.insert(name.to_string(), o),
                None => st.protections.remove(name),
            };
        })
    }

    /// Ends the protection of `name`; returns whether it had one.
    ///
    /// # Errors
    /// The state file cannot be written.
    pub fn unprotect(&self, name: &str) -> Result<bool, String> {
        let had = self.stored.locked().protections.remove(name).is_some();
        if had {
            self.save()?;
        }
        Ok(had)
    }

    /// The protection of `name` in force at `now`.
    pub fn protection(&self, name: &str, now: DateTime<Utc>) -> Option<Protection> {
        self.stored
            .locked()
            .protections
            .get(name)
            .filter(|p| p.active(now))
            .cloned()
    }

    /// Drops the protections of `group` whose instance is not in `alive` or that expired.
    pub fn prune_protections(&self, group: &ObjectKey, alive: &[&str], now: DateTime<Utc>) {
        let changed = {
            let mut st = self.stored.locked();
            let before = st.protections.len();
            st.protections.retain(|name, p| {
                !(p.namespace == group.namespace && p.group == group.name)
                    || (alive.contains(&name.as_str()) && p.active(now))
            });
            st.protections.len() != before
        };
        if changed {
            self.save_or_warn();
        }
    }

    /// Records a drain of container `id`, saved by the next [`InstanceState::flush`] (one
    /// write per pass, however many instances it terminates; a failed save is logged, the
    /// drain goes on).
    pub fn drain_started(&self, id: &str, d: Drain) {
        self.stored.locked().drains.insert(id.to_string(), d);
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Saves what [`InstanceState::drain_started`] recorded, if anything.
    pub fn flush(&self) {
        if self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            self.save_or_warn();
        }
    }

    /// Forgets the drain of `id` (its container is gone, or its removal failed and the planner
    /// decides again).
    pub fn drain_ended(&self, id: &str) {
        if self.stored.locked().drains.remove(id).is_some() {
            self.save_or_warn();
        }
    }

    /// Quarantines container `id` (saved; a failed save is logged: after a restart the
    /// stopped container would then be removed as failed).
    pub fn quarantine(&self, id: &str, q: Quarantined) {
        self.stored.locked().quarantined.insert(id.to_string(), q);
        self.save_or_warn();
    }

    /// Ends the quarantine of `id`.
    pub fn release(&self, id: &str) {
        if self.stored.locked().quarantined.remove(id).is_some() {
            self.save_or_warn();
        }
    }

    /// Whether container `id` is quarantined.
    pub fn is_quarantined(&self, id: &str) -> bool {
        self.stored.locked().quarantined.contains_key(id)
    }

    /// The quarantined instances of `group`, oldest first.
    pub fn quarantined_of(&self, group: &ObjectKey) -> Vec<(String, Quarantined)> {
        let mut v: Vec<(String, Quarantined)> = self
            .stored
            .locked()
            .quarantined
            .iter()
            .filter(|(_, q)| q.namespace == group.namespace && q.group == group.name)
            .map(|(id, q)| (id.clone(), q.clone()))
            .collect();
        v.sort_by(|a, b| a.1.since.cmp(&b.1.since).then(a.0.cmp(&b.0)));
        v
    }

    /// The drains recorded in `namespace` (every group), by container id.
    pub fn drains_in(&self, namespace: &str) -> Vec<(String, Drain)> {
        self.stored
            .locked()
            .drains
            .iter()
            .filter(|(_, d)| d.namespace == namespace)
            .map(|(id, d)| (id.clone(), d.clone()))
            .collect()
    }

    /// The drains recorded for `group`, by container id.
    pub fn drains_of(&self, group: &ObjectKey) -> Vec<(String, Drain)> {
        self.stored
            .locked()
            .drains
            .iter()
            .filter(|(_, d)| d.namespace == group.namespace && d.group == group.name)
            .map(|(id, d)| (id.clone(), d.clone()))
            .collect()
    }
}

/// The state file of controller `name` under `dir`.
pub fn state_path(dir: &Path, controller: &str) -> PathBuf {
    dir.join(format!("{controller}.json"))
}

fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_token_is_valid_for_its_own_instance_only() {
        let s = InstanceState::in_memory();
        let t = s.token("ns", "web-abcde");
        assert!(s.token_valid("ns", "web-abcde", &t));
        assert!(!s.token_valid("ns", "web-fghij", &t));
        assert!(!s.token_valid("other", "web-abcde", &t));
        assert!(!s.token_valid("ns", "web-abcde", ""));
        // Another controller (another secret) does not accept it.
        assert!(!InstanceState::in_memory().token_valid("ns", "web-abcde", &t));
    }

    #[test]
    fn protections_and_drains_survive_a_reopen_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path(), "ctl");
        let now = Utc::now();
        let s = InstanceState::open(&path).unwrap();
        let token = s.token("ns", "web-1");
        let p = |until| Protection {
            namespace: "ns".into(),
            group: "web".into(),
            until,
            by: "user".into(),
        };
        s.protect("web-1", p(None)).unwrap();
        s.protect("web-2", p(Some(now - chrono::Duration::seconds(1))))
            .unwrap();
        s.drain_started(
            "c1",
            Drain {
                namespace: "ns".into(),
                group: "web".into(),
                name: "web-3".into(),
                zone: "a".into(),
                cause: "scale in".into(),
                reason: "ScaleIn".into(),
                since: now,
                drain_secs: 30,
            },
        );
        s.flush();
        drop(s);
        let s = InstanceState::open(&path).unwrap();
        assert_eq!(s.token("ns", "web-1"), token, "the secret is kept");
        assert!(s.protection("web-1", now).is_some());
        assert!(s.protection("web-2", now).is_none(), "expired");
        let key = ObjectKey::new(Kind::AutoScalingGroup, "ns", "web");
        assert_eq!(s.drains_of(&key).len(), 1);
        s.prune_protections(&key, &[], now);
        assert!(s.protection("web-1", now).is_none(), "its instance is gone");
        s.drain_ended("c1");
        assert!(InstanceState::open(&path)
            .unwrap()
            .drains_of(&key)
            .is_empty());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
