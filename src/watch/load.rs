//! Loading: the manifest files below the directory, each parsed once per content.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, info, warn};

use crate::config::tenancy::Tenancy;
use crate::files::OwnWrites;
use crate::manifest::{self, ManifestError, ParsedFile};

/// Directory depth limit, which also stops symlink loops.
const MAX_DEPTH: usize = 32;

/// The parse function; the real one is [`manifest::parse_file`], tests may swap in another.
pub type ParseFn = fn(&Path, &str) -> ParsedFile;

/// Reads the directory, re-parsing only the files whose content changed since the last load.
pub struct Loader {
    parse: ParseFn,
    /// Path → (hash of the content, its parse).
    cache: HashMap<PathBuf, (u64, ParsedFile)>,
    /// To tell our own status writes from the user's edits in the logs.
    own: Option<Arc<OwnWrites>>,
    /// False until the first load: the first load logs no "changed" lines.
    loaded_once: bool,
    /// Files whose content changed (new, edited, removed) in the last load.
    changed: Vec<PathBuf>,
    /// Subtrees that are never loaded.
    ignore: Vec<PathBuf>,
    /// Per-namespace limits checked beside validation (located like validation errors).
    tenancy: Option<Arc<Tenancy>>,
}

impl Default for Loader {
    fn default() -> Self {
        Loader::with_parser(manifest::parse_file)
    }
}

impl Loader {
    /// A loader using [`manifest::parse_file`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A loader using `parse` instead of the real parser.
    pub fn with_parser(parse: ParseFn) -> Self {
        Loader {
            parse,
            cache: HashMap::new(),
            own: None,
            loaded_once: false,
            changed: Vec::new(),
            ignore: Vec::new(),
            tenancy: None,
        }
    }

    /// Never loads anything below these directories.
    pub fn with_ignored(mut self, ignore: Vec<PathBuf>) -> Self {
        self.ignore = ignore;
        self
    }

    /// The files whose content changed in the last [`Loader::load`] (new, edited or removed).
    pub fn take_changed(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.changed)
    }

    /// Checks every object against the per-namespace limits of `tenancy` too.
    pub fn with_tenancy(mut self, tenancy: Arc<Tenancy>) -> Self {
        self.tenancy = Some(tenancy);
        self
    }

    /// Logs changes made by anyone but the controller itself at `info`, its own at `debug`.
    pub fn with_own_writes(mut self, own: Arc<OwnWrites>) -> Self {
        self.own = Some(own);
        self
    }

    /// Every `*.yaml`/`*.yml` file below `dir` (recursively, sorted by path) and its parse.
    ///
    /// Skips hidden files and directories (`.git`, `.web.yaml.swp`, the writer's
    /// `.web.yaml.ms-tmp-*`) and editor backups ending in `~`. A file that cannot be read is
    /// reported as a file error (so what it defined keeps running) rather than treated as
    /// deleted; so is a directory that cannot be listed (permissions, I/O error, no file
    /// descriptor left): it appears keyed by its own path, with the error. A missing directory
    /// loads as empty.
    pub fn load(&mut self, dir: &Path) -> BTreeMap<PathBuf, ParsedFile> {
        let mut paths = Vec::new();
        let mut unreadable = Vec::new();
        walk(dir, 0, &mut paths, &mut unreadable);
        if !self.ignore.is_empty() {
            paths.retain(|p| !self.ignore.iter().any(|i| p.starts_with(i)));
            unreadable.retain(|(p, _)| !self.ignore.iter().any(|i| p.starts_with(i)));
        }
        self.changed.clear();
        let mut out = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for path in paths {
            let Some(parsed) = self.load_file(&path) else {
                continue;
            };
            seen.insert(path.clone());
            out.insert(path, parsed);
        }
        let removed = self.cache.keys().filter(|p| !seen.contains(*p)).cloned();
        self.changed.extend(removed.collect::<Vec<_>>());
        for (path, error) in unreadable {
            out.insert(
                path.clone(),
                file_error(&path, format!("cannot read the directory: {error}")),
            );
        }
        self.cache.retain(|p, _| seen.contains(p));
        self.loaded_once = true;
        out
    }

    fn load_file(&mut self, path: &Path) -> Option<ParsedFile> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            // Deleted between listing and reading: it is gone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => return Some(file_error(path, format!("cannot read the file: {e}"))),
        };
        let hash = hash_bytes(&bytes);
        if let Some((h, parsed)) = self.cache.get(path) {
            if *h == hash {
                return Some(parsed.clone());
            }
        }
        self.changed.push(path.to_path_buf());
        let parsed = match String::from_utf8(bytes) {
            Ok(text) => {
                if self.loaded_once {
                    match &self.own {
                        Some(own) if own.is_own(path, &text) => {
                            debug!(file = %path.display(), "reloading after our own status write")
                        }
                        _ => info!(file = %path.display(), "manifest changed"),
                    }
                }
                let parse = self.parse;
                let tenancy = self.tenancy.clone();
                std::panic::catch_unwind(|| match &tenancy {
                    Some(t) => manifest::parse_file_checked(path, &text, &|o| t.check_object(o)),
                    None => parse(path, &text),
                })
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    file_error(
                        path,
                        format!(
                            "internal error while reading this file (please report it): {what}"
                        ),
                    )
                })
            }
            Err(_) => file_error(path, "the file is not valid UTF-8".into()),
        };
        self.cache
            .insert(path.to_path_buf(), (hash, parsed.clone()));
        Some(parsed)
    }
}

