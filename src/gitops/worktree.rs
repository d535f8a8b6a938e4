//! The git work tree around a directory: where it is, whether git is busy, whether the status
//! filter is set up for it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{GitError, Result, FILTER};

/// A git work tree, found from a directory inside it.
#[derive(Debug, Clone)]
pub struct WorkTree {
    /// Canonical top level of the work tree (what git's paths are relative to).
    pub top: PathBuf,
    /// This work tree's git directory (`.git`, or `.git/worktrees/NAME` for a linked one): its
    /// `index.lock` and rebase/merge state say whether a git command is under way.
    git_dir: PathBuf,
}

/// How far the status filter is installed for a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterSetup {
    /// `*.yaml` there has `filter=ms-status` and `filter.ms-status.clean` is configured.
    Ready,
    /// No `filter=ms-status` attribute applies to the directory's manifests.
    NoAttribute,
    /// The attribute is there, the command (`git config filter.ms-status.clean`) is not.
    NoCommand,
}

impl WorkTree {
    /// The work tree `dir` is in; `None` when it is in none, or git is not installed or refuses
    /// the repository (another owner: git's `safe.directory`).
    pub fn discover(dir: &Path) -> Option<WorkTree> {
        let out = git_command(dir)
            .args(["rev-parse", "--show-toplevel", "--absolute-git-dir"])
            .stderr(Stdio::piped())
            .output()
            .ok()?;
        if !out.status.success() {
            tracing::debug!(
                dir = %dir.display(),
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "not in a git work tree"
            );
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        let mut lines = text.lines();
        let top = std::fs::canonicalize(lines.next()?).ok()?;
        let git_dir = PathBuf::from(lines.next()?);
        Some(WorkTree { top, git_dir })
    }

    /// A `git` command run at the top of this work tree.
    pub fn git(&self) -> Command {
        git_command(&self.top)
    }

    /// Runs `git args...` with `stdin`, returning its standard output.
    ///
    /// # Errors
    /// git cannot be started, or exits with a failure.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>> {
        let describe = || args.join(" ");
        let mut child = self
            .git()
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| GitError::Spawn {
                args: describe(),
                source,
            })?;
        // Written from another thread: git may fill its output pipe before reading all input.
        let writer = stdin.map(|input| {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            })
        });
        let out = child.wait_with_output().map_err(|source| GitError::Spawn {
            args: describe(),
            source,
        })?;
        if let Some(w) = writer {
            let _ = w.join();
        }
        if !out.status.success() {
            return Err(GitError::Failed {
                args: describe(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    /// True while a git command holds the index (`index.lock`) or a rebase, merge, cherry-pick or
    /// revert is in progress: files are git's until it is done, the writer waits.
    pub fn busy(&self) -> bool {
        [
            "index.lock",
            "rebase-merge",
            "rebase-apply",
            "MERGE_HEAD",
            "CHERRY_PICK_HEAD",
            "REVERT_HEAD",
        ]
        .iter()
        .any(|name| self.git_dir.join(name).exists())
    }

    /// The path of the index file (its identity tells whether someone rewrote it).
    pub(crate) fn index_path(&self) -> PathBuf {
        self.git_dir.join("index")
    }

    /// `path` relative to the top of the work tree, `/`-separated as git prints it; `None` when
    /// it is outside (a symlink's target elsewhere) or not valid UTF-8.
    pub fn relative(&self, path: &Path) -> Option<String> {
        let canonical = std::fs::canonicalize(path).ok().or_else(|| {
            // A file that is gone: its directory still says where it was.
            let parent = std::fs::canonicalize(path.parent()?).ok()?;
            Some(parent.join(path.file_name()?))
        })?;
        let rel = canonical.strip_prefix(&self.top).ok()?;
        let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
        Some(parts?.join("/"))
    }

    /// Whether the status filter applies to the manifests in `dir` and has a command.
    pub fn filter_setup(&self, dir: &Path) -> FilterSetup {
        let Some(rel) = self.relative(dir) else {
            return FilterSetup::NoAttribute;
        };
        let probe = if rel.is_empty() {
            "ms-probe.yaml".to_string()
        } else {
            format!("{rel}/ms-probe.yaml")
        };
        let attr = self
            .run(&["check-attr", "filter", "--", &probe], None)
            .map(|o| String::from_utf8_lossy(&o).trim().to_string())
            .unwrap_or_default();
        if !attr.ends_with(&format!(": filter: {FILTER}")) {
            return FilterSetup::NoAttribute;
        }
        let key = format!("filter.{FILTER}.clean");
        match self.run(&["config", "--get", &key], None) {
            Ok(cmd) if !String::from_utf8_lossy(&cmd).trim().is_empty() => FilterSetup::Ready,
            _ => FilterSetup::NoCommand,
        }
    }
}

/// `git -C dir` with pathspecs taken literally and no inherited repository variables (a
/// controller started from a git hook must still look at its own directory).
fn git_command(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir);
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_COMMON_DIR",
    ] {
        c.env_remove(var);
    }
    c.env("GIT_LITERAL_PATHSPECS", "1");
    c
}
