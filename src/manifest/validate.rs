//! Semantic validation of manifests: each problem names its field path, what is wrong and what would be right.
//!
//! Everything here is pure: [`validate`] looks at one object, [`missing_references`] at a whole
//! set of objects. Turning a field path into a line and column is the parser's job.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use super::duration::DurationSpec;
use super::instance_types;
use super::types::{
    AutoScalingGroupSpec, IntOrPercent, Kind, LaunchConfigurationSpec, Metadata, Object, ObjectKey,
    PolicyType, ScalingPolicySpec,
};

/// The largest `maxSize` a group may ask for: a guard against typos such as `maxSize: 10000`.
pub const MAX_GROUP_SIZE: u32 = 1000;

/// Docker refuses memory limits below 6 MiB.
pub const MIN_MEMORY_MIB: u64 = 6;

/// The largest memory limit of one container (16 TiB): bytes stay far inside `i64`, and no
/// engine we meet has more (a zone's own total is checked when a container is created).
pub const MAX_MEMORY_MIB: u64 = 16 * 1024 * 1024;

/// The largest CPU limit of one container.
pub const MAX_CPUS: f64 = 1024.0;

/// The longest duration any manifest field may hold: time arithmetic on user input stays far
/// from overflow (issue 9: a 317,000-year sampling window stopped every tenant's reconciles).
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

/// The longest `stopGracePeriod`: a removal holds an engine request open this long.
pub const MAX_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The largest threshold or target value (pushed metrics are free-form numbers, but not
/// astronomically so: the ratios computed from them must stay finite).
pub const MAX_METRIC_VALUE: f64 = 1e12;

/// At most this many published ports per launch configuration.
pub const MAX_PORTS: usize = 100;

/// At most this many actions per scheduled policy (each is a cron evaluated every period).
pub const MAX_SCHEDULED_ACTIONS: usize = 50;

/// Label prefix reserved for the controller's own container labels.
pub const RESERVED_LABEL_PREFIX: &str = "io.microscaler.";

/// How serious a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The object is invalid; the file it is in contributes no objects.
    Error,
    /// The object is used, but probably not as the user meant (e.g. a clamped capacity).
    Warning,
}

/// One semantic problem of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted field path, e.g. `spec.minSize` or `spec.ports[1].hostIp`.
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
    pub severity: Severity,
}

/// Collects problems while walking an object.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(field.into(), message.into(), Severity::Error);
    }

    fn warning(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(field.into(), message.into(), Severity::Warning);
    }

    /// An error when `d` is longer than `max` (written as `90s`, `5m`, ...).
    fn duration_at_most(&mut self, field: &str, d: Option<DurationSpec>, max: Duration) {
        if let Some(d) = d {
            if d.0 > max {
                let name = field.rsplit('.').next().unwrap_or(field);
                let limit = if max.as_secs() >= 86_400 && max.as_secs().is_multiple_of(86_400) {
                    format!("{}d", max.as_secs() / 86_400)
                } else {
                    DurationSpec(max).to_string()
                };
                self.error(
                    field,
                    format!("{name} {d} is longer than the limit of {limit}: use at most {limit}"),
                );
            }
        }
    }

    fn push(&mut self, field: String, message: String, severity: Severity) {
        self.0.push(Problem {
            field,
            message,
            severity,
        });
    }
}

