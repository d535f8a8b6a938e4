//! `ms wait asg/NAME --for=condition=Ready|Degraded|deleted` and `ms apply --wait`: block until
//! groups reach a state, fail at once when one turns Degraded.
//!
//! # Rules
//! - `Ready` means converged on the spec the controller holds now: the status was computed for
//!   that spec (`observedGeneration` is the hash of the served spec), the `Ready` condition is
//!   `True`, desired = current = ready = updated, and every instance has been running for
//!   `--min-ready` (default 10 s, the controller's crash window: an instance that exits sooner
//!   is a crash, so one that has run a blink is not yet proof of a good spec).
//! - While waiting for `Ready`, a group whose `Degraded` (or `Invalid`) condition is `True` ends
//!   the wait at once with its reason: a crash loop will not get better by waiting.
//! - `deleted`: the controller no longer serves the group and holds no deletion of it.
//! - The groups are read every 250 ms (level-triggered: each read is judged on its own).
//!
//! # Caveats
//! A change to a launch configuration only does not change the group's `observedGeneration`:
//! between the apply and the reconcile that follows it (milliseconds), the group may still look
//! ready on the previous configuration.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::Value;

use super::{CmdResult, Failure};
use crate::client::{Client, ClientError};
use crate::manifest::{AutoScalingGroup, DurationSpec, Kind, Object};

/// How often the groups are read.
const POLL: Duration = Duration::from_millis(250);

/// Arguments of `ms wait`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ms wait asg/web --for=condition=Ready --timeout 2m
  ms wait asg/web asg/api -n shop --for=condition=Ready
  ms wait asg/web --for=condition=Degraded
  ms delete asg web && ms wait asg/web --for=deleted

Exit status: 0 when every group reached the state, 1 when one turned Degraded (waiting for
Ready) or the timeout passed, 2 on a usage error.")]
pub(crate) struct WaitArgs {
    /// Groups as `asg/NAME` (or `autoscalinggroup/NAME`, or a bare NAME).
    #[arg(required = true, value_name = "asg/NAME")]
    targets: Vec<String>,
    /// `condition=Ready`, `condition=Degraded` or `deleted`.
    #[arg(long = "for", value_name = "CONDITION")]
    for_: String,
    /// Give up after this long (`90s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    timeout: Duration,
    /// Ready only once every instance has been running this long (`0s` to accept at once).
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    min_ready: Duration,
    #[command(flatten)]
    ns: super::NamespaceArgs,
}

pub(crate) fn parse_timeout(s: &str) -> Result<Duration, String> {
    DurationSpec::parse(s).map(|d| d.0)
}

/// What to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    Ready,
    Degraded,
    Deleted,
}

impl Goal {
    fn parse(s: &str) -> Result<Goal, Failure> {
        match s.to_ascii_lowercase().as_str() {
            "condition=ready" => Ok(Goal::Ready),
            "condition=degraded" => Ok(Goal::Degraded),
            "deleted" | "delete" => Ok(Goal::Deleted),
            _ => Err(Failure::Code(
                2,
                format!("--for={s}: use condition=Ready, condition=Degraded or deleted"),
            )),
        }
    }
}

/// Where one group stands, judged from one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Reached the goal.
    Done,
    /// Not yet; the progress line to show.
    Waiting(String),
    /// Will not reach it by waiting: the reason.
    Failed(String),
}

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some(type_))
}

fn is_true(status: &Value, type_: &str) -> bool {
    condition(status, type_).is_some_and(|c| c["status"].as_str() == Some("True"))
}

/// The generation (spec hash) of a served group, computed as the controller does.
pub(crate) fn generation_of(item: &Value) -> Option<String> {
    let mut m = serde_json::Map::new();
    for k in ["apiVersion", "kind", "metadata", "spec"] {
        m.insert(k.into(), item.get(k)?.clone());
    }
    let g: AutoScalingGroup = serde_json::from_value(Value::Object(m)).ok()?;
    Some(Object::AutoScalingGroup(g).spec_hash())
}

