//! Sidecar status: a parallel tree of `*.status.yaml` files, for repositories that must never be
//! written.
//!
//! The status of the groups in `<dir>/a/web.yaml` goes to `<statusDir>/a/web.status.yaml`
//! (`web.yml` → `web.status.yml`): one document per group, `apiVersion`, `kind`, `metadata`
//! and `status`, in the order of their names. A sidecar whose manifest no longer holds a group
//! is removed; only files that start with our header are ever removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::problems::Reason;
use super::FileOutcome;
use crate::files::{self, WriteOutcome};
use crate::manifest::{Kind, ObjectKey, API_VERSION};

/// First line of every sidecar file: what it is, and that it is ours to rewrite or remove.
const HEADER: &str = "# Status written by microscaler (statusMode: sidecar) for ";

/// The sidecar tree of one watched directory.
pub struct Sidecar {
    /// The watched directory (manifest paths are relative to it).
    dir: PathBuf,
    /// Root of the sidecar tree.
    root: PathBuf,
}

impl Sidecar {
    pub fn new(dir: PathBuf, root: PathBuf) -> Self {
        Sidecar { dir, root }
    }

    /// The sidecar of `manifest`; `None` for a path outside the watched directory.
    pub fn path_for(&self, manifest: &Path) -> Option<PathBuf> {
        let rel = manifest.strip_prefix(&self.dir).ok()?;
        let name = rel.file_name()?.to_str()?;
        let sidecar = if let Some(stem) = name.strip_suffix(".yaml") {
            format!("{stem}.status.yaml")
        } else if let Some(stem) = name.strip_suffix(".yml") {
            format!("{stem}.status.yml")
        } else {
            format!("{name}.status.yaml")
        };
        Some(self.root.join(rel).with_file_name(sidecar))
    }

    /// The content of the sidecar of `manifest` for `wanted` (rendered blocks by group).
    pub fn render(&self, manifest: &Path, wanted: &BTreeMap<ObjectKey, Arc<str>>) -> String {
        let rel = manifest.strip_prefix(&self.dir).unwrap_or(manifest);
        let mut out = format!("{HEADER}{}; the controller rewrites it.\n", rel.display());
        for (i, (key, block)) in wanted.iter().enumerate() {
            if i > 0 {
                out.push_str("---\n");
            }
            out.push_str(&format!(
                "apiVersion: {API_VERSION}\nkind: {}\nmetadata:\n  name: {}\n  namespace: {}\n{block}",
                key.kind, key.name, key.namespace
            ));
        }
        out
    }

    /// Brings the sidecar of `manifest` in line with `wanted`: written when it differs, removed
    /// when no group is left.
    pub fn sync_file(
        &self,
        manifest: &Path,
        wanted: &BTreeMap<ObjectKey, Arc<str>>,
    ) -> FileOutcome {
        let Some(path) = self.path_for(manifest) else {
            return FileOutcome::Skipped;
        };
        if wanted.is_empty() {
            return match remove_ours(&path) {
                Ok(true) => FileOutcome::Written,
                Ok(false) => FileOutcome::Unchanged,
                Err(e) => FileOutcome::Problem(
                    Reason::WriteFailed,
                    format!("cannot remove the status file {}: {e}", path.display()),
                ),
            };
        }
        let content = self.render(manifest, wanted);
        if let Some(parent) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(parent) {
                return FileOutcome::Problem(
                    Reason::WriteFailed,
                    format!(
                        "status is not written: cannot create {}: {e}",
                        parent.display()
                    ),
                );
            }
        }
        match files::write_atomic(&path, &content, None) {
            Ok(WriteOutcome::Written) => FileOutcome::Written,
            Ok(_) => FileOutcome::Unchanged,
            Err(e) => FileOutcome::Problem(
                match e {
                    files::EditError::ReadOnly { .. } => Reason::ReadOnly,
                    _ => Reason::WriteFailed,
                },
                format!("status is not written: {e}"),
            ),
        }
    }

    /// Removes every sidecar of ours that belongs to none of `live` (the manifests that hold
    /// groups now): left behind by manifests deleted while the controller was not running.
    pub fn remove_stale(&self, live: &[PathBuf]) -> usize {
        let keep: std::collections::BTreeSet<PathBuf> =
            live.iter().filter_map(|m| self.path_for(m)).collect();
        let mut removed = 0;
        for path in files_below(&self.root) {
            if !keep.contains(&path) && remove_ours(&path).unwrap_or(false) {
                removed += 1;
            }
        }
        removed
    }

    /// The status of every group in the tree, as last written (seeds activities after a restart).
    pub fn load(&self) -> BTreeMap<ObjectKey, serde_json::Value> {
        let mut out = BTreeMap::new();
        for path in files_below(&self.root) {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if !text.starts_with(HEADER) {
                continue;
            }
            for span in crate::manifest::yamldoc::split(&text) {
                let Ok(v) = serde_yaml_ng::from_str::<serde_json::Value>(&text[span.body]) else {
                    continue;
                };
                let (Some(name), Some(ns), Some(status)) = (
                    v["metadata"]["name"].as_str(),
                    v["metadata"]["namespace"].as_str(),
                    v.get("status"),
                ) else {
                    continue;
                };
                out.insert(
                    ObjectKey::new(Kind::AutoScalingGroup, ns, name),
                    status.clone(),
                );
            }
        }
        out
    }
}

