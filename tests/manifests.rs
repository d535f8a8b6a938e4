//! The committed JSON Schemas are up to date and every example manifest parses cleanly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use microscaler::manifest::{self, Kind};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_schemas_match_the_types() {
    let schemas = manifest::schema::schemas();
    assert_eq!(schemas.len(), 4);
    for (name, fresh) in schemas {
        let path = root().join("schema").join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "schema/{name} is stale: run `cargo run --example gen-schema`"
        );
    }
}

#[test]
fn each_schema_pins_api_version_and_its_own_kind() {
    for (name, text) in manifest::schema::schemas() {
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let kind = schema["title"].as_str().unwrap();
        assert!(Kind::parse(kind).is_some(), "{name}: title {kind}");
        assert_eq!(schema["properties"]["kind"]["const"], kind, "{name}");
        assert_eq!(
            schema["properties"]["apiVersion"]["const"],
            manifest::API_VERSION,
            "{name}"
        );
    }
}

fn examples() -> Vec<PathBuf> {
    let dir = root().join("manifests/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        // Manifests only: the directory also holds a metric trace for `ms simulate`.
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
}

fn kinds_of(path: &Path) -> Vec<Kind> {
    let text = std::fs::read_to_string(path).unwrap();
    let parsed = manifest::parse_file(path, &text);
    assert!(
        parsed.errors.is_empty(),
        "{}: {:#?}",
        path.display(),
        parsed.errors
    );
    for object in &parsed.objects {
        assert!(
            object.warnings.is_empty(),
            "{}: {:#?}",
            path.display(),
            object.warnings
        );
    }
    parsed.objects.iter().map(|o| o.object.kind()).collect()
}

#[test]
fn every_example_parses_with_the_expected_kinds() {
    let expected: BTreeMap<&str, Vec<Kind>> = [
        ("launch-configuration.yaml", vec![Kind::LaunchConfiguration]),
        ("autoscaling-group.yaml", vec![Kind::AutoScalingGroup]),
        ("scaling-policy.yaml", vec![Kind::ScalingPolicy]),
        ("load-balancer.yaml", vec![Kind::LoadBalancer]),
        (
            "cirros.yaml",
            vec![Kind::AutoScalingGroup, Kind::LaunchConfiguration],
        ),
    ]
    .into_iter()
    .collect();
    let files = examples();
    let names: Vec<&str> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    for name in expected.keys() {
        assert!(names.contains(name), "missing example {name}");
    }
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let kinds = kinds_of(path);
        match expected.get(name) {
            Some(want) => assert_eq!(&kinds, want, "{name}"),
            None => assert!(!kinds.is_empty(), "{name} defines nothing"),
        }
    }
}

#[test]
fn examples_start_with_a_schema_modeline_that_exists() {
    for path in examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let schema = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{}: first line is `{first}`", path.display()));
        let target = path.parent().unwrap().join(schema);
        assert!(target.is_file(), "{}: {schema} not found", path.display());
    }
}

#[test]
fn the_examples_together_have_no_dangling_references() {
    let mut objects = BTreeMap::new();
    for path in examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        for parsed in manifest::parse_file(&path, &text).objects {
            let key = parsed.object.key();
            assert!(
                objects.insert(key.clone(), parsed.object).is_none(),
                "{key} is defined in two example files"
            );
        }
    }
    assert_eq!(manifest::missing_references(&objects), BTreeMap::new());
}