/// Suggests the candidate closest to `word` (case-insensitive edit distance, a transposition
/// counting as one edit), or `None` when nothing is close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let w: Vec<char> = word.to_lowercase().chars().collect();
    // About one edit per three characters: `desiredCapasity` → `desiredCapacity`, but `foo`
    // is not a typo of `env`.
    let limit = w.len().div_ceil(3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let c: Vec<char> = candidate.to_lowercase().chars().collect();
        let mut d = edit_distance(&w, &c);
        // A longer or shorter spelling of the same name (`web-lc` for `web`) is a plausible
        // mix-up even when many characters differ.
        let (short, long) = if w.len() <= c.len() {
            (&w, &c)
        } else {
            (&c, &w)
        };
        if short.len() >= 3 && long.starts_with(short) {
            d = d.min(limit);
        }
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Formats ` (did you mean `x`?)`, or nothing.
fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// Checks one object on its own (references to other objects are [`missing_references`]'s job).
pub fn validate(object: &Object) -> Vec<Problem> {
    let mut p = Problems::default();
    validate_metadata(object.metadata(), &mut p);
    match object {
        Object::LaunchConfiguration(m) => validate_launch_configuration(&m.spec, &mut p),
        Object::AutoScalingGroup(m) => {
            validate_group(&m.spec, &mut p);
            p.0.extend(super::load_balancer::validate_group_load_balancers(
                &m.spec.load_balancers,
            ));
        }
        Object::ScalingPolicy(m) => validate_policy(&m.spec, &mut p),
        Object::LoadBalancer(m) => {
            p.0.extend(super::load_balancer::validate_load_balancer(&m.spec))
        }
    }
    p.0
}

/// Why `s` is not a DNS label (lower-case letters, digits and `-`, 1-63 characters, starting
/// and ending with a letter or digit), or `None` if it is one.
fn dns_label_problem(s: &str) -> Option<String> {
    const RULE: &str =
        "use 1-63 lower-case letters, digits and `-`, starting and ending with a letter or digit";
    if s.is_empty() {
        return Some(format!("must not be empty: {RULE}"));
    }
    if s.len() > 63 {
        return Some(format!("`{s}` is {} characters long: {RULE}", s.len()));
    }
    let valid_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid_chars && !s.starts_with('-') && !s.ends_with('-') {
        return None;
    }
    // Offer the nearest valid spelling: lower-case, other characters as `-`, no edge dashes.
    let fixed: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let fixed = fixed.trim_matches('-');
    let hint = if fixed.is_empty() || fixed.len() > 63 {
        String::new()
    } else {
        format!(", e.g. `{fixed}`")
    };
    Some(format!("`{s}` is not valid: {RULE}{hint}"))
}

fn validate_metadata(m: &Metadata, p: &mut Problems) {
    if let Some(why) = dns_label_problem(&m.name) {
        p.error(
            "metadata.name",
            format!("name {why} (names become part of container names)"),
        );
    }
    if let Some(why) = dns_label_problem(&m.namespace) {
        p.error(
            "metadata.namespace",
            format!("namespace {why} (namespaces become part of container names)"),
        );
    }
}

fn validate_launch_configuration(s: &LaunchConfigurationSpec, p: &mut Problems) {
    if s.image.trim().is_empty() {
        p.error(
            "spec.image",
            "image must not be empty: give a Docker image name such as `microscaler/busybox:latest`",
        );
    }
    if let Some(t) = &s.instance_type {
        if instance_types::lookup(t).is_none() {
            p.error(
                "spec.instanceType",
                format!(
                    "unknown instance type `{t}`{}; `ms get instancetypes` lists the known ones",
                    suggestion(t, instance_types::names())
                ),
            );
        }
    }
    if let Some(r) = &s.resources {
        if let Some(cpus) = r.cpus {
            if !(cpus.is_finite() && cpus > 0.0) {
                p.error(
                    "spec.resources.cpus",
                    format!("cpus must be greater than 0 (e.g. `0.5` or `2`), not {cpus}"),
                );
            } else if cpus > MAX_CPUS {
                p.error(
                    "spec.resources.cpus",
                    format!("cpus {cpus} is above the limit of {MAX_CPUS}: use {MAX_CPUS} or less"),
                );
            }
        }
        if let Some(mem) = r.memory_mib {
            if mem < MIN_MEMORY_MIB {
                p.error(
                    "spec.resources.memoryMiB",
                    format!(
                        "memoryMiB {mem} is below Docker's minimum of {MIN_MEMORY_MIB} MiB: use {MIN_MEMORY_MIB} or more"
                    ),
                );
            } else if mem > MAX_MEMORY_MIB {
                p.error(
                    "spec.resources.memoryMiB",
                    format!(
                        "memoryMiB {mem} is above the limit of {MAX_MEMORY_MIB} (16 TiB): use {MAX_MEMORY_MIB} or less"
                    ),
                );
            }
        }
    }
    p.duration_at_most("spec.stopGracePeriod", s.stop_grace_period, MAX_STOP_GRACE);
    if let Some(l) = &s.lifecycle {
        for (name, hook) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
            if let Some(h) = hook {
                validate_hook(&format!("spec.lifecycle.{name}"), h, &s.ports, p);
            }
        }
    }
    if s.ports.len() > MAX_PORTS {
        p.error(
            "spec.ports",
            format!(
                "{} ports are more than the limit of {MAX_PORTS}: publish at most {MAX_PORTS}",
                s.ports.len()
            ),
        );
    }
    for (i, port) in s.ports.iter().enumerate() {
        let at = |f: &str| format!("spec.ports[{i}].{f}");
        if port.container_port == 0 {
            p.error(
                at("containerPort"),
                "containerPort 0 is not a port: use 1-65535",
            );
        }
        if port.host_port == Some(0) {
            p.error(
                at("hostPort"),
                "hostPort 0 is not a port: use 1-65535, or omit hostPort for a port chosen by Docker",
            );
        }
        if let Some(ip) = &port.host_ip {
            if ip.parse::<IpAddr>().is_err() {
                p.error(
                    at("hostIp"),
                    format!("hostIp `{ip}` is not an IP address: use e.g. `127.0.0.1`, `0.0.0.0` or `::1`"),
                );
            }
        }
        if let Some(proto) = &port.protocol {
            if proto != "tcp" && proto != "udp" {
                p.error(
                    at("protocol"),
                    format!(
                        "protocol `{proto}` is not supported{}: use `tcp` or `udp`",
                        suggestion(proto, ["tcp", "udp"])
                    ),
                );
            }
        }
    }
    for key in s.env.keys() {
        if key.is_empty() {
            p.error(
                format!("spec.env.{key}"),
                "an environment variable needs a name: the key must not be empty",
            );
        } else if key.contains('=') {
            let (name, value) = key.split_once('=').unwrap_or((key, ""));
            p.error(
                format!("spec.env.{key}"),
                format!(
                    "environment variable name `{key}` contains `=`: write `{name}: \"{value}\"` instead"
                ),
            );
        }
    }
    if let Some(h) = &s.health_check {
        for (field, message) in super::health_check::check(h, Some(&s.ports), "spec.healthCheck") {
            p.error(field, message);
        }
    }
    for key in s.labels.keys() {
        if key.starts_with(RESERVED_LABEL_PREFIX) {
            p.error(
                format!("spec.labels.{key}"),
                format!(
                    "label `{key}` uses the reserved prefix `{RESERVED_LABEL_PREFIX}` (the controller's own labels): choose another prefix, e.g. `example.com/`"
                ),
            );
        }
    }
}

