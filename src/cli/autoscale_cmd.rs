//! `ms push-metric`, `ms top instances`, `ms simulate`, and the autoscaling parts of
//! `ms describe asg` and `ms get instances -o wide`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::table::{cell, Table};
use super::{CmdResult, Failure, NamespaceArgs};
use crate::autoscale::simulate;
use crate::client::Client;

/// Arguments of `ms push-metric`.
#[derive(Debug, Args)]
pub(crate) struct PushMetricArgs {
    /// The autoscaling group.
    group: String,
    /// Metric name, as a policy's `pushedMetric`.
    name: String,
    /// The group's current total (e.g. queue depth).
    #[arg(allow_negative_numbers = true)]
    value: f64,
    #[command(flatten)]
    ns: NamespaceArgs,
}

pub(crate) async fn push_metric(client: Client, a: PushMetricArgs) -> CmdResult {
    client
        .push_metric(&a.ns.namespace, &a.group, &a.name, a.value)
        .await?;
    println!(
        "metric {} = {} pushed to autoscalinggroup/{}",
        a.name,
        fmt_num(a.value),
        a.group
    );
    Ok(())
}

/// Arguments of `ms top`.
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// What to show: `instances`.
    what: String,
    /// Only this group's instances.
    group: Option<String>,
    #[command(flatten)]
    ns: NamespaceArgs,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "group")]
    all_namespaces: bool,
}

pub(crate) async fn top(client: Client, a: TopArgs) -> CmdResult {
    if !matches!(a.what.as_str(), "instances" | "instance" | "i") {
        return Err(Failure::Message(format!(
            "unknown resource `{}` for top: use `ms top instances [GROUP]`",
            a.what
        )));
    }
    let ns = (!a.all_namespaces).then_some(a.ns.namespace.as_str());
    let items = client.top(ns, a.group.as_deref()).await?;
    if items.is_empty() {
        eprintln!(
            "No metrics yet (instances are sampled every metricsPeriod, 10s by default; CPU needs two samples)."
        );
        return Ok(());
    }
    let mut h = vec![];
    if a.all_namespaces {
        h.push("NAMESPACE");
    }
    h.extend(["NAME", "GROUP", "ZONE", "CPU%", "MEMORY", "MEM%"]);
    let mut t = Table::new(&h);
    for i in &items {
        let mut row = vec![];
        if a.all_namespaces {
            row.push(cell(i.get("namespace")));
        }
        let (cpu, mem, memp) = columns(i);
        row.extend([
            cell(i.get("name")),
            cell(i.get("group")),
            cell(i.get("zone")),
            cpu,
            mem,
            memp,
        ]);
        t.row(row);
    }
    print!("{}", t.render());
    Ok(())
}

/// CPU%, MEMORY and MEM% cells of one `/v1/top` item. CPU is shown as `docker stats` does
/// (percent of one CPU), with the percent of the instance's limit when it differs.
fn columns(i: &Value) -> (String, String, String) {
    let pct = |v: Option<f64>| v.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "-".into());
    let cpu = i["cpuPercent"].as_f64();
    let of_limit = i["cpuOfLimit"].as_f64();
    let mut cpu_cell = pct(cpu);
    if let (Some(c), Some(l)) = (cpu, of_limit) {
        if (c - l).abs() >= 1.0 {
            cpu_cell = format!("{c:.1}% ({l:.0}% of limit)");
        }
    }
    if i["warming"].as_bool() == Some(true) {
        cpu_cell.push_str(" warming");
    }
    let used = i["memoryUsedBytes"].as_f64().unwrap_or(0.0);
    let limit = i["memoryLimitBytes"].as_f64().unwrap_or(0.0);
    let mem = format!("{} / {}", mib(used), mib(limit));
    (cpu_cell, mem, pct(i["memoryPercent"].as_f64()))
}

fn mib(bytes: f64) -> String {
    let m = bytes / 1024.0 / 1024.0;
    if m >= 1024.0 {
        format!("{:.1}GiB", m / 1024.0)
    } else {
        format!("{m:.1}MiB")
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        v.to_string()
    }
}

/// CPU% and MEM% by instance name, for `ms get instances -o wide` (empty when the controller
/// has no metrics yet or predates them).
pub(crate) async fn metrics_by_name(
    client: &Client,
    namespace: Option<&str>,
) -> HashMap<String, (String, String)> {
    let Ok(items) = client.top(namespace, None).await else {
        return HashMap::new();
    };
    items
        .iter()
        .map(|i| {
            let (cpu, _, memp) = columns(i);
            (cell(i.get("name")), (cpu, memp))
        })
        .collect()
}

