//! Reading manifest files: documents, kinds, precise errors (file, line, column, field path).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Marker, Parser, ScanError, Span, StrInput};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{Kind, Manifest, Object, ObjectKey, API_VERSION};
use super::validate::{self, did_you_mean, Severity};
use crate::manifest::yamldoc;

mod recover;

/// One object read from a file.
#[derive(Debug, Clone)]
pub struct ParsedObject {
    pub object: Object,
    /// Index of the YAML document in the file (0-based), counting every document.
    pub doc_index: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    /// Warnings that do not make the object invalid.
    pub warnings: Vec<ManifestError>,
}

/// A precise, user-facing problem in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// Dotted path to the field, e.g. `spec.minSize` (empty for the whole document).
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Everything read from one file. A file with any error contributes no objects at all: the
/// controller keeps the last valid version of what it defined.
#[derive(Debug, Clone, Default)]
pub struct ParsedFile {
    pub objects: Vec<ParsedObject>,
    pub errors: Vec<ManifestError>,
}

/// Parses and validates every document of `text` (the content of `path`).
///
/// Empty documents (only comments) are skipped but counted in `doc_index`, so indexes agree
/// with [`crate::manifest::yamldoc::split`]. If any document has an error, `objects` is empty.
pub fn parse_file(path: &Path, text: &str) -> ParsedFile {
    parse_file_checked(path, text, &|_| Vec::new())
}

/// [`parse_file`] with `extra` checks run beside validation, their problems located like
/// validation's (the caller's own rules: the controller passes its per-namespace limits).
pub fn parse_file_checked(
    path: &Path,
    text: &str,
    extra: &dyn Fn(&Object) -> Vec<validate::Problem>,
) -> ParsedFile {
    let mut out = ParsedFile::default();
    // Where each identity was first defined in this file (line), to reject a second definition.
    let mut seen: HashMap<ObjectKey, usize> = HashMap::new();
    for (doc_index, span) in yamldoc::split(text).into_iter().enumerate() {
        if span.empty {
            continue;
        }
        let doc = Doc::new(path, text, &span);
        match doc.parse(extra) {
            Ok((object, warnings, locations)) => {
                let line = doc.root_line(&locations);
                let key = object.key();
                if let Some(first) = seen.get(&key) {
                    out.errors.push(doc.error(
                        &locations,
                        "metadata.name",
                        format!(
                            "{} `{}/{}` is defined twice in this file (first at line {first}): each object is defined once",
                            key.kind, key.namespace, key.name
                        ),
                    ));
                    continue;
                }
                seen.insert(key, line);
                out.objects.push(ParsedObject {
                    object,
                    doc_index,
                    line,
                    warnings,
                });
            }
            Err(errors) => out.errors.extend(errors),
        }
    }
    if !out.errors.is_empty() {
        out.objects.clear();
    }
    out
}

/// One document being parsed: its text and how to turn its positions into file positions.
struct Doc<'a> {
    file: &'a Path,
    body: &'a str,
    /// Lines before the body (0 for the first document).
    line_offset: usize,
    /// Columns before the body on its first line (non-zero only for `--- {inline: doc}`).
    first_line_col_offset: usize,
}

type DocResult = Result<(Object, Vec<ManifestError>, Locations), Vec<ManifestError>>;

impl<'a> Doc<'a> {
    fn new(file: &'a Path, text: &'a str, span: &yamldoc::DocSpan) -> Self {
        let line_start = text[..span.body.start].rfind('\n').map_or(0, |i| i + 1);
        Doc {
            file,
            body: &text[span.body.clone()],
            line_offset: span.body_line - 1,
            // A byte order mark takes no column: editors do not show it.
            first_line_col_offset: text[line_start..span.body.start]
                .trim_start_matches(yamldoc::BOM)
                .chars()
                .count(),
        }
    }

    /// File position of a body position (both 1-based).
    fn pos(&self, (line, col): (usize, usize)) -> (usize, usize) {
        let col = if line == 1 {
            col + self.first_line_col_offset
        } else {
            col
        };
        (line + self.line_offset, col)
    }

    fn error_at(&self, at: (usize, usize), field: &str, message: String) -> ManifestError {
        let (line, column) = self.pos(at);
        ManifestError {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.to_string(),
            message,
        }
    }

    fn error(&self, locations: &Locations, field: &str, message: String) -> ManifestError {
        self.error_at(locations.position(field), field, message)
    }

    fn root_line(&self, locations: &Locations) -> usize {
        self.pos(locations.position("")).0
    }

