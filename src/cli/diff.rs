//! `ms diff -f FILE|DIR|-`: what applying the files would change, field by field, and what the
//! controller would then do (launch, terminate, roll out), like `kubectl diff`.
//!
//! The files are parsed offline with the controller's parser; each object is compared with what
//! the controller serves (`GET /v1/{kind}/{ns}/{name}`), both sides as the same typed manifest
//! serialized to JSON, so defaults and formatting never show as differences.
//!
//! Exit status: 0 no differences, 1 differences, 2 an error (a file that does not validate, an
//! unreachable controller), as `kubectl diff`.

use std::collections::BTreeMap;

use clap::Args;
use serde_json::Value;

use super::apply_cmd::{expand, read};
use super::{CmdResult, Failure};
use crate::client::{Client, ClientError};
use crate::manifest::{parse_file, GroupState, Kind, Object};

/// Arguments of `ms diff`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ms diff -f manifests/
  ms diff -f web.yaml && echo 'nothing to apply'

Exit status: 0 no differences, 1 differences, 2 an error.")]
pub(crate) struct DiffArgs {
    /// Manifest file, directory (every *.yaml and *.yml in it, sorted) or `-` for stdin.
    /// Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    files: Vec<String>,
}

/// One field that differs: dotted path, value running, value in the file (None: absent).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldChange {
    pub path: String,
    pub live: Option<Value>,
    pub file: Option<Value>,
}

/// Every leaf of `v` as `path → value` (arrays are leaves: a list of zones or ports is read
/// as one value).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Null => {}
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The fields of `metadata.labels` and `spec` that differ between `live` and `file`.
pub(crate) fn field_changes(live: &Value, file: &Value) -> Vec<FieldChange> {
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    for part in ["metadata", "spec"] {
        flatten(part, &live[part], &mut a);
        flatten(part, &file[part], &mut b);
    }
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| FieldChange {
            path: k.clone(),
            live: a.get(k).cloned(),
            file: b.get(k).cloned(),
        })
        .collect()
}

/// The capacity a group spec asks for, given the capacity it runs at now (a spec without
/// `desiredCapacity` keeps the current one within its bounds).
fn wanted(spec: &Value, current: u64) -> u64 {
    if spec["state"].as_str() == Some("Stopped") {
        return 0;
    }
    let min = spec["minSize"].as_u64().unwrap_or(0);
    let max = spec["maxSize"].as_u64().unwrap_or(u64::MAX).max(min);
    spec["desiredCapacity"]
        .as_u64()
        .unwrap_or(current)
        .clamp(min, max)
}