/// The autoscaling section of `ms describe asg`: who set the capacity, the last decision in
/// words, current metrics and the attached policies.
pub(crate) fn describe_autoscaling(item: &Value, policies: &[Value]) -> String {
    let status = &item["status"];
    let name = item["metadata"]["name"].as_str().unwrap_or("");
    let mine: Vec<&Value> = policies
        .iter()
        .filter(|p| p["spec"]["autoScalingGroup"].as_str() == Some(name))
        .collect();
    if mine.is_empty() {
        return String::new();
    }
    let mut out = String::from("Autoscaling:\n");
    let set_by = status["desiredCapacitySetBy"].as_str().unwrap_or("user");
    let who = match set_by.split_once('/') {
        Some(("policy", n)) => format!("policy {n}"),
        Some(("schedule", n)) => format!("scheduled action of policy {n}"),
        Some(("pushed", n)) => format!("policy {n} on a pushed metric"),
        _ => "the user (spec.desiredCapacity)".to_string(),
    };
    out.push_str(&format!(
        "  Desired capacity:  {} (set by {who})\n",
        cell(status.get("desiredCapacity"))
    ));
    if let Some(m) = status.get("metrics").filter(|m| m.is_object()) {
        let mut parts = vec![];
        if let Some(c) = m["cpuPercent"].as_u64() {
            parts.push(format!("CPU {c}%"));
        }
        if let Some(c) = m["memoryPercent"].as_u64() {
            parts.push(format!("memory {c}%"));
        }
        if let Some(p) = m["pushed"].as_object() {
            for (k, v) in p {
                parts.push(format!("{k} {}", fmt_num(v.as_f64().unwrap_or(0.0))));
            }
        }
        let n = m["instances"].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "  Metrics:           {} (over {n} measured instance{})\n",
            if parts.is_empty() {
                "none yet".to_string()
            } else {
                parts.join(", ")
            },
            if n == 1 { "" } else { "s" }
        ));
    }
    if let Some(d) = status.get("lastDecision").filter(|d| d.is_object()) {
        out.push_str(&format!(
            "  Last decision:     {} (at {})\n",
            cell(d.get("message")),
            cell(d.get("time"))
        ));
        if let Some(rs) = d["reasons"].as_array() {
            for r in rs {
                out.push_str(&format!("    {}\n", r.as_str().unwrap_or("")));
            }
        }
    }
    out.push_str("  Policies:\n");
    let mut t = Table::new(&["NAME", "TYPE", "RULE"]);
    for p in mine {
        let s = &p["spec"];
        let ty = s["type"].as_str().unwrap_or("Step");
        let metric = s["metric"]
            .as_str()
            .map(str::to_string)
            .or_else(|| s["pushedMetric"].as_str().map(|m| format!("pushed {m}")))
            .unwrap_or_default();
        let rule = match ty {
            "TargetTracking" => format!(
                "{metric} target {} (tolerance {}%, scale-in stabilization {})",
                cell(s.get("targetValue")),
                s["tolerance"]
                    .as_f64()
                    .map(fmt_num)
                    .unwrap_or_else(|| "10".into()),
                s["scaleInStabilization"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| s["scaleInStabilization"].as_f64().map(|v| format!("{v}s")))
                    .unwrap_or_else(|| "5m".into())
            ),
            "Scheduled" => s["schedule"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            let mut sets = vec![];
                            for (k, l) in [
                                ("minSize", "min"),
                                ("maxSize", "max"),
                                ("desiredCapacity", "desired"),
                            ] {
                                if let Some(v) = x[k].as_u64() {
                                    sets.push(format!("{l} {v}"));
                                }
                            }
                            format!(
                                "`{}` {}: {}",
                                cell(x.get("cron")),
                                x["timeZone"].as_str().unwrap_or("UTC"),
                                sets.join(" ")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default(),
            _ => format!(
                "{metric} above {} for {}: +{}; below {}: -{}",
                cell(s.get("upperThreshold")),
                cell(s.get("breachDuration")),
                cell(s.get("scaleOutStep")),
                cell(s.get("lowerThreshold")),
                cell(s.get("scaleInStep"))
            ),
        };
        t.row(vec![cell(p["metadata"].get("name")), ty.to_string(), rule]);
    }
    out.push_str(&t.render_indented("    "));
    out
}

/// Arguments of `ms simulate`.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Policy manifest(s); a group in them is used too.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// CSV trace: `time` (seconds or RFC 3339) and `cpu`, `memory`, `load`, `instances`, or
    /// pushed metric columns.
    #[arg(long, value_name = "CSV")]
    metrics: PathBuf,
    /// The group's manifest (minSize, maxSize, desiredCapacity, cooldowns); default: min 1,
    /// max 10, capacity 1, default cooldowns.
    #[arg(long, value_name = "FILE")]
    group_file: Option<PathBuf>,
    /// Print every row, not only changes.
    #[arg(long)]
    all: bool,
}

/// Runs the simulator locally (no controller needed).
pub(crate) fn simulate(a: SimulateArgs) -> CmdResult {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p)
            .map(|t| (p.display().to_string(), t))
            .map_err(|e| Failure::Message(format!("cannot read {}: {e}", p.display())))
    };
    let mut files = Vec::new();
    for f in &a.files {
        files.push(read(f)?);
    }
    if let Some(g) = &a.group_file {
        files.push(read(g)?);
    }
    let (policies, group) = simulate::load(&files).map_err(|e| Failure::Message(e.to_string()))?;
    let (name, text) = read(&a.metrics)?;
    let rows = simulate::parse_trace(&name, &text).map_err(|e| Failure::Message(e.to_string()))?;
    let spec = group.unwrap_or_else(|| simulate::default_group(&policies));
    let group = simulate::SimGroup {
        spec,
        max_pushed_age: Duration::from_secs(120),
    };
    let steps = simulate::run(&group, &policies, &rows);
    print!("{}", simulate::render(&steps, a.all));
    let changes = steps
        .iter()
        .filter(|s| s.decision.desired != s.decision.capacity)
        .count();
    let peak = steps.iter().map(|s| s.decision.desired).max().unwrap_or(0);
    println!(
        "{} evaluations, {changes} capacity changes, peak {peak}, final {}",
        steps.len(),
        steps.last().map(|s| s.decision.desired).unwrap_or(0)
    );
    Ok(())
}
