//! One controller per manifest directory: an exclusive lock on the directory itself, and a note
//! saying who holds it (pid, listen address), so a second controller names the first.
//!
//! The lock is `flock` on the directory (it works on read-only directories and across bind
//! mounts of the same directory, and the kernel releases it when the holder dies, even by
//! `kill -9`). The note lives in the temporary directory, keyed by the directory's device and
//! inode, never in the watched directory (which is the user's git checkout).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::{Deserialize, Serialize};

/// The lock, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
    note: PathBuf,
}

/// Why the directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    #[error(
        "another controller already watches {dir}: {holder}. Two controllers on one directory \
         would both act on the same groups; stop that one first"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock the manifest directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who holds the lock, as written in the note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Holder {
    pid: u32,
    listen: String,
    controller_name: String,
    since: String,
}

/// Locks `dir` for this controller (listening on `listen`, named `controller`).
///
/// # Errors
/// [`DirLockError::Held`] naming the holder when another process holds the lock;
/// [`DirLockError::Io`] when the directory cannot be opened.
pub fn lock(dir: &Path, listen: SocketAddr, controller: &str) -> Result<DirLock, DirLockError> {
    let io = |source| DirLockError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let file = File::open(dir).map_err(io)?;
    let note = note_path(dir).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(DirLockError::Held {
                dir: dir.to_path_buf(),
                holder: describe_holder(&note, dir),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    let holder = Holder {
        pid: std::process::id(),
        listen: listen.to_string(),
        controller_name: controller.to_string(),
        since: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    // Only a courtesy for the next one's message: failing to write it is not an error.
    if let Err(e) = std::fs::write(&note, serde_json::to_vec(&holder).unwrap_or_default()) {
        tracing::debug!(note = %note.display(), error = %e, "cannot write the directory lock note");
    }
    Ok(DirLock { _dir: file, note })
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let ours = std::fs::read(&self.note)
            .ok()
            .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
            .is_some_and(|h| h.pid == std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.note);
        }
    }
}

/// `<tmp>/microscaler-dir-<dev>-<inode>.json`.
fn note_path(dir: &Path) -> std::io::Result<PathBuf> {
    let (dev, ino) = dev_ino(dir)?;
    Ok(std::env::temp_dir().join(format!("microscaler-dir-{dev:x}-{ino}.json")))
}

#[cfg(unix)]
fn dev_ino(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir)?;
    Ok((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn dev_ino(_dir: &Path) -> std::io::Result<(u64, u64)> {
    Ok((0, 0))
}

/// The holder as a sentence: from the note when its process still runs, else the pid from
/// `/proc/locks`, else unknown (it runs in another pid namespace, say a container).
fn describe_holder(note: &Path, dir: &Path) -> String {
    let from_note = std::fs::read(note)
        .ok()
        .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
        .filter(|h| Path::new(&format!("/proc/{}", h.pid)).exists());
    if let Some(h) = from_note {
        return format!(
            "pid {}, listening on {} (controllerName `{}`, since {})",
            h.pid, h.listen, h.controller_name, h.since
        );
    }
    match dev_ino(dir).ok().and_then(|(_, ino)| lock_holder_pid(ino)) {
        Some(pid) => format!("pid {pid}"),
        None => "a process this one cannot see (another container?)".to_string(),
    }
}

/// The pid holding a `flock` on inode `ino`, from `/proc/locks`
/// (`1: FLOCK  ADVISORY  WRITE 4242 08:01:1234567 0 EOF`).
fn lock_holder_pid(ino: u64) -> Option<u32> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, dev_ino) = (f.get(1)?, f.get(4)?, f.get(5)?);
        let line_ino: u64 = dev_ino.rsplit(':').next()?.parse().ok()?;
        (*kind == "FLOCK" && line_ino == ino)
            .then(|| pid.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let listen: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let first = lock(dir.path(), listen, "blue").unwrap();
        // A second open file description conflicts even within one process (flock semantics).
        let err = lock(dir.path(), "127.0.0.1:6666".parse().unwrap(), "green").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("listening on 127.0.0.1:5555"), "{msg}");
        assert!(msg.contains("`blue`"), "{msg}");
        drop(first);
        let again = lock(dir.path(), listen, "green");
        assert!(again.is_ok(), "released on drop");
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let err = lock(
            Path::new("/nonexistent/microscaler"),
            "127.0.0.1:1".parse().unwrap(),
            "x",
        )
        .unwrap_err();
        assert!(matches!(err, DirLockError::Io { .. }), "{err}");
    }
}