/// The instances of a served group that have been running for less than `min_ready` at `now`.
fn too_young(item: &Value, now: DateTime<Utc>, min_ready: Duration) -> usize {
    let mut min = chrono::Duration::from_std(min_ready).unwrap_or(chrono::Duration::MAX);
    if !min_ready.is_zero() {
        // `startedAt` is served to the second, rounded down: the instance may have started up
        // to a second later than it says, so only `min_ready` + 1 s proves `min_ready`.
        min = min
            .checked_add(&chrono::Duration::seconds(1))
            .unwrap_or(chrono::Duration::MAX);
    }
    item["status"]["instances"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|i| {
                    i["startedAt"]
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .is_none_or(|t| now.signed_duration_since(t) < min)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Judges one served group (`None`: the controller does not serve it) against `goal`, at `now`.
pub(crate) fn verdict(
    goal: Goal,
    item: Option<&Value>,
    held: bool,
    now: DateTime<Utc>,
    min_ready: Duration,
) -> Verdict {
    let Some(item) = item else {
        return match goal {
            Goal::Deleted if !held => Verdict::Done,
            Goal::Deleted => Verdict::Waiting("deletion held (confirm with ms delete)".into()),
            _ => Verdict::Waiting("not found yet".into()),
        };
    };
    let st = &item["status"];
    let n = |k: &str| st[k].as_u64().unwrap_or(0);
    let progress = format!(
        "{}/{} ready, {} updated, {} current",
        n("ready"),
        n("desiredCapacity"),
        n("updated"),
        n("current")
    );
    let step = condition(st, "Progressing")
        .filter(|c| c["status"].as_str() == Some("True"))
        .and_then(|c| c["message"].as_str())
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    match goal {
        Goal::Deleted => Verdict::Waiting(format!("still defined: {progress}")),
        Goal::Degraded => {
            if is_true(st, "Degraded") {
                Verdict::Done
            } else {
                Verdict::Waiting(progress)
            }
        }
        Goal::Ready => {
            for bad in ["Invalid", "Degraded"] {
                if let Some(c) = condition(st, bad).filter(|c| c["status"] == "True") {
                    return Verdict::Failed(format!(
                        "{bad}: {}: {}",
                        c["reason"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    ));
                }
            }
            let current_spec = st.is_object()
                && generation_of(item).as_deref() == st["observedGeneration"].as_str();
            let desired = n("desiredCapacity");
            let converged = current_spec
                && is_true(st, "Ready")
                && n("current") == desired
                && n("ready") == desired
                && n("updated") == desired;
            let young = if converged {
                too_young(item, now, min_ready)
            } else {
                0
            };
            if converged && young == 0 {
                Verdict::Done
            } else if converged {
                Verdict::Waiting(format!(
                    "{progress}; {young} up for less than {}s (--min-ready)",
                    min_ready.as_secs()
                ))
            } else if !current_spec {
                Verdict::Waiting("waiting for the controller to reconcile the new spec".into())
            } else {
                Verdict::Waiting(format!("{progress}{step}"))
            }
        }
    }
}

/// `asg/web`, `autoscalinggroup/web` or `web` → `web`.
pub(crate) fn group_name(target: &str) -> Result<String, Failure> {
    match target.split_once('/') {
        None => Ok(target.to_string()),
        Some((kind, name)) if Kind::parse(kind) == Some(Kind::AutoScalingGroup) => {
            Ok(name.to_string())
        }
        Some((kind, _)) => Err(Failure::Code(
            2,
            format!("`{kind}`: ms wait waits for autoscaling groups (asg/NAME)"),
        )),
    }
}

/// Waits until every `(namespace, name)` group reaches `goal`, printing progress.
pub(crate) async fn wait_for(
    client: &Client,
    groups: &[(String, String)],
    goal: Goal,
    timeout: Duration,
    min_ready: Duration,
) -> CmdResult {
    let deadline = Instant::now() + timeout;
    let mut progress = super::progress::Progress::new();
    let mut finished: BTreeMap<(String, String), bool> = BTreeMap::new();
    loop {
        let held: Vec<(String, String)> = if goal == Goal::Deleted {
            held_groups(client).await?
        } else {
            Vec::new()
        };
        let mut pending = Vec::new();
        for (ns, name) in groups {
            let item = match client.get(Kind::AutoScalingGroup, ns, name).await {
                Ok(v) => Some(v),
                Err(ClientError::Api { status: 404, .. }) => None,
                Err(e) => return Err(e.into()),
            };
            let key = (ns.clone(), name.clone());
            match verdict(
                goal,
                item.as_ref(),
                held.contains(&key),
                Utc::now(),
                min_ready,
            ) {
                Verdict::Done => {
                    if !finished.get(&key).copied().unwrap_or(false) {
                        progress.done(name);
                        let what = match goal {
                            Goal::Ready => "condition met (Ready)",
                            Goal::Degraded => "condition met (Degraded)",
                            Goal::Deleted => "deleted",
                        };
                        println!("autoscalinggroup/{name} {what}");
                        finished.insert(key, true);
                    }
                }
                Verdict::Failed(why) => {
                    progress.abandon();
                    return Err(Failure::Message(format!(
                        "autoscalinggroup/{name} in namespace {ns}: {why}"
                    )));
                }
                Verdict::Waiting(line) => {
                    let st = item.as_ref().map(|i| &i["status"]);
                    let n = |k: &str| st.and_then(|s| s[k].as_u64()).unwrap_or(0);
                    progress.update(name, n("ready"), n("desiredCapacity"), &line);
                    pending.push((key, line));
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            progress.abandon();
            let (k, line) = &pending[0];
            return Err(Failure::Message(format!(
                "timed out after {}s waiting for autoscalinggroup/{} in namespace {}: {line}",
                timeout.as_secs(),
                k.1,
                k.0
            )));
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Groups whose deletion the controller holds.
async fn held_groups(client: &Client) -> Result<Vec<(String, String)>, Failure> {
    let p = client.problems().await?;
    Ok(p["held"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| {
                    Some((
                        h["namespace"].as_str()?.to_string(),
                        h["name"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default())
}

pub(crate) async fn run(client: Client, args: WaitArgs) -> CmdResult {
    let goal = Goal::parse(&args.for_)?;
    let mut groups = Vec::new();
    for t in &args.targets {
        groups.push((args.ns.namespace.clone(), group_name(t)?));
    }
    wait_for(&client, &groups, goal, args.timeout, args.min_ready).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(status: Value) -> Value {
        let mut g = json!({
            "apiVersion": "microscaler.io/v1",
            "kind": "AutoScalingGroup",
            "metadata": {"name": "web"},
            "spec": {"launchConfiguration": "web", "minSize": 1, "maxSize": 3, "desiredCapacity": 2},
        });
        let generation = generation_of(&g).unwrap();
        let mut status = status;
        if status.is_object() && status.get("observedGeneration").is_none() {
            status["observedGeneration"] = json!(generation);
        }
        g["status"] = status;
        g
    }

    fn cond(t: &str, s: &str, reason: &str) -> Value {
        json!({"type": t, "status": s, "reason": reason, "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    fn counts(ready: u64) -> Value {
        json!({"desiredCapacity": 2, "current": 2, "ready": ready, "updated": 2,
               "instances": [{"name": "a", "startedAt": "2026-01-01T00:00:00Z"}],
               "conditions": [cond("Ready", if ready == 2 {"True"} else {"False"}, "x"), cond("Degraded", "False", "AsExpected")]})
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// [`verdict`] a minute after the instances started, with a 10 s minimum.
    fn judge(goal: Goal, item: Option<&Value>, held: bool) -> Verdict {
        verdict(
            goal,
            item,
            held,
            at("2026-01-01T00:01:00Z"),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn a_converged_group_on_the_current_spec_is_ready() {
        assert_eq!(
            judge(Goal::Ready, Some(&group(counts(2))), false),
            Verdict::Done
        );
        assert!(matches!(
            judge(Goal::Ready, Some(&group(counts(1))), false),
            Verdict::Waiting(_)
        ));
    }

    #[test]
    fn instances_up_for_less_than_min_ready_are_not_proof_yet() {
        let g = group(counts(2));
        let v = verdict(
            Goal::Ready,
            Some(&g),
            false,
            at("2026-01-01T00:00:05Z"),
            Duration::from_secs(10),
        );
        assert!(
            matches!(v, Verdict::Waiting(ref l) if l.contains("--min-ready")),
            "{v:?}"
        );
        let v = verdict(
            Goal::Ready,
            Some(&g),
            false,
            at("2026-01-01T00:00:05Z"),
            Duration::ZERO,
        );
        assert_eq!(v, Verdict::Done);
        // Served to the second: 2.5 s after a start served as :00 may be only 1.5 s of running.
        let v = verdict(
            Goal::Ready,
            Some(&g),
            false,
            at("2026-01-01T00:00:02.500Z"),
            Duration::from_secs(2),
        );
        assert!(matches!(v, Verdict::Waiting(_)), "{v:?}");
        let v = verdict(
            Goal::Ready,
            Some(&g),
            false,
            at("2026-01-01T00:00:03Z"),
            Duration::from_secs(2),
        );
        assert_eq!(v, Verdict::Done);
    }

    #[test]
    fn a_status_of_an_older_spec_is_not_ready() {
        let mut st = counts(2);
        st["observedGeneration"] = json!("0000000000");
        let v = judge(Goal::Ready, Some(&group(st)), false);
        assert!(
            matches!(v, Verdict::Waiting(ref l) if l.contains("new spec")),
            "{v:?}"
        );
    }

    #[test]
    fn a_degraded_group_fails_the_wait_for_ready_at_once() {
        let mut st = counts(1);
        st["conditions"][1] = cond("Degraded", "True", "CrashLoop");
        let v = judge(Goal::Ready, Some(&group(st.clone())), false);
        assert!(
            matches!(v, Verdict::Failed(ref m) if m.contains("CrashLoop")),
            "{v:?}"
        );
        assert_eq!(
            judge(Goal::Degraded, Some(&group(st)), false),
            Verdict::Done
        );
    }

    #[test]
    fn deleted_means_gone_and_not_held() {
        assert_eq!(judge(Goal::Deleted, None, false), Verdict::Done);
        assert!(matches!(
            judge(Goal::Deleted, None, true),
            Verdict::Waiting(_)
        ));
        assert!(matches!(
            judge(Goal::Deleted, Some(&group(counts(2))), false),
            Verdict::Waiting(_)
        ));
    }

    #[test]
    fn targets_name_groups() {
        assert_eq!(group_name("asg/web").unwrap(), "web");
        assert_eq!(group_name("web").unwrap(), "web");
        assert!(group_name("lc/web").is_err());
    }
}
