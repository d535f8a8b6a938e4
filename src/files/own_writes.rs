//! The content the controller itself last wrote to each file.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

fn content_hash(content: &str) -> u64 {
    // `DefaultHasher::new()` uses fixed keys: stable within the process, which is all we need.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut h);
    h.finish()
}

/// The content the controller itself last wrote to each file, so the watcher can tell its own
/// status writes from the user's edits.
#[derive(Debug, Default)]
pub struct OwnWrites {
    /// Path (as the watcher sees it) → hash of the content we wrote there last.
    written: Mutex<HashMap<PathBuf, u64>>,
}

impl OwnWrites {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that we are writing `content` to `path` (call before the rename, so the file event
    /// cannot arrive first).
    pub fn record(&self, path: &Path, content: &str) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf(), content_hash(content));
    }

    /// True when `content` is exactly what we last wrote to `path`.
    pub fn is_own(&self, path: &Path, content: &str) -> bool {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .is_some_and(|h| *h == content_hash(content))
    }
}