/// Checks `maxSurge`/`maxUnavailable`; returns whether the value is zero.
fn check_int_or_percent(field: &str, v: &IntOrPercent, p: &mut Problems) -> bool {
    match v {
        IntOrPercent::Int(n) if *n > MAX_GROUP_SIZE => {
            p.error(
                field,
                format!("{n} is above the limit of {MAX_GROUP_SIZE}: use {MAX_GROUP_SIZE} or less, or a percentage"),
            );
            false
        }
        IntOrPercent::Int(n) => *n == 0,
        IntOrPercent::Percent(s) => {
            let number = s.strip_suffix('%').and_then(|n| {
                if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                    n.parse::<u32>().ok()
                } else {
                    None
                }
            });
            match number {
                Some(n) if n <= 100 => n == 0,
                _ => {
                    p.error(
                        field,
                        format!(
                            "`{s}` is neither a count nor a percentage: write a whole number (`1`) or a percentage from 0% to 100% (`\"25%\"`)"
                        ),
                    );
                    false
                }
            }
        }
    }
}

/// A hook names exactly one action; an HTTP hook's port must be published (the controller
/// reaches containers only through 127.0.0.1).
fn validate_hook(at: &str, h: &super::Hook, ports: &[super::PortSpec], p: &mut Problems) {
    match (&h.exec, &h.http_get) {
        (Some(_), Some(_)) | (None, None) => p.error(
            at,
            "a hook has exactly one of `exec` (a command) or `httpGet` (a path and port)",
        ),
        (Some(e), None) => {
            if e.command.is_empty() || e.command.iter().any(|a| a.len() > 4096) {
                p.error(
                    format!("{at}.exec.command"),
                    "command must list the program and its arguments (each at most 4096 bytes), e.g. [\"sh\", \"-c\", \"echo bye\"]",
                );
            } else if e.command.len() > 64 {
                p.error(format!("{at}.exec.command"), "at most 64 arguments");
            }
        }
        (None, Some(g)) => {
            if !ports.iter().any(|x| x.container_port == g.port) {
                p.error(
                    format!("{at}.httpGet.port"),
                    format!(
                        "port {} is not published: add it to `ports` (the controller calls the hook through 127.0.0.1)",
                        g.port
                    ),
                );
            }
            if let Some(path) = &g.path {
                if !path.starts_with('/')
                    || path.len() > 1024
                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    p.error(
                        format!("{at}.httpGet.path"),
                        "path must start with `/`, have no spaces and be at most 1024 bytes",
                    );
                }
            }
        }
    }
    p.duration_at_most(
        &format!("{at}.timeout"),
        h.timeout,
        super::lifecycle::MAX_HOOK_TIMEOUT,
    );
}

