//! A value loaded from a file or a directory of files, loaded again when they change.
//!
//! Changes are noticed by a cheap check (size, modification time and inode of each file, and the
//! list of files) done at most once per `CHECK_EVERY`, on the lookup that comes after it is due:
//! no watcher thread, no re-reading on every connection (websockify re-reads its token files for
//! each one), and an edit is seen by the connections that start a second later.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How stale a reloading value may get.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct Reloading<T> {
    path: PathBuf,
    load: fn(&Path) -> Result<T, String>,
    /// `false` for the read-only plugins: loaded once at start.
    reload: bool,
    state: Mutex<State<T>>,
}

struct State<T> {
    value: Arc<T>,
    stamp: Stamp,
    checked: Instant,
}

/// What the check compares: one entry per file (the source itself, or each file in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Vec<(PathBuf, u64, i64, i64, u64)>);

impl<T> Reloading<T> {
    /// Loads `path` now; failing to is a start-up error.
    pub fn new(path: PathBuf, load: fn(&Path) -> Result<T, String>, reload: bool) -> Result<Self, String> {
        let stamp = stamp(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value = Arc::new(load(&path)?);
        Ok(Reloading {
            path,
            load,
            reload,
            state: Mutex::new(State {
                value,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The current value, loaded again first if the files changed since the last check.
    pub fn get(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.reload && state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            match stamp(&self.path) {
                Ok(stamp) if stamp == state.stamp => {}
                Ok(stamp) => match (self.load)(&self.path) {
                    Ok(value) => {
                        tracing::info!("{} changed: loaded again", self.path.display());
                        state.value = Arc::new(value);
                        state.stamp = stamp;
                    }
                    Err(e) => tracing::warn!("{e}; keeping what was loaded before"),
                },
                Err(e) => tracing::warn!(
                    "cannot read {}: {e}; keeping what was loaded before",
                    self.path.display()
                ),
            }
        }
        state.value.clone()
    }
}

/// The size, modification time and inode of `path` (and of each file in it, for a directory).
pub fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    let entry = |path: PathBuf, m: &std::fs::Metadata| (path, m.len(), m.mtime(), m.mtime_nsec(), m.ino());
    if !meta.is_dir() {
        return Ok(Stamp(vec![entry(path.to_owned(), &meta)]));
    }
    let mut entries = vec![entry(path.to_owned(), &meta)];
    for file in std::fs::read_dir(path)? {
        let file = file?.path();
        // A file removed between the listing and this stat is simply not there any more.
        if let Ok(meta) = std::fs::metadata(&file) {
            entries.push(entry(file, &meta));
        }
    }
    entries.sort();
    Ok(Stamp(entries))
}

/// The regular files of a source: the file itself, or those in the directory, sorted by name.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list {}: {e}", path.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Result<String, String> {
        let mut all = String::new();
        for file in files(path)? {
            all.push_str(&std::fs::read_to_string(&file).map_err(|e| e.to_string())?);
        }
        Ok(all)
    }

    #[test]
    fn changes_are_seen_after_the_check_interval() {
        let dir = std::env::temp_dir().join(format!("wsproxy-reloading-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), "one").unwrap();
        let value = Reloading::new(dir.clone(), read, true).unwrap();
        let fixed = Reloading::new(dir.clone(), read, false).unwrap();
        assert_eq!(*value.get(), "one");
        std::fs::write(dir.join("b"), "two").unwrap();
        // Not checked again before the interval: the same value.
        assert_eq!(*value.get(), "one");
        value.state.lock().unwrap().checked -= CHECK_EVERY;
        assert_eq!(*value.get(), "onetwo");
        std::fs::remove_file(dir.join("a")).unwrap();
        value.state.lock().unwrap().checked -= CHECK_EVERY;
        assert_eq!(*value.get(), "two");
        fixed.state.lock().unwrap().checked -= CHECK_EVERY;
        assert_eq!(*fixed.get(), "one");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
