//! The policy simulator: replays a CSV metric trace through the same decision code as the live
//! controller ([`super::policy::evaluate`], reached through [`super::evaluate_group`]) and
//! prints the capacity timeline, so a policy can be tuned before it is applied.
//!
//! # Trace format
//! A header line, then one row per sample. Columns (any order; all but `time` optional):
//! - `time`: seconds since the start (`0`, `10`, `1.5`) or an RFC 3339 time;
//! - `cpu`, `memory`: the group's average, percent (an empty cell is a missing sample);
//! - `load`: total CPU demand in instance-percent instead of `cpu` (the simulator divides it
//!   by the capacity, so scaling out lowers the average as it would for real);
//! - `instances`: instances measured (default: the capacity at that time);
//! - any other column: a pushed metric of that name (an empty cell: nothing pushed).
//!
//! Lines starting with `#` are comments.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::manifest::{AutoScalingGroupSpec, Object, ScalingPolicySpec};

use super::policy::{Decision, GroupSample, GroupState, History, SetBy};

/// Simulator errors: one line each, with file and line where it helps.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("{file}:{line}: {message}")]
    Trace {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Manifest(String),
}

/// One row of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    pub time: DateTime<Utc>,
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    pub load: Option<f64>,
    pub instances: Option<u32>,
    pub pushed: BTreeMap<String, f64>,
}

/// Start of relative traces (`time` in seconds): an arbitrary, fixed Monday midnight UTC.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap()
}

/// Parses a trace.
///
/// # Errors
/// The first bad line, with what is wrong.
pub fn parse_trace(file: &str, text: &str) -> Result<Vec<TraceRow>, SimulateError> {
    let err = |line: usize, message: String| SimulateError::Trace {
        file: file.to_string(),
        line,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((hline, header)) = lines.next() else {
        return Err(err(
            1,
            "empty trace: expected a header such as `time,cpu`".into(),
        ));
    };
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
    if !cols.iter().any(|c| c == "time") {
        return Err(err(
            hline,
            format!("the header `{header}` has no `time` column (e.g. `time,cpu`)"),
        ));
    }
    let mut rows = Vec::new();
    let mut last: Option<DateTime<Utc>> = None;
    for (n, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != cols.len() {
            return Err(err(
                n,
                format!("{} cells, but the header has {}", cells.len(), cols.len()),
            ));
        }
        let mut row = TraceRow {
            time: epoch(),
            cpu: None,
            memory: None,
            load: None,
            instances: None,
            pushed: BTreeMap::new(),
        };
        for (col, cell) in cols.iter().zip(&cells) {
            if cell.is_empty() {
                continue;
            }
            let num = || {
                cell.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| err(n, format!("{col}: `{cell}` is not a number")))
            };
            match col.as_str() {
                "time" => {
                    row.time = match cell.parse::<f64>() {
                        Ok(s) if s >= 0.0 => {
                            epoch() + chrono::Duration::milliseconds((s * 1000.0) as i64)
                        }
                        _ => DateTime::parse_from_rfc3339(cell)
                            .map_err(|_| {
                                err(
                                    n,
                                    format!(
                                        "time: `{cell}` is neither seconds nor an RFC 3339 time"
                                    ),
                                )
                            })?
                            .with_timezone(&Utc),
                    }
                }
                "cpu" => row.cpu = Some(num()?),
                "memory" => row.memory = Some(num()?),
                "load" => row.load = Some(num()?),
                "instances" => row.instances = Some(num()? as u32),
                other => {
                    row.pushed.insert(other.to_string(), num()?);
                }
            }
        }
        if last.is_some_and(|l| row.time <= l) {
            return Err(err(n, "times must increase from row to row".into()));
        }
        last = Some(row.time);
        rows.push(row);
    }
    Ok(rows)
}

/// The group side of a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimGroup {
    pub spec: AutoScalingGroupSpec,
    pub max_pushed_age: Duration,
}

/// One evaluation of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub row: TraceRow,
    /// The CPU average the policies saw at this row (after `load` was spread).
    pub cpu: Option<f64>,
    pub decision: Decision,
    pub set_by: SetBy,
}

/// Replays `rows` for a group: each row is recorded as a sample, then the policies are
/// evaluated at the row's time exactly as the live autoscaler does every period.
pub fn run(
    group: &SimGroup,
    policies: &[(String, ScalingPolicySpec)],
    rows: &[TraceRow],
) -> Vec<Step> {
    let mut history = History::default();
    let mut state = GroupState::default();
    let mut capacity = super::CapacityOwner::from_spec(&group.spec);
    let mut out = Vec::new();
    for row in rows {
        let cap = capacity.effective(&group.spec).desired;
        let cpu = match row.load {
            Some(load) => Some((load / cap.max(1) as f64).min(100.0)),
            None => row.cpu,
        };
        let measured = if cpu.is_some() || row.memory.is_some() {
            row.instances.unwrap_or(cap)
        } else {
            0
        };
        history.record(GroupSample {
            time: row.time,
            cpu,
            memory: row.memory,
            instances: measured,
        });
        for (name, v) in &row.pushed {
            history.push(name, row.time, *v);
        }
        let decision = super::evaluate_group(
            &mut capacity,
            &group.spec,
            policies,
            &history,
            &mut state,
            row.time,
            group.max_pushed_age,
        );
        out.push(Step {
            row: row.clone(),
            cpu,
            decision,
            set_by: capacity.effective(&group.spec).set_by,
        });
    }
    out
}