fn validate_group(s: &AutoScalingGroupSpec, p: &mut Problems) {
    if let Some(why) = dns_label_problem(&s.launch_configuration) {
        p.error(
            "spec.launchConfiguration",
            format!("launchConfiguration {why} (it names a LaunchConfiguration)"),
        );
    }
    if s.min_size > s.max_size {
        p.error(
            "spec.minSize",
            format!(
                "minSize {} > maxSize {}: minSize must be at most maxSize",
                s.min_size, s.max_size
            ),
        );
    }
    if s.max_size > MAX_GROUP_SIZE {
        p.error(
            "spec.maxSize",
            format!(
                "maxSize {} is above the limit of {MAX_GROUP_SIZE}: use {MAX_GROUP_SIZE} or less",
                s.max_size
            ),
        );
    }
    if let Some(d) = s.desired_capacity {
        if s.min_size <= s.max_size {
            if d < s.min_size {
                p.warning(
                    "spec.desiredCapacity",
                    format!(
                        "desiredCapacity {d} is below minSize {}: it is clamped to {}",
                        s.min_size, s.min_size
                    ),
                );
            } else if d > s.max_size {
                p.warning(
                    "spec.desiredCapacity",
                    format!(
                        "desiredCapacity {d} is above maxSize {}: it is clamped to {}",
                        s.max_size, s.max_size
                    ),
                );
            }
        }
    }
    p.duration_at_most("spec.scaleOutCooldown", s.scale_out_cooldown, MAX_DURATION);
    p.duration_at_most("spec.scaleInCooldown", s.scale_in_cooldown, MAX_DURATION);
    p.duration_at_most(
        "spec.healthCheckGracePeriod",
        s.health_check_grace_period,
        MAX_DURATION,
    );
    if let Some(h) = &s.health_check {
        // The launch configuration's ports are another object's: checked when the group runs.
        for (field, message) in super::health_check::check(h, None, "spec.healthCheck") {
            p.error(field, message);
        }
    }
    p.duration_at_most(
        "spec.drainTimeout",
        s.drain_timeout,
        super::lifecycle::MAX_DRAIN_TIMEOUT,
    );
    if let Some(q) = &s.quarantine {
        if q.max_count
            .is_some_and(|n| n == 0 || n > super::lifecycle::MAX_QUARANTINE_COUNT)
        {
            p.error(
                "spec.quarantine.maxCount",
                format!(
                    "maxCount must be 1 to {} (remove `quarantine` to keep none)",
                    super::lifecycle::MAX_QUARANTINE_COUNT
                ),
            );
        }
        p.duration_at_most(
            "spec.quarantine.keepFor",
            q.keep_for,
            super::lifecycle::MAX_QUARANTINE_KEEP,
        );
    }
    if s.termination_policies.len() > 4 {
        p.error(
            "spec.terminationPolicies",
            "at most 4 termination policies (each of Default, OldestInstance, NewestInstance, OldestLaunchConfiguration once)",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, zone) in s.availability_zones.iter().enumerate() {
        let field = format!("spec.availabilityZones[{i}]");
        if zone.trim().is_empty() {
            p.error(
                field,
                "a zone name must not be empty: use the name of a zone from the controller configuration",
            );
        } else if !seen.insert(zone.as_str()) {
            p.error(
                field,
                format!("zone `{zone}` is listed twice: list each zone once"),
            );
        }
    }
    let surge_zero = s
        .max_surge
        .as_ref()
        .map(|v| check_int_or_percent("spec.maxSurge", v, p));
    let unavailable_zero = s
        .max_unavailable
        .as_ref()
        .map(|v| check_int_or_percent("spec.maxUnavailable", v, p));
    // maxSurge defaults to 25% (at least 1) and maxUnavailable to 0: only an explicit zero
    // surge can stall a rollout.
    if surge_zero == Some(true) && unavailable_zero.unwrap_or(true) {
        p.error(
            "spec.maxSurge",
            "maxSurge and maxUnavailable are both 0, so a rollout could never replace an instance: set maxSurge (or maxUnavailable) to at least 1",
        );
    }
    if let Some(w) = &s.warm_pool {
        validate_warm_pool(w, s.max_size, p);
    }
}

/// `warmPool`: sizes bounded like a group's, and the settings that keep no spare said so.
fn validate_warm_pool(w: &crate::manifest::WarmPool, max_size: u32, p: &mut Problems) {
    for (field, n) in [
        ("spec.warmPool.minSize", Some(w.min_size)),
        ("spec.warmPool.maxPrepared", w.max_prepared),
    ] {
        if let Some(n) = n.filter(|n| *n > MAX_GROUP_SIZE) {
            p.error(
                field,
                format!("{n} is above the limit of {MAX_GROUP_SIZE}: use {MAX_GROUP_SIZE} or less"),
            );
        }
    }
    p.duration_at_most(
        "spec.warmPool.prepareTime",
        w.prepare_time,
        crate::manifest::warm_pool::MAX_PREPARE_TIME,
    );
    if w.min_size == 0 {
        p.warning(
            "spec.warmPool.minSize",
            "minSize is 0, so the warm pool keeps no spare: set minSize to the number of spares to keep",
        );
    } else if let Some(cap) = w.max_prepared.filter(|cap| *cap < w.min_size) {
        p.warning(
            "spec.warmPool.maxPrepared",
            format!(
                "maxPrepared {cap} is below minSize {}: the pool keeps at most {cap} spares",
                w.min_size
            ),
        );
    } else if w.max_prepared.is_none() && w.min_size > max_size {
        p.warning(
            "spec.warmPool.minSize",
            format!(
                "minSize {} is above maxSize {max_size}: without maxPrepared, the pool keeps at most maxSize minus the desired capacity",
                w.min_size
            ),
        );
    }
}

fn validate_policy(s: &ScalingPolicySpec, p: &mut Problems) {
    if let Some(why) = dns_label_problem(&s.auto_scaling_group) {
        p.error(
            "spec.autoScalingGroup",
            format!("autoScalingGroup {why} (it names an AutoScalingGroup)"),
        );
    }
    let kind = match s.policy_type {
        PolicyType::Step => "a Step policy",
        PolicyType::TargetTracking => "a TargetTracking policy",
        PolicyType::Scheduled => "a Scheduled policy",
    };
    // Fields of another type are refused rather than ignored: a `targetValue` on a Step policy
    // is almost certainly a forgotten `type: TargetTracking`.
    let mut foreign = |field: &str, present: bool, belongs: &str| {
        if present {
            p.error(
                format!("spec.{field}"),
                format!("{field} belongs to {belongs} policies, not to {kind} (set `type:`, or remove {field})"),
            );
        }
    };
    let step = s.policy_type == PolicyType::Step;
    let tt = s.policy_type == PolicyType::TargetTracking;
    let sched = s.policy_type == PolicyType::Scheduled;
    for (f, v) in [
        ("upperThreshold", s.upper_threshold.is_some()),
        ("lowerThreshold", s.lower_threshold.is_some()),
        ("scaleOutStep", s.scale_out_step.is_some()),
        ("scaleInStep", s.scale_in_step.is_some()),
    ] {
        foreign(f, v && !step, "Step");
    }
    for (f, v) in [
        ("targetValue", s.target_value.is_some()),
        ("tolerance", s.tolerance.is_some()),
        ("scaleInStabilization", s.scale_in_stabilization.is_some()),
        ("maxScaleOutStep", s.max_scale_out_step.is_some()),
        ("maxScaleInStep", s.max_scale_in_step.is_some()),
    ] {
        foreign(f, v && !tt, "TargetTracking");
    }
    foreign("schedule", !s.schedule.is_empty() && !sched, "Scheduled");
    foreign(
        "metric",
        s.metric.is_some() && sched,
        "Step and TargetTracking",
    );
    foreign(
        "pushedMetric",
        s.pushed_metric.is_some() && sched,
        "Step and TargetTracking",
    );
    if !sched {
        match (&s.metric, &s.pushed_metric) {
            (None, None) => p.error(
                "spec.metric",
                format!("{kind} needs `metric: CPU`, `metric: Memory` or `pushedMetric: NAME`"),
            ),
            (Some(_), Some(_)) => p.error(
                "spec.pushedMetric",
                "set either metric or pushedMetric, not both",
            ),
            (None, Some(name)) => {
                if let Some(why) = metric_name_problem(name) {
                    p.error("spec.pushedMetric", format!("pushedMetric {why}"));
                }
            }
            _ => {}
        }
        for (field, d) in [
            ("spec.samplingWindow", s.sampling_window),
            ("spec.breachDuration", s.breach_duration),
        ] {
            if d.0.is_zero() {
                p.error(
                    field,
                    format!(
                        "{} must be longer than 0: write e.g. `60s` or `5m`",
                        &field[5..]
                    ),
                );
            }
            p.duration_at_most(field, Some(d), MAX_DURATION);
        }
    }
    p.duration_at_most(
        "spec.scaleInStabilization",
        s.scale_in_stabilization,
        MAX_DURATION,
    );
    for (field, v) in [
        ("spec.scaleOutStep", s.scale_out_step),
        ("spec.scaleInStep", s.scale_in_step),
        ("spec.maxScaleOutStep", s.max_scale_out_step),
        ("spec.maxScaleInStep", s.max_scale_in_step),
    ] {
        if let Some(n) = v.filter(|n| *n > MAX_GROUP_SIZE) {
            p.error(
                field,
                format!(
                    "{} {n} is above the limit of {MAX_GROUP_SIZE} (the largest group): use {MAX_GROUP_SIZE} or less",
                    &field[5..]
                ),
            );
        }
    }
    for (field, v) in [
        ("spec.upperThreshold", s.upper_threshold),
        ("spec.lowerThreshold", s.lower_threshold),
        ("spec.targetValue", s.target_value),
    ] {
        if let Some(v) = v.filter(|v| v.is_finite() && v.abs() > MAX_METRIC_VALUE) {
            p.error(
                field,
                format!(
                    "{} {v} is beyond the limit of {MAX_METRIC_VALUE:e}: use a value of at most {MAX_METRIC_VALUE:e}",
                    &field[5..]
                ),
            );
        }
    }
    if step {
        validate_step(s, p);
    }
    if tt {
        validate_target_tracking(s, p);
    }
    if sched {
        validate_schedule(s, p);
    }
}

/// A pushed metric name: what `POST /v1/metrics/NS/GROUP` accepts.
pub fn metric_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 63 {
        return Some("must be 1 to 63 characters long".to_string());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Some(format!(
            "`{name}` may contain only letters, digits, `_`, `-` and `.`"
        ));
    }
    None
}