    fn parse(&self, extra: &dyn Fn(&Object) -> Vec<validate::Problem>) -> DocResult {
        let root = match load_tree(self.body) {
            Ok(Some(root)) => root,
            Ok(None) => unreachable!("empty documents are skipped"),
            Err(TreeError::Syntax(e)) => {
                let at = (e.marker().line().max(1), e.marker().col() + 1);
                return Err(vec![self.error_at(
                    at,
                    "",
                    format!("invalid YAML: {}", e.info()),
                )]);
            }
            Err(TreeError::DuplicateKey { key, first, at }) => {
                return Err(vec![self.error_at(
                    at,
                    "",
                    format!(
                        "key `{key}` appears twice in the same map (first at line {}): keep one",
                        self.pos(first).0
                    ),
                )]);
            }
            Err(TreeError::TooDeep(at)) => {
                return Err(vec![self.error_at(
                    at,
                    "",
                    "the document is nested too deeply".to_string(),
                )]);
            }
        };
        let locations = Locations::of(&root);
        let NodeValue::Map(entries) = &root.value else {
            return Err(vec![self.error_at(
                (root.line, root.col),
                "",
                "a manifest is a map with `apiVersion`, `kind`, `metadata` and `spec`".to_string(),
            )]);
        };
        let kind = self.check_header(entries, &locations)?;
        let object = match self.typed_object(kind, self.body, &root, &locations) {
            Ok(object) => object,
            // Every further error the document's shape allows, not only serde's first.
            Err(first) => return Err(self.recover(kind, first, extra)),
        };
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for problem in validate::validate(&object)
            .into_iter()
            .chain(extra(&object))
        {
            let e = self.error(&locations, &problem.field, problem.message);
            match problem.severity {
                Severity::Error => errors.push(e),
                Severity::Warning => warnings.push(e),
            }
        }
        if errors.is_empty() {
            Ok((object, warnings, locations))
        } else {
            Err(errors)
        }
    }

    /// Checks `apiVersion` and `kind` before anything else, so a wrong kind is reported as
    /// such rather than as a dozen unknown fields.
    fn check_header(
        &self,
        entries: &[(Node, Node)],
        locations: &Locations,
    ) -> Result<Kind, Vec<ManifestError>> {
        let scalar = |name: &str| {
            entries
                .iter()
                .find_map(|(k, v)| match (&k.value, &v.value) {
                    (NodeValue::Scalar(k), value) if k == name => Some(match value {
                        NodeValue::Scalar(s) => Some(s.clone()),
                        _ => None,
                    }),
                    _ => None,
                })
        };
        let mut errors = Vec::new();
        match scalar("apiVersion") {
            None => errors.push(self.error(
                locations,
                "apiVersion",
                format!("missing `apiVersion`: add `apiVersion: {API_VERSION}`"),
            )),
            Some(Some(v)) if v == API_VERSION => {}
            Some(v) => errors.push(self.error(
                locations,
                "apiVersion",
                format!(
                    "unsupported apiVersion `{}`: this controller understands `{API_VERSION}`",
                    v.unwrap_or_default()
                ),
            )),
        }
        let names = Kind::ALL.map(Kind::as_str);
        let kind = match scalar("kind") {
            None => {
                errors.push(self.error(
                    locations,
                    "kind",
                    format!("missing `kind`: add one of {}", list(&names)),
                ));
                None
            }
            Some(Some(k)) if names.contains(&k.as_str()) => Kind::parse(&k),
            Some(k) => {
                let k = k.unwrap_or_default();
                let hint = did_you_mean(&k, names)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                errors.push(self.error(
                    locations,
                    "kind",
                    format!("unknown kind `{k}`{hint}: the kinds are {}", list(&names)),
                ));
                None
            }
        };
        match kind {
            Some(kind) if errors.is_empty() => Ok(kind),
            _ => Err(errors),
        }
    }

    /// Deserializes `body` (this document's text, or a repaired copy of it) as `kind`.
    fn typed_object(
        &self,
        kind: Kind,
        body: &str,
        root: &Node,
        locations: &Locations,
    ) -> Result<Object, TypedError> {
        Ok(match kind {
            Kind::LaunchConfiguration => {
                Object::LaunchConfiguration(self.typed(body, root, locations)?)
            }
            Kind::AutoScalingGroup => Object::AutoScalingGroup(self.typed(body, root, locations)?),
            Kind::ScalingPolicy => Object::ScalingPolicy(self.typed(body, root, locations)?),
            Kind::LoadBalancer => Object::LoadBalancer(self.typed(body, root, locations)?),
        })
    }

    /// Deserializes the typed manifest, turning serde's error into a located, friendly one.
    fn typed<S: DeserializeOwned>(
        &self,
        body: &str,
        root: &Node,
        locations: &Locations,
    ) -> Result<Manifest<S>, TypedError> {
        let de = serde_yaml_ng::Deserializer::from_str(body);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = path_string(e.path());
            let inner = e.into_inner();
            let serde_at = inner.location().map(|l| (l.line(), l.column()));
            let raw = bare_message(&inner);
            let friendly = if raw.starts_with("a port is a number") {
                explain_port(&path, find(root, &path)).unwrap_or_else(|| explain(&path, &raw))
            } else {
                explain(&path, &raw)
            };
            let at = if locations.contains(&friendly.locate) || serde_at.is_none() {
                locations.position(&friendly.locate)
            } else {
                serde_at.unwrap_or((1, 1))
            };
            // The field to take out to read on: the one that is wrong, when it is there (a
            // missing field cannot be taken out).
            let removable = !raw.starts_with("missing field ")
                && !friendly.field.is_empty()
                && !friendly.field.contains('?')
                && locations.contains(&friendly.field);
            TypedError {
                removable: removable.then(|| friendly.field.clone()),
                missing: raw.starts_with("missing field "),
                error: self.error_at(at, &friendly.field, friendly.message),
            }
        })
    }
}

