//! Every error of a document, not only serde's first: the wrong entry is taken out of the text
//! and the document read again, until it deserializes (then validation runs on what is left)
//! or nothing more can be taken out soundly.
//!
//! # Rules
//! - An entry is taken out by emptying its lines (never deleting them), so every other node
//!   keeps its line and column and each error is located in the user's file.
//! - Only block-style entries are taken out: a key that starts its line (or follows a
//!   sequence's `- `), a sequence item that starts with `- `. Anything in flow style (`{a: 1}`,
//!   `[1, 2]` spanning the error) ends the recovery.
//! - An error about a path that was taken out, or about its parent or child (a required field
//!   now missing, a map left empty), is a consequence, not the user's: the recovery ends without
//!   reporting it. A missing required field cannot be taken out: the map missing it is (then
//!   its own absence ends the recovery where it is required too).
//! - Validation on the repaired object reports only problems that cannot come from a removal:
//!   none on a removed path or its relatives, none naming a removed field (`minSize 3 > maxSize
//!   2` when `maxSize` was removed).
//! - At most [`MAX_ERRORS`] per document; a document over [`MAX_RECOVERED_BYTES`] reports its
//!   first error only.

use super::{load_tree, Doc, Kind, Locations, ManifestError, Node, NodeValue, TypedError};
use crate::manifest::validate::{self, Severity};
use crate::manifest::Object;

/// At most this many errors per document (each one reads the document again).
const MAX_ERRORS: usize = 20;
/// Documents larger than this report their first error only: reading a hostile megabyte 20
/// times over would cost the watcher and the API more than the errors are worth.
const MAX_RECOVERED_BYTES: usize = 64 * 1024;

impl Doc<'_> {
    /// `first`, then every further error the document's shape lets us find.
    pub(super) fn recover(
        &self,
        kind: Kind,
        first: TypedError,
        extra: &dyn Fn(&Object) -> Vec<validate::Problem>,
    ) -> Vec<ManifestError> {
        let mut next = removal(&first.error.field, first.removable, first.missing);
        let mut errors = vec![first.error];
        if self.body.len() > MAX_RECOVERED_BYTES {
            return errors;
        }
        let mut removed: Vec<String> = Vec::new();
        let mut body = self.body.to_string();
        let Ok(Some(mut root)) = load_tree(&body) else {
            return errors;
        };
        while let Some(path) = next.take() {
            if errors.len() >= MAX_ERRORS {
                break;
            }
            let Some(repaired) = take_out(&body, &root, &path) else {
                break;
            };
            // A sequence's later items move up when one is taken out, so their paths change:
            // the whole sequence counts as touched (nothing more in it is reported).
            removed.push(
                match path.strip_suffix(']').and_then(|p| p.rsplit_once('[')) {
                    Some((sequence, _)) => sequence.to_string(),
                    None => path,
                },
            );
            body = repaired;
            root = match load_tree(&body) {
                Ok(Some(r)) => r,
                _ => break,
            };
            let locations = Locations::of(&root);
            match self.typed_object(kind, &body, &root, &locations) {
                Ok(object) => {
                    for problem in validate::validate(&object)
                        .into_iter()
                        .chain(extra(&object))
                    {
                        if problem.severity == Severity::Error
                            && !removed
                                .iter()
                                .any(|r| related(r, &problem.field) || names(&problem.message, r))
                        {
                            errors.push(self.error(&locations, &problem.field, problem.message));
                        }
                    }
                }
                Err(e) => {
                    // A consequence of a removal: the path itself, or a field missing beside
                    // one taken out (`specs:` taken out, `spec` missing: one typo, one error).
                    if removed.iter().any(|r| {
                        related(r, &e.error.field)
                            || (e.missing && parent(r) == parent(&e.error.field))
                    }) {
                        break;
                    }
                    next = removal(&e.error.field, e.removable, e.missing);
                    errors.push(e.error);
                }
            }
        }
        errors
    }
}

/// What to take out after an error at `field`: the field itself, or, for a missing required
/// field, the map that misses it (`spec.schedule[1]` without its `cron`), whose own absence is
/// then a consequence (and ends the recovery if it is required too).
fn removal(field: &str, removable: Option<String>, missing: bool) -> Option<String> {
    removable.or_else(|| {
        let p = parent(field);
        (missing && !p.is_empty()).then(|| p.to_string())
    })
}

/// Whether one path is the other, or inside it.
fn related(a: &str, b: &str) -> bool {
    let inside = |outer: &str, inner: &str| {
        inner == outer
            || outer.is_empty()
            || inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with(['.', '[']))
    };
    inside(a, b) || inside(b, a)
}

