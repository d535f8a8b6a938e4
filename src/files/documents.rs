//! Whole documents: replace one, remove one, append one (the API's and the CLI's edits).

use super::lines::{content_lines, doc_span, lines_in, newline_of, normalized};
use crate::manifest::yamldoc::split;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::fixtures::*;

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
}
