//! Splits a YAML stream into its documents by byte range, without parsing them.
//!
//! Document markers (`---`, `...`) are only recognised at column 0, where YAML itself requires
//! them; so this split agrees with a real YAML parser, and lets the controller edit one document
//! while every other byte of the file stays as written.

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

/// Splits `text` into documents. A file with no markers is one document; empty documents
/// (only comments or blank lines, e.g. before the first `---`) are kept but flagged `empty`,
/// so indexes stay stable for the writer.
pub fn split(text: &str) -> Vec<DocSpan> {
    let mut docs = Vec::new();
    let mut start = 0usize; // start of the current document (its `---` line, if any)
    let mut body = 0usize; // start of its content
    let mut body_line = 1usize;
    let mut pos = 0usize;
    let mut empty = true;
    for (line_idx, line) in text.split_inclusive('\n').enumerate() {
        let line_no = line_idx + 1;
        let bare = line.trim_end_matches(['\n', '\r']);
        if is_marker(bare, "---") {
            if pos > 0 {
                docs.push(DocSpan {
                    range: start..pos,
                    body: body..pos,
                    body_line,
                    empty,
                });
            }
            start = pos;
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
    fn empty_input_is_one_empty_document() {
        let d = split("");
        assert_eq!(d.len(), 1);
        assert!(d[0].empty);
    }
}
