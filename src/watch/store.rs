//! The desired state: every valid object from the watched directory, with where it came from.
//!
//! One writer (the directory watcher) publishes immutable snapshots through a
//! `tokio::sync::watch` channel; the reconciler and the API read them cheaply.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::manifest::{
    AutoScalingGroup, LaunchConfiguration, ManifestError, Object, ObjectKey, ParsedObject,
    ScalingPolicy,
};

/// A reader of the latest desired state: what every stage after the watcher is handed (the
/// watcher holds the only sender).
pub type DesiredReader = tokio::sync::watch::Receiver<Arc<Desired>>;

/// One object and its source.
#[derive(Debug, Clone)]
pub struct Entry {
    pub object: Object,
    /// File that defines it (absolute path).
    pub file: PathBuf,
    /// Index of its YAML document in that file.
    pub doc_index: usize,
    /// 1-based line where its document starts.
    pub line: usize,
    /// Hash of metadata + spec.
    pub generation: String,
    /// When this controller first loaded this identity (kept across reloads; the `AGE` column).
    pub first_seen: chrono::DateTime<chrono::Utc>,
    /// Non-fatal problems (a reference to a launch configuration that does not exist yet, ...).
    pub warnings: Vec<ManifestError>,
}

impl Entry {
    /// The entry of an object read from `file`, first seen at `first_seen`.
    pub fn new(
        parsed: ParsedObject,
        file: PathBuf,
        first_seen: chrono::DateTime<chrono::Utc>,
    ) -> Entry {
        Entry {
            generation: parsed.object.spec_hash(),
            object: parsed.object,
            file,
            doc_index: parsed.doc_index,
            line: parsed.line,
            first_seen,
            warnings: parsed.warnings,
        }
    }
}

/// Two files define the same identity; the first by path wins.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub key: String,
    pub winner: PathBuf,
    pub ignored: PathBuf,
}

/// An immutable snapshot of the desired state.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub objects: BTreeMap<ObjectKey, Entry>,
    /// Files that currently fail to parse or validate. What they defined before keeps its last
    /// valid version in `objects` (a typo never scales anything down).
    pub file_errors: BTreeMap<PathBuf, Vec<ManifestError>>,
    pub conflicts: Vec<Conflict>,
    /// Groups whose deletion is held (see [`crate::watch::prune`]): their last objects stay in
    /// `objects`, and this says why and how to confirm.
    pub held: BTreeMap<ObjectKey, String>,
    /// True once the first full load of the directory is done (`/readyz`).
    pub loaded: bool,
}

impl Desired {
    pub fn groups(&self) -> impl Iterator<Item = (&ObjectKey, &AutoScalingGroup, &Entry)> {
        self.objects.iter().filter_map(|(k, e)| match &e.object {
            Object::AutoScalingGroup(g) => Some((k, g, e)),
            _ => None,
        })
    }

    pub fn launch_configurations(
        &self,
    ) -> impl Iterator<Item = (&ObjectKey, &LaunchConfiguration, &Entry)> {
        self.objects.iter().filter_map(|(k, e)| match &e.object {
            Object::LaunchConfiguration(l) => Some((k, l, e)),
            _ => None,
        })
    }

    pub fn policies(&self) -> impl Iterator<Item = (&ObjectKey, &ScalingPolicy, &Entry)> {
        self.objects.iter().filter_map(|(k, e)| match &e.object {
            Object::ScalingPolicy(p) => Some((k, p, e)),
            _ => None,
        })
    }

    pub fn group(&self, key: &ObjectKey) -> Option<&AutoScalingGroup> {
        match self.objects.get(key).map(|e| &e.object) {
            Some(Object::AutoScalingGroup(g)) => Some(g),
            _ => None,
        }
    }

    pub fn launch_configuration(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<&LaunchConfiguration> {
        let key = ObjectKey::new(crate::manifest::Kind::LaunchConfiguration, namespace, name);
        match self.objects.get(&key).map(|e| &e.object) {
            Some(Object::LaunchConfiguration(l)) => Some(l),
            _ => None,
        }
    }

    /// Errors of the file an object lives in, or of a directory above it that cannot be read
    /// (the object then runs its last valid version).
    pub fn errors_for(&self, key: &ObjectKey) -> &[ManifestError] {
        self.objects
            .get(key)
            .and_then(|e| e.file.ancestors().find_map(|p| self.file_errors.get(p)))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// A loaded snapshot of the objects in `yaml` (one file `test.yaml`), for tests.
#[cfg(test)]
pub(crate) fn test_snapshot(yaml: &str) -> Desired {
    let parsed = crate::manifest::parse_file(std::path::Path::new("test.yaml"), yaml);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let mut d = Desired {
        loaded: true,
        ..Default::default()
    };
    for p in parsed.objects {
        d.objects.insert(
            p.object.key(),
            Entry::new(p, "test.yaml".into(), chrono::Utc::now()),
        );
    }
    d
}