/// The path of the map holding the field at `path` (`` for a top-level one).
fn parent(path: &str) -> &str {
    path.rfind(['.', '[']).map_or("", |i| &path[..i])
}

/// Whether `message` names the last field of `path` as a word.
fn names(message: &str, path: &str) -> bool {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    let leaf = leaf.split('[').next().unwrap_or(leaf);
    !leaf.is_empty()
        && message
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|w| w == leaf)
}

/// Where the entry at `path` starts (body-relative line and column, 1-based): its key for a
/// map entry, its value for a sequence item.
fn entry_start(root: &Node, path: &str) -> Option<(usize, usize)> {
    let mut node = root;
    let mut start = None;
    for part in path.split('.') {
        let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            let NodeValue::Map(entries) = &node.value else {
                return None;
            };
            let (k, v) = entries.iter().find(|(k, _)| match &k.value {
                NodeValue::Scalar(name) => name == key,
                _ => false,
            })?;
            start = Some((k.line, k.col));
            node = v;
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            let i: usize = index.trim_end_matches(']').parse().ok()?;
            let NodeValue::Seq(items) = &node.value else {
                return None;
            };
            node = items.get(i)?;
            start = Some((node.line, node.col));
        }
    }
    start
}

/// `body` with the block-style entry at `path` emptied (its lines kept, blank), or `None`
/// when it is not a block-style entry.
fn take_out(body: &str, root: &Node, path: &str) -> Option<String> {
    let (line, col) = entry_start(root, path)?;
    let item = path.ends_with(']');
    let mut lines: Vec<&str> = body.split_inclusive('\n').collect();
    let text = *lines.get(line.checked_sub(1)?)?;
    let prefix: String = text.chars().take(col.checked_sub(1)?).collect();
    let after_dash = prefix.trim_end_matches(' ');
    let from = if item {
        // `  - value`: the item starts at its dash, preceded by indentation only.
        let dash = after_dash.strip_suffix('-')?;
        if !dash.chars().all(|c| c == ' ') || after_dash.len() == prefix.len() {
            return None;
        }
        dash.chars().count()
    } else if prefix.chars().all(|c| c == ' ') {
        prefix.chars().count()
    } else {
        // `  - key: value` (the first key of an item's map), and nothing else.
        let dash = after_dash.strip_suffix('-')?;
        if !dash.chars().all(|c| c == ' ') || after_dash.len() == prefix.len() {
            return None;
        }
        prefix.chars().count()
    };
    let mut out = String::with_capacity(body.len());
    for l in &lines[..line - 1] {
        out.push_str(l);
    }
    out.push_str(&text.chars().take(from).collect::<String>());
    out.push_str(ending(text));
    // The entry goes on while lines are blank, comments, or indented deeper than it starts.
    let rest = lines.split_off(line);
    let mut inside = true;
    for l in rest {
        let content = l.trim_end_matches(['\n', '\r']);
        let indent = content.len() - content.trim_start_matches(' ').len();
        let trimmed = content.trim_start_matches(' ');
        if inside && !(trimmed.is_empty() || trimmed.starts_with('#') || indent > from) {
            inside = false;
        }
        if inside {
            out.push_str(ending(l));
        } else {
            out.push_str(l);
        }
    }
    Some(out)
}

