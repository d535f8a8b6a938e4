//! What a document says it is (kind, namespace, name; a microscaler group or not), read as a
//! generic YAML tree without the typed parse: the one place in the editor that reads YAML as
//! more than lines.

use crate::manifest::yamldoc::split;

/// Reads the `kind`, namespace (default `default`) and name of document `doc_index`, to check
/// it still is the object we think before writing into it. `None` when the document is missing
/// or not a readable manifest.
pub fn doc_identity(text: &str, doc_index: usize) -> Option<(String, String, String)> {
    let span = split(text).into_iter().nth(doc_index)?;
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text[span.body]).ok()?;
    let kind = v.get("kind")?.as_str()?.to_string();
    let meta = v.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_string();
    let namespace = match meta.get("namespace") {
        None | Some(serde_yaml_ng::Value::Null) => "default".to_string(),
        Some(ns) => ns.as_str()?.to_string(),
    };
    Some((kind, namespace, name))
}

/// True when `body` (one document) is a microscaler `AutoScalingGroup`: `apiVersion:
/// microscaler.io/...` and `kind: AutoScalingGroup`. False for anything that does not parse.
pub(super) fn is_microscaler_group(body: &str) -> bool {
    let Ok(v) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(body) else {
        return false;
    };
    let api = v.get("apiVersion").and_then(|a| a.as_str()).unwrap_or("");
    api.starts_with("microscaler.io/")
        && v.get("kind").and_then(|k| k.as_str()) == Some("AutoScalingGroup")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::fixtures::*;

    #[test]
    fn doc_identity_reads_kind_namespace_and_name() {
        assert_eq!(
            doc_identity(FILE, 1),
            Some(("AutoScalingGroup".into(), "shop".into(), "web".into()))
        );
        assert_eq!(
            doc_identity(FILE, 2),
            Some(("ScalingPolicy".into(), "default".into(), "cpu".into()))
        );
        assert_eq!(doc_identity(FILE, 3), None);
        assert_eq!(doc_identity("a: [\n", 0), None);
    }
}
