//! The files a change edits: read before planning, located by document identity, planned
//! without I/O, written back only if nobody changed them since they were read.
//!
//! A change is planned over `Files`, the texts read (off the async threads) under the change's
//! file locks. Planning is pure: a file the plan asks for that was not read is recorded as
//! wanted, and the change is planned again with it locked and read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use axum::http::StatusCode;

use super::{ApiError, ApiResult};
use crate::files::{self, EditError, WriteOutcome};
use crate::manifest::{yamldoc, Kind, ObjectKey};

/// A file edit computed before anything is written.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FileEdit {
    /// Content read before the edit (`None`: the file does not exist yet).
    pub original: Option<String>,
    /// `None`: delete the file.
    pub content: Option<String>,
}

/// The files one change works on: what was read, and what the plan made of it.
#[derive(Debug, Default)]
pub(super) struct Files {
    edits: BTreeMap<PathBuf, FileEdit>,
    /// Files that exist but could not be read: an error only if the plan uses them.
    unreadable: BTreeMap<PathBuf, ApiError>,
    /// Files the plan asked for that were not read (not locked): plan again with them.
    wanted: BTreeSet<PathBuf>,
}

impl Files {
    /// Reads `paths` (a missing file reads as `None`). Blocking: call it off the async threads.
    pub fn read(paths: impl IntoIterator<Item = PathBuf>) -> Files {
        let mut files = Files::default();
        for path in paths {
            match read_optional(&path) {
                Ok(original) => {
                    let edit = FileEdit {
                        content: original.clone(),
                        original,
                    };
                    files.edits.insert(path, edit);
                }
                Err(e) => {
                    files.unreadable.insert(path, e);
                }
            }
        }
        files
    }

    /// The text of `path` as read, with the plan's edits so far. A file that was not read is
    /// recorded as wanted and looks absent: the plan that asked for it is thrown away.
    ///
    /// # Errors
    /// 500 when the file exists but could not be read.
    pub fn file(&mut self, path: &Path) -> ApiResult<&mut FileEdit> {
        if let Some(e) = self.unreadable.get(path) {
            return Err(e.clone());
        }
        if !self.edits.contains_key(path) {
            self.wanted.insert(path.to_path_buf());
        }
        Ok(self
            .edits
            .entry(path.to_path_buf())
            .or_insert_with(|| FileEdit {
                original: None,
                content: None,
            }))
    }

    /// Files the plan asked for that were not read.
    pub fn wanted(&self) -> &BTreeSet<PathBuf> {
        &self.wanted
    }

    /// The edits that change something.
    pub fn into_changes(self) -> BTreeMap<PathBuf, FileEdit> {
        let mut edits = self.edits;
        edits.retain(|_, e| e.content != e.original);
        edits
    }
}

/// Reads a file, `None` when it does not exist.
fn read_optional(path: &Path) -> ApiResult<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ApiError::internal(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Names that are safe as a path component (validation allows less; this guards the file system).
pub(super) fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// The kind as it appears in file names created by apply (`autoscaling-group-web.yaml`).
pub fn file_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::LaunchConfiguration => "launch-configuration",
        Kind::AutoScalingGroup => "autoscaling-group",
        Kind::ScalingPolicy => "scaling-policy",
        Kind::LoadBalancer => "load-balancer",
    }
}

/// The file apply creates for a new object: `<dir>/<ns>/<kind>-<name>.yaml`.
pub(super) fn new_object_path(dir: &Path, key: &ObjectKey) -> PathBuf {
    dir.join(&key.namespace)
        .join(format!("{}-{}.yaml", file_kind(key.kind), key.name))
}

/// Index of the document defining `key` in `text`, read leniently (the file may currently be
/// invalid), so a stale document index in the snapshot never decides where to write.
pub(super) fn find_document(text: &str, key: &ObjectKey) -> Option<usize> {
    yamldoc::split(text).iter().position(|d| {
        // Each document's body on its own: one split of the file, not one per document.
        !d.empty
            && files::doc_identity(&text[d.body.clone()], 0).is_some_and(|(kind, ns, name)| {
                Kind::parse(&kind) == Some(key.kind) && ns == key.namespace && name == key.name
            })
    })
}

/// True when no document of `text` holds anything but comments and blank lines.
pub(super) fn only_empty_documents(text: &str) -> bool {
    yamldoc::split(text).iter().all(|d| d.empty)
}

