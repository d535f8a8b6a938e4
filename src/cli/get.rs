//! `ms get`: lists objects as aligned tables (the original's list-asgs columns), YAML or JSON.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::{json, Value};

use super::table::{age_of, cell, started_age, Table};
use super::{CmdResult, Failure, Output};
use crate::client::Client;
use crate::manifest::instance_types;
use crate::manifest::Kind;

/// Arguments of `ms get`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ms get asgs                          # the groups of the namespace
  ms get asg/web -o yaml               # one object as a manifest (kind/name)
  ms get instances -l app=web -A       # instances of groups labelled app=web, all namespaces
  ms get asgs -o name                  # autoscalinggroup/web, one per line
  ms get asgs -o jsonpath='{range .items[*]}{.metadata.name} {.status.ready}{\"\\n\"}{end}'
  ms get instances -w                  # the table, then one line per change
  ms get asgs --no-headers | wc -l")]
pub(crate) struct GetArgs {
    /// asgs, lcs, policies, lbs, instances, instancetypes or problems (singular forms accepted),
    /// or KIND/NAME.
    resource: String,
    /// Show only this object (for instances: this instance).
    name: Option<String>,
    /// Namespace (default: $MS_NAMESPACE, else the one stored by `ms login`, else `default`).
    #[arg(short = 'n', long, env = "MS_NAMESPACE", default_value = "default")]
    namespace: String,
    /// List across all namespaces (adds a NAMESPACE column).
    #[arg(short = 'A', long)]
    pub(crate) all_namespaces: bool,
    /// Output format: table, wide, yaml, json, name, jsonpath=TEMPLATE (kubectl's JSONPath:
    /// `{.items[*].metadata.name}`, `{range .items[*]}...{end}`).
    #[arg(short = 'o', long, default_value = "table", value_parser = super::parse_output)]
    pub(crate) output: Output,
    /// Only objects whose labels match: `key=value[,key2=value2]`, `key!=value`, `key`
    /// (instances: those of groups that match).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// Tables without the header line.
    #[arg(long)]
    no_headers: bool,
    /// After listing, print a line per change until interrupted (asgs, lcs, policies, instances).
    #[arg(short = 'w', long)]
    watch: bool,
}

/// What `ms get` can list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Object(Kind),
    Instances,
    InstanceTypes,
    Problems,
}

fn resource(s: &str) -> Result<Resource, Failure> {
    if let Some(kind) = Kind::parse(s) {
        return Ok(Resource::Object(kind));
    }
    match s.to_ascii_lowercase().as_str() {
        "instances" | "instance" | "inst" => Ok(Resource::Instances),
        "instancetypes" | "instancetype" | "it" => Ok(Resource::InstanceTypes),
        "problems" | "problem" => Ok(Resource::Problems),
        _ => Err(Failure::Message(format!(
            "unknown resource `{s}`: use asgs, lcs, policies, lbs, instances, instancetypes or problems"
        ))),
    }
}

