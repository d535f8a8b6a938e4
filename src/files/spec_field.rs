//! One scalar field under `spec:` set in place (`ms scale`, `ms start-asg`), keeping its comment.

use super::lines::{
    check_block_mapping, content_lines, doc_span, find_top_level_block, insert_after, is_key_line,
    newline_of, normalized,
};
use super::EditError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::fixtures::*;

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
}