fn validate_step(s: &ScalingPolicySpec, p: &mut Problems) {
    for (field, v) in [
        ("spec.lowerThreshold", s.lower_threshold),
        ("spec.upperThreshold", s.upper_threshold),
    ] {
        match v {
            None => p.error(
                field,
                format!(
                    "a Step policy needs {}, e.g. 80 (upper) and 30 (lower)",
                    &field[5..]
                ),
            ),
            Some(v) if !(v.is_finite() && v >= 0.0) => p.error(
                field,
                format!("{} must be a percentage of 0 or more, not {v}", &field[5..]),
            ),
            _ => {}
        }
    }
    if let (Some(lower), Some(upper)) = (s.lower_threshold, s.upper_threshold) {
        if lower >= upper {
            p.error(
                "spec.lowerThreshold",
                format!(
                    "lowerThreshold {lower} must be below upperThreshold {upper}, e.g. 30 and 80"
                ),
            );
        }
    }
    for (field, v) in [
        ("spec.scaleOutStep", s.scale_out_step),
        ("spec.scaleInStep", s.scale_in_step),
    ] {
        match v {
            None => p.error(
                field,
                format!(
                    "a Step policy needs {} (instances to add or remove), e.g. 1",
                    &field[5..]
                ),
            ),
            Some(v) if v < 1 => p.error(
                field,
                format!(
                    "{} must be at least 1 (the number of instances to add or remove)",
                    &field[5..]
                ),
            ),
            _ => {}
        }
    }
}

fn validate_target_tracking(s: &ScalingPolicySpec, p: &mut Problems) {
    match s.target_value {
        None => p.error(
            "spec.targetValue",
            "a TargetTracking policy needs targetValue, e.g. 50 (percent CPU)",
        ),
        Some(v) if !(v.is_finite() && v > 0.0) => p.error(
            "spec.targetValue",
            format!("targetValue must be above 0, not {v}"),
        ),
        Some(v) if v > 100.0 && s.metric.is_some() => p.error(
            "spec.targetValue",
            format!("targetValue {v} is above 100: CPU and Memory are percentages of the limit"),
        ),
        _ => {}
    }
    if let Some(t) = s.tolerance {
        if !(t.is_finite() && (0.0..100.0).contains(&t)) {
            p.error(
                "spec.tolerance",
                format!("tolerance is a percentage of the target from 0 to below 100, not {t}"),
            );
        }
    }
    for (field, v) in [
        ("spec.maxScaleOutStep", s.max_scale_out_step),
        ("spec.maxScaleInStep", s.max_scale_in_step),
    ] {
        if v == Some(0) {
            p.error(
                field,
                format!("{} must be at least 1 (omit it for no limit)", &field[5..]),
            );
        }
    }
}

