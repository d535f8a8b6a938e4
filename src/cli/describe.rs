//! `ms describe`: one object in kubectl-style sections (conditions, instances, activities, errors).

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::Value;

use super::get::error_line;
use super::table::{age_of, cell, started_age, Table};
use super::{CmdResult, Failure, NamespaceArgs};
use crate::client::Client;
use crate::manifest::Kind;

/// Arguments of `ms describe`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ms describe asg web
  ms describe asg/web -n shop
  ms describe lc/web
  ms describe lb front")]
pub(crate) struct DescribeArgs {
    /// asg, lc, policy or lb; or KIND/NAME.
    kind: String,
    /// Name of the object (unless given as KIND/NAME).
    name: Option<String>,
    #[command(flatten)]
    ns: NamespaceArgs,
}

pub(crate) async fn run(client: Client, mut args: DescribeArgs) -> CmdResult {
    let name = match (args.kind.split_once('/'), args.name.take()) {
        (Some((kind, name)), None) => {
            let name = name.to_string();
            args.kind = kind.to_string();
            name
        }
        (None, Some(name)) => name,
        (Some(_), Some(_)) => {
            return Err(Failure::Code(
                2,
                format!(
                    "`{}` already names the object: give no second name",
                    args.kind
                ),
            ))
        }
        (None, None) => {
            return Err(Failure::Code(
                2,
                "name the object: ms describe asg web (or asg/web)".into(),
            ))
        }
    };
    let kind = Kind::parse(&args.kind).ok_or_else(|| {
        Failure::Message(format!(
            "unknown kind `{}`: use asg, lc, policy or lb",
            args.kind
        ))
    })?;
    let item = client.get(kind, &args.ns.namespace, &name).await?;
    let now = Utc::now();
    let text = match kind {
        Kind::AutoScalingGroup => {
            let lc_name = item["spec"]["launchConfiguration"].as_str().unwrap_or("");
            // The launch configuration's image makes the group readable at a glance; a missing
            // one is already reported among the warnings.
            let lc = client
                .get(Kind::LaunchConfiguration, &args.ns.namespace, lc_name)
                .await
                .ok();
            let mut text = describe_group(&item, lc.as_ref(), now);
            // Policies, who set the capacity and the last decision in words.
            let policies = client
                .list(Kind::ScalingPolicy, Some(&args.ns.namespace))
                .await
                .unwrap_or_default();
            text.push_str(&super::autoscale_cmd::describe_autoscaling(
                &item, &policies,
            ));
            text
        }
        Kind::LoadBalancer => {
            let mut out = String::new();
            header(&mut out, &item, now);
            super::lb_view::describe(&item, &mut out, field);
            problems(&mut out, &item);
            out
        }
        _ => describe_other(&item, now),
    };
    print!("{text}");
    Ok(())
}

/// `Label:` padded so that values line up.
fn field(out: &mut String, label: &str, value: impl std::fmt::Display) {
    out.push_str(&format!("{:<23}{value}\n", format!("{label}:")));
}

fn header(out: &mut String, item: &Value, now: DateTime<Utc>) {
    field(out, "Name", cell(item["metadata"].get("name")));
    field(
        out,
        "Namespace",
        item["metadata"]["namespace"].as_str().unwrap_or("default"),
    );
    field(
        out,
        "Source",
        format!(
            "{}:{}",
            cell(item["source"].get("file")),
            cell(item["source"].get("line"))
        ),
    );
    field(out, "Age", super::get::object_age(item, now));
}

fn section(out: &mut String, title: &str, table: Option<Table>) {
    out.push_str(title);
    out.push_str(":\n");
    match table {
        Some(t) if !t.is_empty() => out.push_str(&t.render_indented("  ")),
        _ => out.push_str("  <none>\n"),
    }
}