/// The user's text with a final newline.
fn with_newline(text: &str) -> String {
    let mut t = text.to_string();
    if !t.ends_with('\n') {
        t.push('\n');
    }
    t
}

/// Places a new object: its own file `<dir>/<ns>/<kind>-<name>.yaml`, or, if that file exists,
/// into it (replacing a broken version of the same object, else appended).
pub(super) fn create(
    files: &mut Files,
    dir: &Path,
    key: &ObjectKey,
    body_text: &str,
    full_text: &str,
) -> ApiResult<(&'static str, PathBuf)> {
    let path = new_object_path(dir, key);
    let edit = files.file(&path)?;
    let new = match edit.content.as_deref() {
        None => with_newline(full_text),
        Some(text) if only_empty_documents(text) => with_newline(full_text),
        Some(text) => match find_document(text, key) {
            Some(i) => files::replace_document(text, i, body_text),
            None => files::append_document(text, body_text),
        },
    };
    edit.content = Some(new);
    Ok(("created", path))
}

/// Sets `spec.<field>` of document `index` to `value` (JSON, written as one line of YAML).
pub(super) fn set_spec_field(
    text: &str,
    index: usize,
    field: &str,
    value: &serde_json::Value,
) -> Result<String, EditError> {
    // JSON scalars are valid YAML flow scalars; strings get quoted only when they need it.
    let yaml = match value {
        serde_json::Value::String(s)
            if s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            s.clone()
        }
        other => other.to_string(),
    };
    files::set_spec_field(text, index, field, &yaml)
}

/// Writes `content` if the file still holds `expected` (`None`: the file must not exist).
/// `Ok(false)`: someone else changed the file since it was read.
fn write_atomic(path: &Path, content: &str, expected: Option<&str>) -> Result<bool, EditError> {
    if expected.is_none() && path.exists() {
        return Ok(false);
    }
    match files::write_atomic(path, content, expected)? {
        WriteOutcome::Written | WriteOutcome::Unchanged => Ok(true),
        WriteOutcome::UserEdited | WriteOutcome::Gone => Ok(false),
    }
}

