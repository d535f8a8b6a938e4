//! One checked status write: the document still is the object, the file still is valid, then an
//! atomic write of the spliced text.
//!
//! This is the one place in `files` that runs the manifest parser: "never into a file with
//! errors" needs the full parse and validation (a misspelt field is only an error to the typed
//! parse), and the same parse says which object each document is, so the identity check reads
//! nothing more.

use std::path::Path;

use super::atomic::{read_if_exists, write_atomic_inner};
use super::{splice_status, EditError, OwnWrites, WriteOutcome};
use crate::manifest::ObjectKey;

/// Writes (or with `None` removes) the `status:` block of the object `identity` in document
/// `doc_index` of `path`.
///
/// Re-reads the file and checks that the document still is that object and that the file is
/// valid (else `UserEdited`: the watcher will reload and the next status goes to the right place,
/// or nowhere while the file has errors), splices, and writes atomically only if the content
/// changes, so git diffs stay quiet.
///
/// # Errors
/// I/O failures and documents that cannot be spliced (see [`splice_status`]).
pub fn write_status(
    path: &Path,
    doc_index: usize,
    identity: &ObjectKey,
    block: Option<&str>,
) -> Result<WriteOutcome, EditError> {
    write_status_inner(path, doc_index, identity, block, None)
}

/// [`write_status`] that also records the written content in `own` (before the rename), so the
/// watcher recognises the write as the controller's.
pub fn write_status_recorded(
    path: &Path,
    doc_index: usize,
    identity: &ObjectKey,
    block: Option<&str>,
    own: &OwnWrites,
) -> Result<WriteOutcome, EditError> {
    write_status_inner(path, doc_index, identity, block, Some(own))
}

fn write_status_inner(
    path: &Path,
    doc_index: usize,
    identity: &ObjectKey,
    block: Option<&str>,
    own: Option<&OwnWrites>,
) -> Result<WriteOutcome, EditError> {
    let Some(text) = read_if_exists(path)? else {
        return Ok(WriteOutcome::Gone);
    };
    // A file that does not parse or validate is the user's work in progress and is never
    // touched, even when the loaded snapshot still has its previous, valid version: the snapshot
    // lags the disk (debounce), so a typo saved just before a status write would otherwise get a
    // status block spliced into it. A valid file whose document `doc_index` is another object
    // (documents moved, renamed) was edited too: the next status goes to the right place.
    let parsed = crate::manifest::parse_file(path, &text);
    let same_object = parsed
        .objects
        .iter()
        .any(|o| o.doc_index == doc_index && o.object.key() == *identity);
    if !parsed.errors.is_empty() || !same_object {
        return Ok(WriteOutcome::UserEdited);
    }
    let new = splice_status(&text, doc_index, block)?;
    if new == text {
        return Ok(WriteOutcome::Unchanged);
    }
    write_atomic_inner(path, &new, Some(&text), own, || {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::fixtures::*;
    use std::fs;

    use crate::files::write_atomic;

    #[cfg(unix)]
    #[test]
    fn a_read_only_file_is_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yaml");
        let file = valid_file();
        fs::write(&path, &file).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        let err = write_status(&path, 1, &key(), Some(BLOCK)).unwrap_err();
        assert!(matches!(err, EditError::ReadOnly { .. }), "{err}");
        assert!(err.to_string().contains("read-only"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), file);
        assert_eq!(mode(&path), 0o444);
        assert!(no_temp_files(dir.path()));
        // Content that is already there is no write at all.
        assert_eq!(
            write_atomic(&path, &file, Some(&file)).unwrap(),
            WriteOutcome::Unchanged
        );
    }

    #[cfg(unix)]
    #[test]
    fn write_status_preserves_the_mode_and_writes_only_changes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yaml");
        let file = valid_file();
        let file = file.as_str();
        fs::write(&path, file).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let own = OwnWrites::new();
        let out = write_status_recorded(&path, 1, &key(), Some(BLOCK), &own).unwrap();
        assert_eq!(out, WriteOutcome::Written);
        let written = fs::read_to_string(&path).unwrap();
        assert_eq!(written, splice_status(file, 1, Some(BLOCK)).unwrap());
        assert!(own.is_own(&path, &written));
        assert!(!own.is_own(&path, file));
        assert_eq!(mode(&path), 0o640);
        assert!(no_temp_files(dir.path()));
        assert_eq!(
            write_status(&path, 1, &key(), Some(BLOCK)).unwrap(),
            WriteOutcome::Unchanged
        );
        // Wrong document for this identity: the file changed under us.
        assert_eq!(
            write_status(&path, 0, &key(), Some(BLOCK)).unwrap(),
            WriteOutcome::UserEdited
        );
        assert_eq!(
            write_status(&path, 1, &key(), None).unwrap(),
            WriteOutcome::Written
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), file);
        fs::remove_file(&path).unwrap();
        assert_eq!(
            write_status(&path, 1, &key(), Some(BLOCK)).unwrap(),
            WriteOutcome::Gone
        );
    }

    #[test]
    fn a_file_with_errors_never_gets_a_status_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yaml");
        // Saved by the user after the controller loaded the valid version, before the status
        // write: the document is still the group, but the file no longer validates.
        let typo = valid_file().replace("maxSize: 4", "maxSise: 4");
        fs::write(&path, &typo).unwrap();
        let own = OwnWrites::new();
        assert_eq!(
            write_status_recorded(&path, 1, &key(), Some(BLOCK), &own).unwrap(),
            WriteOutcome::UserEdited
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), typo);
        assert!(no_temp_files(dir.path()));
    }
}