pub(crate) async fn run(client: Client, mut args: GetArgs) -> CmdResult {
    // `asg/web` is `asg web`, as in kubectl.
    if let Some((kind, name)) = args.resource.clone().split_once('/') {
        if args.name.is_some() {
            return Err(Failure::Code(
                2,
                format!(
                    "`{}` already names the object: give no second name",
                    args.resource
                ),
            ));
        }
        args.resource = kind.to_string();
        args.name = Some(name.to_string());
    }
    if args.all_namespaces && namespace_on_command_line(std::env::args()) {
        return Err(Failure::Code(
            2,
            "-A (all namespaces) and -n NAMESPACE exclude each other".into(),
        ));
    }
    let res = resource(&args.resource)?;
    let selector = args
        .selector
        .as_deref()
        .map(super::selector::Selector::parse)
        .transpose()
        .map_err(|e| Failure::Code(2, e))?;
    let ns = (!args.all_namespaces).then_some(args.namespace.as_str());
    let now = Utc::now();
    let mut items: Vec<Value> = match res {
        Resource::Object(kind) => {
            let mut items = match &args.name {
                Some(name) => vec![client.get(kind, &args.namespace, name).await?],
                None => client.list(kind, ns).await?,
            };
            if kind == Kind::AutoScalingGroup && args.output == Output::Wide {
                // The URL column: the load balancers that name each group.
                let lbs = client
                    .list(Kind::LoadBalancer, ns)
                    .await
                    .unwrap_or_default();
                let urls = super::lb_view::urls_by_group(&lbs);
                for i in items.iter_mut() {
                    let key = (
                        i["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or("default")
                            .to_string(),
                        name(i),
                    );
                    if let Some(u) = urls.get(&key) {
                        i["urls"] = json!(u);
                    }
                }
            }
            items
        }
        Resource::Instances => {
            let mut items = client.instances(ns, None).await?;
            if args.output == Output::Wide {
                // CPU/MEM columns from the controller's latest samples (`ms top`).
                let m = super::autoscale_cmd::metrics_by_name(&client, ns).await;
                for i in items.iter_mut() {
                    if let Some((cpu, mem)) = i["name"].as_str().and_then(|n| m.get(n)) {
                        i["metrics"] = serde_json::json!([cpu, mem]);
                    }
                }
            }
            if let Some(name) = &args.name {
                items.retain(|i| i["name"].as_str() == Some(name));
                if items.is_empty() {
                    return Err(Failure::Message(format!(
                        "instance `{name}` not found in namespace `{}`",
                        args.namespace
                    )));
                }
            }
            items
        }
        Resource::InstanceTypes => client.instance_types().await?,
        Resource::Problems => {
            let p = client.problems().await?;
            problem_items(&p)
        }
    };
    if let Some(sel) = &selector {
        match res {
            Resource::Object(_) => items.retain(|i| sel.matches(&i["metadata"]["labels"])),
            Resource::Instances => {
                let groups = client.list(Kind::AutoScalingGroup, ns).await?;
                let chosen: BTreeSet<(String, String)> = groups
                    .iter()
                    .filter(|g| sel.matches(&g["metadata"]["labels"]))
                    .map(|g| {
                        (
                            g["metadata"]["namespace"]
                                .as_str()
                                .unwrap_or("default")
                                .to_string(),
                            name(g),
                        )
                    })
                    .collect();
                items
                    .retain(|i| chosen.contains(&(cell(i.get("namespace")), cell(i.get("group")))));
            }
            _ => {
                return Err(Failure::Code(
                    2,
                    "-l selects objects and instances, not instance types or problems".into(),
                ))
            }
        }
    }
    if args.watch {
        return super::watch_cmd::run(&client, &args_view(&args, res, ns), items).await;
    }

    match &args.output {
        Output::Json => {
            let v = match (&args.name, res) {
                (Some(_), Resource::Object(_)) => items.into_iter().next().unwrap_or(Value::Null),
                // A list object, as kubectl's: scripts read `.items`.
                _ => json!({ "kind": "List", "items": items }),
            };
            println!("{}", serde_json::to_string_pretty(&v).expect("json prints"));
        }
        Output::Yaml => print!("{}", yaml(res, &items)),
        Output::Name => {
            for i in &items {
                println!("{}", object_name(res, i));
            }
        }
        Output::JsonPath(t) => {
            let v = match (&args.name, res) {
                (Some(_), Resource::Object(_)) => items.into_iter().next().unwrap_or(Value::Null),
                _ => json!({ "kind": "List", "items": items }),
            };
            let text = t.render(&v);
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
        }
        Output::Table | Output::Wide => {
            let wide = args.output == Output::Wide;
            let table = match res {
                Resource::Object(Kind::AutoScalingGroup) => groups(&items, wide, now),
                Resource::Object(Kind::LaunchConfiguration) => lcs(&items, now),
                Resource::Object(Kind::ScalingPolicy) => policies(&items),
                Resource::Object(Kind::LoadBalancer) => super::lb_view::lbs(&items, now),
                Resource::Instances => instances(&items, wide, args.all_namespaces, now),
                Resource::InstanceTypes => types(&items),
                Resource::Problems => problems(&items),
            };
            let table = if args.all_namespaces && res != Resource::Instances {
                with_namespace(table, &items)
            } else {
                table
            };
            if table.is_empty() {
                match (res, ns) {
                    (Resource::Problems, _) => eprintln!("No problems found."),
                    (Resource::Object(Kind::AutoScalingGroup), ns) => {
                        match ns {
                            Some(ns) => eprintln!("No resources found in {ns} namespace."),
                            None => eprintln!("No resources found."),
                        }
                        eprintln!("{EMPTY_HINT}");
                    }
                    (_, Some(ns)) if res != Resource::InstanceTypes => {
                        eprintln!("No resources found in {ns} namespace.")
                    }
                    _ => eprintln!("No resources found."),
                }
            } else if args.no_headers {
                print!("{}", without_header(&table.render()));
            } else {
                print!("{}", table.render());
            }
            if !matches!(res, Resource::InstanceTypes | Resource::Problems) {
                warn_about_file_errors(&client).await;
            }
        }
    }
    Ok(())
}

/// Whether `-n`/`--namespace` was typed (a namespace from $MS_NAMESPACE or the login is only a
/// default, which `-A` overrides).
pub(crate) fn namespace_on_command_line(argv: impl Iterator<Item = String>) -> bool {
    argv.take_while(|a| a != "--").any(|a| {
        a == "--namespace"
            || a.starts_with("--namespace=")
            || (a.starts_with("-n") && !a.starts_with("--"))
    })
}

/// What `ms get -w` needs to print rows like `ms get` does.
pub(crate) struct View {
    resource: Resource,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    wide: bool,
    all_namespaces: bool,
    no_headers: bool,
    selector: Option<super::selector::Selector>,
    pub(crate) output: Output,
}

fn args_view(args: &GetArgs, resource: Resource, ns: Option<&str>) -> View {
    View {
        resource,
        namespace: ns.map(str::to_string),
        name: args.name.clone(),
        wide: args.output == Output::Wide,
        all_namespaces: args.all_namespaces,
        no_headers: args.no_headers,
        selector: args
            .selector
            .as_deref()
            .and_then(|s| super::selector::Selector::parse(s).ok()),
        output: args.output.clone(),
    }
}

impl View {
    /// The `kind` query of `/v1/watch` for this resource.
    pub(crate) fn watch_kind(&self) -> Result<&'static str, Failure> {
        match self.resource {
            Resource::Object(Kind::AutoScalingGroup) => Ok("asgs"),
            Resource::Object(Kind::LaunchConfiguration) => Ok("lcs"),
            Resource::Object(Kind::ScalingPolicy) => Ok("policies"),
            Resource::Instances => Ok("instances"),
            _ => Err(Failure::Code(
                2,
                "-w watches asgs, lcs, policies and instances".into(),
            )),
        }
    }

    /// Whether a streamed object is one this view shows (its name; labels for objects; for
    /// instances, the selector is applied to their group at the start only).
    pub(crate) fn shows(&self, object: &Value) -> bool {
        let n = match self.resource {
            Resource::Instances => cell(object.get("name")),
            _ => name(object),
        };
        self.name.as_ref().is_none_or(|want| *want == n)
            && match (&self.selector, self.resource) {
                (Some(sel), Resource::Object(_)) => sel.matches(&object["metadata"]["labels"]),
                _ => true,
            }
    }

    /// The table of `items` (with its header unless --no-headers), as `ms get` prints it.
    pub(crate) fn table(&self, items: &[Value], header: bool) -> String {
        let now = Utc::now();
        let t = match self.resource {
            Resource::Object(Kind::AutoScalingGroup) => groups(items, self.wide, now),
            Resource::Object(Kind::LaunchConfiguration) => lcs(items, now),
            Resource::Object(Kind::ScalingPolicy) => policies(items),
            Resource::Object(Kind::LoadBalancer) => super::lb_view::lbs(items, now),
            Resource::Instances => instances(items, self.wide, self.all_namespaces, now),
            Resource::InstanceTypes => types(items),
            Resource::Problems => problems(items),
        };
        let t = if self.all_namespaces && self.resource != Resource::Instances {
            with_namespace(t, items)
        } else {
            t
        };
        let text = t.render();
        if header && !self.no_headers {
            text
        } else {
            without_header(&text).to_string()
        }
    }

    /// `autoscalinggroup/web` for `-o name`.
    pub(crate) fn object_name(&self, item: &Value) -> String {
        object_name(self.resource, item)
    }
}

