//! `ms gitops init DIR`: installs the status filter for a watched directory in its git checkout.
//!
//! Writes the attribute into the repository's own `info/attributes` (not a tracked
//! `.gitattributes`: the checkout stays exactly as committed, and `git status` shows nothing
//! new), sets `filter.ms-status.clean` in the repository's configuration, and re-arms the index
//! entries of manifests that already carry status blocks so `git status` is clean at once.
//! Running it again changes nothing.

use std::path::{Path, PathBuf};

use super::refresh::refresh_status_only;
use super::{GitError, Result, WorkTree, FILTER};

/// What `init` did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Top of the work tree.
    pub top: PathBuf,
    /// The attributes file written (`.git/info/attributes`).
    pub attributes: PathBuf,
    /// Attribute lines added (empty when they were there already).
    pub added: Vec<String>,
    /// The clean command now configured.
    pub command: String,
    /// Manifests whose status blocks git no longer reports.
    pub rearmed: usize,
}

/// The clean command for the running `ms` binary: its absolute path, shell-quoted (git runs
/// filters through the shell), then `strip-status`.
pub fn default_command() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .unwrap_or_else(|| "ms".to_string());
    format!("{} strip-status", shell_quote(&exe))
}

/// Installs the filter for `dir` with `command` as the clean command.
///
/// # Errors
/// `dir` is not in a git work tree; the attributes file or the configuration cannot be written.
pub fn init(dir: &Path, command: &str) -> Result<Report> {
    let tree = WorkTree::discover(dir).ok_or_else(|| GitError::NotAWorkTree(dir.to_path_buf()))?;
    let rel = tree
        .relative(dir)
        .ok_or_else(|| GitError::NotAWorkTree(dir.to_path_buf()))?;
    let attributes = PathBuf::from(
        String::from_utf8_lossy(&tree.run(&["rev-parse", "--git-path", "info/attributes"], None)?)
            .trim()
            .to_string(),
    );
    let attributes = if attributes.is_absolute() {
        attributes
    } else {
        tree.top.join(attributes)
    };
    let existing = match std::fs::read_to_string(&attributes) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(GitError::Io {
                action: "read",
                path: attributes,
                source,
            })
        }
    };
    let wanted = attribute_lines(&rel);
    let added: Vec<String> = wanted
        .into_iter()
        .filter(|l| !existing.lines().any(|e| e.trim() == l))
        .collect();
    if !added.is_empty() {
        let mut text = existing.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(
            "# microscaler: status blocks are the controller's, invisible to git (ms gitops init)\n",
        );
        for l in &added {
            text.push_str(l);
            text.push('\n');
        }
        if let Some(parent) = attributes.parent() {
            std::fs::create_dir_all(parent).map_err(|source| GitError::Io {
                action: "create",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&attributes, text).map_err(|source| GitError::Io {
            action: "write",
            path: attributes.clone(),
            source,
        })?;
    }
    tree.run(
        &[
            "config",
            "--local",
            &format!("filter.{FILTER}.clean"),
            command,
        ],
        None,
    )?;
    let manifests = manifest_files(dir);
    let paths: Vec<&Path> = manifests.iter().map(PathBuf::as_path).collect();
    let rearmed = refresh_status_only(&tree, &paths)?.len();
    Ok(Report {
        top: tree.top.clone(),
        attributes,
        added,
        command: command.to_string(),
        rearmed,
    })
}

/// `filter=ms-status` for `*.yaml` and `*.yml` at any depth under `rel` (the watched directory
/// relative to the top; empty for the top itself): never for YAML elsewhere in the repository.
fn attribute_lines(rel: &str) -> Vec<String> {
    ["yaml", "yml"]
        .iter()
        .map(|ext| {
            let pattern = if rel.is_empty() {
                format!("*.{ext}")
            } else {
                format!("{}/**/*.{ext}", escape_pattern(rel))
            };
            format!("{} filter={FILTER}", quote_pattern(&pattern))
        })
        .collect()
}

/// Glob characters in a directory name match themselves.
fn escape_pattern(rel: &str) -> String {
    let mut out = String::with_capacity(rel.len());
    for c in rel.chars() {
        if matches!(c, '*' | '?' | '[' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Patterns with spaces are written C-style quoted, as gitattributes allows.
fn quote_pattern(p: &str) -> String {
    if p.contains([' ', '\t', '"']) {
        format!("\"{}\"", p.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        p.to_string()
    }
}

/// `'text'` for `sh`, with embedded single quotes closed and reopened.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Every `*.yaml`/`*.yml` below `dir`, hidden directories skipped (like the watcher).
fn manifest_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) if name.ends_with(".yaml") || name.ends_with(".yml") => out.push(path),
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

    #[test]
    fn attributes_cover_only_the_watched_directory() {
        assert_eq!(
            attribute_lines(""),
            vec!["*.yaml filter=ms-status", "*.yml filter=ms-status"]
        );
        assert_eq!(
            attribute_lines("deploy/ms"),
            vec![
                "deploy/ms/**/*.yaml filter=ms-status",
                "deploy/ms/**/*.yml filter=ms-status"
            ]
        );
        assert_eq!(
            attribute_lines("my dir/[x]")[0],
            "\"my dir/\\\\[x]/**/*.yaml\" filter=ms-status"
        );
    }

    #[test]
    fn commands_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("/a b/ms"), "'/a b/ms'");
        assert_eq!(shell_quote("/it's/ms"), "'/it'\\''s/ms'");
        assert!(default_command().ends_with(" strip-status"));
    }
}