/// serde's error in a document, located, and what to remove to read the rest.
struct TypedError {
    error: ManifestError,
    /// The field path whose entry, taken out of the text, lets deserialization go on.
    removable: Option<String>,
    /// A required field is missing.
    missing: bool,
}

fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Joins a parent path and a map key (`spec` + `minSize` → `spec.minSize`).
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Renders a serde path as we write field paths: `spec.ports[1].hostIp`, root as ``.
fn path_string(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => out = join(&out, key),
            Segment::Enum { .. } => {}
            Segment::Unknown => out = join(&out, "?"),
        }
    }
    out
}

/// serde_yaml_ng's message without its `path: ` prefix and ` at line L column C` suffix
/// (we report both ourselves, relative to the file).
fn bare_message(e: &serde_yaml_ng::Error) -> String {
    let mut s = e.to_string();
    if let Some(l) = e.location() {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(i) = s.find(&suffix) {
            s.replace_range(i..i + suffix.len(), "");
        }
    }
    // A leading `some.path[0]: ` (no spaces, no backticks) is serde_yaml_ng's own path.
    if let Some((prefix, rest)) = s.split_once(": ") {
        if !prefix.is_empty() && !prefix.contains([' ', '`', '"']) {
            return rest.to_string();
        }
    }
    s
}

/// A friendly rewording of a serde error.
struct Explained {
    /// Field path to report.
    field: String,
    /// Path whose location to point at (a missing field points at its parent).
    locate: String,
    message: String,
}

/// Names inside backticks in serde's messages: "expected one of `a`, `b`" → [a, b].
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

fn first_backticked(s: &str) -> &str {
    backticked(s).first().copied().unwrap_or_default()
}

/// Rewords serde's messages: the user reads field names and YAML words, not Rust types.
fn explain(path: &str, raw: &str) -> Explained {
    let same = |message: String| Explained {
        field: path.to_string(),
        locate: path.to_string(),
        message,
    };
    let shown_path = if path.is_empty() {
        "the document"
    } else {
        path
    };
    if let Some(rest) = raw.strip_prefix("unknown field ") {
        let (name, expected) = rest.split_once(", ").unwrap_or((rest, ""));
        let name = first_backticked(name);
        let candidates = backticked(expected);
        let message = match did_you_mean(name, candidates.iter().copied()) {
            Some(s) => format!("unknown field `{name}` (did you mean `{s}`?)"),
            None if candidates.is_empty() => {
                format!("unknown field `{name}`: no fields are expected here")
            }
            None => format!(
                "unknown field `{name}`: expected one of {}",
                list(&candidates)
            ),
        };
        // serde_path_to_error already records the unknown key as the last segment.
        let field = if path == name || path.ends_with(&format!(".{name}")) {
            path.to_string()
        } else {
            join(path, name)
        };
        return Explained {
            locate: field.clone(),
            field,
            message,
        };
    }
    if let Some(rest) = raw.strip_prefix("missing field ") {
        let name = first_backticked(rest);
        return Explained {
            field: join(path, name),
            locate: path.to_string(),
            message: format!("missing required field `{name}` in {shown_path}"),
        };
    }
    if let Some(rest) = raw.strip_prefix("duplicate field ") {
        let name = first_backticked(rest);
        let field = join(path, name);
        return Explained {
            locate: field.clone(),
            field,
            message: format!("field `{name}` is given twice: keep one"),
        };
    }
    if let Some(rest) = raw.strip_prefix("unknown variant ") {
        let (name, expected) = rest.split_once(", ").unwrap_or((rest, ""));
        let name = first_backticked(name);
        let candidates = backticked(expected);
        let hint = did_you_mean(name, candidates.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return same(format!(
            "unknown value `{name}` for {shown_path}{hint}: use one of {}",
            list(&candidates)
        ));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = raw.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.split_once(", expected ") {
                return same(format!(
                    "expected {} for {shown_path}, found {}",
                    expected_words(expected),
                    found_words(found)
                ));
            }
        }
    }
    if raw.starts_with("data did not match any variant of untagged enum IntOrPercent") {
        return same(format!(
            "expected a count (`1`) or a percentage of the desired capacity (`\"25%\"`) for {shown_path}"
        ));
    }
    if raw.contains("duration") && !raw.contains("such as") {
        return same(format!(
            "{raw}: write a number of seconds or a string such as `90s`, `5m`, `1h`"
        ));
    }
    same(raw.to_string())
}

