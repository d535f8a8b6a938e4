//! Splits a YAML stream into its documents by byte range, without parsing them.
//!
//! Document markers (`---`, `...`) are only recognised at column 0, where YAML itself requires
//! them; so this split agrees with a real YAML parser, and lets the controller edit one document
//! while every other byte of the file stays as written.
//!
//! A UTF-8 byte order mark at the start of the stream (valid YAML, and what some Windows editors
//! write) belongs to no document body: it stays in the first document's `range`, so writers keep
//! it, and out of its `body`, so parsers never see it as part of the first key.

use std::ops::Range;

/// One document of a YAML stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocSpan {
    /// Bytes of the whole document, including its leading `---` line if any, up to the next
    /// document's `---` line (or end of input).
    pub range: Range<usize>,
    /// Bytes of the content, after the `---` line (the text a YAML parser sees for this document).
    pub body: Range<usize>,
    /// 1-based line number of the first line of `body`.
    pub body_line: usize,
    /// True when the document holds nothing but blank lines and comments.
    pub empty: bool,
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .map(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n', '#']))
        .unwrap_or(false)
}

/// The UTF-8 byte order mark.
pub const BOM: char = '\u{feff}';

/// Length in bytes of the byte order mark `text` starts with (0 or 3).
pub fn bom_len(text: &str) -> usize {
    if text.starts_with(BOM) {
        BOM.len_utf8()
    } else {
        0
    }
}

/// Splits `text` into documents. A file with no markers is one document; empty documents
/// (only comments or blank lines, e.g. before the first `---`) are kept but flagged `empty`,
/// so indexes stay stable for the writer.
pub fn split(text: &str) -> Vec<DocSpan> {
    let bom = bom_len(text);
    let mut docs = Vec::new();
    let mut start = 0usize; // start of the current document (its `---` line, if any)
    let mut body = bom; // start of its content
    let mut body_line = 1usize;
    let mut pos = bom;
    let mut empty = true;
    for (line_idx, line) in text[bom..].split_inclusive('\n').enumerate() {
        let line_no = line_idx + 1;
        let bare = line.trim_end_matches(['\n', '\r']);
        if is_marker(bare, "---") {
            if pos > bom {
                docs.push(DocSpan {
                    range: start..pos,
                    body: body..pos,
                    body_line,
                    empty,
                });
            }
            // The byte order mark stays with the first document's range.
            start = if pos == bom { 0 } else { pos };
            body = pos + line.len();
            body_line = line_no + 1;
            empty = true;
            // Content after `--- ` on the same line (`--- !tag` or `--- {a: 1}`) counts as content.
            let after = bare[3..].trim();
            if !after.is_empty() && !after.starts_with('#') {
                body = pos + 3;
                body_line = line_no;
                empty = false;
            }
        } else if is_marker(bare, "...") {
            // End of document: the rest up to the next `---` belongs to it but is not content.
        } else {
            let t = bare.trim_start();
            if !t.is_empty() && !t.starts_with('#') {
                empty = false;
            }
        }
        pos += line.len();
    }
    if pos > start || docs.is_empty() {
        docs.push(DocSpan {
            range: start..pos,
            body: body.min(pos)..pos,
            body_line,
            empty,
        });
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_markers_is_one_document() {
        let t = "a: 1\nb: 2\n";
        let d = split(t);
        assert_eq!(d.len(), 1);
        assert_eq!(&t[d[0].body.clone()], t);
        assert_eq!(d[0].body_line, 1);
        assert!(!d[0].empty);
    }

    #[test]
    fn markers_split_documents_and_ranges_cover_every_byte() {
        let t = "# head\n---\na: 1\n--- # second\nb: 2\n---\n";
        let d = split(t);
        assert_eq!(d.len(), 4);
        assert!(d[0].empty);
        assert_eq!(&t[d[1].body.clone()], "a: 1\n");
        assert_eq!(d[1].body_line, 3);
        assert_eq!(&t[d[2].body.clone()], "b: 2\n");
        assert_eq!(d[2].body_line, 5);
        assert!(d[3].empty);
        let joined: String = d.iter().map(|s| &t[s.range.clone()]).collect();
        assert_eq!(joined, t);
    }

    #[test]
    fn indented_dashes_are_not_markers() {
        let t = "a: |\n  ---\n  x\nb: ---\n";
        assert_eq!(split(t).len(), 1);
    }

    #[test]
    fn a_byte_order_mark_stays_in_the_first_range_and_out_of_every_body() {
        let t = "\u{feff}---\na: 1\n---\nb: 2\n";
        let d = split(t);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].range.start, 0);
        assert_eq!(&t[d[0].body.clone()], "a: 1\n");
        assert_eq!(d[0].body_line, 2);
        assert_eq!(&t[d[1].body.clone()], "b: 2\n");
        let joined: String = d.iter().map(|s| &t[s.range.clone()]).collect();
        assert_eq!(joined, t);
        let t = "\u{feff}a: 1\n";
        let d = split(t);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].range, 0..t.len());
        assert_eq!(&t[d[0].body.clone()], "a: 1\n");
        let d = split("\u{feff}");
        assert_eq!(d.len(), 1);
        assert!(d[0].empty);
        assert_eq!(d[0].range, 0..3);
    }

    #[test]
    fn empty_input_is_one_empty_document() {
        let d = split("");
        assert_eq!(d.len(), 1);
        assert!(d[0].empty);
    }
}
