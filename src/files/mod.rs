//! Edits of manifest files (status blocks, CLI changes) that keep every other byte as the user wrote it.
//! Used by the status writer ([`crate::status::sync`]) and the API's writes ([`crate::apply`]).
//!
//! The controller writes into files people keep in git, so a status update must never reformat
//! them: comments, key order, quoting, blank lines, other documents, CRLF line endings and a
//! missing final newline all survive. The edits here work on lines, not on a re-serialized YAML
//! tree; [`crate::manifest::yamldoc::split`] finds the documents.
//!
//! # Where a new block goes
//! A new `status:` block (or a new `spec:` field) is inserted right after the last *content* line
//! of its document or block. Trailing blank lines and column-0 comments stay after it, because
//! they usually belong to the next document (`# the web group` just above a `---`). Removing the
//! block afterwards gives back the original bytes exactly.
//!
//! # Caveat
//! Blank lines that end a keep-chomped block scalar (`|+`) as the very last value of a document
//! move below an inserted status block, which drops them from that scalar's value.
//!
//! # Layout
//! One file per concern; this root holds the error type and re-exports what the rest of the
//! crate calls (`crate::files::splice_status`, `crate::files::write_atomic`, ...).
//! - `lines`: the line model every edit builds on (lines with byte ranges, top-level blocks,
//!   line endings).
//! - `status_block`: the `status:` block: [`render_status`], [`splice_status`],
//!   [`splice_statuses`], [`strip_statuses`] (the git clean filter).
//! - `documents`: whole documents: [`replace_document`], [`remove_document`],
//!   [`append_document`].
//! - `spec_field`: one scalar under `spec:` ([`set_spec_field`]).
//! - `identity`: what a document says it is ([`doc_identity`]).
//! - `atomic`: [`write_atomic`] (temporary file, rename, user edit wins) and [`WriteOutcome`].
//! - `own_writes`: [`OwnWrites`], so the watcher tells the controller's writes from the user's.
//! - `status_write`: [`write_status`], one checked status write (identity, validity, splice,
//!   atomic write).

use std::io;
use std::path::{Path, PathBuf};

mod atomic;
mod documents;
#[cfg(test)]
mod fixtures;
mod identity;
mod lines;
mod own_writes;
mod spec_field;
mod status_block;
mod status_write;

pub use atomic::{write_atomic, write_atomic_recorded, WriteOutcome};
pub use documents::{append_document, remove_document, replace_document};
pub use identity::doc_identity;
pub use own_writes::OwnWrites;
pub use spec_field::set_spec_field;
pub use status_block::{render_status, splice_status, splice_statuses, strip_statuses};
pub use status_write::{write_status, write_status_recorded};

/// Why an edit could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("document {index} does not exist (the file has {count})")]
    NoSuchDocument { index: usize, count: usize },
    #[error(
        "document {index} is a flow mapping (`{{...}}`); write it in block style so the controller can edit it"
    )]
    FlowMapping { index: usize },
    #[error("document {index} is not a mapping")]
    NotAMapping { index: usize },
    #[error("document {index} holds nothing but comments")]
    EmptyDocument { index: usize },
    #[error("document {index} has no top-level `spec:` block")]
    NoSpec { index: usize },
    #[error("`spec.{field}` is not a plain scalar on one line; edit it by hand")]
    NotScalar { field: String },
    #[error("invalid value for `spec.{field}`: {reason}")]
    InvalidValue { field: String, reason: String },
    #[error("not a `status:` block: {0}")]
    InvalidBlock(String),
    /// The file has no write permission bits: its owner made it read-only on purpose (`chmod
    /// 444`), so neither status nor CLI edits go into it, even though a rename could.
    #[error("{} is read-only; the controller does not write into read-only manifests (make it writable, or set `statusMode: sidecar`)", path.display())]
    ReadOnly { path: PathBuf },
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> EditError + 'a {
    move |source| EditError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
