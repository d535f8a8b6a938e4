//! The torture test: `kill -9` of the controller at random points while groups scale out, scale
//! in, roll out and are deleted (and written back), restarting it each time. In the end every
//! group has exactly its desired count of running, up-to-date containers, nothing is left in
//! `created`, no deleted group keeps a container, and no group that has a manifest lost one.
//!
//! `cargo test` runs `MS_TORTURE_KILLS` kills (default 8, about a minute); `scripts/torture`
//! runs the full 50. `MS_TORTURE_SEED` replays a run (every run prints its seed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cli::{group_doc, lc_doc, started};
use crate::common::{containers, wait_until, Controller, ControllerOptions, TestNs};

/// Container label holding the group name.
const GROUP_LABEL: &str = "io.microscaler.group";

/// One group as the test wants it.
#[derive(Debug, Clone)]
struct Want {
    desired: u32,
    /// Launch configuration version (its `VERSION` env var): a change is a rollout.
    version: u32,
    /// Whether its manifest is in the directory.
    live: bool,
}

fn manifest(ns: &TestNs, name: &str, w: &Want) -> String {
    let lc = lc_doc(ns, name, r#"["sleep", "3600"]"#)
        // A grace of 1 s: removals take a moment, so kills land in the middle of some.
        .replace("stopGracePeriod: 0s", "stopGracePeriod: 1s")
        + &format!("  env:\n    VERSION: \"{}\"\n", w.version);
    format!("{lc}---\n{}", group_doc(ns, name, name, 0, 8, w.desired))
}

fn write(ctl: &Controller, ns: &TestNs, name: &str, w: &Want) {
    let path = ctl.dir.join(format!("{name}.yaml"));
    if w.live {
        std::fs::write(&path, manifest(ns, name, w)).expect("write manifest");
    } else {
        let _ = std::fs::remove_file(&path);
    }
}

/// What is wrong with the containers now, compared with `wants` (empty when all is well).
fn mismatches(ns: &TestNs, wants: &BTreeMap<String, Want>) -> Vec<String> {
    let all = containers(ns);
    let mut out = Vec::new();
    for c in &all {
        let group = c.labels.get(GROUP_LABEL).cloned().unwrap_or_default();
        match wants.get(&group) {
            None => out.push(format!("{} belongs to no group of the test", c.name)),
            Some(w) if !w.live => out.push(format!("{} of deleted group {group}", c.name)),
            Some(w) => {
                if c.state != "running" {
                    out.push(format!("{} of {group} is {}", c.name, c.state));
                }
                if !c.env.contains(&format!("VERSION={}", w.version)) {
                    out.push(format!("{} of {group} runs an old version", c.name));
                }
            }
        }
    }
    for (name, w) in wants.iter().filter(|(_, w)| w.live) {
        let n = all
            .iter()
            .filter(|c| c.labels.get(GROUP_LABEL) == Some(name))
            .count() as u32;
        if n != w.desired {
            out.push(format!("{name} has {n} containers, wants {}", w.desired));
        }
    }
    out
}

#[test]
fn kill_9_at_random_points_loses_nothing_and_leaves_nothing_behind() {
    let kills: usize = std::env::var("MS_TORTURE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("MS_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("torture: {kills} kills, MS_TORTURE_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let ns = TestNs::new();
    let opts = ControllerOptions {
        rust_log: "info".into(),
        ..Default::default()
    };
    let mut ctl = started(opts.clone());
    let mut wants: BTreeMap<String, Want> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                Want {
                    desired: 2,
                    version: 1,
                    live: true,
                },
            )
        })
        .collect();
    for (name, w) in &wants {
        write(&ctl, &ns, name, w);
    }

    let started_at = Instant::now();
    let mut log = Vec::new();
    for kill in 0..kills {
        let names: Vec<String> = wants.keys().cloned().collect();
        let name = names[rng.random_range(0..names.len())].clone();
        let live = wants.values().filter(|w| w.live).count();
        let w = wants.get_mut(&name).unwrap();
        let what = if !w.live {
            w.live = true;
            "written back"
        } else {
            match rng.random_range(0..4) {
                0 => {
                    w.desired = (w.desired + rng.random_range(1..=4)).min(8);
                    "scale-out"
                }
                1 => {
                    w.desired = w.desired.saturating_sub(rng.random_range(1..=3)).max(1);
                    "scale-in"
                }
                2 => {
                    w.version += 1;
                    "rollout"
                }
                // Keep at least two groups, so a deletion is never "most groups" at once.
                _ if live > 2 => {
                    w.live = false;
                    "deletion"
                }
                _ => {
                    w.version += 1;
                    "rollout"
                }
            }
        };
        write(&ctl, &ns, &name, w);
        let after = Duration::from_millis(rng.random_range(0..1500));
        log.push(format!("{kill}: {what} of {name}, kill -9 after {after:?}"));
        std::thread::sleep(after);
        ctl.kill();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        ctl.restart(&opts).wait_ready();
    }

    // A container killed between create and start counts as stuck after 10 s: allow for it.
    let mut last = Vec::new();
    let converged = wait_until(Duration::from_secs(90), || {
        last = mismatches(&ns, &wants);
        last.is_empty()
    });
    assert!(
        converged,
        "after {kills} kills (MS_TORTURE_SEED={seed}): {last:#?}\nsteps:\n{}",
        log.join("\n")
    );
    // And it stays so: nothing was merely passing through the right state.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(mismatches(&ns, &wants), Vec::<String>::new(), "seed {seed}");
    eprintln!(
        "torture: {kills} kills converged in {:?} (seed {seed})",
        started_at.elapsed()
    );
    // A clean stop at the end releases the lease.
    assert!(ctl.stop().is_some_and(|s| s.success()));
}
