//! The `status:` block of a document: rendering it, and replacing, inserting or removing it
//! while every other byte stays as written.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Serialize;

use super::identity::is_microscaler_group;
use super::lines::{
    check_block_mapping, content_lines, doc_span, find_top_level_block, is_key_line, lines_in,
    newline_of, normalized, Line,
};
use super::EditError;
use crate::manifest::yamldoc::{split, DocSpan};

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
    splice_statuses_in(text, &split(text), blocks)
}

/// [`splice_statuses`] on the documents `docs` of `text` (its [`split`]), for a caller that has
/// split it already.
fn splice_statuses_in(
    text: &str,
    docs: &[DocSpan],
    blocks: &BTreeMap<usize, Option<String>>,
) -> (String, Vec<(usize, EditError)>) {
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
    let docs = split(text);
    let blocks: BTreeMap<usize, Option<String>> = docs
        .iter()
        .enumerate()
        .filter(|(_, span)| !span.empty && is_microscaler_group(&text[span.body.clone()]))
        .map(|(i, _)| (i, None))
        .collect();
    if blocks.is_empty() {
        return text.to_string();
    }
    splice_statuses_in(text, &docs, &blocks).0
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::fixtures::*;
    use std::path::Path;

    use crate::files::{doc_identity, set_spec_field};

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
}
