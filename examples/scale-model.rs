//! Scale model: the real reconciler (observers, queue, plan, executor, status) against in-memory
//! engines with realistic latencies, for 100 / 1,000 / 10,000 groups across 10 zones.
//!
//! Each size runs in a fresh child process (this binary with `--one GROUPS`) so that its peak
//! memory is its own. Per size it reports: time and CPU time to converge from zero, time and CPU
//! time of a full resync with nothing to do (one list per zone, one reconcile per group), engine
//! calls per resync, resident and peak memory. CPU time is the whole process's (the in-memory
//! engines run inside it too, so it is an upper bound for the controller alone).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use microscaler::config::{Config, ZoneConfig};
use microscaler::controller::Controller;
use microscaler::engine::memory::{CallCounts, Latencies, MemoryEngine};
use microscaler::engine::observe::{fixed_connector, managed_filter};
use microscaler::manifest::{DurationSpec, ObjectKey};
use microscaler::watch::store::{Desired, Entry};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Command line of `scale-model`.
#[derive(Parser, Debug, Clone)]
#[command(
    about = "The controller alone against in-memory engines: resync and convergence at scale"
)]
struct Args {
    /// Group counts to model (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    groups: Vec<usize>,
    /// Instances per group (spread over every zone).
    #[arg(long, default_value_t = 10)]
    instances: usize,
    /// Zones (one in-memory engine each).
    #[arg(long, default_value_t = 10)]
    zones: usize,
    /// Latency of a container create, milliseconds.
    #[arg(long, default_value_t = 10.0)]
    create_ms: f64,
    /// Latency of a container start, milliseconds.
    #[arg(long, default_value_t = 180.0)]
    start_ms: f64,
    /// Latency of a removal, milliseconds.
    #[arg(long, default_value_t = 50.0)]
    remove_ms: f64,
    /// Fixed latency of a list call, milliseconds.
    #[arg(long, default_value_t = 5.0)]
    list_base_ms: f64,
    /// Latency of a list call per container on the engine, microseconds (Docker's list cost
    /// grows with every container it holds).
    #[arg(long, default_value_t = 50.0)]
    list_per_container_us: f64,
    /// Groups reconciled at once (the controller uses 64).
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Creations in flight per group (the controller's default).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Full resyncs measured after convergence (the median is reported).
    #[arg(long, default_value_t = 3)]
    resyncs: usize,
    /// Convergence from zero is measured up to this many groups (beyond it the run would take
    /// hours while the per-group cost grows with the zone's container count).
    #[arg(long, default_value_t = 1000)]
    converge_max: usize,
    /// Above 1,000 groups, a resync reconciles this evenly spaced sample of groups and scales
    /// its time and CPU by groups / sample (the lists are always measured in full).
    #[arg(long, default_value_t = 200)]
    sample: usize,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Internal: model one size in this process and print one JSON line.
    #[arg(long, hide = true)]
    one: Option<usize>,
}

/// The figures of one size.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Figures {
    groups: usize,
    containers: usize,
    zones: usize,
    /// None: not measured (above `--converge-max`); the containers were pre-created instead.
    converge_seconds: Option<f64>,
    converge_cpu_seconds: Option<f64>,
    /// Groups reconciled in the measured resync (fewer than `groups`: extrapolated).
    resync_sampled_groups: usize,
    resync_seconds: f64,
    resync_cpu_ms: f64,
    /// Part of `resync_cpu_ms` spent in the lists: the in-memory engines building them and the
    /// zones applying them.
    resync_list_cpu_ms: f64,
    resync_engine_calls: u64,
    resync_list_calls: u64,
    rss_mib: f64,
    peak_rss_mib: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(groups) = args.one {
        let rt = tokio::runtime::Runtime::new()?;
        let figures = rt.block_on(model(&args, groups))?;
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let mut all: Vec<Figures> = Vec::new();
    println!(
        "scale model: {} instances per group over {} zones; latencies create {} ms, start {} ms, remove {} ms, \
         list {} ms + {} µs per container; {} groups at once, {} creations in flight per group",
        args.instances, args.zones, args.create_ms, args.start_ms, args.remove_ms, args.list_base_ms,
        args.list_per_container_us, args.workers, args.concurrency
    );
    for &g in &args.groups {
        eprintln!("modelling {g} groups...");
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(std::env::args().skip(1))
            .arg("--one")
            .arg(g.to_string());
        let out = cmd.output().context("running the model child")?;
        if !out.status.success() {
            bail!(
                "model of {g} groups failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        all.push(serde_json::from_str(line.trim()).context("child output")?);
    }
    print_table(&all);
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "params": format!("{args:?}"), "sizes": all });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
    }
    Ok(())
}

