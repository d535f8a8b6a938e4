//! Inline status: one `status:` block per group, in its own manifest document.
//!
//! # Rules
//! - Level-triggered: the blocks wanted now are spliced into the file as it is now; the file is
//!   written only when that changes it, whoever removed or changed a block (git, an editor,
//!   `cp`).
//! - One read, one parse and at most one atomic write per file per flush, however many groups
//!   it holds.
//! - Never into a file that fails to parse (the user is editing it), a read-only file, or a
//!   file outside the watched directory (a symlink's target elsewhere): those are reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::problems::Reason;
use super::FileOutcome;
use crate::files::{self, EditError, OwnWrites, WriteOutcome};
use crate::manifest::{Kind, ObjectKey};

/// Writes status blocks into the manifests of one watched directory.
pub struct InlineWriter {
    /// The watched directory, canonical: nothing outside it is ever written.
    dir: PathBuf,
    /// Our own writes, so a file event caused by one is not verified again.
    own: Arc<OwnWrites>,
}

impl InlineWriter {
    pub fn new(dir: PathBuf, own: Arc<OwnWrites>) -> Self {
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        InlineWriter { dir, own }
    }

    /// Brings the status blocks of `file` in line with `wanted` (rendered blocks by group).
    ///
    /// `disk_only`: the flush looks at this file only because it changed on disk; when it holds
    /// exactly what we last wrote there, nothing needs a look (our wanted statuses did not
    /// change either, or the file would be dirty for that reason too).
    pub fn sync_file(
        &self,
        file: &Path,
        wanted: &BTreeMap<ObjectKey, Arc<str>>,
        disk_only: bool,
    ) -> FileOutcome {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return FileOutcome::Gone,
            Err(e) => {
                return FileOutcome::Problem(
                    Reason::WriteFailed,
                    format!("cannot read {}: {e}", file.display()),
                )
            }
        };
        if wanted.is_empty() || (disk_only && self.own.is_own(file, &text)) {
            return FileOutcome::Unchanged;
        }
        // A file with errors is the user's work in progress: never touched. The snapshot may
        // lag the disk (debounce), so this is checked on the text we would edit.
        let parsed = crate::manifest::parse_file(file, &text);
        if !parsed.errors.is_empty() {
            return FileOutcome::Skipped;
        }
        let blocks: BTreeMap<usize, Option<String>> = parsed
            .objects
            .iter()
            .filter(|o| o.object.kind() == Kind::AutoScalingGroup)
            .filter_map(|o| {
                let block = wanted.get(&o.object.key())?;
                Some((o.doc_index, Some(block.to_string())))
            })
            .collect();
        let (new, failed) = files::splice_statuses(&text, &blocks);
        let cannot_edit = failed
            .first()
            .map(|(i, e)| format!("{}: document {}: {e}", file.display(), i + 1));
        if new == text {
            return match cannot_edit {
                Some(m) => FileOutcome::Problem(Reason::CannotEdit, m),
                None => FileOutcome::Unchanged,
            };
        }
        if let Some(target) = self.outside(file) {
            return FileOutcome::Problem(
                Reason::OutsideWatchedDirectory,
                format!(
                    "status is not written: {} is a symlink to {}, outside the watched directory {} \
                     (the controller writes nothing there; set `statusMode: sidecar` for status in files)",
                    file.display(),
                    target.display(),
                    self.dir.display()
                ),
            );
        }
        match files::write_atomic_recorded(file, &new, Some(&text), &self.own) {
            Ok(WriteOutcome::Written) => match cannot_edit {
                Some(m) => FileOutcome::WrittenWithProblem(Reason::CannotEdit, m),
                None => FileOutcome::Written,
            },
            Ok(WriteOutcome::Unchanged) => FileOutcome::Unchanged,
            Ok(WriteOutcome::UserEdited) => FileOutcome::UserEdited,
            Ok(WriteOutcome::Gone) => FileOutcome::Gone,
            Err(e @ EditError::ReadOnly { .. }) => {
                FileOutcome::Problem(Reason::ReadOnly, format!("status is not written: {e}"))
            }
            Err(e) => {
                FileOutcome::Problem(Reason::WriteFailed, format!("status is not written: {e}"))
            }
        }
    }

    /// The real location of `file` when it is outside the watched directory.
    fn outside(&self, file: &Path) -> Option<PathBuf> {
        let real = std::fs::canonicalize(file).ok()?;
        (!real.starts_with(&self.dir)).then_some(real)
    }
}