fn without_header(text: &str) -> &str {
    text.split_once('\n').map_or("", |(_, rest)| rest)
}

fn object_name(res: Resource, i: &Value) -> String {
    match res {
        Resource::Object(k) => format!("{}/{}", k.as_str().to_ascii_lowercase(), name(i)),
        Resource::Instances => format!("instance/{}", cell(i.get("name"))),
        Resource::InstanceTypes => format!("instancetype/{}", cell(i.get("name"))),
        Resource::Problems => format!("problem/{}", cell(i.get("file"))),
    }
}

/// What a newcomer's first `ms get asgs` says next to an empty list.
const EMPTY_HINT: &str = "Add a group: `ms apply -f FILE` with a launch configuration and an autoscaling group \
(in a microscaler checkout: ms apply -f manifests/examples/launch-configuration.yaml -f manifests/examples/autoscaling-group.yaml), \
or put manifests into the directory the controller watches (its log names it).";

/// Says that some manifests currently fail to load (their objects run their last valid version),
/// and that some deletions are held.
async fn warn_about_file_errors(client: &Client) {
    let Ok(p) = client.problems().await else {
        return;
    };
    let held = p["held"].as_array().map_or(0, Vec::len);
    if held > 0 {
        eprintln!(
            "Warning: the deletion of {held} group{} is held, {} keep{} running until confirmed (ms get problems)",
            if held == 1 { "" } else { "s" },
            if held == 1 { "it" } else { "they" },
            if held == 1 { "s" } else { "" }
        );
    }
    let errors = p["fileErrors"].as_array().cloned().unwrap_or_default();
    let Some(first) = errors.first() else { return };
    let files: BTreeSet<&str> = errors.iter().filter_map(|e| e["file"].as_str()).collect();
    let n = files.len();
    eprintln!(
        "Warning: {n} manifest{} {} errors, the objects defined there run their last valid version (ms get problems): {}",
        if n == 1 { "" } else { "s" },
        if n == 1 { "has" } else { "have" },
        error_line(first)
    );
}

