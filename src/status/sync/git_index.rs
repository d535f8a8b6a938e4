//! The inline writer's side of git: wait while git works, keep the index clean afterwards.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::gitops::{refresh::refresh_status_only, FilterSetup, GitError, WorkTree};

/// How often the filter setup is looked at again (`ms gitops init` run while we watch).
const RECHECK: Duration = Duration::from_secs(30);

/// The git work tree around the watched directory, if there is one.
pub struct GitIndex {
    /// The watched directory.
    dir: PathBuf,
    tree: Option<WorkTree>,
    setup: FilterSetup,
    checked: Instant,
    /// Files written or verified since the last successful refresh.
    pending: BTreeSet<PathBuf>,
}

impl GitIndex {
    /// Looks for a work tree around `dir` and warns when its manifests lack the status filter:
    /// then every status block makes `git status` dirty and `git pull`/`checkout` refuse.
    pub fn discover(dir: &Path) -> GitIndex {
        let tree = WorkTree::discover(dir);
        let setup = match &tree {
            Some(t) => t.filter_setup(dir),
            None => FilterSetup::NoAttribute,
        };
        if let Some(t) = &tree {
            match setup {
                FilterSetup::Ready => info!(
                    top = %t.top.display(),
                    "the manifest directory is in a git work tree with the status filter: status blocks are invisible to git"
                ),
                _ => warn!(
                    top = %t.top.display(),
                    "the manifest directory is in a git work tree without the status filter: status blocks will show as \
                     local changes and git pull/checkout/stash will refuse. Run `ms gitops init {}` (or set \
                     `statusMode: sidecar` in the controller configuration)",
                    dir.display()
                ),
            }
        }
        GitIndex {
            dir: dir.to_path_buf(),
            tree,
            setup,
            checked: Instant::now(),
            pending: BTreeSet::new(),
        }
    }

    /// True while git works in the tree (lock, rebase, merge): files are not to be written now.
    pub fn busy(&self) -> bool {
        self.tree.as_ref().is_some_and(WorkTree::busy)
    }

    /// Notes a manifest whose index entry may need re-arming.
    pub fn touched(&mut self, file: &Path) {
        if self.tree.is_some() {
            self.pending.insert(file.to_path_buf());
        }
    }

    /// Re-arms the index entries of the touched files. `Err(())` when git was busy: call again.
    pub fn refresh(&mut self) -> Result<(), ()> {
        let Some(tree) = &self.tree else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.checked.elapsed() >= RECHECK && self.setup != FilterSetup::Ready {
            self.setup = tree.filter_setup(&self.dir);
            self.checked = Instant::now();
            if self.setup == FilterSetup::Ready {
                info!("the git status filter is installed now; status blocks are invisible to git");
            }
        }
        // Without the filter git compares the raw file: nothing to re-arm.
        if self.setup != FilterSetup::Ready {
            self.pending.clear();
            return Ok(());
        }
        let files: Vec<&Path> = self.pending.iter().map(PathBuf::as_path).collect();
        match refresh_status_only(tree, &files) {
            Ok(rearmed) => {
                if !rearmed.is_empty() {
                    debug!(
                        files = rearmed.len(),
                        "git index re-armed for status-only changes"
                    );
                }
                self.pending.clear();
                Ok(())
            }
            Err(GitError::Busy(_)) => Err(()),
            Err(e) => {
                // Not worth a retry loop: the next write tries again.
                warn!("cannot refresh the git index after writing status: {e}");
                self.pending.clear();
                Ok(())
            }
        }
    }
}