fn validate_schedule(s: &ScalingPolicySpec, p: &mut Problems) {
    if s.schedule.is_empty() {
        p.error(
            "spec.schedule",
            "a Scheduled policy needs at least one action, e.g. `- {cron: \"0 8 * * MON-FRI\", desiredCapacity: 4}`",
        );
    }
    if s.schedule.len() > MAX_SCHEDULED_ACTIONS {
        p.error(
            "spec.schedule",
            format!(
                "{} scheduled actions are more than the limit of {MAX_SCHEDULED_ACTIONS}: split them over several policies",
                s.schedule.len()
            ),
        );
    }
    for (i, a) in s.schedule.iter().enumerate() {
        let at = |f: &str| format!("spec.schedule[{i}].{f}");
        if let Err(e) = parse_cron(&a.cron) {
            p.error(at("cron"), e);
        }
        if let Some(tz) = &a.time_zone {
            if let Err(e) = parse_time_zone(tz) {
                p.error(at("timeZone"), e);
            }
        }
        if a.min_size.is_none() && a.max_size.is_none() && a.desired_capacity.is_none() {
            p.error(
                at("cron"),
                "the action changes nothing: set minSize, maxSize or desiredCapacity",
            );
        }
        if let (Some(min), Some(max)) = (a.min_size, a.max_size) {
            if min > max {
                p.error(
                    at("minSize"),
                    format!("minSize {min} is above maxSize {max}"),
                );
            }
        }
        for (f, v) in [
            ("minSize", a.min_size),
            ("maxSize", a.max_size),
            ("desiredCapacity", a.desired_capacity),
        ] {
            if let Some(n) = v.filter(|n| *n > MAX_GROUP_SIZE) {
                p.error(
                    at(f),
                    format!("{f} {n} is above the limit of {MAX_GROUP_SIZE}"),
                );
            }
        }
        if let (Some(start), Some(end)) = (a.start_time, a.end_time) {
            if start >= end {
                p.error(
                    at("endTime"),
                    format!("endTime {end} must be after startTime {start}"),
                );
            }
        }
    }
}

/// Parses a standard 5-field cron expression (POSIX day-of-week: 0 and 7 are Sunday).
///
/// # Errors
/// A sentence saying what is wrong, for validation messages.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "cron `{expr}` has {fields} fields; write 5: minute hour day-of-month month day-of-week, e.g. `0 8 * * MON-FRI`"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("invalid cron `{expr}`: {e}"))
}

/// Parses an IANA time zone name such as `Europe/Berlin`.
///
/// # Errors
/// A sentence with the closest known name.
pub fn parse_time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        let hint = did_you_mean(name, chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        format!(
            "unknown time zone `{name}`{hint}: use an IANA name such as `Europe/Berlin` or `UTC`"
        )
    })
}

/// For each group whose launch configuration does not exist in its namespace, and each policy
/// whose group does not exist, a message saying so (with a suggestion when a name is close).
///
/// Files arrive in any order, so a missing reference is a state to report, not a parse error.
pub fn missing_references(objects: &BTreeMap<ObjectKey, Object>) -> BTreeMap<ObjectKey, String> {
    let names_in = |kind: Kind, namespace: &str| -> Vec<&str> {
        objects
            .keys()
            .filter(|k| k.kind == kind && k.namespace == namespace)
            .map(|k| k.name.as_str())
            .collect()
    };
    let mut out = BTreeMap::new();
    for (key, object) in objects {
        let (target_kind, target, what) = match object {
            Object::AutoScalingGroup(m) => (
                Kind::LaunchConfiguration,
                &m.spec.launch_configuration,
                "launch configuration",
            ),
            Object::ScalingPolicy(m) => (
                Kind::AutoScalingGroup,
                &m.spec.auto_scaling_group,
                "autoscaling group",
            ),
            Object::LaunchConfiguration(_) | Object::LoadBalancer(_) => continue,
        };
        let target_key = ObjectKey::new(target_kind, key.namespace.clone(), target.clone());
        if !objects.contains_key(&target_key) {
            let hint = suggestion(target, names_in(target_kind, &key.namespace));
            out.insert(
                key.clone(),
                format!(
                    "{what} `{target}` does not exist (yet) in namespace `{}`{hint}",
                    key.namespace
                ),
            );
        }
    }
    out
}