/// `file:line:col: field: message` of a manifest error in JSON.
pub(super) fn error_line(e: &Value) -> String {
    let field = e["field"].as_str().filter(|f| !f.is_empty());
    format!(
        "{}:{}:{}: {}{}",
        cell(e.get("file")),
        cell(e.get("line")),
        cell(e.get("column")),
        field.map(|f| format!("{f}: ")).unwrap_or_default(),
        cell(e.get("message"))
    )
}

/// The rows of `ms get problems`: file errors, files whose status is not written, conflicts,
/// then held deletions (each says the command that confirms it).
fn problem_items(p: &Value) -> Vec<Value> {
    let mut items: Vec<Value> = p["fileErrors"].as_array().cloned().unwrap_or_default();
    for s in p["statusErrors"].as_array().into_iter().flatten() {
        items.push(json!({
            "file": s["file"],
            "line": Value::Null,
            "field": "status",
            "message": s["message"],
        }));
    }
    for c in p["conflicts"].as_array().into_iter().flatten() {
        items.push(json!({
            "file": c["ignored"],
            "line": Value::Null,
            "field": "",
            "message": format!(
                "{} is already defined in {}; this definition is ignored",
                cell(c.get("key")),
                cell(c.get("winner"))
            ),
        }));
    }
    for lb in p["loadBalancers"].as_array().into_iter().flatten() {
        items.push(json!({
            "file": format!("lb {}/{}", cell(lb.get("namespace")), cell(lb.get("name"))),
            "line": Value::Null,
            "field": "",
            "message": lb["message"],
        }));
    }
    for h in p["held"].as_array().into_iter().flatten() {
        // The file it was last defined in, or (known only from the engines) the group itself.
        let location = match h["file"].as_str() {
            Some(f) => f.to_string(),
            None => format!("asg {}/{}", cell(h.get("namespace")), cell(h.get("name"))),
        };
        items.push(json!({
            "file": location,
            "line": Value::Null,
            "field": "",
            "message": h["message"],
        }));
    }
    items
}

/// `-o yaml`: manifests that `ms apply` accepts back, or plain lists for the other resources.
fn yaml(res: Resource, items: &[Value]) -> String {
    match res {
        Resource::Object(_) => items
            .iter()
            .map(|i| {
                let mut m = serde_json::Map::new();
                for k in ["apiVersion", "kind", "metadata", "spec", "status"] {
                    if let Some(v) = i.get(k).filter(|v| !v.is_null()) {
                        m.insert(k.into(), v.clone());
                    }
                }
                serde_yaml_ng::to_string(&m).expect("yaml prints")
            })
            .collect::<Vec<_>>()
            .join("---\n"),
        _ => serde_yaml_ng::to_string(items).expect("yaml prints"),
    }
}

