//! The snapshot rules, pure: the next desired state from the previous one and the files just
//! loaded (last valid version kept, deletions judged), and when two snapshots mean the same.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::prune;
use super::store::{Conflict, Desired, Entry};
use crate::manifest::{self, Kind, ManifestError, Object, ObjectKey, ParsedFile};

/// Builds the next snapshot from the previous one and the files just loaded. Pure.
///
/// # Rules
/// - Valid files contribute their objects. One identity lives in one file: when two files (or
///   two documents) define it, the first by path wins and the other is listed in `conflicts`.
/// - A file with errors contributes its errors to `file_errors` and keeps the objects the
///   previous snapshot had from it: the last valid version keeps running. A directory that
///   cannot be read (keyed by its own path) does the same for the files below it.
/// - A file that is gone takes its objects with it, unless [`prune::judge`] holds the deletion
///   of a group (directory emptied, a namespace or most groups gone at once, files with
///   errors): then the group, its launch configuration and its policies stay as last loaded,
///   and `held` says why until the manifest is back or the deletion is confirmed
///   (`allow_empty`, or `confirmed` by name).
/// - `first_seen` is carried over per identity (`now` for new ones); `warnings` are the
///   parser's plus the missing references ([`manifest::missing_references`]).
pub fn build_snapshot(
    prev: &Desired,
    files: &BTreeMap<PathBuf, ParsedFile>,
    allow_empty: bool,
    now: DateTime<Utc>,
) -> Desired {
    build_snapshot_confirmed(prev, files, allow_empty, &|_| false, now)
}

/// [`build_snapshot`], with deletions confirmed by name (`ms delete`) never held.
pub fn build_snapshot_confirmed(
    prev: &Desired,
    files: &BTreeMap<PathBuf, ParsedFile>,
    allow_empty: bool,
    confirmed: &dyn Fn(&ObjectKey) -> bool,
    now: DateTime<Utc>,
) -> Desired {
    let mut objects: BTreeMap<ObjectKey, Entry> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut file_errors = BTreeMap::new();
    // Missing-reference warnings of the previous snapshot, to strip them from kept entries
    // (they are recomputed below) while keeping those entries' parser warnings.
    let prev_refs = reference_warnings(&prev.objects);
    let kept = |k: &ObjectKey, e: &Entry| {
        let mut e = e.clone();
        if let Some(w) = prev_refs.get(k) {
            e.warnings.retain(|x| x != w);
        }
        (k.clone(), e)
    };

    for (path, parsed) in files {
        let candidates: Vec<(ObjectKey, Entry)> = if parsed.errors.is_empty() {
            parsed
                .objects
                .iter()
                .map(|po| {
                    let key = po.object.key();
                    let first_seen = prev.objects.get(&key).map_or(now, |e| e.first_seen);
                    (key, Entry::new(po.clone(), path.clone(), first_seen))
                })
                .collect()
        } else {
            file_errors.insert(path.clone(), parsed.errors.clone());
            // The file itself, or (an unreadable directory) the files below it not listed now.
            prev.objects
                .iter()
                .filter(|(_, e)| {
                    &e.file == path || (e.file.starts_with(path) && !files.contains_key(&e.file))
                })
                .map(|(k, e)| kept(k, e))
                .collect()
        };
        for (key, entry) in candidates {
            match objects.get(&key) {
                Some(winner) => conflicts.push(Conflict {
                    key: key.to_string(),
                    winner: winner.file.clone(),
                    ignored: entry.file.clone(),
                }),
                None => {
                    objects.insert(key, entry);
                }
            }
        }
    }

    // Groups that would go: the prune rules decide which really may.
    let group_keys = |o: &BTreeMap<ObjectKey, Entry>| -> BTreeSet<ObjectKey> {
        o.keys()
            .filter(|k| k.kind == Kind::AutoScalingGroup)
            .cloned()
            .collect()
    };
    let remaining = group_keys(&objects);
    let deleting: BTreeSet<ObjectKey> = group_keys(&prev.objects)
        .difference(&remaining)
        .cloned()
        .collect();
    let error_paths: Vec<PathBuf> = file_errors.keys().cloned().collect();
    let holds = prune::judge(&deleting, &remaining, &error_paths, allow_empty, confirmed);
    for key in holds.keys() {
        for k in with_dependencies(prev, key) {
            if !objects.contains_key(&k) {
                let (k, e) = kept(&k, &prev.objects[&k]);
                objects.insert(k, e);
            }
        }
    }
    let held = holds
        .iter()
        .map(|(k, reason)| (k.clone(), reason.message(k)))
        .collect();

    for (key, warning) in reference_warnings(&objects) {
        if let Some(e) = objects.get_mut(&key) {
            e.warnings.push(warning);
        }
    }

    Desired {
        objects,
        file_errors,
        conflicts,
        held,
        loaded: true,
    }
}