/// Removes `path` if it is a sidecar of ours; `Ok(false)` when there was nothing to remove.
fn remove_ours(path: &Path) -> std::io::Result<bool> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.starts_with(HEADER) => {
            std::fs::remove_file(path)?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every `*.status.yaml`/`*.status.yml` below `root`.
fn files_below(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    if name.ends_with(".status.yaml") || name.ends_with(".status.yml") {
                        out.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::AutoScalingGroup, "default", name)
    }

    #[test]
    fn sidecars_mirror_the_manifest_tree_and_come_back_when_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let sc = Sidecar::new(dir.clone(), tmp.path().join("status"));
        let manifest = dir.join("default/web.yaml");
        assert_eq!(
            sc.path_for(&manifest).unwrap(),
            tmp.path().join("status/default/web.status.yaml")
        );
        assert_eq!(
            sc.path_for(&dir.join("a.yml")).unwrap(),
            tmp.path().join("status/a.status.yml")
        );
        assert!(sc.path_for(Path::new("/elsewhere/x.yaml")).is_none());

        let block: Arc<str> = Arc::from("status:\n  current: 2\n");
        let wanted: BTreeMap<ObjectKey, Arc<str>> =
            [(key("web"), block.clone()), (key("api"), block)].into();
        assert!(matches!(
            sc.sync_file(&manifest, &wanted),
            FileOutcome::Written
        ));
        assert!(matches!(
            sc.sync_file(&manifest, &wanted),
            FileOutcome::Unchanged
        ));
        let path = sc.path_for(&manifest).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER), "{text}");
        let docs = crate::manifest::yamldoc::split(&text);
        assert_eq!(docs.len(), 2);
        let loaded = sc.load();
        assert_eq!(loaded[&key("web")]["current"], 2);
        assert_eq!(loaded.len(), 2);
        // Level-triggered: removed by someone, written again.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            sc.sync_file(&manifest, &wanted),
            FileOutcome::Written
        ));
        // No group left: the sidecar goes.
        assert!(matches!(
            sc.sync_file(&manifest, &BTreeMap::new()),
            FileOutcome::Written
        ));
        assert!(!path.exists());
    }

    #[test]
    fn only_our_stale_sidecars_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let sc = Sidecar::new(dir.clone(), tmp.path().join("status"));
        let wanted: BTreeMap<ObjectKey, Arc<str>> =
            [(key("web"), Arc::from("status:\n  current: 1\n"))].into();
        let live = dir.join("live.yaml");
        let gone = dir.join("sub/gone.yaml");
        sc.sync_file(&live, &wanted);
        sc.sync_file(&gone, &wanted);
        let foreign = tmp.path().join("status/notes.status.yaml");
        std::fs::write(&foreign, "mine: true\n").unwrap();
        assert_eq!(sc.remove_stale(std::slice::from_ref(&live)), 1);
        assert!(sc.path_for(&live).unwrap().exists());
        assert!(!sc.path_for(&gone).unwrap().exists());
        assert!(foreign.exists());
    }
}