impl LaunchConfigurationSpec {
    /// CPU and memory (MiB) limits: the instance type's, each overridden by `resources` when given.
    /// `None` means no limit.
    pub fn limits(&self) -> (Option<f64>, Option<u64>) {
        let base = self
            .instance_type
            .as_deref()
            .and_then(instance_types::lookup);
        let res = self.resources.as_ref();
        let cpus = res.and_then(|r| r.cpus).or(base.map(|t| t.cpus));
        let memory = res
            .and_then(|r| r.memory_mib)
            .or(base.map(|t| t.memory_mib));
        (cpus, memory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::types::{Manifest, Resources, API_VERSION};

    fn meta(name: &str) -> Metadata {
        Metadata {
            name: name.into(),
            namespace: "default".into(),
            labels: BTreeMap::new(),
        }
    }

    fn lc_spec() -> LaunchConfigurationSpec {
        LaunchConfigurationSpec {
            image: "microscaler/busybox:latest".into(),
            instance_type: None,
            resources: None,
            command: None,
            entrypoint: None,
            env: BTreeMap::new(),
            ports: vec![],
            labels: BTreeMap::new(),
            user_data: None,
            network: None,
            stop_grace_period: None,
            image_pull_policy: None,
            health_check: None,
            lifecycle: None,
        }
    }

    fn lc(name: &str) -> Object {
        Object::LaunchConfiguration(Manifest {
            api_version: API_VERSION.into(),
            kind: Kind::LaunchConfiguration,
            metadata: meta(name),
            spec: lc_spec(),
            status: None,
        })
    }

    fn group(name: &str, lc: &str) -> Object {
        Object::AutoScalingGroup(Manifest {
            api_version: API_VERSION.into(),
            kind: Kind::AutoScalingGroup,
            metadata: meta(name),
            spec: AutoScalingGroupSpec {
                launch_configuration: lc.into(),
                min_size: 1,
                max_size: 3,
                desired_capacity: None,
                availability_zones: vec![],
                scale_out_cooldown: None,
                scale_in_cooldown: None,
                domain: None,
                state: Default::default(),
                max_surge: None,
                max_unavailable: None,
                health_check_grace_period: None,
                health_check: None,
                drain_timeout: None,
                termination_policies: vec![],
                quarantine: None,
                warm_pool: None,
                load_balancers: vec![],
            },
            status: None,
        })
    }

    #[test]
    fn did_you_mean_finds_close_names_case_insensitively() {
        let fields = ["minSize", "maxSize", "desiredCapacity"];
        assert_eq!(
            did_you_mean("desiredCapasity", fields),
            Some("desiredCapacity")
        );
        assert_eq!(
            did_you_mean(
                "AutoscalingGroup",
                ["LaunchConfiguration", "AutoScalingGroup"]
            ),
            Some("AutoScalingGroup")
        );
        assert_eq!(did_you_mean("imgae", ["image", "env"]), Some("image"));
        assert_eq!(did_you_mean("foo", ["env", "image"]), None);
        assert_eq!(did_you_mean("x", Vec::<&str>::new()), None);
    }

    #[test]
    fn names_must_be_dns_labels_with_a_suggested_fix() {
        assert_eq!(dns_label_problem("web-1"), None);
        let why = dns_label_problem("Web_1").unwrap();
        assert!(why.contains("e.g. `web-1`"), "{why}");
        assert!(dns_label_problem(&"a".repeat(64)).is_some());
        assert!(dns_label_problem("-web").is_some());
        assert!(dns_label_problem("").is_some());
    }

    #[test]
    fn limits_take_the_instance_type_and_let_resources_override() {
        let mut s = lc_spec();
        assert_eq!(s.limits(), (None, None));
        s.instance_type = Some("m1.large".into());
        assert_eq!(s.limits(), (Some(2.0), Some(4096)));
        s.resources = Some(Resources {
            cpus: Some(0.5),
            memory_mib: None,
        });
        assert_eq!(s.limits(), (Some(0.5), Some(4096)));
        s.instance_type = None;
        s.resources = Some(Resources {
            cpus: None,
            memory_mib: Some(64),
        });
        assert_eq!(s.limits(), (None, Some(64)));
    }

    #[test]
    fn missing_references_name_the_namespace_and_suggest_a_close_name() {
        let mut objects = BTreeMap::new();
        for o in [lc("web"), group("web", "web-lc"), group("api", "web")] {
            objects.insert(o.key(), o);
        }
        let missing = missing_references(&objects);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(
            missing[&ObjectKey::new(Kind::AutoScalingGroup, "default", "web")],
            "launch configuration `web-lc` does not exist (yet) in namespace `default` (did you mean `web`?)"
        );
    }

    #[test]
    fn a_policy_without_its_group_is_reported() {
        let mut objects = BTreeMap::new();
        let policy = Object::ScalingPolicy(Manifest {
            api_version: API_VERSION.into(),
            kind: Kind::ScalingPolicy,
            metadata: meta("cpu"),
            spec: ScalingPolicySpec {
                auto_scaling_group: "wbe".into(),
                ..serde_yaml_ng::from_str(
                    "{autoScalingGroup: x, metric: CPU, upperThreshold: 80, lowerThreshold: 30, scaleOutStep: 1, scaleInStep: 1}",
                )
                .unwrap()
            },
            status: None,
        });
        for o in [group("web", "web"), policy] {
            objects.insert(o.key(), o);
        }
        let missing = missing_references(&objects);
        // The group's own launch configuration is missing too.
        assert_eq!(missing.len(), 2);
        assert_eq!(
            missing[&ObjectKey::new(Kind::ScalingPolicy, "default", "cpu")],
            "autoscaling group `wbe` does not exist (yet) in namespace `default` (did you mean `web`?)"
        );
    }

    #[test]
    fn warm_pools_are_bounded_and_a_pool_that_keeps_nothing_is_said_so() {
        let problems = |yaml: &str| -> Vec<(String, Severity)> {
            let Object::AutoScalingGroup(mut m) = group("web", "web") else {
                unreachable!()
            };
            m.spec.warm_pool = Some(serde_yaml_ng::from_str(yaml).unwrap());
            validate(&Object::AutoScalingGroup(m))
                .into_iter()
                .map(|p| (p.field, p.severity))
                .collect()
        };
        assert!(problems("{minSize: 2, maxPrepared: 2, prepareTime: 5s}").is_empty());
        assert_eq!(
            problems("{minSize: 1, prepareTime: 1h}"),
            vec![("spec.warmPool.prepareTime".into(), Severity::Error)]
        );
        assert!(problems("{minSize: 5000}")
            .contains(&("spec.warmPool.minSize".into(), Severity::Error)));
        assert_eq!(
            problems("{minSize: 1, maxPrepared: 5000}"),
            vec![("spec.warmPool.maxPrepared".into(), Severity::Error)]
        );
        assert_eq!(
            problems("{state: Stopped}"),
            vec![("spec.warmPool.minSize".into(), Severity::Warning)]
        );
        assert_eq!(
            problems("{minSize: 3, maxPrepared: 1}"),
            vec![("spec.warmPool.maxPrepared".into(), Severity::Warning)]
        );
    }

    fn policy_problems(spec_yaml: &str) -> Vec<(String, String)> {
        let spec: ScalingPolicySpec =
            serde_yaml_ng::from_str(&format!("autoScalingGroup: web\n{spec_yaml}")).unwrap();
        let o = Object::ScalingPolicy(Manifest {
            api_version: API_VERSION.into(),
            kind: Kind::ScalingPolicy,
            metadata: meta("p"),
            spec,
            status: None,
        });
        validate(&o)
            .into_iter()
            .map(|p| (p.field, p.message))
            .collect()
    }

    #[test]
    fn each_policy_type_is_checked_with_field_paths() {
        let cases = [
            ("type: TargetTracking\nmetric: CPU\ntargetValue: 50", None),
            ("type: TargetTracking\npushedMetric: queue_depth\ntargetValue: 5", None),
            (
                "type: Scheduled\nschedule: [{cron: \"0 8 * * MON-FRI\", timeZone: Europe/Berlin, minSize: 2}]",
                None,
            ),
            (
                "type: TargetTracking\nmetric: CPU",
                Some(("spec.targetValue", "a TargetTracking policy needs targetValue")),
            ),
            (
                "type: TargetTracking\nmetric: CPU\ntargetValue: 50\nupperThreshold: 80",
                Some(("spec.upperThreshold", "upperThreshold belongs to Step policies, not to a TargetTracking policy")),
            ),
            (
                "metric: CPU\nupperThreshold: 80\nlowerThreshold: 30\nscaleOutStep: 1\nscaleInStep: 1\ntargetValue: 50",
                Some(("spec.targetValue", "targetValue belongs to TargetTracking policies")),
            ),
            (
                "metric: CPU\nupperThreshold: 80\nlowerThreshold: 30\nscaleOutStep: 1",
                Some(("spec.scaleInStep", "a Step policy needs scaleInStep")),
            ),
            (
                "type: TargetTracking\ntargetValue: 50",
                Some(("spec.metric", "needs `metric: CPU`, `metric: Memory` or `pushedMetric: NAME`")),
            ),
            (
                "type: TargetTracking\nmetric: CPU\npushedMetric: q\ntargetValue: 50",
                Some(("spec.pushedMetric", "either metric or pushedMetric")),
            ),
            (
                "type: TargetTracking\nmetric: CPU\ntargetValue: 50\ntolerance: 150",
                Some(("spec.tolerance", "tolerance is a percentage")),
            ),
            (
                "type: Scheduled",
                Some(("spec.schedule", "needs at least one action")),
            ),
            (
                "type: Scheduled\nschedule: [{cron: \"0 8 * *\", desiredCapacity: 2}]",
                Some(("spec.schedule[0].cron", "has 4 fields; write 5")),
            ),
            (
                "type: Scheduled\nschedule: [{cron: \"0 8 * * FUNDAY\", desiredCapacity: 2}]",
                Some(("spec.schedule[0].cron", "invalid cron")),
            ),
            (
                "type: Scheduled\nschedule: [{cron: \"0 8 * * *\", timeZone: Europe/Berln, desiredCapacity: 2}]",
                Some(("spec.schedule[0].timeZone", "unknown time zone `Europe/Berln` (did you mean `Europe/Berlin`?)")),
            ),
            (
                "type: Scheduled\nschedule: [{cron: \"0 8 * * *\"}]",
                Some(("spec.schedule[0].cron", "the action changes nothing")),
            ),
            (
                "type: Scheduled\nschedule: [{cron: \"0 8 * * *\", minSize: 5, maxSize: 2}]",
                Some(("spec.schedule[0].minSize", "minSize 5 is above maxSize 2")),
            ),
            (
                "type: Scheduled\nmetric: CPU\nschedule: [{cron: \"0 8 * * *\", minSize: 1}]",
                Some(("spec.metric", "metric belongs to Step and TargetTracking policies")),
            ),
        ];
        for (yaml, want) in cases {
            let problems = policy_problems(yaml);
            match want {
                None => assert!(problems.is_empty(), "{yaml}: {problems:?}"),
                Some((field, message)) => assert!(
                    problems
                        .iter()
                        .any(|(f, m)| f == field && m.contains(message)),
                    "{yaml}: wanted {field}: {message}, got {problems:?}"
                ),
            }
        }
    }
}
