//! The line model: a document as lines with byte ranges, and the few YAML facts read from them
//! (top-level keys, block extent, filler lines, line endings) that every edit builds on.

use super::EditError;
use crate::manifest::yamldoc::{split, DocSpan};

/// One line of the text, with its byte range including the terminator.
#[derive(Debug, Clone, Copy)]
pub(super) struct Line<'a> {
    pub(super) start: usize,
    pub(super) end: usize,
    /// The line without its `\n` / `\r\n`.
    pub(super) text: &'a str,
}

impl Line<'_> {
    pub(super) fn has_terminator(&self) -> bool {
        self.end > self.start + self.text.len()
    }
    fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }
    fn is_comment(&self) -> bool {
        self.text.trim_start().starts_with('#')
    }
    /// Blank or comment: carries no YAML content.
    pub(super) fn is_filler(&self) -> bool {
        self.is_blank() || self.is_comment()
    }
    /// Content that ends nothing: indented, or a column-0 sequence item (`- x`) of the block above.
    pub(super) fn continues_block(&self) -> bool {
        self.text.starts_with([' ', '\t'])
            || self.text == "-"
            || self.text.starts_with("- ")
            || self.text.starts_with("-\t")
    }
    /// Not blank and not a column-0 comment (indented comment lines may be block scalar content).
    pub(super) fn is_content(&self) -> bool {
        !(self.is_blank() || self.text.starts_with('#'))
    }
}

pub(super) fn lines_in(text: &str, start: usize, end: usize) -> Vec<Line<'_>> {
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
pub(super) fn content_lines<'a>(text: &'a str, span: &DocSpan) -> Vec<Line<'a>> {
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
pub(super) fn newline_of(text: &str) -> &'static str {
    match text.find('\n') {
        Some(i) if i > 0 && text.as_bytes()[i - 1] == b'\r' => "\r\n",
        _ => "\n",
    }
}

/// `text` with `\n` line endings converted to `nl`, trailing line breaks removed.
pub(super) fn normalized(text: &str, nl: &str) -> String {
    let t = text.replace("\r\n", "\n");
    let t = t.trim_end_matches('\n');
    if nl == "\n" {
        t.to_string()
    } else {
        t.replace('\n', nl)
    }
}

/// True when `line` is the top-level key `key:` (plain or quoted), with nothing or a value after it.
pub(super) fn is_key_line(line: &str, key: &str) -> bool {
    let rest = [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .find_map(|k| line.strip_prefix(k.as_str()))
        .and_then(|r| r.strip_prefix(':'));
    rest.is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t']))
}

/// Line indexes `[first, end)` of the top-level block `key:` among `lines`: the key line and the
/// lines that continue it. Blank and comment lines are included only when more of the block follows.
pub(super) fn find_top_level_block(lines: &[Line<'_>], key: &str) -> Option<(usize, usize)> {
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
pub(super) fn check_block_mapping(lines: &[Line<'_>], index: usize) -> Result<(), EditError> {
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

pub(super) fn doc_span(text: &str, index: usize) -> Result<DocSpan, EditError> {
    let mut docs = split(text);
    let count = docs.len();
    if index >= count {
        return Err(EditError::NoSuchDocument { index, count });
    }
    Ok(docs.swap_remove(index))
}

/// Inserts `block` (already normalized, no final line break) after `line`: when `line` is the
/// last of a file without a final newline, the file keeps having none.
pub(super) fn insert_after(text: &str, line: &Line<'_>, block: &str, nl: &str) -> String {
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