/// The line ending of `line` (`\n`, `\r\n` or none).
fn ending(line: &str) -> &str {
    let content = line.trim_end_matches(['\n', '\r']);
    &line[content.len()..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse::parse_file;
    use std::path::Path;

    /// The errors of `text` as `line:col: field: message` without the file.
    fn errors(text: &str) -> Vec<String> {
        parse_file(Path::new("m.yaml"), text)
            .errors
            .iter()
            .map(|e| format!("{}:{}: {}: {}", e.line, e.column, e.field, e.message))
            .collect()
    }

    const HEAD: &str = "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata:\n  name: web\nspec:\n  image: microscaler/busybox:latest\n";

    #[test]
    fn every_error_of_a_document_is_reported_with_its_position() {
        // (document after HEAD, the expected `line:col: field` of each error, in order)
        let table: &[(&str, &[&str])] = &[
            // Three distinct errors: a bad value, an unknown field, a range (validation).
            (
                "  imagePullPolicy: Sometimes\n  portz: [80]\n  resources:\n    cpus: 0\n",
                &["7:3: spec.imagePullPolicy", "8:3: spec.portz", "10:5: spec.resources.cpus"],
            ),
            // A wrong type, a bad duration, and an unknown field nested in a list's map.
            (
                "  command: {a: 1}\n  stopGracePeriod: soon\n  ports:\n    - containerPort: 80\n      hostPot: 8080\n",
                &["7:3: spec.command", "8:3: spec.stopGracePeriod", "11:7: spec.ports[0].hostPot"],
            ),
            // A bad list item is taken out by its dash; the lines after it keep their positions.
            (
                "  ports:\n    - eighty\n    - 80\n  envv: {}\n  resources:\n    cpus: 0\n",
                &["8:7: spec.ports[0]", "10:3: spec.envv", "12:5: spec.resources.cpus"],
            ),
        ];
        for (spec, want) in table {
            let text = format!("{HEAD}{spec}");
            let got = errors(&text);
            let located: Vec<String> = got
                .iter()
                .map(|e| {
                    e.split(": ").next().unwrap().to_string() + ": " + e.split(": ").nth(1).unwrap()
                })
                .collect();
            assert_eq!(located, *want, "{text}\n{got:#?}");
        }
    }

    #[test]
    fn consequences_of_a_removal_are_not_reported() {
        // A required field of the wrong type: taking it out makes it missing, which is the
        // same error again, not a second one.
        let text = "apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata:\n  name: web\nspec:\n  launchConfiguration: web\n  minSize: 3\n  maxSize: four\n  availabilityZones: [\"\"]\n";
        let got = errors(text);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].starts_with("8:3: spec.maxSize"), "{got:#?}");
        // Validation naming a removed field is not reported (minSize 3 > maxSize 1 is only
        // true of the repaired document), but an unrelated one is.
        let text = "apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata:\n  name: web\nspec:\n  launchConfiguration: web\n  minSize: 3\n  maxSize: 4\n  desiredCapacity: many\n  availabilityZones: [\"\"]\n";
        let got = errors(text);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(got[0].starts_with("9:3: spec.desiredCapacity"), "{got:#?}");
        assert!(
            got[1].starts_with("10:") && got[1].contains("spec.availabilityZones[0]"),
            "{got:#?}"
        );
    }

    #[test]
    fn a_list_item_missing_a_required_field_is_taken_out_and_reading_goes_on() {
        let text = "apiVersion: microscaler.io/v1\nkind: ScalingPolicy\nmetadata:\n  name: hours\nspec:\n  autoScalingGroup: web\n  type: Scheduled\n  schedule:\n    - minSize: 3\n      timeZone: Europe/Berlin\n  upperTreshold: 80\n";
        let got = errors(text);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].contains("spec.schedule[0].cron") && got[0].contains("missing"),
            "{got:#?}"
        );
        assert!(got[1].starts_with("11:3: spec.upperTreshold"), "{got:#?}");
        // A required map missing a field: the rest is still read, its own absence (a
        // consequence) is not reported.
        let text = HEAD.replace("  name: web\n", "  namespace: x\n") + "  portz: 1\n";
        let got = errors(&text);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].starts_with("3:1: metadata.name: missing"),
            "{got:#?}"
        );
        assert!(got[1].starts_with("7:3: spec.portz"), "{got:#?}");
    }

    #[test]
    fn flow_style_ends_the_recovery_after_the_first_error() {
        let text = format!("{HEAD}  resources: {{cpus: x, memoryMiB: y}}\n  portz: 1\n");
        let got = errors(&text);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].starts_with("7:"), "{got:#?}");
    }

    #[test]
    fn taking_out_keeps_every_other_line_where_it_was() {
        let body =
            "a: 1\nb:\n  c: |\n    text\n\n  # note\n  d: 2\ne:\n  - x: 1\n    y: 2\n  - 3\n";
        let root = load_tree(body).ok().flatten().unwrap();
        let out = take_out(body, &root, "b.c").unwrap();
        assert_eq!(
            out,
            "a: 1\nb:\n  \n\n\n\n  d: 2\ne:\n  - x: 1\n    y: 2\n  - 3\n"
        );
        let out = take_out(body, &root, "e[0].x").unwrap();
        assert_eq!(
            out,
            "a: 1\nb:\n  c: |\n    text\n\n  # note\n  d: 2\ne:\n  - \n    y: 2\n  - 3\n"
        );
        let out = take_out(body, &root, "e[1]").unwrap();
        assert_eq!(
            out,
            "a: 1\nb:\n  c: |\n    text\n\n  # note\n  d: 2\ne:\n  - x: 1\n    y: 2\n  \n"
        );
        let flow = "a: {b: 1, c: 2}\n";
        let root = load_tree(flow).ok().flatten().unwrap();
        assert_eq!(take_out(flow, &root, "a.c"), None);
    }
}
