//! How `ms get lbs`, `ms describe lb NAME` and the URL column of `ms get asgs -o wide` show
//! load balancers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::table::{age_of, cell, Table};

fn name(i: &Value) -> String {
    cell(i["metadata"].get("name"))
}

/// The URL of a load balancer item: from its status, else from its spec.
fn url(i: &Value) -> String {
    if let Some(u) = i["status"]["url"].as_str() {
        return u.to_string();
    }
    let spec = &i["spec"];
    let host = spec["listen"].as_str().unwrap_or("127.0.0.1");
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!(
        "{}://{host}:{}",
        spec["mode"].as_str().unwrap_or("http"),
        cell(spec.get("port"))
    )
}

/// `Ready` condition of an item: `True`/`False (Reason)`.
fn ready(i: &Value) -> String {
    let c = i["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    match c {
        Some(c) if c["status"] == "True" => "True".into(),
        Some(c) => format!("False ({})", cell(c.get("reason"))),
        None => "<unknown>".into(),
    }
}

/// `ms get lbs`.
pub(super) fn lbs(items: &[Value], now: DateTime<Utc>) -> Table {
    let mut t = Table::new(&["NAME", "URL", "TARGET", "GROUPS", "MEMBERS", "READY", "AGE"]);
    for i in items {
        let members = i["status"]["members"].as_array();
        let serving = members
            .into_iter()
            .flatten()
            .filter(|m| {
                m["desired"] == "ready"
                    && m["state"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("UP") || s == "no check")
            })
            .count();
        let total = members
            .into_iter()
            .flatten()
            .filter(|m| m["desired"] != "remove")
            .count();
        t.row(vec![
            name(i),
            url(i),
            cell(i["spec"].get("targetPort")),
            cell(i["status"].get("groups")),
            format!("{serving}/{total}"),
            ready(i),
            age_of(i.get("firstSeen"), now),
        ]);
    }
    t
}

/// Each group's load balancer URLs (`namespace/group` → URLs), for `ms get asgs -o wide`.
pub(super) fn urls_by_group(lbs: &[Value]) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for lb in lbs {
        let ns = lb["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        for g in lb["status"]["groups"].as_array().into_iter().flatten() {
            if let Some(g) = g.as_str() {
                out.entry((ns.clone(), g.to_string()))
                    .or_default()
                    .push(url(lb));
            }
        }
    }
    out
}

/// `ms describe lb NAME`, after the common header.
pub(super) fn describe(item: &Value, out: &mut String, field: impl Fn(&mut String, &str, String)) {
    let spec = &item["spec"];
    field(out, "URL", url(item));
    field(out, "Mode", spec["mode"].as_str().unwrap_or("http").into());
    field(
        out,
        "Balance",
        spec["balance"].as_str().unwrap_or("roundrobin").into(),
    );
    field(out, "Target port", cell(spec.get("targetPort")));
    let check = match spec.get("healthCheck").filter(|v| !v.is_null()) {
        Some(h) => match h["path"].as_str() {
            Some(p) => format!("HTTP GET {p}"),
            None => "TCP connect".into(),
        },
        None => "the group's readiness".into(),
    };
    field(out, "Health check", check);
    field(
        out,
        "Drain timeout",
        spec["drainTimeout"].as_str().unwrap_or("30s").into(),
    );
    field(
        out,
        "Zones",
        spec.get("zones")
            .filter(|z| !z.is_null())
            .map_or("<all>".into(), |z| cell(Some(z))),
    );
    let status = &item["status"];
    field(out, "Groups", cell(status.get("groups")));
    let mut conditions = Table::new(&["TYPE", "STATUS", "REASON", "MESSAGE"]);
    for c in status["conditions"].as_array().into_iter().flatten() {
        conditions.row(vec![
            cell(c.get("type")),
            cell(c.get("status")),
            cell(c.get("reason")),
            cell(c.get("message")),
        ]);
    }
    section(out, "Conditions", &conditions);
    let mut members = Table::new(&[
        "NAME", "GROUP", "ZONE", "ADDRESS", "DESIRED", "STATE", "SESSIONS",
    ]);
    for m in status["members"].as_array().into_iter().flatten() {
        members.row(vec![
            cell(m.get("name")),
            cell(m.get("group")),
            cell(m.get("zone")),
            cell(m.get("address")),
            cell(m.get("desired")),
            cell(m.get("state")),
            cell(m.get("sessions")),
        ]);
    }
    section(out, "Members", &members);
    let skipped = status["problems"].as_array().cloned().unwrap_or_default();
    if !skipped.is_empty() {
        out.push_str("Not members:\n");
        for p in skipped {
            out.push_str(&format!("  {}\n", p.as_str().unwrap_or_default()));
        }
    }
}

fn section(out: &mut String, title: &str, t: &Table) {
    out.push_str(title);
    out.push_str(":\n");
    if t.is_empty() {
        out.push_str("  <none>\n");
    } else {
        out.push_str(&t.render_indented("  "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item() -> Value {
        json!({
            "kind": "LoadBalancer",
            "metadata": {"name": "front", "namespace": "shop"},
            "spec": {"port": 8080, "targetPort": 80},
            "status": {
                "url": "http://127.0.0.1:8080",
                "groups": ["web"],
                "members": [
                    {"name": "web-1", "group": "web", "zone": "a", "address": "127.0.0.1:32768", "desired": "ready", "state": "no check", "sessions": 0},
                    {"name": "web-2", "group": "web", "zone": "a", "address": "127.0.0.1:32769", "desired": "drain", "state": "DRAIN", "sessions": 2},
                    {"name": "old", "address": "127.0.0.1:1", "desired": "remove", "state": "MAINT", "sessions": 0}
                ],
                "conditions": [{"type": "Ready", "status": "True", "reason": "Serving", "message": "1 member(s) serving"}]
            }
        })
    }

    #[test]
    fn the_table_counts_serving_members() {
        let t = lbs(&[item()], Utc::now()).render();
        let row = t.lines().nth(1).unwrap();
        assert!(row.contains("http://127.0.0.1:8080"), "{t}");
        assert!(row.contains("1/2"), "{t}");
        assert!(row.contains("True"), "{t}");
        let urls = urls_by_group(&[item()]);
        assert_eq!(
            urls[&("shop".to_string(), "web".to_string())],
            ["http://127.0.0.1:8080"]
        );
    }

    #[test]
    fn describe_lists_members_with_their_state() {
        let mut out = String::new();
        describe(&item(), &mut out, |o, l, v| {
            o.push_str(&format!("{l}: {v}\n"))
        });
        assert!(out.contains("URL: http://127.0.0.1:8080"));
        assert!(out.contains("Health check: the group's readiness"));
        assert!(out.contains("web-2"));
        assert!(out.contains("DRAIN"));
        assert!(out.contains("remove"));
    }
}
