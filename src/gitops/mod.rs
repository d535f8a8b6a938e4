//! Git work trees as watched directories: status blocks invisible to git, git never refused.
//!
//! The controller writes `status:` blocks into manifests that people keep in git. Two git
//! mechanisms make that invisible (measured facts in the issue notes, git 2.39 and 2.47):
//!
//! 1. A **clean filter** (`ms strip-status`, attribute `filter=ms-status` on the watched
//!    directory's `*.yaml`/`*.yml`) removes the blocks before git compares or stores a file, so
//!    `git diff`, `git add` and commits never see them.
//! 2. Git compares the **size in the index** with the file before it runs any filter, so a file
//!    whose only change is a status block still looks modified and `git checkout`/`pull`/
//!    `stash` refuse. [`refresh::refresh_status_only`] re-arms those index entries (same blob, stat
//!    data cleared) and lets git refresh them through the filter; it never stages content.
//!
//! [`WorkTree`] finds the work tree of a directory and says when git is busy (`index.lock`, a
//! rebase or merge in progress), so the writer waits instead of racing a git command.
//! [`init`] installs both halves with one command (`ms gitops init DIR`).
//!
//! Everything here runs the `git` command-line tool: the same git the user runs, no library
//! with its own idea of the index.

pub mod init;
pub mod refresh;
mod worktree;

pub use worktree::{FilterSetup, WorkTree};

/// Name of the filter driver (`filter.ms-status.clean` in git's configuration).
pub const FILTER: &str = "ms-status";

/// Why a git operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git is busy in {0} (another git command holds the index, or a rebase or merge is in progress)")]
    Busy(std::path::PathBuf),
    #[error("failed to run git {args}: {source}")]
    Spawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("git {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("{0} is not inside a git work tree")]
    NotAWorkTree(std::path::PathBuf),
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = GitError> = std::result::Result<T, E>;