fn with_namespace(table: Table, items: &[Value]) -> Table {
    // Rebuild with NAMESPACE first; rows are in the same order as items.
    let text_rows = table.rows();
    let mut out = Table::new(
        &std::iter::once("NAMESPACE".to_string())
            .chain(text_rows[0].iter().cloned())
            .collect::<Vec<_>>(),
    );
    for (row, item) in text_rows[1..].iter().zip(items) {
        let ns = item["metadata"]["namespace"]
            .as_str()
            .or_else(|| item["namespace"].as_str())
            .unwrap_or("default");
        out.row(
            std::iter::once(ns.to_string())
                .chain(row.iter().cloned())
                .collect(),
        );
    }
    out
}

/// Age of an object: since the controller first saw it, or since its oldest instance started
/// if that is earlier (the controller forgets when it first saw an object when it restarts;
/// the containers it left running remember).
pub(crate) fn object_age(item: &Value, now: DateTime<Utc>) -> String {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let oldest = item["status"]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| parse(&i["startedAt"]))
        .chain(parse(&item["firstSeen"]))
        .min();
    match oldest {
        Some(t) => age_of(Some(&Value::String(t.to_rfc3339())), now),
        None => "<unknown>".into(),
    }
}

fn name(i: &Value) -> String {
    cell(i["metadata"].get("name"))
}

fn groups(items: &[Value], wide: bool, now: DateTime<Utc>) -> Table {
    let mut h = vec![
        "NAME", "STATE", "ZONES", "MIN", "MAX", "DESIRED", "CURRENT", "READY", "AGE",
    ];
    if wide {
        h.extend(["LAUNCH-CONFIGURATION", "UP-TO-DATE", "URL"]);
    }
    let mut t = Table::new(&h);
    for i in items {
        let spec = &i["spec"];
        let status = &i["status"];
        // A policy's capacity (status) wins over the spec's, as it does in the controller.
        let desired = status
            .get("desiredCapacitySetBy")
            .and_then(|_| status.get("desiredCapacity"))
            .or_else(|| spec.get("desiredCapacity").filter(|v| !v.is_null()))
            .or_else(|| spec.get("minSize"));
        // Omitted zones mean the controller's default zone: show where the group really runs.
        let zones = spec
            .get("availabilityZones")
            .filter(|z| z.as_array().is_some_and(|a| !a.is_empty()))
            .or_else(|| status.get("zones"));
        let mut row = vec![
            name(i),
            spec["state"].as_str().unwrap_or("Started").to_string(),
            cell(zones),
            cell(spec.get("minSize")),
            cell(spec.get("maxSize")),
            cell(desired),
            cell(status.get("current")),
            cell(status.get("ready")),
            object_age(i, now),
        ];
        if wide {
            row.push(cell(spec.get("launchConfiguration")));
            row.push(cell(status.get("updated")));
            row.push(match i["urls"].as_array() {
                Some(u) if !u.is_empty() => cell(Some(&i["urls"])),
                _ => "-".into(),
            });
        }
        t.row(row);
    }
    t
}

fn lcs(items: &[Value], now: DateTime<Utc>) -> Table {
    let mut t = Table::new(&["NAME", "IMAGE", "INSTANCE-TYPE", "CPUS", "MEMORY", "AGE"]);
    for i in items {
        let spec = &i["spec"];
        let it = spec["instanceType"]
            .as_str()
            .and_then(instance_types::lookup);
        let cpus = spec["resources"]["cpus"]
            .as_f64()
            .or(it.map(|t| t.cpus))
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let memory = spec["resources"]["memoryMiB"]
            .as_u64()
            .or(it.map(|t| t.memory_mib))
            .map(|m| format!("{m}Mi"))
            .unwrap_or_else(|| "-".into());
        t.row(vec![
            name(i),
            cell(spec.get("image")),
            cell(spec.get("instanceType")),
            cpus,
            memory,
            age_of(i.get("firstSeen"), now),
        ]);
    }
    t
}

fn policies(items: &[Value]) -> Table {
    let mut t = Table::new(&["NAME", "GROUP", "TYPE", "METRIC", "RULE"]);
    for i in items {
        let s = &i["spec"];
        let kind = s["type"].as_str().unwrap_or("Step");
        let metric = match (s.get("metric"), s["pushedMetric"].as_str()) {
            (_, Some(p)) => format!("pushed:{p}"),
            (Some(m), None) if !m.is_null() => cell(Some(m)),
            _ => "-".to_string(),
        };
        t.row(vec![
            name(i),
            cell(s.get("autoScalingGroup")),
            kind.to_string(),
            metric,
            policy_rule(kind, s),
        ]);
    }
    t
}