fn print_table(all: &[Figures]) {
    let opt = |x: Option<f64>| x.map_or("not measured".to_string(), |v| format!("{v:.2} s"));
    println!(
        "\n| groups | containers | converge from zero | its CPU | full resync, nothing to do | its CPU (of which lists) | engine calls per resync (lists) | RSS | peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in all {
        let mark = if f.resync_sampled_groups < f.groups {
            format!(" (extrapolated from {} groups)", f.resync_sampled_groups)
        } else {
            String::new()
        };
        println!(
            "| {} | {} | {} | {} | {:.1} ms{mark} | {:.1} ms ({:.1} ms){mark} | {} ({}) | {:.1} MiB | {:.1} MiB |",
            f.groups,
            f.containers,
            opt(f.converge_seconds),
            opt(f.converge_cpu_seconds),
            f.resync_seconds * 1000.0,
            f.resync_cpu_ms,
            f.resync_list_cpu_ms,
            f.resync_engine_calls,
            f.resync_list_calls,
            f.rss_mib,
            f.peak_rss_mib
        );
    }
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => format!("×{:.1}", b / a),
        _ => "—".to_string(),
    };
    if all.len() > 1 {
        println!("\ngrowth between sizes (groups grow ×10 per step unless stated):");
        for w in all.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            println!(
                "  {} → {} groups (×{:.0}): converge {}, converge CPU {}, resync ×{:.1}, resync CPU ×{:.1}, engine calls ×{:.1}, peak RSS ×{:.1}",
                a.groups,
                b.groups,
                b.groups as f64 / a.groups as f64,
                ratio(a.converge_seconds, b.converge_seconds),
                ratio(a.converge_cpu_seconds, b.converge_cpu_seconds),
                b.resync_seconds / a.resync_seconds.max(1e-9),
                b.resync_cpu_ms / a.resync_cpu_ms.max(1e-9),
                b.resync_engine_calls as f64 / a.resync_engine_calls.max(1) as f64,
                b.peak_rss_mib / a.peak_rss_mib
            );
        }
    }
}

/// CPU time of this process (every thread), in seconds: the sum of the per-thread run times in
/// nanoseconds from `/proc/self/task/*/schedstat`, falling back to `utime + stime` ticks.
fn cpu_seconds() -> f64 {
    let mut total_ns: u64 = 0;
    let mut ok = false;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                if let Some(ns) = s
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse::<u64>().ok())
                {
                    total_ns += ns;
                    ok = true;
                }
            }
        }
    }
    if ok {
        return total_ns as f64 / 1e9;
    }
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|x| x.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    ticks as f64 / 100.0
}