/// What the controller would do for a group: `launch N`, `terminate N`, `roll out N`.
///
/// `live_status` is the group's served status (Null for a new group); `rollout` says whether
/// its instances' launch configuration changes (a different one, or the same one edited).
pub(crate) fn group_actions(file_spec: &Value, live_status: &Value, rollout: bool) -> Vec<String> {
    let current = live_status["current"].as_u64().unwrap_or(0);
    let target = match live_status["desiredCapacitySetBy"].as_str() {
        // A policy owns the capacity: the file's desiredCapacity does not change it.
        Some(by) if by != "user" => {
            let min = file_spec["minSize"].as_u64().unwrap_or(0);
            let max = file_spec["maxSize"].as_u64().unwrap_or(u64::MAX).max(min);
            let running = live_status["desiredCapacity"].as_u64().unwrap_or(current);
            if file_spec["state"].as_str() == Some("Stopped") {
                0
            } else {
                running.clamp(min, max)
            }
        }
        _ => wanted(file_spec, current),
    };
    let mut out = Vec::new();
    if target > current {
        out.push(format!("launch {}", target - current));
    }
    if current > target {
        out.push(format!("terminate {}", current - target));
    }
    let kept = current.min(target);
    if rollout && kept > 0 {
        out.push(format!("roll out {kept}"));
    }
    out
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

fn diff_failure(e: impl Into<Failure>) -> Failure {
    match e.into() {
        Failure::Message(m) => Failure::Code(2, m),
        other => other,
    }
}

pub(crate) async fn run(client: Client, args: DiffArgs) -> CmdResult {
    let mut objects: Vec<(String, Object)> = Vec::new();
    for spec in &args.files {
        for path in expand(spec).map_err(diff_failure)? {
            let (name, text) = read(&path).map_err(diff_failure)?;
            let parsed = parse_file(std::path::Path::new(&name), &text);
            if !parsed.errors.is_empty() {
                for e in &parsed.errors {
                    eprintln!("{e}");
                }
                return Err(Failure::Code(
                    2,
                    format!(
                        "{name}: {} error(s); fix them first (ms validate)",
                        parsed.errors.len()
                    ),
                ));
            }
            objects.extend(parsed.objects.into_iter().map(|o| (name.clone(), o.object)));
        }
    }
    // Live objects first: a group rolls out when its launch configuration changes too.
    let mut live: BTreeMap<usize, Option<Value>> = BTreeMap::new();
    for (i, (_, o)) in objects.iter().enumerate() {
        let m = o.metadata();
        let v = match client.get(o.kind(), &m.namespace, &m.name).await {
            Ok(v) => Some(v),
            Err(ClientError::Api { status: 404, .. }) => None,
            Err(e) => return Err(diff_failure(e)),
        };
        live.insert(i, v);
    }
    let changed_lcs: Vec<(String, String)> = objects
        .iter()
        .enumerate()
        .filter(|(i, (_, o))| {
            o.kind() == Kind::LaunchConfiguration
                && live[i].as_ref().is_some_and(|l| {
                    !field_changes(l, &serde_json::to_value(o).unwrap_or_default()).is_empty()
                })
        })
        .map(|(_, (_, o))| (o.metadata().namespace.clone(), o.metadata().name.clone()))
        .collect();
    let mut differences = 0usize;
    for (i, (file, object)) in objects.iter().enumerate() {
        let ours = serde_json::to_value(object).unwrap_or_default();
        let id = format!(
            "{}/{}",
            object.kind().as_str().to_ascii_lowercase(),
            object.metadata().name
        );
        let ns = &object.metadata().namespace;
        match &live[&i] {
            None => {
                differences += 1;
                println!("+ {id} (namespace {ns}, from {file}): would be created");
                if let Object::AutoScalingGroup(g) = object {
                    let actions = group_actions(&ours["spec"], &Value::Null, false);
                    if g.spec.state != GroupState::Stopped && !actions.is_empty() {
                        println!("    would {}", actions.join(", "));
                    }
                }
            }
            Some(l) => {
                let changes = field_changes(l, &ours);
                let rollout = object.kind() == Kind::AutoScalingGroup
                    && (changes.iter().any(|c| c.path == "spec.launchConfiguration")
                        || changed_lcs.contains(&(
                            ns.clone(),
                            ours["spec"]["launchConfiguration"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                        )));
                let actions = if object.kind() == Kind::AutoScalingGroup {
                    group_actions(&ours["spec"], &l["status"], rollout)
                } else {
                    Vec::new()
                };
                if changes.is_empty() && actions.is_empty() {
                    continue;
                }
                differences += 1;
                println!("~ {id} (namespace {ns}, from {file}):");
                for c in &changes {
                    println!("    {}: {} -> {}", c.path, show(&c.live), show(&c.file));
                }
                if !actions.is_empty() {
                    println!("    would {}", actions.join(", "));
                }
            }
        }
    }
    if differences == 0 {
        Ok(())
    } else {
        Err(Failure::Quiet(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_changed_fields_are_listed_with_both_values() {
        let live = json!({"metadata": {"name": "web"}, "spec": {"minSize": 1, "maxSize": 4, "zones": ["a"]}, "status": {"current": 2}});
        let file = json!({"metadata": {"name": "web"}, "spec": {"minSize": 1, "maxSize": 6, "domain": "x"}});
        let c = field_changes(&live, &file);
        let paths: Vec<_> = c.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["spec.domain", "spec.maxSize", "spec.zones"]);
        assert_eq!(c[1].live, Some(json!(4)));
        assert_eq!(c[1].file, Some(json!(6)));
        assert_eq!(c[2].file, None);
    }

    #[test]
    fn group_actions_follow_the_capacity_and_the_rollout() {
        let spec = |d: u64| json!({"minSize": 0, "maxSize": 10, "desiredCapacity": d});
        let st = |c: u64| json!({"current": c, "desiredCapacity": c});
        assert_eq!(group_actions(&spec(3), &st(1), false), ["launch 2"]);
        assert_eq!(group_actions(&spec(1), &st(3), false), ["terminate 2"]);
        assert_eq!(group_actions(&spec(2), &st(2), true), ["roll out 2"]);
        assert!(group_actions(&spec(2), &st(2), false).is_empty());
        assert_eq!(group_actions(&spec(3), &Value::Null, false), ["launch 3"]);
        let stopped = json!({"minSize": 1, "maxSize": 3, "desiredCapacity": 2, "state": "Stopped"});
        assert_eq!(group_actions(&stopped, &st(2), false), ["terminate 2"]);
    }

    #[test]
    fn a_policy_owned_capacity_is_kept_within_the_new_bounds() {
        let spec = json!({"minSize": 1, "maxSize": 2, "desiredCapacity": 1});
        let st = json!({"current": 4, "desiredCapacity": 4, "desiredCapacitySetBy": "policy/cpu"});
        assert_eq!(group_actions(&spec, &st, false), ["terminate 2"]);
    }
}