/// One line saying what a policy does, per type.
fn policy_rule(kind: &str, s: &Value) -> String {
    match kind {
        "TargetTracking" => format!(
            "keep at {} (±{}%)",
            cell(s.get("targetValue")),
            s["tolerance"].as_f64().unwrap_or(10.0)
        ),
        "Scheduled" => {
            let actions = s["schedule"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let first = actions
                .first()
                .map(|a| {
                    format!(
                        ": {} {}",
                        cell(a.get("cron")),
                        a["timeZone"].as_str().unwrap_or("UTC")
                    )
                })
                .unwrap_or_default();
            format!("{} action(s){first}", actions.len())
        }
        _ => format!(
            "+{} above {}%, -{} below {}%",
            cell(s.get("scaleOutStep")),
            cell(s.get("upperThreshold")),
            cell(s.get("scaleInStep")),
            cell(s.get("lowerThreshold"))
        ),
    }
}

fn instances(items: &[Value], wide: bool, all: bool, now: DateTime<Utc>) -> Table {
    let mut h = vec![];
    if all {
        h.push("NAMESPACE");
    }
    h.extend([
        "NAME",
        "GROUP",
        "ZONE",
        "STATE",
        "CONTAINER",
        "PORTS",
        "AGE",
    ]);
    if wide {
        h.push("UP-TO-DATE");
        if !all {
            h.push("NAMESPACE");
        }
        h.extend(["CPU", "MEM", "IMAGE-ID"]);
    }
    let mut t = Table::new(&h);
    for i in items {
        let mut row = vec![];
        if all {
            row.push(cell(i.get("namespace")));
        }
        row.extend([
            cell(i.get("name")),
            cell(i.get("group")),
            cell(i.get("zone")),
            cell(i.get("state")),
            cell(i.get("containerId")),
            cell(i.get("ports")),
            started_age(i, now),
        ]);
        if wide {
            row.push(
                if i["upToDate"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
                .into(),
            );
            if !all {
                row.push(cell(i.get("namespace")));
            }
            let (cpu, mem) = i
                .get("metrics")
                .and_then(|m| Some((m.get(0)?.as_str()?, m.get(1)?.as_str()?)))
                .unwrap_or(("-", "-"));
            row.extend([cpu.to_string(), mem.to_string(), image_id(i)]);
        }
        t.row(row);
    }
    t
}

/// The image an instance runs, as `docker images` shows an ID: `sha256:` and 12 hex digits
/// (`-` when the engine has not said yet).
fn image_id(i: &Value) -> String {
    match i.get("imageId").and_then(Value::as_str) {
        Some(id) => {
            let hex = id.strip_prefix("sha256:").unwrap_or(id);
            format!("sha256:{}", &hex[..hex.len().min(12)])
        }
        None => "-".into(),
    }
}

fn types(items: &[Value]) -> Table {
    let mut t = Table::new(&["NAME", "CPUS", "MEMORY(MiB)"]);
    for i in items {
        t.row(vec![
            cell(i.get("name")),
            cell(i.get("cpus")),
            cell(i.get("memoryMiB")),
        ]);
    }
    t
}

fn problems(items: &[Value]) -> Table {
    let mut t = Table::new(&["LOCATION", "FIELD", "MESSAGE"]);
    for i in items {
        let field = i["field"].as_str().filter(|f| !f.is_empty()).unwrap_or("-");
        // `file:line:col`, as compilers print it, so editors and terminals can jump there.
        let location = match (i.get("line").filter(|l| !l.is_null()), i.get("column")) {
            (Some(line), Some(col)) if !col.is_null() => {
                format!(
                    "{}:{}:{}",
                    cell(i.get("file")),
                    cell(Some(line)),
                    cell(Some(col))
                )
            }
            (Some(line), _) => format!("{}:{}", cell(i.get("file")), cell(Some(line))),
            (None, _) => cell(i.get("file")),
        };
        t.row(vec![location, field.to_string(), cell(i.get("message"))]);
    }
    t
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_objects_age_survives_a_controller_restart_through_its_instances() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let item = json!({
            "firstSeen": "2026-01-01T00:59:00Z",
            "status": {"instances": [{"startedAt": "2026-01-01T00:00:00Z"}, {"startedAt": null}]},
        });
        assert_eq!(object_age(&item, now), "1h");
        assert_eq!(
            object_age(&json!({"firstSeen": "2026-01-01T00:59:00Z"}), now),
            "60s"
        );
    }

    use super::*;

    #[test]
    fn a_policy_rule_says_what_each_type_does() {
        let step = json!({"upperThreshold": 80, "lowerThreshold": 30, "scaleOutStep": 2, "scaleInStep": 1});
        assert_eq!(policy_rule("Step", &step), "+2 above 80%, -1 below 30%");
        let target = json!({"targetValue": 50, "tolerance": 5.0});
        assert_eq!(policy_rule("TargetTracking", &target), "keep at 50 (±5%)");
        let sched = json!({"schedule": [{"cron": "0 8 * * MON-FRI", "timeZone": "Europe/Berlin"}, {"cron": "0 18 * * *"}]});
        assert_eq!(
            policy_rule("Scheduled", &sched),
            "2 action(s): 0 8 * * MON-FRI Europe/Berlin"
        );
    }

    fn group() -> Value {
        json!({
            "apiVersion": "microscaler.io/v1",
            "kind": "AutoScalingGroup",
            "metadata": {"name": "web"},
            "spec": {"launchConfiguration": "web", "minSize": 1, "maxSize": 4, "state": "Started",
                     "availabilityZones": ["a", "b"]},
            "status": {"current": 2, "ready": 1, "updated": 2, "desiredCapacity": 1},
            "firstSeen": "2024-01-01T00:00:00Z",
            "source": {"file": "/m/web.yaml", "line": 1},
            "errors": [], "warnings": []
        })
    }

    #[test]
    fn group_rows_follow_the_original_list_asgs_columns() {
        let now = "2024-01-01T00:05:00Z".parse().unwrap();
        let t = groups(&[group()], false, now).render();
        assert_eq!(
            t,
            "NAME   STATE     ZONES   MIN   MAX   DESIRED   CURRENT   READY   AGE\n\
             web    Started   a,b     1     4     1         2         1       5m\n"
        );
    }

    #[test]
    fn a_group_without_zones_shows_the_zones_it_runs_in() {
        let mut g = group();
        g["spec"]["availabilityZones"] = json!([]);
        g["status"]["zones"] = json!(["local"]);
        let now = "2024-01-01T00:05:00Z".parse().unwrap();
        let t = groups(&[g], false, now).render();
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .starts_with("web    Started   local   1 "),
            "{t}"
        );
    }

    #[test]
    fn problems_are_located_as_file_line_column() {
        let items = problem_items(&json!({
            "fileErrors": [{"file": "/m/web.yaml", "line": 9, "column": 3,
                            "field": "spec", "message": "unknown field `x`"}],
            "conflicts": [{"key": "AutoScalingGroup/default/web", "winner": "/m/a.yaml",
                           "ignored": "/m/b.yaml"}]
        }));
        let t = problems(&items).render();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("LOCATION "), "{t}");
        assert!(lines[1].starts_with("/m/web.yaml:9:3   spec "), "{t}");
        assert!(lines[2].starts_with("/m/b.yaml         -    "), "{t}");
    }

    #[test]
    fn yaml_output_keeps_only_the_manifest_fields() {
        let y = yaml(Resource::Object(Kind::AutoScalingGroup), &[group()]);
        assert!(y.starts_with("apiVersion: microscaler.io/v1\n"), "{y}");
        assert!(!y.contains("firstSeen") && !y.contains("source"), "{y}");
    }

    #[test]
    fn all_namespaces_puts_the_namespace_first() {
        let now = "2024-01-01T00:05:00Z".parse().unwrap();
        let t = with_namespace(groups(&[group()], false, now), &[group()]).render();
        assert!(t.starts_with("NAMESPACE   NAME"), "{t}");
        assert!(
            t.lines().nth(1).unwrap().starts_with("default     web"),
            "{t}"
        );
    }

    #[test]
    fn unknown_resources_list_the_known_ones() {
        let Err(Failure::Message(m)) = resource("pods") else {
            panic!()
        };
        assert!(m.contains("asgs, lcs, policies"), "{m}");
    }
}