/// Reads the policies (and optionally the group) from manifest texts.
///
/// # Errors
/// Manifest errors (one per line), or no policy at all.
#[allow(clippy::type_complexity)]
pub fn load(
    files: &[(String, String)],
) -> Result<
    (
        Vec<(String, ScalingPolicySpec)>,
        Option<AutoScalingGroupSpec>,
    ),
    SimulateError,
> {
    let mut policies = Vec::new();
    let mut group = None;
    for (name, text) in files {
        let parsed = crate::manifest::parse_file(std::path::Path::new(name), text);
        if !parsed.errors.is_empty() {
            return Err(SimulateError::Manifest(
                parsed
                    .errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ));
        }
        for o in parsed.objects {
            match o.object {
                Object::ScalingPolicy(p) => policies.push((p.metadata.name, p.spec)),
                Object::AutoScalingGroup(g) => group = Some((g.metadata.name, g.spec)),
                Object::LaunchConfiguration(_) | Object::LoadBalancer(_) => {}
            }
        }
    }
    // With a group, only its own policies apply (a group file may carry policies of its own).
    if let Some((name, _)) = &group {
        policies.retain(|(_, p)| p.auto_scaling_group == *name);
    }
    if policies.is_empty() {
        return Err(SimulateError::Manifest(match &group {
            Some((name, _)) => format!("no ScalingPolicy for group `{name}` in the given files"),
            None => "no ScalingPolicy in the given files".into(),
        }));
    }
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((policies, group.map(|(_, g)| g)))
}

/// A group for simulating `policies` when none is given: minSize 1, maxSize 10, capacity 1,
/// no cooldowns beyond the defaults.
pub fn default_group(policies: &[(String, ScalingPolicySpec)]) -> AutoScalingGroupSpec {
    let name = policies
        .first()
        .map(|(_, p)| p.auto_scaling_group.clone())
        .unwrap_or_else(|| "group".into());
    serde_yaml_ng::from_str(&format!(
        "{{launchConfiguration: {name}, minSize: 1, maxSize: 10, desiredCapacity: 1}}"
    ))
    .expect("valid default group")
}

/// The timeline as a table: one line per row where something happened or held, plus the first
/// and last rows.
pub fn render(steps: &[Step], all: bool) -> String {
    let mut out = String::new();
    let t0 = steps.first().map(|s| s.row.time).unwrap_or_else(epoch);
    let _ = writeln!(
        out,
        "{:<10} {:>6} {:>6} {:>9}  {:<22} DECISION",
        "TIME", "CPU", "MEM", "CAPACITY", "SET-BY"
    );
    let mut prev: Option<&Decision> = None;
    for (i, s) in steps.iter().enumerate() {
        let d = &s.decision;
        let interesting = all
            || i == 0
            || i + 1 == steps.len()
            || d.desired != d.capacity
            || prev.is_none_or(|p| !p.same_outcome(d));
        prev = Some(d);
        if !interesting {
            continue;
        }
        let secs = (s.row.time - t0).num_milliseconds() as f64 / 1000.0;
        let time = if secs >= 3600.0 {
            format!(
                "{}h{:02}m{:02}s",
                secs as u64 / 3600,
                secs as u64 % 3600 / 60,
                secs as u64 % 60
            )
        } else if secs >= 60.0 {
            format!("{}m{:02}s", secs as u64 / 60, secs as u64 % 60)
        } else {
            format!("{secs}s")
        };
        let pct = |v: Option<f64>| v.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "-".into());
        let cap = if d.desired != d.capacity {
            format!("{} -> {}", d.capacity, d.desired)
        } else {
            d.desired.to_string()
        };
        let _ = writeln!(
            out,
            "{:<10} {:>6} {:>6} {:>9}  {:<22} {}",
            time,
            pct(s.cpu),
            pct(s.row.memory),
            cap,
            s.set_by.to_string(),
            d.message
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_take_seconds_or_times_and_name_bad_cells() {
        let rows = parse_trace("t.csv", "# comment\ntime,cpu,queue\n0,10,\n10,,5\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].cpu, Some(10.0));
        assert!(rows[0].pushed.is_empty());
        assert_eq!(rows[1].cpu, None);
        assert_eq!(rows[1].pushed["queue"], 5.0);
        assert_eq!(rows[1].time - rows[0].time, chrono::Duration::seconds(10));
        let e = parse_trace("t.csv", "time,cpu\n0,ten\n").unwrap_err();
        assert_eq!(e.to_string(), "t.csv:2: cpu: `ten` is not a number");
        let e = parse_trace("t.csv", "time,cpu\n10,1\n5,1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv:3: times must increase from row to row"
        );
        let e = parse_trace("t.csv", "cpu\n1\n").unwrap_err();
        assert!(e.to_string().contains("no `time` column"));
    }

    #[test]
    fn the_example_trace_scales_out_and_back_in() {
        let policy = include_str!("../../manifests/examples/target-tracking-policy.yaml");
        let trace = include_str!("../../manifests/examples/cpu-trace.csv");
        let (policies, group) =
            load(&[("target-tracking-policy.yaml".into(), policy.into())]).unwrap();
        let group = SimGroup {
            spec: group.unwrap_or_else(|| default_group(&policies)),
            max_pushed_age: Duration::from_secs(120),
        };
        let steps = run(
            &group,
            &policies,
            &parse_trace("cpu-trace.csv", trace).unwrap(),
        );
        let caps: Vec<u32> = steps.iter().map(|s| s.decision.desired).collect();
        let peak = *caps.iter().max().unwrap();
        assert!(peak > caps[0], "{caps:?}");
        assert!(*caps.last().unwrap() < peak, "{caps:?}");
        let table = render(&steps, false);
        assert!(table.contains("scaled out"), "{table}");
        assert!(table.contains("stabilization"), "{table}");
    }
}
