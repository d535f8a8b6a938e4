//! `-o jsonpath=TEMPLATE`: the subset of kubectl's JSONPath templates that scripts use.
//!
//! Supported: text, `{.a.b}`, `{.items[0].x}`, `{.items[*].metadata.name}` (several values are
//! joined by one space), `{['key.with.dots']}`, string literals `{"\n"}` / `{"\t"}`, and
//! `{range .items[*]}...{end}`. Not supported (an error, not a silent empty output): filters
//! `[?()]`, recursive descent `..`, slices `[1:3]`, functions.

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    All,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Path(Vec<Step>),
    Range(Vec<Step>, Vec<Part>),
}

/// A template ready to run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template(Vec<Part>);

fn parse_path(expr: &str) -> Result<Vec<Step>, String> {
    let unsupported = |what: &str| Err(format!("jsonpath `{expr}`: {what} is not supported"));
    let mut rest = expr.trim();
    rest = rest.strip_prefix('$').unwrap_or(rest);
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if rest.starts_with("..") {
            return unsupported("recursive descent `..`");
        }
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Key(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or_else(|| format!("jsonpath `{expr}`: `[` without `]`"))?;
            let inner = r[..end].trim();
            rest = &r[end + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Ok(i) = inner.parse::<usize>() {
                steps.push(Step::Index(i));
            } else if let Some(k) = inner
                .strip_prefix('\'')
                .and_then(|k| k.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|k| k.strip_suffix('"')))
            {
                steps.push(Step::Key(k.to_string()));
            } else if inner.starts_with('?') {
                return unsupported("a filter `[?(...)]`");
            } else {
                return unsupported(&format!("`[{inner}]`"));
            }
        } else {
            return Err(format!(
                "jsonpath `{expr}`: a path starts with `.` (e.g. `{{.metadata.name}}`)"
            ));
        }
    }
    Ok(steps)
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n")
        .replace("\\t", "\t")
        .replace("\\\"", "\"")
}

impl Template {
    /// Parses `TEMPLATE` (without the `jsonpath=` prefix).
    ///
    /// # Errors
    /// One sentence naming what is wrong.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        // A stack of open `range` blocks: (path, parts so far).
        let mut stack: Vec<(Vec<Step>, Vec<Part>)> = vec![(Vec::new(), Vec::new())];
        let mut rest = text;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                stack
                    .last_mut()
                    .expect("root")
                    .1
                    .push(Part::Text(unescape(rest)));
                break;
            };
            if open > 0 {
                stack
                    .last_mut()
                    .expect("root")
                    .1
                    .push(Part::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("jsonpath `{text}`: `{{` without `}}`"))?
                + open;
            let inner = rest[open + 1..close].trim();
            rest = &rest[close + 1..];
            if let Some(lit) = inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                stack
                    .last_mut()
                    .expect("root")
                    .1
                    .push(Part::Text(unescape(lit)));
            } else if let Some(path) = inner.strip_prefix("range ") {
                stack.push((parse_path(path)?, Vec::new()));
            } else if inner == "end" {
                if stack.len() < 2 {
                    return Err(format!("jsonpath `{text}`: `{{end}}` without `{{range}}`"));
                }
                let (path, parts) = stack.pop().expect("checked");
                stack
                    .last_mut()
                    .expect("root")
                    .1
                    .push(Part::Range(path, parts));
            } else {
                stack
                    .last_mut()
                    .expect("root")
                    .1
                    .push(Part::Path(parse_path(inner)?));
            }
        }
        if stack.len() != 1 {
            return Err(format!("jsonpath `{text}`: `{{range}}` without `{{end}}`"));
        }
        Ok(Template(stack.pop().expect("root").1))
    }

    /// The template applied to `root`.
    pub(crate) fn render(&self, root: &Value) -> String {
        let mut out = String::new();
        render_parts(&self.0, root, &mut out);
        out
    }
}

fn select<'a>(v: &'a Value, steps: &[Step]) -> Vec<&'a Value> {
    let Some((first, rest)) = steps.split_first() else {
        return vec![v];
    };
    match first {
        Step::Key(k) => v.get(k).map(|x| select(x, rest)).unwrap_or_default(),
        Step::Index(i) => v.get(*i).map(|x| select(x, rest)).unwrap_or_default(),
        Step::All => match v {
            Value::Array(a) => a.iter().flat_map(|x| select(x, rest)).collect(),
            Value::Object(m) => m.values().flat_map(|x| select(x, rest)).collect(),
            _ => Vec::new(),
        },
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn render_parts(parts: &[Part], v: &Value, out: &mut String) {
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Path(steps) => {
                let vals: Vec<String> = select(v, steps).into_iter().map(text_of).collect();
                out.push_str(&vals.join(" "));
            }
            Part::Range(steps, inner) => {
                for item in select(v, steps) {
                    render_parts(inner, item, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> Value {
        json!({"kind": "List", "items": [
            {"metadata": {"name": "web", "labels": {"app.io/tier": "front"}}, "status": {"ready": 2}},
            {"metadata": {"name": "api"}, "status": {"ready": 0}},
        ]})
    }

    fn run(t: &str) -> String {
        Template::parse(t).unwrap().render(&list())
    }

    #[test]
    fn paths_wildcards_and_indexes() {
        assert_eq!(run("{.items[*].metadata.name}"), "web api");
        assert_eq!(run("{.items[1].status.ready}"), "0");
        assert_eq!(run("{.kind}"), "List");
        assert_eq!(run("{.items[0].metadata.labels['app.io/tier']}"), "front");
        assert_eq!(run("{.nothing}"), "");
    }

    #[test]
    fn range_and_literals_make_lines() {
        assert_eq!(
            run(r#"{range .items[*]}{.metadata.name}{"\t"}{.status.ready}{"\n"}{end}"#),
            "web\t2\napi\t0\n"
        );
    }

    #[test]
    fn unsupported_forms_are_errors() {
        assert!(Template::parse("{.items[?(@.x)]}").is_err());
        assert!(Template::parse("{..name}").is_err());
        assert!(Template::parse("{range .items[*]}{.x}").is_err());
        assert!(Template::parse("{.x").is_err());
    }
}