fn status_mib(key: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

fn total_calls(c: &CallCounts) -> u64 {
    c.ping + c.list + c.inspect + c.create + c.start + c.remove + c.events + c.logs + c.stats
}

/// The desired state: `groups` groups of `instances`, each over every zone.
fn desired(groups: usize, instances: usize, zones: &[String]) -> anyhow::Result<Desired> {
    let mut d = Desired {
        loaded: true,
        ..Default::default()
    };
    let zone_list = zones.join(", ");
    for g in 0..groups {
        let yaml = format!(
            "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata: {{name: g{g}}}\nspec:\n  image: img\n  stopGracePeriod: 0s\n---\n\
             apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata: {{name: g{g}}}\nspec:\n  launchConfiguration: g{g}\n  minSize: 0\n  maxSize: 1000\n  desiredCapacity: {instances}\n  availabilityZones: [{zone_list}]\n"
        );
        let parsed = microscaler::manifest::parse_file(Path::new("scale-model.yaml"), &yaml);
        if !parsed.errors.is_empty() {
            bail!("model manifest does not parse: {:?}", parsed.errors);
        }
        for p in parsed.objects {
            // Never written: the status sync finds no such file and skips it.
            let file = "/nonexistent/scale-model.yaml".into();
            d.objects
                .insert(p.object.key(), Entry::new(p, file, chrono::Utc::now()));
        }
    }
    Ok(d)
}

/// Creates every group's containers directly in the engines, labelled as the reconciler would
/// (same spec hash, zones round-robin), so the controller adopts them with nothing to do.
fn precreate(d: &Desired, engines: &[MemoryEngine], zones: &[String], instances: usize) {
    use microscaler::engine::labels;
    for (key, group, _) in d.groups() {
        let lc = d
            .launch_configuration(&key.namespace, &group.spec.launch_configuration)
            .expect("the model defines every launch configuration");
        // Unlimited resources in the model's configuration: the hash is the plain one.
        let hash = microscaler::reconcile::container_hash(lc, group);
        for i in 0..instances {
            let z = i % zones.len();
            engines[z].add_foreign(&[
                (labels::MANAGED_BY, labels::MANAGER),
                (labels::NAMESPACE, &key.namespace),
                (labels::GROUP, &key.name),
                (
                    labels::LAUNCH_CONFIGURATION,
                    &group.spec.launch_configuration,
                ),
                (labels::SPEC_HASH, &hash),
                (labels::ZONE, &zones[z]),
            ]);
        }
    }
}

async fn model(args: &Args, groups: usize) -> anyhow::Result<Figures> {
    let ms = |x: f64| Duration::from_secs_f64(x / 1000.0);
    let zone_names: Vec<String> = (0..args.zones).map(|z| format!("z{z}")).collect();
    let engines: Vec<MemoryEngine> = (0..args.zones)
        .map(|i| {
            let e = MemoryEngine::with_id_offset(i as u64 * 1_000_000_000);
            e.set_latencies(Latencies {
                create: ms(args.create_ms),
                start: ms(args.start_ms),
                remove: ms(args.remove_ms),
                list_base: ms(args.list_base_ms),
                list_per_container: Duration::from_secs_f64(args.list_per_container_us / 1e6),
            });
            e
        })
        .collect();
    let snapshot = desired(groups, args.instances, &zone_names)?;
    let keys: Vec<ObjectKey> = snapshot.groups().map(|(k, _, _)| k.clone()).collect();
    let converge = groups <= args.converge_max;
    if !converge {
        precreate(&snapshot, &engines, &zone_names, args.instances);
    }

    // The controller's own wiring, minus the directory watcher, the HTTP endpoint and the
    // autoscaler (its metrics would sample every container).
    let (_tx, rx) = watch::channel(Arc::new(snapshot));
    let config = Config {
        zones: zone_names
            .iter()
            .map(|z| ZoneConfig {
                name: z.clone(),
                docker_host: None,
                tls: None,
            })
            .collect(),
        concurrency: args.concurrency,
        // The periodic resync is driven by hand below, so the observers' own is out of the way.
        resync_period: DurationSpec::from_secs(24 * 3600),
        // The model measures the controller, not the quotas: no namespace limits.
        namespaces: serde_yaml_ng::from_str(
            "{'*': {allowUnlimitedResources: true, maxContainers: 4294967295, maxObjects: 4294967295}}",
        )?,
        ..Config::default()
    };
    let shutdown = CancellationToken::new();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let connectors = zone_names
        .iter()
        .zip(&engines)
        .map(|(name, e)| (name.clone(), fixed_connector(Arc::new(e.clone()))))
        .collect();
    let mut controller = Controller::builder(config)
        .desired(rx)
        .zones(connectors)
        .workers(args.workers)
        .without_autoscaler();
    if !converge {
        // The runner is not started: its first pass over every group is what is measured.
        controller = controller.without_reconciler();
    }
    let controller = controller.spawn(shutdown.clone());
    let (zones, rec) = (controller.zones.clone(), controller.reconciler.clone());
    let want = (groups * args.instances) as u64;
    let (converge_seconds, converge_cpu_seconds) = if converge {
        // Converge from zero: every container started.
        let deadline = Instant::now() + Duration::from_secs(3600);
        loop {
            let started: u64 = engines.iter().map(|e| e.calls().start).sum();
            if started >= want {
                break;
            }
            if Instant::now() > deadline {
                bail!("did not converge: {started} of {want} started");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let figures = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
        // Let trailing requeues and status writes settle before measuring an idle resync.
        tokio::time::sleep(Duration::from_secs(2)).await;
        (Some(figures.0), Some(figures.1))
    } else {
        // Pre-created containers: wait for every zone's first list (adoption). The runner is
        // not started: its first pass over every group is exactly what is measured below.
        while zones
            .iter()
            .any(|z| z.reach() != microscaler::engine::observe::Reach::Reachable)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (None, None)
    };
    let running: usize = engines.iter().map(|e| e.containers().len()).sum();
    if running as u64 != want {
        bail!("{running} containers, wanted {want}");
    }

    // The groups a resync reconciles: all, or an evenly spaced sample above 1,000 groups.
    let sampled: Vec<ObjectKey> = if groups > 1000 && args.sample < groups {
        let step = groups as f64 / args.sample as f64;
        (0..args.sample)
            .map(|i| keys[(i as f64 * step) as usize].clone())
            .collect()
    } else {
        keys.clone()
    };
    let factor = groups as f64 / sampled.len() as f64;
    let mut samples: Vec<(f64, f64, u64, u64, f64)> = Vec::new();
    for _ in 0..args.resyncs.max(1) {
        for e in &engines {
            e.reset_calls();
        }
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        // What each zone's observer does on its resync tick: one list, then every group is due.
        futures::future::join_all(zones.iter().map(|z| async move {
            let engine = z.engine().expect("connected");
            let started = tokio::time::Instant::now();
            let list = engine.list(&managed_filter()).await.expect("list");
            z.apply_list(started, list);
        }))
        .await;
        let (list_secs, list_cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
        let (t1, cpu1) = (Instant::now(), cpu_seconds());
        futures::stream::iter(sampled.iter())
            .for_each_concurrent(args.workers, |k| {
                let rec = rec.clone();
                async move {
                    let _ = rec.reconcile(k).await;
                }
            })
            .await;
        let secs = list_secs + t1.elapsed().as_secs_f64() * factor;
        let cpu = list_cpu + (cpu_seconds() - cpu1) * factor;
        let calls: Vec<CallCounts> = engines.iter().map(|e| e.calls()).collect();
        let total: u64 = calls.iter().map(total_calls).sum();
        let lists: u64 = calls.iter().map(|c| c.list).sum();
        samples.push((secs, cpu, total, lists, list_cpu));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    samples.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (resync_seconds, resync_cpu, calls, lists, list_cpu) = samples[samples.len() / 2];
    let after: usize = engines.iter().map(|e| e.containers().len()).sum();
    if after != running {
        bail!("a resync with nothing to do changed the containers: {running} → {after}");
    }
    let figures = Figures {
        groups,
        containers: running,
        zones: args.zones,
        converge_seconds,
        converge_cpu_seconds,
        resync_sampled_groups: sampled.len(),
        resync_seconds,
        resync_cpu_ms: resync_cpu * 1000.0,
        resync_list_cpu_ms: list_cpu * 1000.0,
        resync_engine_calls: calls,
        resync_list_calls: lists,
        rss_mib: status_mib("VmRSS:"),
        peak_rss_mib: status_mib("VmHWM:"),
    };
    shutdown.cancel();
    Ok(figures)
}
