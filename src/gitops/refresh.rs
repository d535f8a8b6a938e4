//! Keeps git's index current for files whose only change is their status blocks.
//!
//! Git decides "modified" from the size and times recorded in the index before it runs any
//! clean filter, so a manifest that gained a status block looks modified although its cleaned
//! content is the committed blob; `git update-index --refresh` does not help (the size differs).
//! An index entry without stat data (what `--index-info` leaves) makes git compare the content
//! through the filter instead, and `--refresh` then records the new stat data.
//!
//! # Guarantees
//! - Only entries whose blob equals the file with its status blocks removed are touched, and
//!   they are set to the blob they already had: nothing is ever staged.
//! - Nothing runs while git is busy ([`WorkTree::busy`]); if the index changed while we looked
//!   (someone ran `git add`), nothing is written and the caller tries again later.
//!
//! # Caveats
//! The content comparison is byte for byte: a repository that converts line endings (`text`,
//! `eol` attributes) on CRLF manifests stores something else than the stripped file, and such
//! files stay "modified" for git (write them with LF, or use `statusMode: sidecar`).

use std::collections::BTreeMap;
use std::path::Path;

use super::{GitError, Result, WorkTree};
use crate::files::strip_statuses;

/// How many paths one git command line carries.
const CHUNK: usize = 200;

/// One index entry at stage 0.
struct IndexEntry {
    mode: String,
    blob: String,
}

/// Re-arms the index entries of `files` (paths in the work tree) that differ from their blob
/// only by status blocks, then refreshes the index. Returns the paths (relative to the top)
/// that were re-armed.
///
/// # Errors
/// [`GitError::Busy`] when git holds the index or the index changed while we looked (try again
/// later); git failures.
pub fn refresh_status_only(tree: &WorkTree, files: &[&Path]) -> Result<Vec<String>> {
    let rels: Vec<String> = files.iter().filter_map(|f| tree.relative(f)).collect();
    if rels.is_empty() {
        return Ok(Vec::new());
    }
    if tree.busy() {
        return Err(GitError::Busy(tree.top.clone()));
    }
    let index_before = index_identity(&tree.index_path());
    let dirty = stat_dirty(tree, &rels)?;
    if dirty.is_empty() {
        return Ok(Vec::new());
    }
    let entries = stage0_entries(tree, &dirty)?;
    let blobs = read_blobs(tree, entries.values().map(|e| e.blob.as_str()))?;
    let mut input = Vec::new();
    let mut rearmed = Vec::new();
    for (rel, entry) in &entries {
        let Some(blob) = blobs.get(&entry.blob) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(tree.top.join(rel)) else {
            continue;
        };
        if strip_statuses(&text).as_bytes() != blob.as_slice() {
            continue; // a real change (or line-ending conversion): git's to report
        }
        input.extend_from_slice(format!("{} {}\t{rel}\0", entry.mode, entry.blob).as_bytes());
        rearmed.push(rel.clone());
    }
    if rearmed.is_empty() {
        return Ok(rearmed);
    }
    // `git add` (or any index write) since we looked: our view of the blobs may be stale.
    if tree.busy() || index_identity(&tree.index_path()) != index_before {
        return Err(GitError::Busy(tree.top.clone()));
    }
    tree.run(&["update-index", "-z", "--index-info"], Some(&input))
        .map_err(|e| busy_or(tree, e))?;
    // `-q`: files with real changes are reported as needing an update, which is not an error.
    tree.run(&["update-index", "-q", "--refresh"], None)
        .map_err(|e| busy_or(tree, e))?;
    Ok(rearmed)
}

/// A failure because another git command took the lock first is "busy", not an error.
fn busy_or(tree: &WorkTree, e: GitError) -> GitError {
    match &e {
        GitError::Failed { stderr, .. } if stderr.contains("index.lock") => {
            GitError::Busy(tree.top.clone())
        }
        _ => e,
    }
}

/// Inode, size and mtime of the index: git replaces the file (lock and rename) on every write.
fn index_identity(path: &Path) -> Option<(u64, u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((ino, m.len(), m.modified().ok()?))
}

/// The paths among `rels` whose stat data differs from the index (or whose content does).
fn stat_dirty(tree: &WorkTree, rels: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for chunk in rels.chunks(CHUNK) {
        let mut args = vec!["diff-files", "--name-only", "-z", "--"];
        args.extend(chunk.iter().map(String::as_str));
        let stdout = tree.run(&args, None)?;
        out.extend(nul_separated(&stdout));
    }
    Ok(out)
}

/// Mode and blob of each path with exactly one index entry, at stage 0 (never a conflict).
fn stage0_entries(tree: &WorkTree, rels: &[String]) -> Result<BTreeMap<String, IndexEntry>> {
    let mut out = BTreeMap::new();
    let mut conflicted = Vec::new();
    for chunk in rels.chunks(CHUNK) {
        let mut args = vec!["ls-files", "-s", "-z", "--"];
        args.extend(chunk.iter().map(String::as_str));
        let stdout = tree.run(&args, None)?;
        for record in nul_separated(&stdout) {
            // `<mode> <blob> <stage>\t<path>`
            let Some((meta, path)) = record.split_once('\t') else {
                continue;
            };
            let mut parts = meta.split(' ');
            let (Some(mode), Some(blob), Some(stage)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if stage != "0" || out.contains_key(path) {
                conflicted.push(path.to_string());
                continue;
            }
            out.insert(
                path.to_string(),
                IndexEntry {
                    mode: mode.to_string(),
                    blob: blob.to_string(),
                },
            );
        }
    }
    for path in conflicted {
        out.remove(&path);
    }
    Ok(out)
}

/// The content of each blob, by name (`git cat-file --batch`).
fn read_blobs<'a>(
    tree: &WorkTree,
    names: impl Iterator<Item = &'a str>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut input = String::new();
    for n in names {
        input.push_str(n);
        input.push('\n');
    }
    let stdout = tree.run(&["cat-file", "--batch"], Some(input.as_bytes()))?;
    let mut out = BTreeMap::new();
    let mut rest = stdout.as_slice();
    while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
        let header = String::from_utf8_lossy(&rest[..nl]).to_string();
        rest = &rest[nl + 1..];
        let mut parts = header.split(' ');
        let (Some(name), Some(kind), Some(size)) = (parts.next(), parts.next(), parts.next())
        else {
            continue; // `<name> missing`
        };
        let Ok(size) = size.parse::<usize>() else {
            break;
        };
        if rest.len() < size {
            break;
        }
        if kind == "blob" {
            out.insert(name.to_string(), rest[..size].to_vec());
        }
        rest = &rest[size..];
        rest = rest.strip_prefix(b"\n").unwrap_or(rest);
    }
    Ok(out)
}

fn nul_separated(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| std::str::from_utf8(s).ok().map(str::to_string))
        .collect()
}
