//! `-l` label selectors, kubectl's equality-based form: `key=value`, `key==value`, `key!=value`,
//! `key` (has the label), `!key` (has not), comma-separated (all must hold).

use serde_json::Value;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses `app=web,tier!=db,canary`.
    ///
    /// # Errors
    /// One sentence naming the bad requirement.
    pub(crate) fn parse(s: &str) -> Result<Selector, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim) {
            let bad = || format!("-l `{part}`: use key=value, key!=value, key or !key");
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Absent(k.trim().into())
            } else {
                Requirement::Exists(part.into())
            };
            let key = match &req {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::Absent(k) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(bad());
            }
            out.push(req);
        }
        Ok(Selector(out))
    }

    /// Whether `labels` (a JSON map, or null for none) satisfies every requirement.
    pub(crate) fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::Absent(k) => get(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_requirement_must_hold() {
        let l = json!({"app": "web", "tier": "front"});
        let m = |s: &str| Selector::parse(s).unwrap().matches(&l);
        assert!(m("app=web"));
        assert!(m("app==web,tier=front"));
        assert!(!m("app=web,tier=db"));
        assert!(m("tier!=db"));
        assert!(m("app"));
        assert!(!m("!app"));
        assert!(m("!canary"));
        assert!(!Selector::parse("app=web").unwrap().matches(&Value::Null));
        assert!(Selector::parse("a b=c").is_err());
        assert!(Selector::parse("=x").is_err());
    }
}