/// Loads `dir` once with a fresh [`Loader`].
pub fn load_dir(dir: &Path) -> BTreeMap<PathBuf, ParsedFile> {
    Loader::new().load(dir)
}

pub(super) fn file_error(path: &Path, message: String) -> ParsedFile {
    ParsedFile {
        objects: Vec::new(),
        errors: vec![ManifestError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            field: String::new(),
            message,
        }],
    }
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Hidden names and editor backups are never manifests, nor directories of manifests.
pub(super) fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~')
}

pub(super) fn is_manifest_name(name: &str) -> bool {
    !is_ignored_name(name) && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Collects manifest paths below `dir` into `out`, and the directories that could not be listed
/// completely (with why) into `unreadable`: those must not count as emptied.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, unreadable: &mut Vec<(PathBuf, String)>) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if depth == 0 && e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!(dir = %dir.display(), "cannot read directory: {e}; what it defined keeps running");
            unreadable.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                // A listing cut short (I/O error): what was not listed is not gone.
                warn!(dir = %dir.display(), "cannot list directory: {e}; what it defined keeps running");
                unreadable.push((dir.to_path_buf(), e.to_string()));
                break;
            }
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_ignored_name(&name) {
            continue;
        }
        let path = entry.path();
        // `metadata` follows symlinks: Kubernetes ConfigMap mounts are symlinked files.
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                if depth < MAX_DEPTH {
                    walk(&path, depth + 1, out, unreadable);
                } else {
                    warn!(dir = %path.display(), "directory nested too deep (a symlink loop?); skipped");
                }
            }
            // A broken or unreadable entry named like a manifest is reported when read.
            Ok(_) | Err(_) if is_manifest_name(&name) => out.push(path),
            // A directory (or a link to one) that cannot be looked at may hold manifests. A
            // dangling link is nothing.
            Err(e)
                if e.kind() != std::io::ErrorKind::NotFound
                    && entry
                        .file_type()
                        .is_ok_and(|t| t.is_dir() || t.is_symlink()) =>
            {
                warn!(dir = %path.display(), "cannot read directory: {e}; what it defined keeps running");
                unreadable.push((path, e.to_string()));
            }
            _ => {}
        }
    }
    if depth == 0 {
        out.sort();
        unreadable.sort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::watch::fixtures::manifest;

    #[test]
    fn load_dir_reads_yaml_recursively_and_skips_hidden_backups_and_others() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::create_dir_all(p.join("sub/deeper")).unwrap();
        fs::create_dir_all(p.join(".git")).unwrap();
        for f in [
            "a.yaml",
            "b.yml",
            "sub/c.yaml",
            "sub/deeper/d.yaml",
            ".git/e.yaml",
            ".web.yaml.swp",
            ".web.yaml.ms-tmp-0123",
            "web.yaml~",
            "notes.txt",
        ] {
            fs::write(p.join(f), "x: 1\n").unwrap();
        }
        let mut loader = Loader::with_parser(|_, _| ParsedFile::default());
        let loaded = loader.load(p);
        let names: Vec<String> = loaded
            .keys()
            .map(|k| k.strip_prefix(p).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["a.yaml", "b.yml", "sub/c.yaml", "sub/deeper/d.yaml"]
        );
        assert!(Loader::new().load(&p.join("missing")).is_empty());
    }

    static PARSES: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn the_loader_reparses_only_changed_files_and_reports_unreadable_ones() {
        fn counting(path: &Path, text: &str) -> ParsedFile {
            PARSES.fetch_add(1, Ordering::SeqCst);
            if text.contains("panic") {
                panic!("parser bug");
            }
            let _ = path;
            ParsedFile::default()
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("a.yaml"), "a: 1\n").unwrap();
        fs::write(p.join("b.yaml"), "b: 1\n").unwrap();
        let mut loader = Loader::with_parser(counting);
        loader.load(p);
        assert_eq!(PARSES.load(Ordering::SeqCst), 2);
        fs::write(p.join("b.yaml"), "b: 2\n").unwrap();
        loader.load(p);
        assert_eq!(PARSES.load(Ordering::SeqCst), 3);
        fs::write(p.join("a.yaml"), [0xff, 0xfe]).unwrap();
        fs::write(p.join("b.yaml"), "panic\n").unwrap();
        let loaded = loader.load(p);
        assert!(loaded[&p.join("a.yaml")].errors[0]
            .message
            .contains("UTF-8"));
        assert!(loaded[&p.join("b.yaml")].errors[0]
            .message
            .contains("parser bug"));
    }

    #[test]
    fn the_loader_says_which_files_changed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("a.yaml"), manifest("a", 1)).unwrap();
        fs::write(p.join("b.yaml"), manifest("b", 1)).unwrap();
        fs::create_dir(p.join("status")).unwrap();
        fs::write(p.join("status/a.status.yaml"), "x: 1\n").unwrap();
        let mut loader = Loader::new().with_ignored(vec![p.join("status")]);
        let loaded = loader.load(p);
        assert_eq!(loaded.len(), 2, "the ignored tree is not loaded");
        assert_eq!(
            loader.take_changed(),
            vec![p.join("a.yaml"), p.join("b.yaml")]
        );
        loader.load(p);
        assert!(loader.take_changed().is_empty());
        fs::write(p.join("a.yaml"), manifest("a", 2)).unwrap();
        fs::remove_file(p.join("b.yaml")).unwrap();
        loader.load(p);
        let mut changed = loader.take_changed();
        changed.sort();
        assert_eq!(changed, vec![p.join("a.yaml"), p.join("b.yaml")]);
    }
}
