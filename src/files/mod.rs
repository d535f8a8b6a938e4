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

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::manifest::yamldoc::{split, DocSpan};
use crate::manifest::ObjectKey;

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

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> EditError + 'a {
    move |source| EditError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Lines

/// One line of the text, with its byte range including the terminator.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    start: usize,
    end: usize,
    /// The line without its `\n` / `\r\n`.
    text: &'a str,
}

impl Line<'_> {
    fn has_terminator(&self) -> bool {
        self.end > self.start + self.text.len()
    }
    fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }
    fn is_comment(&self) -> bool {
        self.text.trim_start().starts_with('#')
    }
    /// Blank or comment: carries no YAML content.
    fn is_filler(&self) -> bool {
        self.is_blank() || self.is_comment()
    }
    /// Content that ends nothing: indented, or a column-0 sequence item (`- x`) of the block above.
    fn continues_block(&self) -> bool {
        self.text.starts_with([' ', '\t'])
            || self.text == "-"
            || self.text.starts_with("- ")
            || self.text.starts_with("-\t")
    }
    /// Not blank and not a column-0 comment (indented comment lines may be block scalar content).
    fn is_content(&self) -> bool {
        !(self.is_blank() || self.text.starts_with('#'))
    }
}

fn lines_in(text: &str, start: usize, end: usize) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut pos = start;
    for raw in text[start..end].split_inclusive('\n') {
        let bare = raw.trim_end_matches('\n').trim_end_matches('\r');
        out.push(Line {
            start: pos,
            end: pos + raw.len(),
            text: bare,
        });
        pos += raw.len();
    }
    out
}

/// The content lines of a document: its body up to an explicit `...` end marker.
fn content_lines<'a>(text: &'a str, span: &DocSpan) -> Vec<Line<'a>> {
    let mut lines = lines_in(text, span.body.start, span.body.end);
    if let Some(i) = lines.iter().position(|l| {
        l.text
            .strip_prefix("...")
            .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t', '#']))
    }) {
        lines.truncate(i);
    }
    lines
}

/// `\r\n` when the file's first line ends with one, else `\n`.
fn newline_of(text: &str) -> &'static str {
    match text.find('\n') {
        Some(i) if i > 0 && text.as_bytes()[i - 1] == b'\r' => "\r\n",
        _ => "\n",
    }
}

/// `text` with `\n` line endings converted to `nl`, trailing line breaks removed.
fn normalized(text: &str, nl: &str) -> String {
    let t = text.replace("\r\n", "\n");
    let t = t.trim_end_matches('\n');
    if nl == "\n" {
        t.to_string()
    } else {
        t.replace('\n', nl)
    }
}

