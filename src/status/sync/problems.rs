//! Files whose status could not be written, and why: shown by `ms get problems` and, as a
//! `StatusWritten` condition, by `ms describe` of each group in them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::util::unpoisoned::LockExt;

/// Condition type added to a group's status (in the API) while its file cannot take its status.
pub const STATUS_WRITTEN: &str = "StatusWritten";

/// Why status could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// The manifest has no write permission bits.
    ReadOnly,
    /// The manifest is reached through a symlink whose target is outside the watched directory.
    OutsideWatchedDirectory,
    /// A document cannot take a block (a flow mapping, ...).
    CannotEdit,
    /// The file system refused (full disk, read-only mount, permissions of the directory...).
    WriteFailed,
}

/// One file's problem.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteProblem {
    /// The manifest whose groups' status is not written.
    pub file: PathBuf,
    pub reason: Reason,
    pub message: String,
    /// Since when (kept while the problem stays the same).
    pub since: DateTime<Utc>,
}

/// The current write problems, by manifest file: one writer (the status writer), many readers
/// (the API). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct WriteProblems(Arc<Mutex<BTreeMap<PathBuf, WriteProblem>>>);

impl WriteProblems {
    /// Records a problem of `file`; returns true when it is new or different (worth a log line).
    pub fn set(&self, file: &Path, reason: Reason, message: String) -> bool {
        let mut map = self.0.locked();
        if let Some(p) = map.get(file) {
            if p.reason == reason && p.message == message {
                return false;
            }
        }
        map.insert(
            file.to_path_buf(),
            WriteProblem {
                file: file.to_path_buf(),
                reason,
                message,
                since: Utc::now(),
            },
        );
        true
    }

    /// The problem of `file` is over; returns true when there was one.
    pub fn clear(&self, file: &Path) -> bool {
        self.0.locked().remove(file).is_some()
    }

    /// The problem of `file`, if any.
    pub fn get(&self, file: &Path) -> Option<WriteProblem> {
        self.0.locked().get(file).cloned()
    }

    /// Every current problem, by file.
    pub fn all(&self) -> Vec<WriteProblem> {
        self.0.locked().values().cloned().collect()
    }

    /// The files with a problem.
    pub fn files(&self) -> Vec<PathBuf> {
        self.0.locked().keys().cloned().collect()
    }
}

impl WriteProblem {
    /// The problem as a Kubernetes-style condition of a group in the file.
    pub fn condition(&self) -> crate::status::Condition {
        crate::status::Condition {
            type_: STATUS_WRITTEN.to_string(),
            status: "False".to_string(),
            reason: format!("{:?}", self.reason),
            message: self.message.clone(),
            last_transition_time: self.since,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_new_once_and_cleared_once() {
        let p = WriteProblems::default();
        let f = Path::new("/m/web.yaml");
        assert!(p.set(f, Reason::ReadOnly, "read-only".into()));
        let since = p.get(f).unwrap().since;
        assert!(!p.set(f, Reason::ReadOnly, "read-only".into()));
        assert_eq!(p.get(f).unwrap().since, since);
        assert!(p.set(f, Reason::WriteFailed, "disk full".into()));
        assert_eq!(p.all().len(), 1);
        let c = p.get(f).unwrap().condition();
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("StatusWritten", "False", "WriteFailed")
        );
        assert!(p.clear(f));
        assert!(!p.clear(f));
        assert!(p.all().is_empty());
    }
}