/// A precise reason why the node at `path` is not a port: the port deserializer accepts two
/// shapes, so serde only knows that neither matched.
fn explain_port(path: &str, node: Option<&Node>) -> Option<Explained> {
    const FIELDS: [&str; 4] = ["containerPort", "hostPort", "hostIp", "protocol"];
    let here = |field: String, message: String| Explained {
        locate: field.clone(),
        field,
        message,
    };
    let port_number = |field: String, value: &Node| -> Option<Explained> {
        let NodeValue::Scalar(v) = &value.value else {
            return Some(here(
                field.clone(),
                format!(
                    "expected a port number from 1 to 65535 for {field}, found {}",
                    shape(value)
                ),
            ));
        };
        match v.parse::<u64>() {
            Ok(n) if n <= 65535 => None,
            _ => Some(here(
                field.clone(),
                format!("expected a port number from 1 to 65535 for {field}, found `{v}`"),
            )),
        }
    };
    let node = node?;
    match &node.value {
        NodeValue::Scalar(_) => port_number(path.to_string(), node).map(|mut e| {
            e.message.push_str(" (or a map with `containerPort`)");
            e
        }),
        NodeValue::Map(entries) => {
            for (k, v) in entries {
                let NodeValue::Scalar(name) = &k.value else {
                    continue;
                };
                let field = join(path, name);
                match name.as_str() {
                    "containerPort" | "hostPort" => {
                        if let Some(e) = port_number(field, v) {
                            return Some(e);
                        }
                    }
                    "hostIp" | "protocol" => {
                        if !matches!(v.value, NodeValue::Scalar(_)) {
                            return Some(here(
                                field.clone(),
                                format!("expected a string for {field}, found {}", shape(v)),
                            ));
                        }
                    }
                    _ => {
                        let hint = did_you_mean(name, FIELDS)
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_else(|| format!(": expected one of {}", list(&FIELDS)));
                        return Some(here(field, format!("unknown field `{name}`{hint}")));
                    }
                }
            }
            if !entries
                .iter()
                .any(|(k, _)| matches!(&k.value, NodeValue::Scalar(n) if n == "containerPort"))
            {
                return Some(Explained {
                    field: join(path, "containerPort"),
                    locate: path.to_string(),
                    message: format!("missing required field `containerPort` in {path}"),
                });
            }
            None
        }
        _ => Some(here(
            path.to_string(),
            format!(
                "expected a port number (`80`) or a map with `containerPort` for {path}, found {}",
                shape(node)
            ),
        )),
    }
}

fn shape(node: &Node) -> String {
    match &node.value {
        NodeValue::Scalar(s) => format!("`{s}`"),
        NodeValue::Map(_) => "a map".into(),
        NodeValue::Seq(_) => "a list".into(),
        NodeValue::Alias => "an alias".into(),
    }
}

/// The node at a path such as `spec.ports[1]` (keys without dots only).
fn find<'n>(root: &'n Node, path: &str) -> Option<&'n Node> {
    let mut node = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = part.split_once('[').map_or((part, ""), |(k, i)| (k, i));
        if !key.is_empty() {
            let NodeValue::Map(entries) = &node.value else {
                return None;
            };
            node = entries.iter().find_map(|(k, v)| match &k.value {
                NodeValue::Scalar(name) if name == key => Some(v),
                _ => None,
            })?;
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            let i: usize = index.trim_end_matches(']').parse().ok()?;
            let NodeValue::Seq(items) = &node.value else {
                return None;
            };
            node = items.get(i)?;
        }
    }
    Some(node)
}

/// serde's "expected ..." in YAML words.
fn expected_words(e: &str) -> String {
    match e {
        "u8" | "u32" | "u64" | "usize" => "a whole number".into(),
        "u16" => "a whole number from 0 to 65535".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "`true` or `false`".into(),
        "a sequence" => "a list".into(),
        "any valid JSON value" => "a value".into(),
        _ if e.starts_with("a duration: ") => {
            format!("a duration ({})", &e["a duration: ".len()..])
        }
        _ if e.starts_with("struct ") => "a map of fields".into(),
        _ if e.starts_with("a map") => "a map".into(),
        _ => e.into(),
    }
}

/// serde's "invalid type: ..." in YAML words.
fn found_words(u: &str) -> String {
    if let Some(s) = u
        .strip_prefix("string \"")
        .and_then(|s| s.strip_suffix('"'))
    {
        if s.parse::<f64>().is_ok() {
            return format!("the quoted string `\"{s}\"` (remove the quotes)");
        }
        return format!("`{s}`");
    }
    for prefix in ["integer ", "floating point ", "boolean ", "character "] {
        if let Some(v) = u.strip_prefix(prefix) {
            return v.to_string();
        }
    }
    match u {
        "unit value" => "nothing (null)".into(),
        "sequence" => "a list".into(),
        "map" => "a map".into(),
        _ => u.into(),
    }
}

/// A YAML node with the position (body-relative, 1-based) where it starts.
#[derive(Debug)]
struct Node {
    line: usize,
    col: usize,
    value: NodeValue,
}

#[derive(Debug)]
enum NodeValue {
    Scalar(String),
    Map(Vec<(Node, Node)>),
    Seq(Vec<Node>),
    /// An alias (`*anchor`): no position of its own worth reporting.
    Alias,
}

enum TreeError {
    Syntax(ScanError),
    DuplicateKey {
        key: String,
        first: (usize, usize),
        at: (usize, usize),
    },
    TooDeep((usize, usize)),
}

impl From<ScanError> for TreeError {
    fn from(e: ScanError) -> Self {
        TreeError::Syntax(e)
    }
}

/// serde_yaml_ng stops at 128 levels; manifests are a handful deep.
const MAX_DEPTH: usize = 64;

/// Reads the first document of `text` into a positioned tree (`None` if there is none).
fn load_tree(text: &str) -> Result<Option<Node>, TreeError> {
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, span) = next_event(&mut parser)?;
        match event {
            Event::StreamStart | Event::DocumentStart(_) | Event::Nothing => continue,
            Event::StreamEnd | Event::DocumentEnd => return Ok(None),
            event => return node(event, span, &mut parser, 0).map(Some),
        }
    }
}