/// Writes computed edits. Returns `Ok(false)` when a file changed since it was read (the caller
/// plans again and retries). Blocking: call it off the async threads.
///
/// # Errors
/// 409 for a read-only file, 500 for other I/O errors.
pub(super) fn write_edits(edits: &BTreeMap<PathBuf, FileEdit>) -> ApiResult<bool> {
    for (path, edit) in edits {
        match &edit.content {
            Some(content) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        ApiError::internal(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
                match write_atomic(path, content, edit.original.as_deref()) {
                    Ok(true) => {}
                    Ok(false) => return Ok(false),
                    Err(e @ EditError::ReadOnly { .. }) => {
                        return Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
                    }
                    Err(e) => {
                        return Err(ApiError::internal(format!(
                            "cannot write {}: {e}",
                            path.display()
                        )))
                    }
                }
            }
            None => {
                // Delete only if nobody changed the file since we read it.
                if read_optional(path)? != edit.original {
                    return Ok(false);
                }
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(ApiError::internal(format!(
                            "cannot delete {}: {e}",
                            path.display()
                        )))
                    }
                }
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# shop's objects
apiVersion: microscaler.io/v1
kind: LaunchConfiguration
metadata: {name: web, namespace: shop}
spec: {image: busybox}
---
# comments only
---
apiVersion: microscaler.io/v1
kind: AutoScalingGroup
metadata:
  name: web
  namespace: shop
spec: {launchConfiguration: web, minSize: 1, maxSize: 3}
---
apiVersion: microscaler.io/v1
kind: ScalingPolicy
metadata: {name: web}
spec: [broken
";

    fn key(kind: Kind, ns: &str, name: &str) -> ObjectKey {
        ObjectKey::new(kind, ns, name)
    }

    #[test]
    fn a_document_is_found_by_its_identity_not_its_position() {
        assert_eq!(
            find_document(FILE, &key(Kind::LaunchConfiguration, "shop", "web")),
            Some(0)
        );
        assert_eq!(
            find_document(FILE, &key(Kind::AutoScalingGroup, "shop", "web")),
            Some(2)
        );
        // Same name, other namespace or kind: not it.
        assert_eq!(
            find_document(FILE, &key(Kind::AutoScalingGroup, "default", "web")),
            None
        );
        // A document that does not parse defines nothing.
        assert_eq!(
            find_document(FILE, &key(Kind::ScalingPolicy, "default", "web")),
            None
        );
        // The namespace defaults to `default`.
        let policy = "kind: ScalingPolicy\nmetadata: {name: cpu}\nspec: {}\n";
        assert_eq!(
            find_document(policy, &key(Kind::ScalingPolicy, "default", "cpu")),
            Some(0)
        );
    }

    #[test]
    fn a_new_object_gets_its_own_file_or_joins_the_file_of_that_name() {
        let dir = Path::new("/m");
        let lc = key(Kind::LaunchConfiguration, "shop", "web");
        let path = PathBuf::from("/m/shop/launch-configuration-web.yaml");
        assert_eq!(new_object_path(dir, &lc), path);

        // Not read yet: wanted, and the plan is not to be trusted.
        let mut files = Files::default();
        create(&mut files, dir, &lc, "b", "# mine\nb").unwrap();
        assert_eq!(files.wanted().iter().collect::<Vec<_>>(), [&path]);

        // Absent, or only comments: the user's full text, comments included.
        for before in [None, Some("# nothing here\n")] {
            let mut files = Files::default();
            files.edits.insert(
                path.clone(),
                FileEdit {
                    original: before.map(str::to_string),
                    content: before.map(str::to_string),
                },
            );
            assert_eq!(
                create(&mut files, dir, &lc, "b", "# mine\nb").unwrap(),
                ("created", path.clone())
            );
            assert!(files.wanted().is_empty());
            let changes = files.into_changes();
            assert_eq!(changes[&path].content.as_deref(), Some("# mine\nb\n"));
        }

        // A file of that name holding something else: appended.
        let other = "kind: LaunchConfiguration\nmetadata: {name: other, namespace: shop}\n";
        let mut files = Files::default();
        files.edits.insert(
            path.clone(),
            FileEdit {
                original: Some(other.into()),
                content: Some(other.into()),
            },
        );
        let body = "kind: LaunchConfiguration\nmetadata: {name: web, namespace: shop}\n";
        create(&mut files, dir, &lc, body, body).unwrap();
        let text = files.into_changes()[&path].content.clone().unwrap();
        assert!(text.starts_with(other));
        assert_eq!(find_document(&text, &lc), Some(1));
    }

    #[test]
    fn a_file_that_cannot_be_read_is_an_error_only_for_the_plan_that_uses_it() {
        let dir = tempfile::tempdir().unwrap();
        let (absent, unreadable) = (dir.path().join("absent.yaml"), dir.path().to_path_buf());
        let mut files = Files::read([absent.clone(), unreadable.clone()]);
        assert_eq!(files.file(&absent).unwrap().original, None);
        let e = files.file(&unreadable).unwrap_err();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(e.message.starts_with("cannot read"), "{}", e.message);
        assert!(files.wanted().is_empty());
    }

    #[test]
    fn only_safe_names_become_path_components() {
        for ok in ["web", "team-a", "a_b", "v1.2"] {
            assert!(safe_component(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(!safe_component(bad), "{bad}");
        }
    }

    #[test]
    fn a_write_is_refused_when_the_file_changed_since_it_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns/a.yaml");
        let edit = |original: Option<&str>, content: Option<&str>| {
            BTreeMap::from([(
                path.clone(),
                FileEdit {
                    original: original.map(str::to_string),
                    content: content.map(str::to_string),
                },
            )])
        };
        // Created (with its directory) when it must not exist.
        assert!(write_edits(&edit(None, Some("one\n"))).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        // Someone created it meanwhile: refused.
        assert!(!write_edits(&edit(None, Some("two\n"))).unwrap());
        // Someone changed it meanwhile: refused, for a write and for a deletion.
        assert!(!write_edits(&edit(Some("zero\n"), Some("two\n"))).unwrap());
        assert!(!write_edits(&edit(Some("zero\n"), None)).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        // As read: written, then deleted.
        assert!(write_edits(&edit(Some("one\n"), Some("two\n"))).unwrap());
        assert!(write_edits(&edit(Some("two\n"), None)).unwrap());
        assert!(!path.exists());
    }
}
