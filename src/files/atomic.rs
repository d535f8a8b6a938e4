//! Atomic writes: a temporary file renamed over the target, and never over a user's edit.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{io_err, EditError, OwnWrites};

/// What [`write_atomic`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The new content is on disk.
    Written,
    /// The file already had this content; it was not touched (no mtime change, no file event).
    Unchanged,
    /// The file changed since it was read: the user's edit wins, nothing was written.
    UserEdited,
    /// The file no longer exists: nothing was written.
    Gone,
}

/// Removes the temporary file unless the rename consumed it.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

pub(super) fn read_if_exists(path: &Path) -> Result<Option<String>, EditError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Writes `content` to `path` atomically: a hidden temporary file in the same directory
/// (`.<file>.ms-tmp-<random>`, which the watcher ignores) with the original permission bits,
/// fsynced, then renamed over the target. A symlinked target is written through the link.
///
/// `expected_current` is what the caller read and edited. If the file differs from it, just
/// before the rename, the user edited it meanwhile: nothing is written and the result is
/// `UserEdited` (their edit wins; the watcher reloads it). With `expected_current = None` the
/// file is overwritten, or created if missing.
///
/// # Guarantees
/// `Unchanged` when the file already holds `content` (not even its mtime changes); `Gone` when the
/// file vanished (with `expected_current` given). Readers never see a half-written file.
///
/// # Errors
/// [`EditError::ReadOnly`] when the existing file has no write permission bits (a rename would
/// replace it anyway: the check is ours), and I/O failures.
///
/// # Caveats
/// The re-read and the rename are two system calls: an edit landing between them (microseconds)
/// is overwritten.
pub fn write_atomic(
    path: &Path,
    content: &str,
    expected_current: Option<&str>,
) -> Result<WriteOutcome, EditError> {
    write_atomic_inner(path, content, expected_current, None, || {})
}

/// [`write_atomic`] that also records `content` in `own` (before the rename), so the watcher
/// recognises the write as the controller's.
///
/// # Errors
/// As [`write_atomic`].
pub fn write_atomic_recorded(
    path: &Path,
    content: &str,
    expected_current: Option<&str>,
    own: &OwnWrites,
) -> Result<WriteOutcome, EditError> {
    write_atomic_inner(path, content, expected_current, Some(own), || {})
}

pub(super) fn write_atomic_inner(
    path: &Path,
    content: &str,
    expected_current: Option<&str>,
    own: Option<&OwnWrites>,
    before_commit: impl FnOnce(),
) -> Result<WriteOutcome, EditError> {
    let target = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::canonicalize(path).map_err(io_err("resolve", path))?
        }
        _ => path.to_path_buf(),
    };
    let current = read_if_exists(&target)?;
    match (&current, expected_current) {
        (None, Some(_)) => return Ok(WriteOutcome::Gone),
        (Some(c), _) if c == content => return Ok(WriteOutcome::Unchanged),
        (Some(c), Some(e)) if c != e => return Ok(WriteOutcome::UserEdited),
        _ => {}
    }
    let permissions = match current {
        Some(_) => Some(
            fs::metadata(&target)
                .map_err(io_err("stat", &target))?
                .permissions(),
        ),
        None => None,
    };
    if permissions.as_ref().is_some_and(|p| p.readonly()) {
        return Err(EditError::ReadOnly { path: target });
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temp = TempFile {
        path: dir.join(format!(".{name}.ms-tmp-{:016x}", rand::random::<u64>())),
        armed: true,
    };
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp.path)
            .map_err(io_err("create", &temp.path))?;
        f.write_all(content.as_bytes())
            .map_err(io_err("write", &temp.path))?;
        if let Some(p) = permissions {
            f.set_permissions(p).map_err(io_err("chmod", &temp.path))?;
        }
        f.sync_all().map_err(io_err("fsync", &temp.path))?;
    }
    before_commit();
    let now = read_if_exists(&target)?;
    if let Some(expected) = expected_current {
        match &now {
            None => return Ok(WriteOutcome::Gone),
            Some(n) if n != expected => return Ok(WriteOutcome::UserEdited),
            Some(_) => {}
        }
    }
    if let Some(own) = own {
        own.record(path, content);
    }
    fs::rename(&temp.path, &target).map_err(io_err("rename into", &target))?;
    temp.armed = false;
    // Make the rename itself durable; failing to fsync a directory is not worth an error.
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(WriteOutcome::Written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::fixtures::*;
    use crate::files::splice_status;

    #[test]
    fn a_user_edit_between_read_and_rename_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yaml");
        fs::write(&path, FILE).unwrap();
        let new = splice_status(FILE, 1, Some(BLOCK)).unwrap();
        let user = FILE.replace("maxSize: 4", "maxSize: 8");
        let out = write_atomic_inner(&path, &new, Some(FILE), None, || {
            fs::write(&path, &user).unwrap();
        })
        .unwrap();
        assert_eq!(out, WriteOutcome::UserEdited);
        assert_eq!(fs::read_to_string(&path).unwrap(), user);
        assert!(no_temp_files(dir.path()));
        // A stale expectation is caught before anything is written.
        assert_eq!(
            write_atomic(&path, &new, Some(FILE)).unwrap(),
            WriteOutcome::UserEdited
        );
        // The file vanishing between read and rename.
        fs::write(&path, FILE).unwrap();
        let out = write_atomic_inner(&path, &new, Some(FILE), None, || {
            fs::remove_file(&path).unwrap();
        })
        .unwrap();
        assert_eq!(out, WriteOutcome::Gone);
        assert!(!path.exists());
        assert!(no_temp_files(dir.path()));
    }

    #[test]
    fn write_atomic_creates_overwrites_and_leaves_equal_content_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.yaml");
        assert_eq!(
            write_atomic(&path, "a: 1\n", Some("")).unwrap(),
            WriteOutcome::Gone
        );
        assert_eq!(
            write_atomic(&path, "a: 1\n", None).unwrap(),
            WriteOutcome::Written
        );
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            write_atomic(&path, "a: 1\n", None).unwrap(),
            WriteOutcome::Unchanged
        );
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
        assert_eq!(
            write_atomic(&path, "a: 2\n", None).unwrap(),
            WriteOutcome::Written
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "a: 2\n");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_manifest_is_written_through_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.yaml");
        let link = dir.path().join("link.yaml");
        fs::write(&real, "a: 1\n").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(
            write_atomic(&link, "a: 2\n", Some("a: 1\n")).unwrap(),
            WriteOutcome::Written
        );
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "a: 2\n");
    }
}