/// A group of `prev` and what it needs to keep running as it did: its launch configuration and
/// the policies that set its capacity (those present in `prev`).
fn with_dependencies(prev: &Desired, group: &ObjectKey) -> Vec<ObjectKey> {
    let Some(g) = prev.group(group) else {
        return Vec::new();
    };
    let mut out = vec![group.clone()];
    let lc = ObjectKey::new(
        Kind::LaunchConfiguration,
        group.namespace.clone(),
        g.spec.launch_configuration.clone(),
    );
    if prev.objects.contains_key(&lc) {
        out.push(lc);
    }
    out.extend(
        prev.policies()
            .filter(|(k, p, _)| {
                k.namespace == group.namespace && p.spec.auto_scaling_group == group.name
            })
            .map(|(k, _, _)| k.clone()),
    );
    out
}

/// [`manifest::missing_references`] as warnings located at each object's document.
pub fn reference_warnings(
    objects: &BTreeMap<ObjectKey, Entry>,
) -> BTreeMap<ObjectKey, ManifestError> {
    let plain: BTreeMap<ObjectKey, Object> = objects
        .iter()
        .map(|(k, e)| (k.clone(), e.object.clone()))
        .collect();
    manifest::missing_references(&plain)
        .into_iter()
        .filter_map(|(key, message)| {
            let e = objects.get(&key)?;
            let field = match key.kind {
                Kind::AutoScalingGroup => "spec.launchConfiguration",
                Kind::ScalingPolicy => "spec.autoScalingGroup",
                Kind::LaunchConfiguration | Kind::LoadBalancer => "",
            };
            let warning = ManifestError {
                file: e.file.clone(),
                line: e.line,
                column: 1,
                field: field.to_string(),
                message,
            };
            Some((key, warning))
        })
        .collect()
}

/// True when `a` and `b` would make the controller do the same thing: same identities,
/// generations, sources, warnings, errors, conflicts and refusal. Line numbers of objects are
/// ignored, so the controller's own status writes (which shift the documents below them) never
/// cause a publish.
pub fn same_meaning(a: &Desired, b: &Desired) -> bool {
    let warnings = |e: &Entry| -> Vec<(String, String)> {
        e.warnings
            .iter()
            .map(|w| (w.field.clone(), w.message.clone()))
            .collect()
    };
    a.loaded == b.loaded
        && a.held == b.held
        && a.conflicts == b.conflicts
        && a.file_errors == b.file_errors
        && a.objects.len() == b.objects.len()
        && a.objects
            .iter()
            .zip(&b.objects)
            .all(|((ka, ea), (kb, eb))| {
                ka == kb
                    && ea.generation == eb.generation
                    && ea.file == eb.file
                    && ea.doc_index == eb.doc_index
                    && warnings(ea) == warnings(eb)
            })
}