fn problems(out: &mut String, item: &Value) {
    let errors = item["errors"].as_array().cloned().unwrap_or_default();
    out.push_str("Errors:\n");
    if errors.is_empty() {
        out.push_str("  <none>\n");
    } else {
        out.push_str("  The file does not load; the object runs its last valid version:\n");
        for e in &errors {
            out.push_str(&format!("  {}\n", error_line(e)));
        }
    }
    let warnings = item["warnings"].as_array().cloned().unwrap_or_default();
    out.push_str("Warnings:\n");
    if warnings.is_empty() {
        out.push_str("  <none>\n");
    }
    for w in &warnings {
        out.push_str(&format!("  {}\n", error_line(w)));
    }
}

fn describe_group(item: &Value, lc: Option<&Value>, now: DateTime<Utc>) -> String {
    let spec = &item["spec"];
    let status = &item["status"];
    let mut out = String::new();
    header(&mut out, item, now);
    let lc_name = cell(spec.get("launchConfiguration"));
    let lc_text = match lc {
        Some(lc) => {
            let mut s = format!("{lc_name} (image {}", cell(lc["spec"].get("image")));
            if let Some(t) = lc["spec"]["instanceType"].as_str() {
                s.push_str(&format!(", {t}"));
            }
            s.push(')');
            s
        }
        None => format!("{lc_name} (not found)"),
    };
    field(&mut out, "Launch Configuration", lc_text);
    field(
        &mut out,
        "State",
        spec["state"].as_str().unwrap_or("Started"),
    );
    let zones = spec["availabilityZones"]
        .as_array()
        .filter(|z| !z.is_empty())
        .map(|z| {
            z.iter()
                .map(|v| cell(Some(v)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(
            || match status["zones"].as_array().filter(|z| !z.is_empty()) {
                Some(z) => format!(
                    "{} (the default zone)",
                    z.iter()
                        .map(|v| cell(Some(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "<default zone>".into(),
            },
        );
    field(&mut out, "Zones", zones);
    let spec_desired = spec
        .get("desiredCapacity")
        .filter(|v| !v.is_null())
        .or_else(|| spec.get("minSize"));
    // A policy's capacity is the one the controller runs: show it, and the spec's beside it.
    let by_policy = status["desiredCapacitySetBy"]
        .as_str()
        .filter(|by| *by != "user")
        .zip(status.get("desiredCapacity"));
    let desired = match by_policy {
        Some((by, d)) => format!(
            "{} (set by {by}; spec.desiredCapacity {})",
            cell(Some(d)),
            cell(spec_desired)
        ),
        None => cell(spec_desired),
    };
    field(
        &mut out,
        "Min/Max/Desired",
        format!(
            "{} / {} / {desired}",
            cell(spec.get("minSize")),
            cell(spec.get("maxSize")),
        ),
    );
    field(
        &mut out,
        "Current/Ready/Updated",
        if status.is_null() {
            "- / - / - (not reconciled yet)".to_string()
        } else {
            format!(
                "{} / {} / {}",
                cell(status.get("current")),
                cell(status.get("ready")),
                cell(status.get("updated"))
            )
        },
    );
    let cooldown = |k: &str| {
        spec.get(k)
            .filter(|v| !v.is_null())
            .map(|v| cell(Some(v)))
            .unwrap_or_else(|| "300s".into())
    };
    field(
        &mut out,
        "Cooldowns",
        format!(
            "scale-out {}, scale-in {}",
            cooldown("scaleOutCooldown"),
            cooldown("scaleInCooldown")
        ),
    );
    if let Some(w) = warm_pool(&spec["warmPool"], &status["warmPool"]) {
        field(&mut out, "Warm Pool", w);
    }
    if let Some(z) = status["unreachableZones"]
        .as_array()
        .filter(|z| !z.is_empty())
    {
        field(
            &mut out,
            "Unreachable Zones",
            z.iter()
                .map(|v| cell(Some(v)))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }

    // Only while a launch or rollout waits on a pull.
    if let Some(pulls) = status["pulls"].as_array().filter(|p| !p.is_empty()) {
        let mut t = Table::new(&["ZONE", "IMAGE", "LAYERS", "DOWNLOADED", "ELAPSED"]);
        for p in pulls {
            let n = |k: &str| p[k].as_u64().unwrap_or(0);
            t.row(vec![
                cell(p.get("zone")),
                cell(p.get("image")),
                format!("{}/{}", n("layersDone"), n("layersTotal")),
                format!(
                    "{} / {}",
                    megabytes(n("bytesDone")),
                    megabytes(n("bytesTotal"))
                ),
                format!("{}s", n("seconds")),
            ]);
        }
        section(&mut out, "Image Pulls", Some(t));
    }

    let conditions = status["conditions"].as_array().map(|cs| {
        let mut t = Table::new(&["TYPE", "STATUS", "REASON", "MESSAGE"]);
        for c in cs {
            t.row(vec![
                cell(c.get("type")),
                cell(c.get("status")),
                cell(c.get("reason")),
                cell(c.get("message")),
            ]);
        }
        t
    });
    section(&mut out, "Conditions", conditions);

    let instances = status["instances"].as_array().map(|is| {
        let mut t = Table::new(&[
            "NAME",
            "ZONE",
            "STATE",
            "CONTAINER",
            "PORTS",
            "AGE",
            "UP-TO-DATE",
            "READY",
            "HEALTH",
        ]);
        for i in is {
            t.row(vec![
                cell(i.get("name")),
                cell(i.get("zone")),
                cell(i.get("state")),
                cell(i.get("containerId")),
                cell(i.get("ports")),
                started_age(i, now),
                if i["upToDate"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
                .into(),
                match i["ready"].as_bool() {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                }
                .into(),
                i["health"].as_str().unwrap_or("-").to_string(),
            ]);
        }
        t
    });
    section(&mut out, "Instances", instances);

    let activities = status["activities"].as_array().map(|a| {
        let mut t = Table::new(&["AGE", "ACTION", "INSTANCE", "ZONE", "CAUSE"]);
        for x in a {
            t.row(vec![
                age_of(x.get("time"), now),
                cell(x.get("action")),
                cell(x.get("instance")),
                cell(x.get("zone")),
                cell(x.get("cause")),
            ]);
        }
        t
    });
    section(&mut out, "Activities", activities);
    problems(&mut out, item);
    out
}

/// The warm pool in one line: spares ready of its size, in which state, what memory they hold.
fn warm_pool(spec: &Value, status: &Value) -> Option<String> {
    if spec.is_null() {
        return None;
    }
    if status.is_null() {
        return Some(format!(
            "minSize {} (not reconciled yet)",
            cell(spec.get("minSize"))
        ));
    }
    let mut s = format!(
        "{}/{} ready ({}), {} preparing",
        cell(status.get("ready")),
        cell(status.get("size")),
        cell(status.get("state")),
        cell(status.get("preparing")),
    );
    if let Some(b) = status["memoryBytes"].as_u64() {
        s.push_str(&format!(", holding {:.1} MiB", b as f64 / 1048576.0));
    }
    if spec["reuseOnScaleIn"].as_bool() == Some(true) {
        s.push_str(", reuse on scale-in");
    }
    if let Some(m) = status["message"].as_str() {
        s.push_str(&format!("; {m}"));
    }
    Some(s)
}

/// `12.3 MB` (decimal, as Docker shows pulls).
fn megabytes(bytes: u64) -> String {
    // Display only: precision beyond 2^53 bytes does not matter.
    #[allow(clippy::cast_precision_loss)]
    let mb = bytes as f64 / 1e6;
    format!("{mb:.1} MB")
}

fn describe_other(item: &Value, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    header(&mut out, item, now);
    field(&mut out, "Kind", cell(item.get("kind")));
    out.push_str("Spec:\n");
    let spec = serde_yaml_ng::to_string(&item["spec"]).unwrap_or_default();
    for line in spec.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    problems(&mut out, item);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_group_is_described_in_sections_with_its_errors() {
        let item = json!({
            "kind": "AutoScalingGroup",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"launchConfiguration": "web", "minSize": 1, "maxSize": 4, "desiredCapacity": 2},
            "status": {"current": 2, "ready": 2, "updated": 1,
                "conditions": [{"type": "Ready", "status": "True", "reason": "AllReady",
                                "message": "2/2 ready", "lastTransitionTime": "2024-01-01T00:00:00Z"}],
                "instances": [{"name": "web-abc", "containerId": "0123456789ab", "zone": "local",
                               "state": "running", "startedAt": "2024-01-01T00:04:00Z",
                               "ports": ["127.0.0.1:32768->80/tcp"], "upToDate": true, "ready": true,
                               "health": "ready: HTTP 200 from GET /"}]},
            "source": {"file": "/m/shop/web.yaml", "line": 4},
            "firstSeen": "2024-01-01T00:00:00Z",
            "errors": [{"file": "/m/shop/web.yaml", "line": 9, "column": 3,
                        "field": "spec.maxSize", "message": "expected a number"}],
            "warnings": []
        });
        let lc = json!({"spec": {"image": "nginx:1.25", "instanceType": "t1.micro"}});
        let now = "2024-01-01T00:05:00Z".parse().unwrap();
        let text = describe_group(&item, Some(&lc), now);
        assert!(text.contains("Namespace:             shop\n"), "{text}");
        assert!(
            text.contains("Source:                /m/shop/web.yaml:4\n"),
            "{text}"
        );
        assert!(
            text.contains("Launch Configuration:  web (image nginx:1.25, t1.micro)\n"),
            "{text}"
        );
        assert!(
            text.contains("Min/Max/Desired:       1 / 4 / 2\n"),
            "{text}"
        );
        assert!(
            text.contains("Current/Ready/Updated: 2 / 2 / 1\n"),
            "{text}"
        );
        assert!(
            text.contains("  Ready   True     AllReady   2/2 ready\n"),
            "{text}"
        );
        assert!(text.contains("  web-abc   local   running   0123456789ab   127.0.0.1:32768->80/tcp   60s   yes          yes     ready: HTTP 200 from GET /\n"), "{text}");
        assert!(text.contains("Activities:\n  <none>\n"), "{text}");
        assert!(
            !text.contains("Image Pulls"),
            "shown only during pulls: {text}"
        );
        let mut pulling = item.clone();
        pulling["status"]["pulls"] = json!([{"zone": "b", "image": "127.0.0.1:5000/web:2",
            "layersDone": 1, "layersTotal": 3, "bytesDone": 12_345_678, "bytesTotal": 40_000_000,
            "seconds": 4}]);
        let text = describe_group(&pulling, Some(&lc), now);
        assert!(
            text.contains("Image Pulls:\n  ZONE   IMAGE                  LAYERS   DOWNLOADED          ELAPSED\n  b      127.0.0.1:5000/web:2   1/3      12.3 MB / 40.0 MB   4s\n"),
            "{text}"
        );
        assert!(
            text.contains("  /m/shop/web.yaml:9:3: spec.maxSize: expected a number\n"),
            "{text}"
        );
    }

    #[test]
    fn a_warm_pool_shows_its_spares_and_the_memory_they_hold() {
        let item = json!({
            "kind": "AutoScalingGroup",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"launchConfiguration": "web", "minSize": 1, "maxSize": 4,
                     "warmPool": {"minSize": 2, "reuseOnScaleIn": true}},
            "status": {"current": 1, "ready": 1, "updated": 1,
                "warmPool": {"size": 2, "ready": 1, "preparing": 1, "state": "Paused",
                             "memoryBytes": 524288},
                "instances": [{"name": "web-abcde-warm", "containerId": "0123456789ab",
                               "zone": "a", "state": "warm", "upToDate": true}]},
        });
        let now = "2024-01-01T00:05:00Z".parse().unwrap();
        let text = describe_group(&item, None, now);
        assert!(
            text.contains(
                "Warm Pool:             1/2 ready (Paused), 1 preparing, holding 0.5 MiB, reuse on scale-in\n"
            ),
            "{text}"
        );
        assert!(text.contains("web-abcde-warm   a      warm"), "{text}");
    }
}