fn next_event<'i>(parser: &mut Parser<'i, StrInput<'i>>) -> Result<(Event<'i>, Span), TreeError> {
    match parser.next_event() {
        Some(result) => Ok(result?),
        None => Err(TreeError::Syntax(ScanError::new_str(
            Marker::default(),
            "unexpected end of input",
        ))),
    }
}

fn node<'i>(
    event: Event<'i>,
    span: Span,
    parser: &mut Parser<'i, StrInput<'i>>,
    depth: usize,
) -> Result<Node, TreeError> {
    let (line, col) = (span.start.line(), span.start.col() + 1);
    if depth > MAX_DEPTH {
        return Err(TreeError::TooDeep((line, col)));
    }
    let value = match event {
        Event::Scalar(v, ..) => NodeValue::Scalar(v.into_owned()),
        Event::SequenceStart(..) => {
            let mut items = Vec::new();
            loop {
                match next_event(parser)? {
                    (Event::SequenceEnd, _) => break,
                    (e, s) => items.push(node(e, s, parser, depth + 1)?),
                }
            }
            NodeValue::Seq(items)
        }
        Event::MappingStart(..) => {
            let mut entries: Vec<(Node, Node)> = Vec::new();
            // Where each scalar key was first seen: a linear scan per key made a map of
            // thousands of keys (a long `env:`) cost seconds.
            let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
            loop {
                let key = match next_event(parser)? {
                    (Event::MappingEnd, _) => break,
                    (e, s) => node(e, s, parser, depth + 1)?,
                };
                let (e, s) = next_event(parser)?;
                let value = node(e, s, parser, depth + 1)?;
                if let NodeValue::Scalar(k) = &key.value {
                    if let Some(first) = seen.get(k) {
                        return Err(TreeError::DuplicateKey {
                            key: k.clone(),
                            first: *first,
                            at: (key.line, key.col),
                        });
                    }
                    seen.insert(k.clone(), (key.line, key.col));
                }
                entries.push((key, value));
            }
            NodeValue::Map(entries)
        }
        _ => NodeValue::Alias,
    };
    Ok(Node { line, col, value })
}

/// Where each field path of a document is: its key (for map entries) and its value.
#[derive(Debug, Default)]
struct Locations {
    map: HashMap<String, Location>,
}

#[derive(Debug, Clone, Copy)]
struct Location {
    key: Option<(usize, usize)>,
    value: (usize, usize),
}

impl Locations {
    fn of(root: &Node) -> Self {
        let mut l = Locations::default();
        l.collect(root, String::new(), None);
        l
    }