/// True when `line` is the top-level key `key:` (plain or quoted), with nothing or a value after it.
fn is_key_line(line: &str, key: &str) -> bool {
    let rest = [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .find_map(|k| line.strip_prefix(k.as_str()))
        .and_then(|r| r.strip_prefix(':'));
    rest.is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t']))
}

/// Line indexes `[first, end)` of the top-level block `key:` among `lines`: the key line and the
/// lines that continue it. Blank and comment lines are included only when more of the block follows.
fn find_top_level_block(lines: &[Line<'_>], key: &str) -> Option<(usize, usize)> {
    let first = lines.iter().position(|l| is_key_line(l.text, key))?;
    let mut end = first + 1;
    for (j, l) in lines.iter().enumerate().skip(first + 1) {
        if l.is_filler() {
            continue;
        }
        if l.continues_block() {
            end = j + 1;
        } else {
            break;
        }
    }
    Some((first, end))
}

/// Refuses documents whose top level is not a block mapping.
fn check_block_mapping(lines: &[Line<'_>], index: usize) -> Result<(), EditError> {
    let Some(first) = lines.iter().find(|l| !l.is_filler()) else {
        return Ok(());
    };
    let t = first.text.trim_start();
    if t.starts_with('{') {
        return Err(EditError::FlowMapping { index });
    }
    if t.starts_with('[') || t == "-" || t.starts_with("- ") {
        return Err(EditError::NotAMapping { index });
    }
    Ok(())
}

fn doc_span(text: &str, index: usize) -> Result<DocSpan, EditError> {
    let mut docs = split(text);
    let count = docs.len();
    if index >= count {
        return Err(EditError::NoSuchDocument { index, count });
    }
    Ok(docs.swap_remove(index))
}

/// Inserts `block` (already normalized, no final line break) after `line`: when `line` is the
/// last of a file without a final newline, the file keeps having none.
fn insert_after(text: &str, line: &Line<'_>, block: &str, nl: &str) -> String {
    let mut out = String::with_capacity(text.len() + block.len() + 2);
    out.push_str(&text[..line.end]);
    if line.has_terminator() {
        out.push_str(block);
        out.push_str(nl);
    } else {
        out.push_str(nl);
        out.push_str(block);
    }
    out.push_str(&text[line.end..]);
    out
}

// ---------------------------------------------------------------------------------------------
// Status blocks

/// Renders `status` as the YAML block `status:\n  ...\n` (two-space indent, final newline).
///
/// # Panics
/// If `T`'s `Serialize` implementation fails; the status types never do.
pub fn render_status<T: Serialize>(status: &T) -> String {
    #[derive(Serialize)]
    struct Wrap<'a, T> {
        status: &'a T,
    }
    let mut s = serde_yaml_ng::to_string(&Wrap { status }).expect("status types always serialize");
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Checks that `block` is one top-level `status:` entry and returns it normalized to `nl`.
fn status_block(block: &str, nl: &str) -> Result<String, EditError> {
    let b = normalized(block, "\n");
    let lines = lines_in(&b, 0, b.len());
    let ok = lines.first().is_some_and(|l| is_key_line(l.text, "status"))
        && lines[1..]
            .iter()
            .all(|l| l.is_filler() || l.continues_block());
    if !ok {
        let head: String = block.chars().take(40).collect();
        return Err(EditError::InvalidBlock(head));
    }
    Ok(normalized(&b, nl))
}

/// Replaces, inserts or (with `None`) removes the top-level `status:` block of document `doc_index`.
///
/// The existing block is the column-0 `status:` line and every following line that is indented
/// (or a column-0 `- ` item), plus blank/comment lines between them; a new block goes after the
/// document's last content line (see the module docs). The block is written with the file's line
/// endings. Every byte outside the block stays identical.
///
/// # Errors
/// The document does not exist, is a flow mapping (`{...}`) or a sequence, is empty (when
/// inserting), or `block` is not a `status:` block.
pub fn splice_status(
    text: &str,
    doc_index: usize,
    block: Option<&str>,
) -> Result<String, EditError> {
    let span = doc_span(text, doc_index)?;
    let nl = newline_of(text);
    let lines = content_lines(text, &span);
    check_block_mapping(&lines, doc_index)?;
    let block = block.map(|b| status_block(b, nl)).transpose()?;
    Ok(
        match status_edit(text, &lines, doc_index, block.as_deref(), nl)? {
            Some((range, with)) => format!("{}{with}{}", &text[..range.start], &text[range.end..]),
            None => text.to_string(),
        },
    )
}

/// Sets (or with `None` removes) the `status:` block of several documents in one pass over
/// `text`: the cost is one split of the file plus the edited documents, however many there are.
///
/// Returns the new text and the documents that could not be edited (see [`splice_status`] for
/// why); those keep their bytes, the others are edited.
pub fn splice_statuses(
    text: &str,
    blocks: &BTreeMap<usize, Option<String>>,
) -> (String, Vec<(usize, EditError)>) {
    let docs = split(text);
    let nl = newline_of(text);
    let mut out = String::with_capacity(text.len() + 1024);
    let mut copied = 0usize;
    let mut failed = Vec::new();
    for (&index, block) in blocks {
        let edit = docs
            .get(index)
            .ok_or(EditError::NoSuchDocument {
                index,
                count: docs.len(),
            })
            .and_then(|span| {
                let lines = content_lines(text, span);
                check_block_mapping(&lines, index)?;
                let block = block.as_deref().map(|b| status_block(b, nl)).transpose()?;
                status_edit(text, &lines, index, block.as_deref(), nl)
            });
        match edit {
            Ok(Some((range, with))) => {
                // Edits stay inside their own document, and documents come in order.
                debug_assert!(range.start >= copied);
                out.push_str(&text[copied..range.start]);
                out.push_str(&with);
                copied = range.end;
            }
            Ok(None) => {}
            Err(e) => failed.push((index, e)),
        }
    }
    out.push_str(&text[copied..]);
    (out, failed)
}

/// `text` without the `status:` blocks of its microscaler `AutoScalingGroup` documents: what
/// the git clean filter (`ms strip-status`) stores, so the status the controller writes into a
/// checkout is invisible to git.
///
/// Only documents with `apiVersion: microscaler.io/...` and `kind: AutoScalingGroup` are
/// touched (the only ones the controller writes status into); any other document, one that does
/// not parse, or one the editor cannot handle (a flow mapping) keeps every byte. Removing a
/// block the controller inserted gives back the original bytes exactly (see the module docs).
pub fn strip_statuses(text: &str) -> String {
    let blocks: BTreeMap<usize, Option<String>> = split(text)
        .iter()
        .enumerate()
        .filter(|(_, span)| !span.empty && is_microscaler_group(&text[span.body.clone()]))
        .map(|(i, _)| (i, None))
        .collect();
    if blocks.is_empty() {
        return text.to_string();
    }
    splice_statuses(text, &blocks).0
}

fn is_microscaler_group(body: &str) -> bool {
    let Ok(v) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(body) else {
        return false;
    };
    let api = v.get("apiVersion").and_then(|a| a.as_str()).unwrap_or("");
    api.starts_with("microscaler.io/")
        && v.get("kind").and_then(|k| k.as_str()) == Some("AutoScalingGroup")
}

/// The edit of one document (its content `lines`) that puts `block` (already normalized, `None`
/// removes) in place of its top-level `status:` block: the byte range of `text` to replace and
/// what replaces it, or `None` when nothing changes.
fn status_edit(
    text: &str,
    lines: &[Line<'_>],
    doc_index: usize,
    block: Option<&str>,
    nl: &str,
) -> Result<Option<(Range<usize>, String)>, EditError> {
    match (find_top_level_block(lines, "status"), block) {
        (Some((first, end)), block) => {
            let last = &lines[end - 1];
            let mut start = lines[first].start;
            let mut with = String::new();
            match block {
                Some(b) => {
                    with.push_str(b);
                    if last.has_terminator() {
                        with.push_str(nl);
                    }
                }
                None => {
                    // A block at the end of a file without a final newline took the line break
                    // before it: give that back so the file again ends without one.
                    if !last.has_terminator() {
                        start -= if text[..start].ends_with("\r\n") {
                            2
                        } else {
                            1
                        }
                        .min(start);
                    }
                }
            }
            Ok(Some((start..last.end, with)))
        }
        (None, Some(b)) => {
            let last = lines
                .iter()
                .rev()
                .find(|l| l.is_content())
                .ok_or(EditError::EmptyDocument { index: doc_index })?;
            // As `insert_after`: a file without a final newline keeps having none.
            let with = if last.has_terminator() {
                format!("{b}{nl}")
            } else {
                format!("{nl}{b}")
            };
            Ok(Some((last.end..last.end, with)))
        }
        (None, None) => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------------
// Whole documents

/// `new_doc` ready to be placed in a file: leading `---` line dropped, trailing line breaks
/// removed, line endings converted to `nl`.
fn doc_text(new_doc: &str, nl: &str) -> String {
    let d = new_doc.replace("\r\n", "\n");
    let first = d.split_inclusive('\n').next().unwrap_or("");
    let first_bare = first.trim_end_matches('\n');
    let is_bare_marker = first_bare
        .strip_prefix("---")
        .is_some_and(|r| r.trim().is_empty() || r.trim_start().starts_with('#'));
    let body = if is_bare_marker {
        &d[first.len()..]
    } else {
        &d[..]
    };
    normalized(body, nl)
}

/// Replaces document `doc_index` with `new_doc` (a leading `---` in it is dropped). The old
/// document's content is replaced up to its last content line; its `---` line, its trailing
/// blank lines and column-0 comments stay. An index past the end appends the document.
pub fn replace_document(text: &str, doc_index: usize, new_doc: &str) -> String {
    let Ok(span) = doc_span(text, doc_index) else {
        return append_document(text, new_doc);
    };
    let nl = newline_of(text);
    let new = doc_text(new_doc, nl);
    let lines = content_lines(text, &span);
    let start = span.body.start;
    let mut out = String::with_capacity(text.len() + new.len());
    out.push_str(&text[..start]);
    // `--- {a: 1}`: the body starts on the marker line; put the new document on its own line.
    if start > 0 && !text[..start].ends_with('\n') {
        out.push_str(nl);
    }
    out.push_str(&new);
    match lines.iter().rev().find(|l| l.is_content()) {
        Some(last) => {
            if last.has_terminator() {
                out.push_str(nl);
            }
            out.push_str(&text[last.end..]);
        }
        None => {
            out.push_str(nl);
            out.push_str(&text[start..]);
        }
    }
    out
}

/// Removes document `doc_index` and its `---` line. When the first document (which has no `---`
/// line) is removed, the next document's bare `---` line goes with it. If only empty documents
/// (comments, blank lines) remain, the result is the empty string. An index past the end changes
/// nothing.
pub fn remove_document(text: &str, doc_index: usize) -> String {
    let docs = split(text);
    let Some(span) = docs.get(doc_index) else {
        return text.to_string();
    };
    let mut end = span.range.end;
    let has_marker = text[span.range.start..].starts_with("---");
    if doc_index == 0 && !has_marker {
        if let Some(next) = docs.get(1) {
            let marker = lines_in(text, next.range.start, next.range.end)[0];
            // Only a bare `---` (or `--- # comment`) line: `--- {a: 1}` carries content.
            if next.body.start >= marker.end {
                end = marker.end;
            }
        }
    }
    let out = format!("{}{}", &text[..span.range.start], &text[end..]);
    if split(&out).iter().all(|d| d.empty) {
        String::new()
    } else {
        out
    }
}

/// Appends `new_doc` as a new document, adding a final newline to the file and a `---` line
/// when the last document has content. Into an empty (or blank) text, the document alone.
pub fn append_document(text: &str, new_doc: &str) -> String {
    let nl = newline_of(text);
    let new = doc_text(new_doc, nl);
    if text.trim().is_empty() {
        return format!("{new}{nl}");
    }
    let mut out = text.to_string();
    if !out.ends_with('\n') {
        out.push_str(nl);
    }
    let docs = split(text);
    let last = docs.last().expect("split always returns a document");
    let ended =
        lines_in(text, last.body.start, last.body.end).len() != content_lines(text, last).len();
    if !last.empty || ended {
        out.push_str("---");
        out.push_str(nl);
    }
    out.push_str(&new);
    out.push_str(nl);
    out
}

// ---------------------------------------------------------------------------------------------
// Spec fields

/// Byte offsets `[start, end)` of the scalar value in `line` after the colon at `colon`, the end
/// excluding trailing spaces and a `# comment`.
fn scalar_value_span(line: &str, colon: usize, field: &str) -> Result<(usize, usize), EditError> {
    let not_scalar = || EditError::NotScalar {
        field: field.to_string(),
    };
    let after = &line[colon + 1..];
    let start = colon + 1 + (after.len() - after.trim_start().len());
    let v = &line[start..];
    if v.is_empty() || v.starts_with('#') {
        return Ok((start, start));
    }
    let bytes = v.as_bytes();
    let end = match bytes[0] {
        b'|' | b'>' | b'{' | b'[' => return Err(not_scalar()),
        b'"' => {
            let mut i = 1;
            loop {
                match bytes.get(i) {
                    None => return Err(not_scalar()),
                    Some(b'\\') => i += 2,
                    Some(b'"') => break i + 1,
                    Some(_) => i += 1,
                }
            }
        }
        b'\'' => {
            let mut i = 1;
            loop {
                match bytes.get(i) {
                    None => return Err(not_scalar()),
                    Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                    Some(b'\'') => break i + 1,
                    Some(_) => i += 1,
                }
            }
        }
        _ => {
            let comment = v
                .char_indices()
                .find(|&(i, c)| c == '#' && i > 0 && v[..i].ends_with([' ', '\t']))
                .map(|(i, _)| i)
                .unwrap_or(v.len());
            v[..comment].trim_end().len()
        }
    };
    Ok((start, start + end))
}

/// Sets the scalar `field` directly under the top-level `spec:` of document `doc_index` to
/// `value` (YAML text, written verbatim: quote it yourself if it needs quoting).
///
/// An existing value is replaced in place, keeping a trailing `# comment`; a missing field is
/// added as the last entry of `spec:`, at the indentation of its other keys (two spaces if none).
///
/// # Errors
/// No such document, no block `spec:`, a value that spans lines (here or in the file), or a
/// non-mapping document.
pub fn set_spec_field(
    text: &str,
    doc_index: usize,
    field: &str,
    value: &str,
) -> Result<String, EditError> {
    if value.contains(['\n', '\r']) || value.trim().is_empty() {
        return Err(EditError::InvalidValue {
            field: field.to_string(),
            reason: "the value must be one non-empty line".into(),
        });
    }
    let span = doc_span(text, doc_index)?;
    let lines = content_lines(text, &span);
    check_block_mapping(&lines, doc_index)?;
    let nl = newline_of(text);
    let (first, end) =
        find_top_level_block(&lines, "spec").ok_or(EditError::NoSpec { index: doc_index })?;
    let spec_line = &lines[first];
    let colon = spec_line.text.find(':').expect("key line has a colon");
    let inline = spec_line.text[colon + 1..].trim_start();
    if inline.starts_with('{') {
        return Err(EditError::FlowMapping { index: doc_index });
    }
    if !(inline.is_empty() || inline.starts_with('#')) {
        return Err(EditError::NotAMapping { index: doc_index });
    }
    let children = &lines[first + 1..end];
    let indent = match children.iter().find(|l| !l.is_filler()) {
        Some(l) => {
            let t = l.text.trim_start_matches(' ');
            if t == "-" || t.starts_with("- ") {
                return Err(EditError::NotAMapping { index: doc_index });
            }
            l.text.len() - t.len()
        }
        None => 2,
    };
    let pad = " ".repeat(indent);
    for (i, l) in children.iter().enumerate() {
        let Some(rest) = l.text.strip_prefix(pad.as_str()) else {
            continue;
        };
        if rest.starts_with([' ', '\t']) || !is_key_line(rest, field) {
            continue;
        }
        let colon = indent + rest.find(':').expect("key line has a colon");
        let (vs, ve) = scalar_value_span(l.text, colon, field)?;
        if vs == ve {
            // `field:` with no value: a nested block below it is not ours to flatten.
            let nested = children[i + 1..]
                .iter()
                .find(|c| !c.is_filler())
                .is_some_and(|c| c.text.len() - c.text.trim_start().len() > indent);
            if nested {
                return Err(EditError::NotScalar {
                    field: field.to_string(),
                });
            }
        }
        let mut new_line = String::new();
        new_line.push_str(&l.text[..colon + 1]);
        if vs == ve {
            // `field:` or `field:   # comment`: the value goes right after the colon, the
            // original spacing before the comment stays.
            new_line.push(' ');
            new_line.push_str(value);
            new_line.push_str(l.text[colon + 1..].trim_end());
        } else {
            new_line.push_str(&l.text[colon + 1..vs]);
            new_line.push_str(value);
            new_line.push_str(&l.text[ve..]);
        }
        let text_end = l.start + l.text.len();
        return Ok(format!(
            "{}{}{}",
            &text[..l.start],
            new_line,
            &text[text_end..]
        ));
    }
    let entry = format!("{pad}{field}: {value}");
    Ok(insert_after(
        text,
        &lines[end - 1],
        &normalized(&entry, nl),
        nl,
    ))
}

// ---------------------------------------------------------------------------------------------
// Identity

/// Reads the `kind`, namespace (default `default`) and name of document `doc_index`, to check
/// it still is the object we think before writing into it. `None` when the document is missing
/// or not a readable manifest.
pub fn doc_identity(text: &str, doc_index: usize) -> Option<(String, String, String)> {
    let span = split(text).into_iter().nth(doc_index)?;
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text[span.body]).ok()?;
    let kind = v.get("kind")?.as_str()?.to_string();
    let meta = v.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_string();
    let namespace = match meta.get("namespace") {
        None | Some(serde_yaml_ng::Value::Null) => "default".to_string(),
        Some(ns) => ns.as_str()?.to_string(),
    };
    Some((kind, namespace, name))
}

fn identity_matches(text: &str, doc_index: usize, key: &ObjectKey) -> bool {
    doc_identity(text, doc_index).is_some_and(|(kind, ns, name)| {
        kind == key.kind.as_str() && ns == key.namespace && name == key.name
    })
}

// ---------------------------------------------------------------------------------------------
// Own writes

fn content_hash(content: &str) -> u64 {
    // `DefaultHasher::new()` uses fixed keys: stable within the process, which is all we need.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut h);
    h.finish()
}

/// The content the controller itself last wrote to each file, so the watcher can tell its own
/// status writes from the user's edits.
#[derive(Debug, Default)]
pub struct OwnWrites {
    /// Path (as the watcher sees it) → hash of the content we wrote there last.
    written: Mutex<HashMap<PathBuf, u64>>,
}

impl OwnWrites {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that we are writing `content` to `path` (call before the rename, so the file event
    /// cannot arrive first).
    pub fn record(&self, path: &Path, content: &str) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf(), content_hash(content));
    }

    /// True when `content` is exactly what we last wrote to `path`.
    pub fn is_own(&self, path: &Path, content: &str) -> bool {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .is_some_and(|h| *h == content_hash(content))
    }
}

// ---------------------------------------------------------------------------------------------
// Atomic writes

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

fn read_if_exists(path: &Path) -> Result<Option<String>, EditError> {
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

fn write_atomic_inner(
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
    if !identity_matches(&text, doc_index, identity) {
        return Ok(WriteOutcome::UserEdited);
    }
    // A file that does not parse or validate is the user's work in progress and is never
    // touched, even when the loaded snapshot still has its previous, valid version: the snapshot
    // lags the disk (debounce), so a typo saved just before a status write would otherwise get a
    // status block spliced into it.
    if !crate::manifest::parse_file(path, &text).errors.is_empty() {
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
    use crate::manifest::Kind;

    const FILE: &str = "# Launch configuration for web\n\
apiVersion: microscaler.io/v1\n\
kind: LaunchConfiguration\n\
metadata:\n  name: web   # the name\n\
spec:\n  image: 'nginx:1.27'\n  env: {A: \"1\", B: '2'}\n\
\n\
---\n\
apiVersion: \"microscaler.io/v1\"\n\
kind: AutoScalingGroup\n\
metadata:\n  name: web\n  namespace: shop\n\
spec:\n  launchConfiguration: web\n\n  minSize: 1   # at least one\n  maxSize: 4\n\
\n\
# the policy follows\n\
--- # third\n\
kind: ScalingPolicy\n\
metadata: {name: cpu}\n\
spec:\n  autoScalingGroup: web\n";

    const BLOCK: &str = "status:\n  observedGeneration: abc\n  current: 2\n";
    const BLOCK2: &str =
        "status:\n  observedGeneration: def\n  instances:\n  - name: web-1\n    zone: local\n";

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::AutoScalingGroup, "shop", "web")
    }

    #[test]
    fn status_inserted_replaced_and_removed_gives_back_the_original_bytes() {
        let with = splice_status(FILE, 1, Some(BLOCK)).unwrap();
        assert!(
            with.contains("  maxSize: 4\nstatus:\n  observedGeneration: abc\n  current: 2\n\n# the policy follows\n--- # third\n"),
            "{with}"
        );
        assert_eq!(with.replace(BLOCK, ""), FILE);
        let replaced = splice_status(&with, 1, Some(BLOCK2)).unwrap();
        assert_eq!(replaced.replace(BLOCK2, ""), FILE);
        assert!(!replaced.contains("current: 2"));
        let removed = splice_status(&replaced, 1, None).unwrap();
        assert_eq!(removed, FILE);
        // The other documents are untouched and the status parses where it belongs.
        let v: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&replaced[split(&replaced)[1].body.clone()]).unwrap();
        assert_eq!(v["status"]["observedGeneration"].as_str(), Some("def"));
        assert_eq!(v["spec"]["maxSize"].as_u64(), Some(4));
    }

    #[test]
    fn status_goes_into_the_last_document_and_the_first() {
        let last = splice_status(FILE, 2, Some(BLOCK)).unwrap();
        assert!(last.ends_with(
            "  autoScalingGroup: web\nstatus:\n  observedGeneration: abc\n  current: 2\n"
        ));
        assert_eq!(splice_status(&last, 2, None).unwrap(), FILE);
        let first = splice_status(FILE, 0, Some(BLOCK)).unwrap();
        assert!(
            first.contains("env: {A: \"1\", B: '2'}\nstatus:\n"),
            "{first}"
        );
        assert_eq!(splice_status(&first, 0, None).unwrap(), FILE);
    }

    #[test]
    fn crlf_files_get_a_crlf_status_block() {
        let crlf = FILE.replace('\n', "\r\n");
        let with = splice_status(&crlf, 1, Some(BLOCK)).unwrap();
        assert!(with.contains("status:\r\n  observedGeneration: abc\r\n  current: 2\r\n"));
        assert!(!with.replace("\r\n", "").contains('\n'));
        let replaced = splice_status(&with, 1, Some(BLOCK2)).unwrap();
        assert!(!replaced.replace("\r\n", "").contains('\n'));
        assert_eq!(splice_status(&replaced, 1, None).unwrap(), crlf);
    }

    #[test]
    fn a_file_without_final_newline_keeps_having_none() {
        let text = "kind: AutoScalingGroup\nspec:\n  minSize: 1";
        let with = splice_status(text, 0, Some(BLOCK)).unwrap();
        assert_eq!(
            with,
            "kind: AutoScalingGroup\nspec:\n  minSize: 1\nstatus:\n  observedGeneration: abc\n  current: 2"
        );
        let replaced = splice_status(&with, 0, Some(BLOCK2)).unwrap();
        assert!(replaced.ends_with("zone: local"));
        assert_eq!(splice_status(&replaced, 0, None).unwrap(), text);
        let crlf = "a: 1\r\nb: 2";
        let with = splice_status(crlf, 0, Some(BLOCK)).unwrap();
        assert_eq!(
            with,
            "a: 1\r\nb: 2\r\nstatus:\r\n  observedGeneration: abc\r\n  current: 2"
        );
        assert_eq!(splice_status(&with, 0, None).unwrap(), crlf);
    }

    #[test]
    fn a_status_block_followed_by_a_column_zero_comment_and_a_key_keeps_them() {
        let text = "kind: X\nstatus:\n  old: 1\n\n  older: 2\n\n# about spec\nspec:\n  a: 1\n";
        let out = splice_status(text, 0, Some(BLOCK)).unwrap();
        assert_eq!(
            out,
            "kind: X\nstatus:\n  observedGeneration: abc\n  current: 2\n\n# about spec\nspec:\n  a: 1\n"
        );
        let removed = splice_status(text, 0, None).unwrap();
        assert_eq!(removed, "kind: X\n\n# about spec\nspec:\n  a: 1\n");
    }

    #[test]
    fn an_indented_status_key_is_not_the_top_level_block() {
        let text = "spec:\n  status: keep\nkind: X\n";
        let out = splice_status(text, 0, Some(BLOCK)).unwrap();
        assert_eq!(out, format!("{text}{BLOCK}"));
    }

    #[test]
    fn flow_mappings_and_missing_documents_are_refused() {
        assert!(matches!(
            splice_status("{kind: X, spec: {}}\n", 0, Some(BLOCK)),
            Err(EditError::FlowMapping { index: 0 })
        ));
        assert!(matches!(
            splice_status("a: 1\n--- {kind: X}\n", 1, Some(BLOCK)),
            Err(EditError::FlowMapping { index: 1 })
        ));
        assert!(matches!(
            splice_status("- a\n", 0, Some(BLOCK)),
            Err(EditError::NotAMapping { .. })
        ));
        assert!(matches!(
            splice_status(FILE, 3, Some(BLOCK)),
            Err(EditError::NoSuchDocument { index: 3, count: 3 })
        ));
        assert!(matches!(
            splice_status("# only\n", 0, Some(BLOCK)),
            Err(EditError::EmptyDocument { .. })
        ));
        assert!(matches!(
            splice_status(FILE, 0, Some("spec:\n  a: 1\n")),
            Err(EditError::InvalidBlock(_))
        ));
        assert!(matches!(
            splice_status(FILE, 0, Some("status:\n  a: 1\nspec: 2\n")),
            Err(EditError::InvalidBlock(_))
        ));
    }

    #[test]
    fn an_explicit_document_end_keeps_the_status_inside_the_document() {
        let text = "kind: X\n...\n# after the end\n---\nkind: Y\n";
        let out = splice_status(text, 0, Some(BLOCK)).unwrap();
        assert_eq!(
            out,
            format!("kind: X\n{BLOCK}...\n# after the end\n---\nkind: Y\n")
        );
        assert_eq!(splice_status(&out, 0, None).unwrap(), text);
    }

    #[test]
    fn render_status_writes_a_two_space_block() {
        let status = crate::status::GroupStatus {
            observed_generation: "abc".into(),
            desired_capacity: 2,
            ..Default::default()
        };
        let block = render_status(&status);
        assert!(
            block.starts_with("status:\n  observedGeneration: abc\n  desiredCapacity: 2\n"),
            "{block}"
        );
        assert!(block.ends_with('\n'));
        let with = splice_status(FILE, 1, Some(&block)).unwrap();
        let v: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&with[split(&with)[1].body.clone()]).unwrap();
        let back: crate::status::GroupStatus =
            serde_yaml_ng::from_value(v["status"].clone()).unwrap();
        assert_eq!(back, status);
    }

    #[test]
    fn splice_statuses_edits_many_documents_in_one_pass_like_one_at_a_time() {
        let three = format!("{FILE}---\nkind: AutoScalingGroup\nspec:\n  a: 1");
        let blocks: BTreeMap<usize, Option<String>> = [
            (0, Some(BLOCK.to_string())),
            (1, Some(BLOCK2.to_string())),
            (3, Some(BLOCK.to_string())),
        ]
        .into();
        let (all, failed) = splice_statuses(&three, &blocks);
        assert!(failed.is_empty(), "{failed:?}");
        let mut one_by_one = three.clone();
        for (i, b) in &blocks {
            one_by_one = splice_status(&one_by_one, *i, b.as_deref()).unwrap();
        }
        assert_eq!(all, one_by_one);
        // Replacing and removing in one pass gives back the original bytes.
        let none: BTreeMap<usize, Option<String>> = blocks.keys().map(|i| (*i, None)).collect();
        assert_eq!(splice_statuses(&all, &none).0, three);
        // A document that cannot be edited is reported and left alone; the others are edited.
        let flow = "a: 1\n--- {kind: X}\n---\nkind: Y\n";
        let blocks: BTreeMap<usize, Option<String>> = [
            (1, Some(BLOCK.to_string())),
            (2, Some(BLOCK.to_string())),
            (9, None),
        ]
        .into();
        let (out, failed) = splice_statuses(flow, &blocks);
        assert_eq!(out, format!("a: 1\n--- {{kind: X}}\n---\nkind: Y\n{BLOCK}"));
        assert!(matches!(
            failed[0],
            (1, EditError::FlowMapping { index: 1 })
        ));
        assert!(matches!(failed[1], (9, EditError::NoSuchDocument { .. })));
    }

    #[test]
    fn strip_statuses_removes_only_microscaler_group_status_blocks() {
        let group = "apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata:\n  name: web\nspec:\n  minSize: 1\n";
        let other = "apiVersion: v1\nkind: AutoScalingGroup\nstatus:\n  keep: me\n";
        let ci = "jobs:\n  a: 1\nstatus:\n  keep: too\n";
        let text = format!("# head\n{group}---\n{other}---\n{ci}");
        let with = splice_status(&text, 0, Some(BLOCK)).unwrap();
        assert_ne!(with, text);
        assert_eq!(strip_statuses(&with), text);
        assert_eq!(strip_statuses(&text), text);
        // CRLF, no final newline, a byte order mark: the same bytes come back.
        for variant in [
            text.replace('\n', "\r\n"),
            group.trim_end().to_string(),
            format!("\u{feff}{group}"),
        ] {
            let with = splice_status(&variant, 0, Some(BLOCK2)).unwrap();
            assert!(with.contains("observedGeneration: def"), "{with:?}");
            assert_eq!(strip_statuses(&with), variant);
        }
        // Not YAML at all: untouched.
        assert_eq!(strip_statuses("status: [\n"), "status: [\n");
    }

    #[test]
    fn a_byte_order_mark_survives_every_edit() {
        let text = format!("\u{feff}{}", valid_file());
        let with = splice_status(&text, 1, Some(BLOCK)).unwrap();
        assert!(with.starts_with('\u{feff}'));
        let first = splice_status(&text, 0, Some(BLOCK)).unwrap();
        assert!(
            first.starts_with("\u{feff}# Launch configuration"),
            "{first:?}"
        );
        assert_eq!(splice_status(&first, 0, None).unwrap(), text);
        let scaled = set_spec_field(&text, 1, "maxSize", "8").unwrap();
        assert!(scaled.starts_with('\u{feff}'));
        assert_eq!(
            doc_identity(&format!("\u{feff}{}", FILE.split("---").next().unwrap()), 0),
            Some(("LaunchConfiguration".into(), "default".into(), "web".into()))
        );
        let parsed = crate::manifest::parse_file(Path::new("bom.yaml"), &with);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    }

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

    #[test]
    fn set_spec_field_replaces_a_value_and_keeps_its_comment() {
        let out = set_spec_field(FILE, 1, "minSize", "3").unwrap();
        assert_eq!(
            out,
            FILE.replace(
                "  minSize: 1   # at least one\n",
                "  minSize: 3   # at least one\n"
            )
        );
        let out = set_spec_field(FILE, 1, "maxSize", "\"10\"").unwrap();
        assert_eq!(out, FILE.replace("  maxSize: 4\n", "  maxSize: \"10\"\n"));
        let quoted = "spec:\n  state: 'Sto # pped'  # why\n";
        assert_eq!(
            set_spec_field(quoted, 0, "state", "Started").unwrap(),
            "spec:\n  state: Started  # why\n"
        );
        let empty = "spec:\n  state:   # to do\n  b: 1\n";
        assert_eq!(
            set_spec_field(empty, 0, "state", "Stopped").unwrap(),
            "spec:\n  state: Stopped   # to do\n  b: 1\n"
        );
    }

    #[test]
    fn set_spec_field_adds_a_missing_field_as_the_last_entry_of_spec() {
        let out = set_spec_field(FILE, 1, "desiredCapacity", "2").unwrap();
        assert_eq!(
            out,
            FILE.replace("  maxSize: 4\n", "  maxSize: 4\n  desiredCapacity: 2\n")
        );
        let four = "spec:\n    image: x\n    nested:\n      deep: 1\n# end\nstatus:\n  a: 1\n";
        assert_eq!(
            set_spec_field(four, 0, "state", "Stopped").unwrap(),
            "spec:\n    image: x\n    nested:\n      deep: 1\n    state: Stopped\n# end\nstatus:\n  a: 1\n"
        );
        let eof = "spec:\r\n  a: 1";
        assert_eq!(
            set_spec_field(eof, 0, "b", "2").unwrap(),
            "spec:\r\n  a: 1\r\n  b: 2"
        );
        // A key of a nested map with the same name is not the spec field.
        let nested = "spec:\n  resources:\n    state: x\n";
        assert_eq!(
            set_spec_field(nested, 0, "state", "Stopped").unwrap(),
            "spec:\n  resources:\n    state: x\n  state: Stopped\n"
        );
    }

    #[test]
    fn set_spec_field_refuses_what_it_cannot_edit_on_one_line() {
        assert!(matches!(
            set_spec_field("kind: X\n", 0, "a", "1"),
            Err(EditError::NoSpec { .. })
        ));
        assert!(matches!(
            set_spec_field("spec: {a: 1}\n", 0, "a", "2"),
            Err(EditError::FlowMapping { .. })
        ));
        assert!(matches!(
            set_spec_field("spec:\n  a:\n    b: 1\n", 0, "a", "2"),
            Err(EditError::NotScalar { .. })
        ));
        assert!(matches!(
            set_spec_field("spec:\n  a: |\n    x\n", 0, "a", "2"),
            Err(EditError::NotScalar { .. })
        ));
        assert!(matches!(
            set_spec_field("spec:\n  a: 1\n", 0, "a", "2\nb: 3"),
            Err(EditError::InvalidValue { .. })
        ));
    }

    #[test]
    fn remove_document_first_middle_and_last() {
        let d = |t: &str| {
            split(t)
                .iter()
                .map(|s| t[s.body.clone()].to_string())
                .collect::<Vec<_>>()
        };
        let first = remove_document(FILE, 0);
        assert!(
            first.starts_with("apiVersion: \"microscaler.io/v1\"\nkind: AutoScalingGroup\n"),
            "{first}"
        );
        assert_eq!(d(&first), d(FILE)[1..].to_vec());
        let middle = remove_document(FILE, 1);
        assert_eq!(d(&middle), vec![d(FILE)[0].clone(), d(FILE)[2].clone()]);
        assert!(middle.contains("\n\n--- # third\nkind: ScalingPolicy"));
        let last = remove_document(FILE, 2);
        assert!(
            last.ends_with("  maxSize: 4\n\n# the policy follows\n"),
            "{last}"
        );
        assert_eq!(d(&last).len(), 2);
        assert_eq!(remove_document("a: 1\n---\n# c\n", 0), "");
        assert_eq!(remove_document("---\na: 1\n---\nb: 2\n", 0), "---\nb: 2\n");
        assert_eq!(remove_document("a: 1\n--- {b: 2}\n", 0), "--- {b: 2}\n");
        assert_eq!(remove_document(FILE, 7), FILE);
    }

    #[test]
    fn replace_and_append_documents() {
        let new = "---\nkind: ScalingPolicy\nmetadata:\n  name: mem\n";
        let out = replace_document(FILE, 2, new);
        assert!(
            out.ends_with("--- # third\nkind: ScalingPolicy\nmetadata:\n  name: mem\n"),
            "{out}"
        );
        let out = replace_document(FILE, 0, "kind: LaunchConfiguration\n\n");
        assert!(
            out.starts_with("kind: LaunchConfiguration\n\n---\napiVersion: \"microscaler.io/v1\""),
            "{out}"
        );
        assert_eq!(replace_document("a: 1", 0, "b: 2\n"), "b: 2");
        assert_eq!(
            replace_document("x: 1\n--- {a: 1}\n", 1, "b: 2"),
            "x: 1\n---\nb: 2\n"
        );
        assert_eq!(append_document("", "a: 1"), "a: 1\n");
        assert_eq!(append_document("a: 1", "b: 2\n"), "a: 1\n---\nb: 2\n");
        assert_eq!(
            append_document("a: 1\r\n", "b: 2\nc: 3\n"),
            "a: 1\r\n---\r\nb: 2\r\nc: 3\r\n"
        );
        assert_eq!(append_document("a: 1\n---\n", "b: 2"), "a: 1\n---\nb: 2\n");
        assert_eq!(
            append_document("a: 1\n...\n", "b: 2"),
            "a: 1\n...\n---\nb: 2\n"
        );
        assert_eq!(split(&append_document(FILE, "b: 2")).len(), 4);
    }

    #[test]
    fn doc_identity_reads_kind_namespace_and_name() {
        assert_eq!(
            doc_identity(FILE, 1),
            Some(("AutoScalingGroup".into(), "shop".into(), "web".into()))
        );
        assert_eq!(
            doc_identity(FILE, 2),
            Some(("ScalingPolicy".into(), "default".into(), "cpu".into()))
        );
        assert_eq!(doc_identity(FILE, 3), None);
        assert_eq!(doc_identity("a: [\n", 0), None);
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn no_temp_files(dir: &Path) -> bool {
        fs::read_dir(dir)
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().contains("ms-tmp"))
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

    /// The first two documents of [`FILE`]: a file that parses and validates.
    fn valid_file() -> String {
        let end = FILE.find("# the policy follows").unwrap();
        let valid = FILE[..end].to_string();
        let parsed = crate::manifest::parse_file(Path::new("web.yaml"), &valid);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        valid
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