/// Logs what changed between two snapshots, once: new file errors, fixed files, new conflicts,
/// and the start and end of an empty-reload refusal.
pub(super) fn log_changes(dir: &Path, prev: &Desired, next: &Desired) {
    for (path, errors) in &next.file_errors {
        let old = prev.file_errors.get(path);
        for e in errors {
            if !old.is_some_and(|o| o.contains(e)) {
                warn!("{e}");
            }
        }
    }
    for path in prev.file_errors.keys() {
        if !next.file_errors.contains_key(path) {
            info!(file = %path.display(), "manifest is valid again");
        }
    }
    for c in &next.conflicts {
        if !prev.conflicts.contains(c) {
            warn!(
                "{} is defined in {} and in {}: using the first, ignoring the second",
                c.key,
                c.winner.display(),
                c.ignored.display()
            );
        }
    }
    for (key, msg) in &next.held {
        if prev.held.get(key) != Some(msg) {
            error!(dir = %dir.display(), "{msg}");
        }
    }
    for key in prev.held.keys() {
        if !next.held.contains_key(key) {
            let outcome = if next.objects.contains_key(key) {
                "its manifest is back"
            } else {
                "confirmed, it is deleted"
            };
            info!(group = %key, "deletion no longer held: {outcome}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::manifest::{
        AutoScalingGroupSpec, LaunchConfigurationSpec, Manifest, Metadata, ParsedObject,
        API_VERSION,
    };
    use crate::watch::fixtures::{desired_of, gkey};
    use crate::watch::load::file_error;

    fn meta(name: &str) -> Metadata {
        Metadata {
            name: name.into(),
            namespace: "default".into(),
            labels: Default::default(),
        }
    }

    fn group(name: &str, lc: &str, desired: u32) -> Object {
        Object::AutoScalingGroup(Manifest {
            api_version: API_VERSION.into(),
            kind: Kind::AutoScalingGroup,
            metadata: meta(name),
            spec: AutoScalingGroupSpec {
                launch_configuration: lc.into(),
                min_size: 0,
                max_size: 10,
                desired_capacity: Some(desired),
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

    fn lc(name: &str) -> Object {
        Object::LaunchConfiguration(Manifest {
            api_version: API_VERSION.into(),
            kind: Kind::LaunchConfiguration,
            metadata: meta(name),
            spec: LaunchConfigurationSpec {
                image: "nginx".into(),
                instance_type: None,
                resources: None,
                command: None,
                entrypoint: None,
                env: Default::default(),
                ports: vec![],
                labels: Default::default(),
                user_data: None,
                network: None,
                stop_grace_period: None,
                image_pull_policy: None,
                health_check: None,
                lifecycle: None,
            },
            status: None,
        })
    }

    fn ok(objects: Vec<Object>) -> ParsedFile {
        ParsedFile {
            objects: objects
                .into_iter()
                .enumerate()
                .map(|(i, object)| ParsedObject {
                    object,
                    doc_index: i,
                    line: 1 + 10 * i,
                    warnings: vec![],
                })
                .collect(),
            errors: vec![],
        }
    }

    fn broken(path: &str) -> ParsedFile {
        file_error(Path::new(path), "spec.minSize: expected a number".into())
    }

    fn files(list: Vec<(&str, ParsedFile)>) -> BTreeMap<PathBuf, ParsedFile> {
        list.into_iter()
            .map(|(p, f)| (PathBuf::from(p), f))
            .collect()
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn valid_files_contribute_their_objects() {
        let f = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 2)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 1)])),
        ]);
        let d = build_snapshot(&Desired::default(), &f, false, t(0));
        assert!(d.loaded);
        assert_eq!(d.objects.len(), 3);
        let web = &d.objects[&gkey("web")];
        assert_eq!(web.file, PathBuf::from("/m/a.yaml"));
        assert_eq!(web.doc_index, 1);
        assert_eq!(web.line, 11);
        assert_eq!(web.generation, group("web", "web", 2).spec_hash());
        assert_eq!(web.first_seen, t(0));
        assert!(web.warnings.is_empty());
        assert!(d.file_errors.is_empty() && d.conflicts.is_empty() && d.held.is_empty());
    }

    #[test]
    fn an_identity_in_two_files_is_a_conflict_and_the_first_path_wins() {
        let f = files(vec![
            ("/m/b.yaml", ok(vec![lc("web"), group("web", "web", 5)])),
            ("/m/a.yaml", ok(vec![group("web", "web", 2)])),
        ]);
        let d = build_snapshot(&Desired::default(), &f, false, t(0));
        assert_eq!(d.objects[&gkey("web")].file, PathBuf::from("/m/a.yaml"));
        assert_eq!(
            d.conflicts,
            vec![Conflict {
                key: gkey("web").to_string(),
                winner: "/m/a.yaml".into(),
                ignored: "/m/b.yaml".into(),
            }]
        );
    }

    #[test]
    fn a_file_with_errors_keeps_its_last_valid_objects() {
        let v1 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 3)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 1)])),
        ]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let v2 = files(vec![
            ("/m/a.yaml", broken("/m/a.yaml")),
            ("/m/b.yaml", ok(vec![group("api", "web", 2)])),
        ]);
        let d2 = build_snapshot(&d1, &v2, false, t(5));
        assert_eq!(d2.objects.len(), 3);
        assert_eq!(
            d2.objects[&gkey("web")].generation,
            d1.objects[&gkey("web")].generation
        );
        assert_eq!(d2.file_errors[Path::new("/m/a.yaml")].len(), 1);
        assert_eq!(d2.errors_for(&gkey("web")).len(), 1);
        assert!(d2.errors_for(&gkey("api")).is_empty());
        // Fixing the file clears the error and takes the new version.
        let v3 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 4)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 2)])),
        ]);
        let d3 = build_snapshot(&d2, &v3, false, t(9));
        assert!(d3.file_errors.is_empty());
        assert_eq!(
            d3.objects[&gkey("web")].generation,
            group("web", "web", 4).spec_hash()
        );
    }

    #[test]
    fn a_new_file_with_errors_contributes_only_its_errors() {
        let d = build_snapshot(
            &Desired::default(),
            &files(vec![("/m/a.yaml", broken("/m/a.yaml"))]),
            false,
            t(0),
        );
        assert!(d.objects.is_empty());
        assert_eq!(d.file_errors.len(), 1);
        assert!(d.held.is_empty());
    }

    #[test]
    fn a_deleted_file_deletes_its_objects() {
        let v1 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 3)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 1)])),
        ]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let v2 = files(vec![(
            "/m/a.yaml",
            ok(vec![lc("web"), group("web", "web", 3)]),
        )]);
        let d2 = build_snapshot(&d1, &v2, false, t(1));
        assert!(!d2.objects.contains_key(&gkey("api")));
        assert!(d2.held.is_empty());
    }

    #[test]
    fn deleting_every_group_at_once_is_refused_until_a_group_comes_back() {
        let v1 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 3)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 1)])),
        ]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let refused = build_snapshot(&d1, &BTreeMap::new(), false, t(1));
        assert_eq!(refused.objects.len(), 3);
        assert_eq!(refused.held.len(), 2);
        let msg = &refused.held[&gkey("web")];
        assert!(msg.contains("defines no autoscaling group"), "{msg}");
        assert!(msg.contains("ms delete asg web -n default"), "{msg}");
        assert!(msg.contains("--allow-empty"), "{msg}");
        // Only the launch configuration left: still no group, still refused.
        let only_lc = files(vec![("/m/a.yaml", ok(vec![lc("web")]))]);
        let still = build_snapshot(&refused, &only_lc, false, t(2));
        assert_eq!(still.held.len(), 2);
        assert_eq!(still.groups().count(), 2);
        // A state with a group again lets the other go (one of two in its namespace).
        let back = files(vec![(
            "/m/a.yaml",
            ok(vec![lc("web"), group("web", "web", 1)]),
        )]);
        let cleared = build_snapshot(&still, &back, false, t(3));
        assert!(cleared.held.is_empty());
        assert_eq!(cleared.groups().count(), 1);
        assert_eq!(cleared.objects[&gkey("web")].first_seen, t(0));
    }

    fn nkey(ns: &str, kind: Kind, name: &str) -> ObjectKey {
        ObjectKey::new(kind, ns, name)
    }

    fn in_namespace(ns: &str, mut o: Object) -> Object {
        match &mut o {
            Object::AutoScalingGroup(m) => m.metadata.namespace = ns.into(),
            Object::LaunchConfiguration(m) => m.metadata.namespace = ns.into(),
            Object::ScalingPolicy(m) => m.metadata.namespace = ns.into(),
            Object::LoadBalancer(m) => m.metadata.namespace = ns.into(),
        }
        o
    }

    #[test]
    fn removing_a_namespace_folder_holds_its_groups_with_their_launch_configurations() {
        let team = |name: &str| {
            ok(vec![
                in_namespace("team-b", lc(name)),
                in_namespace("team-b", group(name, name, 1)),
            ])
        };
        let v1 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 1)])),
            ("/m/team-b/x.yaml", team("x")),
            ("/m/team-b/y.yaml", team("y")),
        ]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let v2 = files(vec![(
            "/m/a.yaml",
            ok(vec![lc("web"), group("web", "web", 1)]),
        )]);
        let d2 = build_snapshot(&d1, &v2, false, t(1));
        assert_eq!(d2.objects.len(), 6, "{:?}", d2.objects.keys());
        let x = nkey("team-b", Kind::AutoScalingGroup, "x");
        assert!(
            d2.held[&x].contains("every group of namespace `team-b`"),
            "{:?}",
            d2.held
        );
        assert!(d2
            .objects
            .contains_key(&nkey("team-b", Kind::LaunchConfiguration, "x")));
        // Confirming one by name lets it go, with its launch configuration; the other stays.
        let d3 = build_snapshot_confirmed(&d2, &v2, false, &|k: &ObjectKey| k == &x, t(2));
        assert!(!d3.objects.contains_key(&x));
        assert!(!d3
            .objects
            .contains_key(&nkey("team-b", Kind::LaunchConfiguration, "x")));
        assert_eq!(d3.held.len(), 1);
        assert!(d3
            .held
            .contains_key(&nkey("team-b", Kind::AutoScalingGroup, "y")));
    }

    #[test]
    fn while_a_file_has_errors_no_group_is_deleted_for_lack_of_a_manifest() {
        let v1 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 1)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 1)])),
            ("/m/c.yaml", ok(vec![group("jobs", "web", 1)])),
        ]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        // `api` moved into c.yaml, which now has a typo: api must not go.
        let v2 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 1)])),
            ("/m/c.yaml", broken("/m/c.yaml")),
        ]);
        let d2 = build_snapshot(&d1, &v2, true, t(1));
        assert!(d2.objects.contains_key(&gkey("api")));
        assert!(d2.held[&gkey("api")].contains("/m/c.yaml"), "{:?}", d2.held);
        assert!(d2.objects.contains_key(&gkey("jobs")), "kept as last valid");
        // Fixed: api is really gone now.
        let v3 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 1)])),
            ("/m/c.yaml", ok(vec![group("jobs", "web", 1)])),
        ]);
        let d3 = build_snapshot(&d2, &v3, false, t(2));
        assert!(!d3.objects.contains_key(&gkey("api")));
        assert!(d3.held.is_empty());
    }

    #[test]
    fn an_unreadable_directory_keeps_what_its_files_defined() {
        let v1 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 1)])),
            ("/m/team/b.yaml", ok(vec![group("api", "web", 2)])),
            ("/m/team/c.yaml", ok(vec![group("jobs", "web", 1)])),
        ]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        // The listing of /m/team failed part-way: c.yaml was read, b.yaml was not.
        let v2 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 1)])),
            (
                "/m/team",
                file_error(
                    Path::new("/m/team"),
                    "cannot read the directory: Permission denied".into(),
                ),
            ),
            ("/m/team/c.yaml", ok(vec![group("jobs", "web", 3)])),
        ]);
        let d2 = build_snapshot(&d1, &v2, false, t(1));
        assert_eq!(desired_of(&d2, "api"), Some(2));
        assert_eq!(desired_of(&d2, "jobs"), Some(3), "what was read is current");
        assert!(d2.conflicts.is_empty(), "{:?}", d2.conflicts);
        assert_eq!(d2.errors_for(&gkey("api")).len(), 1);
        assert!(d2.errors_for(&gkey("web")).is_empty());
    }

    #[test]
    fn allow_empty_lets_every_group_go() {
        let v1 = files(vec![("/m/a.yaml", ok(vec![group("web", "web", 3)]))]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let d2 = build_snapshot(&d1, &BTreeMap::new(), true, t(1));
        assert!(d2.objects.is_empty());
        assert!(d2.held.is_empty());
        // Never having had a group is not a refusal either.
        let d3 = build_snapshot(&Desired::default(), &BTreeMap::new(), false, t(0));
        assert!(d3.objects.is_empty() && d3.held.is_empty() && d3.loaded);
    }

    #[test]
    fn first_seen_is_carried_over_and_new_identities_get_now() {
        let v1 = files(vec![(
            "/m/a.yaml",
            ok(vec![lc("web"), group("web", "web", 3)]),
        )]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let v2 = files(vec![
            ("/m/a.yaml", ok(vec![lc("web"), group("web", "web", 7)])),
            ("/m/b.yaml", ok(vec![group("api", "web", 1)])),
        ]);
        let d2 = build_snapshot(&d1, &v2, false, t(60));
        assert_eq!(d2.objects[&gkey("web")].first_seen, t(0));
        assert_eq!(d2.objects[&gkey("api")].first_seen, t(60));
    }

    #[test]
    fn warnings_combine_missing_references_and_parser_warnings() {
        let mut parsed = ok(vec![group("web", "wbe", 1), lc("web")]);
        parsed.objects[0].warnings.push(ManifestError {
            file: "/m/a.yaml".into(),
            line: 3,
            column: 1,
            field: "spec.domain".into(),
            message: "parser warning".into(),
        });
        let d1 = build_snapshot(
            &Desired::default(),
            &files(vec![("/m/a.yaml", parsed)]),
            false,
            t(0),
        );
        let w = &d1.objects[&gkey("web")].warnings;
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].message, "parser warning");
        assert_eq!(w[1].field, "spec.launchConfiguration");
        assert!(w[1].message.contains("wbe"), "{}", w[1].message);
        // A kept entry gets its missing-reference warning recomputed, not duplicated.
        let d2 = build_snapshot(
            &d1,
            &files(vec![("/m/a.yaml", broken("/m/a.yaml"))]),
            false,
            t(1),
        );
        assert_eq!(
            d2.objects[&gkey("web")].warnings,
            d1.objects[&gkey("web")].warnings
        );
        // Once the launch configuration exists, the warning is gone.
        let fixed = files(vec![(
            "/m/a.yaml",
            ok(vec![group("web", "web", 1), lc("web")]),
        )]);
        let d3 = build_snapshot(&d2, &fixed, false, t(2));
        assert!(d3.objects[&gkey("web")].warnings.is_empty());
    }

    #[test]
    fn same_meaning_ignores_line_shifts_but_not_generations_or_errors() {
        let v1 = files(vec![(
            "/m/a.yaml",
            ok(vec![lc("web"), group("web", "web", 3)]),
        )]);
        let d1 = build_snapshot(&Desired::default(), &v1, false, t(0));
        let mut shifted = d1.clone();
        shifted.objects.get_mut(&gkey("web")).unwrap().line += 4;
        assert!(same_meaning(&d1, &shifted));
        let v2 = files(vec![(
            "/m/a.yaml",
            ok(vec![lc("web"), group("web", "web", 4)]),
        )]);
        assert!(!same_meaning(&d1, &build_snapshot(&d1, &v2, false, t(1))));
        let v3 = files(vec![("/m/a.yaml", broken("/m/a.yaml"))]);
        assert!(!same_meaning(&d1, &build_snapshot(&d1, &v3, false, t(1))));
        assert!(!same_meaning(
            &Desired::default(),
            &build_snapshot(&Desired::default(), &BTreeMap::new(), false, t(0))
        ));
    }
}