    fn collect(&mut self, node: &Node, path: String, key: Option<(usize, usize)>) {
        match &node.value {
            NodeValue::Map(entries) => {
                for (k, v) in entries {
                    if let NodeValue::Scalar(name) = &k.value {
                        self.collect(v, join(&path, name), Some((k.line, k.col)));
                    }
                }
            }
            NodeValue::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.collect(item, format!("{path}[{i}]"), None);
                }
            }
            NodeValue::Scalar(_) | NodeValue::Alias => {}
        }
        self.map.insert(
            path,
            Location {
                key,
                value: (node.line, node.col),
            },
        );
    }

    fn contains(&self, path: &str) -> bool {
        self.map.contains_key(path)
    }

    /// Position of the field at `path` (its key when it has one), else of its nearest
    /// existing parent (a missing field is reported where it should have been).
    fn position(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(l) = self.map.get(p) {
                return l.key.unwrap_or(l.value);
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None if !p.is_empty() => p = "",
                None => return (1, 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::types::{IntOrPercent, PortSpec};
    use std::time::Duration;

    const LC: &str = "apiVersion: microscaler.io/v1
kind: LaunchConfiguration
metadata:
  name: web
spec:
  image: microscaler/busybox:latest
";

    const ASG: &str = "apiVersion: microscaler.io/v1
kind: AutoScalingGroup
metadata:
  name: web
spec:
  launchConfiguration: web
  minSize: 1
  maxSize: 4
";

    const POLICY: &str = "apiVersion: microscaler.io/v1
kind: ScalingPolicy
metadata:
  name: cpu
spec:
  autoScalingGroup: web
  metric: CPU
  samplingWindow: 60
  breachDuration: 3m
  scaleOutStep: 1
  scaleInStep: 1
  upperThreshold: 80
  lowerThreshold: 30
";

    fn parse(text: &str) -> ParsedFile {
        parse_file(Path::new("m.yaml"), text)
    }

    /// The single error of `text`, as `(line, column, field, message)`.
    fn only_error(text: &str) -> (usize, usize, String, String) {
        let parsed = parse(text);
        assert_eq!(parsed.errors.len(), 1, "{:#?}", parsed.errors);
        assert!(parsed.objects.is_empty());
        let e = &parsed.errors[0];
        (e.line, e.column, e.field.clone(), e.message.clone())
    }

    #[test]
    fn a_typo_in_the_second_document_is_located_in_the_file_with_a_suggestion() {
        let text = format!(
            "{LC}---\n{}",
            ASG.replace("  minSize: 1", "  desiredCapasity: 2\n  minSize: 1")
        );
        assert_eq!(text.lines().nth(13), Some("  desiredCapasity: 2"));
        let (line, col, field, message) = only_error(&text);
        assert_eq!((line, col), (14, 3));
        assert_eq!(field, "spec.desiredCapasity");
        assert_eq!(
            message,
            "unknown field `desiredCapasity` (did you mean `desiredCapacity`?)"
        );
    }

    #[test]
    fn errors_name_the_field_its_position_and_the_fix() {
        // (document, line, column, field, start of message)
        let cases: Vec<(String, usize, usize, &str, &str)> = vec![
            (
                ASG.replace("maxSize: 4", "maxSize: four"),
                8, 3, "spec.maxSize",
                "expected a whole number for spec.maxSize, found `four`",
            ),
            (
                ASG.replace("kind: AutoScalingGroup", "kind: AutoscalingGroup"),
                2, 1, "kind",
                "unknown kind `AutoscalingGroup` (did you mean `AutoScalingGroup`?)",
            ),
            (
                ASG.replace("microscaler.io/v1", "microscaler.io/v2"),
                1, 1, "apiVersion",
                "unsupported apiVersion `microscaler.io/v2`: this controller understands `microscaler.io/v1`",
            ),
            (
                ASG.replace("apiVersion: microscaler.io/v1\n", ""),
                1, 1, "apiVersion",
                "missing `apiVersion`: add `apiVersion: microscaler.io/v1`",
            ),
            (
                ASG.replace("  maxSize: 4\n", ""),
                5, 1, "spec.maxSize",
                "missing required field `maxSize` in spec",
            ),
            (
                ASG.replace("minSize: 1", "minSize: 5"),
                7, 3, "spec.minSize",
                "minSize 5 > maxSize 4: minSize must be at most maxSize",
            ),
            (
                ASG.replace("minSize: 1\n  maxSize: 4", "minSize: 1\n  maxSize: 1001"),
                8, 3, "spec.maxSize",
                "maxSize 1001 is above the limit of 1000",
            ),
            (
                ASG.replace("name: web", "name: Web_1"),
                4, 3, "metadata.name",
                "name `Web_1` is not valid: use 1-63 lower-case letters, digits and `-`, starting and ending with a letter or digit, e.g. `web-1`",
            ),
            (
                format!("{ASG}  availabilityZones: [a, b, a]\n"),
                9, 29, "spec.availabilityZones[2]",
                "zone `a` is listed twice",
            ),
            (
                format!("{ASG}  availabilityZones:\n  - \"\"\n"),
                10, 5, "spec.availabilityZones[0]",
                "a zone name must not be empty",
            ),
            (
                format!("{ASG}  maxSurge: 0\n  maxUnavailable: 0%\n"),
                9, 3, "spec.maxSurge",
                "maxSurge and maxUnavailable are both 0",
            ),
            (
                format!("{ASG}  maxUnavailable: 120%\n"),
                9, 3, "spec.maxUnavailable",
                "`120%` is neither a count nor a percentage",
            ),
            (
                format!("{LC}  instanceType: m1.smal\n"),
                7, 3, "spec.instanceType",
                "unknown instance type `m1.smal` (did you mean `m1.small`?)",
            ),
            (
                format!("{LC}  resources:\n    cpus: 0\n"),
                8, 5, "spec.resources.cpus",
                "cpus must be greater than 0",
            ),
            (
                format!("{LC}  resources:\n    memoryMiB: 4\n"),
                8, 5, "spec.resources.memoryMiB",
                "memoryMiB 4 is below Docker's minimum of 6 MiB",
            ),
            (
                format!("{LC}  ports:\n  - 8080\n  - {{containerPort: 80, hostIp: localhost}}\n"),
                9, 25, "spec.ports[1].hostIp",
                "hostIp `localhost` is not an IP address",
            ),
            (
                format!("{LC}  ports:\n  - containerPort: 80\n    protocol: TCP\n"),
                9, 5, "spec.ports[0].protocol",
                "protocol `TCP` is not supported (did you mean `tcp`?): use `tcp` or `udp`",
            ),
            (
                format!("{LC}  ports:\n  - 8080\n  - containerPort: 70000\n"),
                9, 5, "spec.ports[1].containerPort",
                "expected a port number from 1 to 65535 for spec.ports[1].containerPort, found `70000`",
            ),
            (
                format!("{LC}  ports:\n  - containerPrt: 80\n"),
                8, 5, "spec.ports[0].containerPrt",
                "unknown field `containerPrt` (did you mean `containerPort`?)",
            ),
            (
                format!("{LC}  ports:\n  - 0\n"),
                8, 5, "spec.ports[0].containerPort",
                "containerPort 0 is not a port: use 1-65535",
            ),
            (
                format!("{LC}  env:\n    A=b: c\n"),
                8, 5, "spec.env.A=b",
                "environment variable name `A=b` contains `=`: write `A: \"b\"` instead",
            ),
            (
                format!("{LC}  env:\n    \"\": c\n"),
                8, 5, "spec.env.",
                "an environment variable needs a name",
            ),
            (
                format!("{LC}  labels:\n    io.microscaler.group: x\n"),
                8, 5, "spec.labels.io.microscaler.group",
                "label `io.microscaler.group` uses the reserved prefix `io.microscaler.`",
            ),
            (
                LC.replace("image: microscaler/busybox:latest", "image: \"\""),
                6, 3, "spec.image",
                "image must not be empty",
            ),
            (
                POLICY.replace("lowerThreshold: 30", "lowerThreshold: 90"),
                13, 3, "spec.lowerThreshold",
                "lowerThreshold 90 must be below upperThreshold 80",
            ),
            (
                POLICY.replace("upperThreshold: 80\n  lowerThreshold: 30", "upperThreshold: 80\n  lowerThreshold: -1"),
                13, 3, "spec.lowerThreshold",
                "lowerThreshold must be a percentage of 0 or more",
            ),
            (
                POLICY.replace("scaleInStep: 1", "scaleInStep: 0"),
                11, 3, "spec.scaleInStep",
                "scaleInStep must be at least 1",
            ),
            (
                POLICY.replace("samplingWindow: 60", "samplingWindow: 0s"),
                8, 3, "spec.samplingWindow",
                "samplingWindow must be longer than 0",
            ),
            (
                POLICY.replace("breachDuration: 3m", "breachDuration: 3 minutes"),
                9, 3, "spec.breachDuration",
                "invalid duration `3 minutes`: write a number of seconds or a string such as `90s`, `5m`, `1h`",
            ),
            (
                POLICY.replace("metric: CPU", "metric: cpu"),
                7, 3, "spec.metric",
                "unknown value `cpu` for spec.metric (did you mean `CPU`?): use one of `CPU`, `Memory`",
            ),
            (
                ASG.replace("maxSize: 4", "maxSize: \"4\""),
                8, 3, "spec.maxSize",
                "expected a whole number for spec.maxSize, found the quoted string `\"4\"`",
            ),
            (
                format!("{ASG}  minSize: 2\n"),
                9, 3, "",
                "key `minSize` appears twice in the same map (first at line 7)",
            ),
            (
                ASG.replace("minSize: 1", "minSize: [1"),
                8, 10, "",
                "invalid YAML:",
            ),
            (
                ASG.replace("spec:", "specs:"),
                5, 1, "specs",
                "unknown field `specs` (did you mean `spec`?)",
            ),
            (
                ASG.replace("metadata:\n  name: web\n", ""),
                1, 1, "metadata",
                "missing required field `metadata` in the document",
            ),
            (
                ASG.replace("kind: AutoScalingGroup\n", ""),
                1, 1, "kind",
                "missing `kind`: add one of `LaunchConfiguration`, `AutoScalingGroup`, `ScalingPolicy`",
            ),
            (
                format!("{LC}  stopGracePeriod: {{seconds: 5}}\n"),
                7, 3, "spec.stopGracePeriod",
                "expected a duration (a number of seconds or a string such as `90s`, `5m`, `1h`) for spec.stopGracePeriod, found a map",
            ),
            (
                "- just\n- a list\n".to_string(),
                1, 1, "",
                "a manifest is a map with `apiVersion`, `kind`, `metadata` and `spec`",
            ),
        ];
        for (text, line, col, field, message) in cases {
            let (l, c, f, m) = only_error(&text);
            assert_eq!(
                (l, c, f.as_str()),
                (line, col, field),
                "position of `{message}` (got `{m}` at {l}:{c} {f}) in:\n{text}"
            );
            assert!(m.starts_with(message), "expected `{message}`, got `{m}`");
        }
    }

    #[test]
    fn a_file_with_one_bad_document_yields_no_objects() {
        let text = format!(
            "{LC}---\n{}---\n{POLICY}",
            ASG.replace("minSize: 1", "minSize: 9")
        );
        let parsed = parse(&text);
        assert!(parsed.objects.is_empty());
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.errors[0].line, 14);
    }

    #[test]
    fn every_document_is_parsed_and_indexes_count_empty_documents() {
        let text =
            format!("# just a comment\n---\n{LC}---\n# nothing here\n---\n{ASG}---\n{POLICY}");
        let parsed = parse(&text);
        assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
        let got: Vec<(Kind, usize, usize)> = parsed
            .objects
            .iter()
            .map(|o| (o.object.kind(), o.doc_index, o.line))
            .collect();
        assert_eq!(
            got,
            vec![
                (Kind::LaunchConfiguration, 1, 3),
                (Kind::AutoScalingGroup, 3, 12),
                (Kind::ScalingPolicy, 4, 21),
            ]
        );
    }

    #[test]
    fn comments_and_quoted_keys_do_not_confuse_locations() {
        let text = "# leading comment
apiVersion: microscaler.io/v1 # trailing comment
'kind': \"AutoScalingGroup\"
metadata: {name: web}   # flow map
spec:
  # a comment line, indented like a key
  \"launchConfiguration\": web
  minSize: 1 # minSize: 99
  maxSize: 4
  'desiredCapasity': 2
";
        let (line, col, field, _) = only_error(text);
        assert_eq!((line, col, field.as_str()), (10, 3, "spec.desiredCapasity"));
    }

    #[test]
    fn an_inline_document_after_the_marker_is_located_on_the_marker_line() {
        let text = format!("{LC}--- {{apiVersion: microscaler.io/v1, kind: AutoScalingGroup, metadata: {{name: web}}, spec: {{launchConfiguration: web, minSize: 1, maxSize: 4, bogus: 1}}}}\n");
        let (line, col, field, _) = only_error(&text);
        assert_eq!((line, field.as_str()), (7, "spec.bogus"));
        assert_eq!(&text.lines().nth(6).unwrap()[col - 1..col + 4], "bogus");
    }

    #[test]
    fn the_same_identity_twice_in_a_file_is_an_error_on_the_second() {
        let text = format!("{LC}---\n{LC}");
        let (line, col, field, message) = only_error(&text);
        assert_eq!((line, col, field.as_str()), (11, 3, "metadata.name"));
        assert!(
            message.contains("defined twice in this file (first at line 1)"),
            "{message}"
        );
        // Another namespace is another identity.
        let other = LC.replace("  name: web\n", "  name: web\n  namespace: prod\n");
        assert!(parse(&format!("{LC}---\n{other}")).errors.is_empty());
    }

    #[test]
    fn a_desired_capacity_outside_the_bounds_is_a_warning_not_an_error() {
        let parsed = parse(&format!("{ASG}  desiredCapacity: 9\n"));
        assert!(parsed.errors.is_empty());
        let warnings = &parsed.objects[0].warnings;
        assert_eq!(warnings.len(), 1);
        assert_eq!((warnings[0].line, warnings[0].column), (9, 3));
        assert_eq!(
            warnings[0].message,
            "desiredCapacity 9 is above maxSize 4: it is clamped to 4"
        );
    }

    #[test]
    fn durations_are_numbers_of_seconds_or_strings() {
        let text = POLICY
            .replace("samplingWindow: 60", "samplingWindow: 1.5")
            .replace("breachDuration: 3m", "breachDuration: \"1h30m\"");
        let parsed = parse(&text);
        assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
        let Object::ScalingPolicy(p) = &parsed.objects[0].object else {
            panic!("not a policy")
        };
        assert_eq!(p.spec.sampling_window.0, Duration::from_millis(1500));
        assert_eq!(p.spec.breach_duration.0, Duration::from_secs(5400));
        let parsed = parse(POLICY);
        let Object::ScalingPolicy(p) = &parsed.objects[0].object else {
            panic!("not a policy")
        };
        assert_eq!(p.spec.sampling_window.0, Duration::from_secs(60));
        assert_eq!(p.spec.breach_duration.0, Duration::from_secs(180));
    }

    #[test]
    fn ports_are_numbers_or_maps() {
        let text = format!(
            "{LC}  ports:\n  - 8080\n  - containerPort: 53\n    hostPort: 5353\n    hostIp: 0.0.0.0\n    protocol: udp\n"
        );
        let parsed = parse(&text);
        assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
        let Object::LaunchConfiguration(lc) = &parsed.objects[0].object else {
            panic!("not a launch configuration")
        };
        assert_eq!(
            lc.spec.ports,
            vec![
                PortSpec {
                    container_port: 8080,
                    host_port: None,
                    host_ip: None,
                    protocol: None
                },
                PortSpec {
                    container_port: 53,
                    host_port: Some(5353),
                    host_ip: Some("0.0.0.0".into()),
                    protocol: Some("udp".into())
                },
            ]
        );
    }

    #[test]
    fn max_surge_takes_counts_and_percentages() {
        let parsed = parse(&format!("{ASG}  maxSurge: 25%\n  maxUnavailable: 1\n"));
        assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
        let Object::AutoScalingGroup(g) = &parsed.objects[0].object else {
            panic!("not a group")
        };
        assert_eq!(g.spec.max_surge, Some(IntOrPercent::Percent("25%".into())));
        assert_eq!(g.spec.max_unavailable, Some(IntOrPercent::Int(1)));
    }

    #[test]
    fn a_status_block_is_accepted() {
        let parsed = parse(&format!("{ASG}status:\n  desired: 2\n"));
        assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
    }

    #[test]
    fn a_byte_order_mark_is_accepted_and_errors_keep_their_columns() {
        let parsed = parse(&format!("\u{feff}{ASG}"));
        assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
        assert_eq!(parsed.objects.len(), 1);
        let parsed =
            parse(&format!("\u{feff}---\n{ASG}---\n{ASG}").replacen("name: web", "name: two", 1));
        assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
        assert_eq!(parsed.objects.len(), 2);
        // Errors point where they point without the mark.
        for broken in [
            "apiVersion: nope/v9\nkind: AutoScalingGroup\n".to_string(),
            "{apiVersion: 1, kind: [\n".to_string(),
            ASG.replace("maxSize: 4", "maxSize: four"),
        ] {
            let plain = parse(&broken).errors;
            assert!(!plain.is_empty());
            assert_eq!(
                parse(&format!("\u{feff}{broken}")).errors,
                plain,
                "{broken}"
            );
        }
    }

    #[test]
    fn errors_display_as_file_line_column_field_message() {
        let e = &parse(&ASG.replace("maxSize: 4", "maxSize: four")).errors[0];
        assert_eq!(
            e.to_string(),
            "m.yaml:8:3: spec.maxSize: expected a whole number for spec.maxSize, found `four`"
        );
    }
}
