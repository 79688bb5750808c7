//! The precompiled cache directory: `<dir>/<hash>-<engine compat key>.cwasm`, shared by
//! every process that points at it, optionally bounded in bytes.
//!
//! What is guaranteed (see docs/sandbox.md, "Precompiled cache"):
//! - A process holds a shared `flock` on every cache file whose code it has loaded (read
//!   from the cache or just written), for as long as that code can run in it: while a file
//!   in the plugin directory or a version pinnable by hash has that content hash. Eviction
//!   and `tasker plugins gc` take a non-blocking exclusive lock first and skip a file they
//!   cannot lock, so no file in use by any process on this host is deleted.
//! - A reader locks the file it opened and maps that same open file (through
//!   `/proc/self/fd` on Linux), so a deletion racing its load cannot make it map a different
//!   or a missing file; files are written to a temporary name and renamed, never changed in
//!   place, so a mapped file never changes under its reader.
//! - The bound is on the total of `*.cwasm` files. Least recently used (file mtime, set at
//!   each load) go first; files in use are never deleted, so the total may stay above the
//!   bound while the files in use alone exceed it (logged).
//!
//! Not guaranteed: processes on other hosts sharing the directory over a network file
//! system whose `flock` is not shared between hosts. On a file system without `flock`
//! nothing is evicted (whether a file is in use cannot be known).

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Temporary files older than this are left over by a crash: gc removes them.
const STALE_TEMP: Duration = Duration::from_secs(600);

/// A shared lock on one cache file: while it lives no process evicts the file.
#[derive(Debug)]
pub(crate) struct Pin {
    _file: File,
}

/// Open `path` and take a shared lock on it (blocking only while an evictor holds it,
/// which is a moment). `None` if the file is not there.
pub(crate) fn pin(path: &Path) -> Option<(Pin, PathBuf)> {
    let file = File::open(path).ok()?;
    // A file system without locks still serves the cache; its files are then never
    // evicted (see `remove_unlocked`).
    if let Err(e) = file.lock_shared() {
        tracing::debug!(path = %path.display(), error = %e, "cannot lock a precompiled file");
    }
    // Map the file we locked, not whatever the path names by then.
    #[cfg(target_os = "linux")]
    let mapped = {
        use std::os::fd::AsRawFd;
        let p = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if p.exists() { p } else { path.to_path_buf() }
    };
    #[cfg(not(target_os = "linux"))]
    let mapped = path.to_path_buf();
    Some((Pin { _file: file }, mapped))
}

/// Mark a cache file used now (the LRU order); best effort.
pub(crate) fn touch(path: &Path) {
    if let Ok(f) = File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// One cache file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub path: PathBuf,
    pub bytes: u64,
}

/// What an eviction pass or a gc did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheReport {
    /// Files deleted, oldest use first.
    pub removed: Vec<CacheEntry>,
    /// Files kept because a process holds them.
    pub in_use: Vec<CacheEntry>,
    /// Files kept because the total was under the bound without removing them.
    pub kept: Vec<CacheEntry>,
    /// Leftover temporary files deleted (gc only).
    pub stale_temps: Vec<CacheEntry>,
}

impl CacheReport {
    pub fn removed_bytes(&self) -> u64 {
        self.removed
            .iter()
            .chain(&self.stale_temps)
            .map(|e| e.bytes)
            .sum()
    }

    /// The bytes of `*.cwasm` files left.
    pub fn remaining_bytes(&self) -> u64 {
        self.in_use.iter().chain(&self.kept).map(|e| e.bytes).sum()
    }
}

/// Total size of the `*.cwasm` files in `dir` (0 if it does not exist).
pub fn cache_bytes(dir: &Path) -> io::Result<u64> {
    Ok(list(dir)?.0.iter().map(|(e, _)| e.bytes).sum())
}

/// Delete every cache file no process holds, and temporary files left by crashes
/// (`tasker plugins gc`).
pub fn gc(dir: &Path) -> io::Result<CacheReport> {
    let mut report = evict(dir, 0)?;
    let (_, temps) = list(dir)?;
    let now = SystemTime::now();
    for (e, mtime) in temps {
        if now.duration_since(mtime).unwrap_or_default() >= STALE_TEMP
            && std::fs::remove_file(&e.path).is_ok()
        {
            report.stale_temps.push(e);
        }
    }
    Ok(report)
}

/// Delete least recently used cache files no process holds until the total is at most
/// `max_bytes`.
pub fn evict(dir: &Path, max_bytes: u64) -> io::Result<CacheReport> {
    let (mut entries, _) = list(dir)?;
    entries.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.path.cmp(&b.0.path)));
    let mut total: u64 = entries.iter().map(|(e, _)| e.bytes).sum();
    let mut report = CacheReport::default();
    for (e, _) in entries {
        if total <= max_bytes {
            report.kept.push(e);
            continue;
        }
        match remove_unlocked(&e.path) {
            Ok(true) => {
                total -= e.bytes;
                report.removed.push(e);
            }
            Ok(false) => report.in_use.push(e),
            // Gone meanwhile (another evictor): not ours to report.
            Err(err) if err.kind() == io::ErrorKind::NotFound => total -= e.bytes,
            Err(err) => return Err(err),
        }
    }
    Ok(report)
}

/// Delete `path` if no process holds a lock on it; `false` if one does.
fn remove_unlocked(path: &Path) -> io::Result<bool> {
    let file = File::open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(false),
        // No locks here: whether a process uses it cannot be known, so it stays.
        Err(TryLockError::Error(_)) => return Ok(false),
    }
    // Still the file we locked? A writer may have renamed a fresh one over it.
    if !same_file(&file, path) {
        return Ok(false);
    }
    std::fs::remove_file(path)?;
    Ok(true)
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

type Listed = Vec<(CacheEntry, SystemTime)>;

/// The `*.cwasm` files and the temporary files of `dir`, with their mtimes.
fn list(dir: &Path) -> io::Result<(Listed, Listed)> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    let (mut cwasm, mut temps) = (Vec::new(), Vec::new());
    for entry in read {
        let entry = entry?;
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let path = entry.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        let item = (
            CacheEntry {
                path: path.clone(),
                bytes: meta.len(),
            },
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        );
        if ext == "cwasm" {
            cwasm.push(item);
        } else if ext.starts_with("tmp") {
            temps.push(item);
        }
    }
    Ok((cwasm, temps))
}

/// A size such as `512MiB`, `2GB`, `100k` or `1048576` (bytes), for `cache_max_size`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("'{s}' is not a size such as 512MiB, 2GiB, 100MB or 1048576");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("1.5k"), Ok(1500));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        let e = parse_size("12 parsecs").unwrap_err();
        assert!(e.contains("12 parsecs") && e.contains("512MiB"), "{e}");
        assert!(parse_size("").is_err());
    }

    #[test]
    fn eviction_skips_locked_files_and_goes_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, age: u64| {
            let p = dir.path().join(name);
            std::fs::write(&p, vec![0u8; 100]).unwrap();
            let f = File::options().append(true).open(&p).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age))
                .unwrap();
            p
        };
        let old = file("a-x.cwasm", 300);
        let held = file("b-x.cwasm", 200);
        let newer = file("c-x.cwasm", 100);
        let newest = file("d-x.cwasm", 0);
        std::fs::write(dir.path().join("notes.txt"), b"not cache").unwrap();
        // Another process's shared lock (flock locks are per open file, so this counts).
        let (_pin, _) = pin(&held).unwrap();
        let r = evict(dir.path(), 200).unwrap();
        let names =
            |v: &[CacheEntry]| -> Vec<PathBuf> { v.iter().map(|e| e.path.clone()).collect() };
        assert_eq!(names(&r.removed), vec![old.clone(), newer.clone()]);
        assert_eq!(names(&r.in_use), vec![held.clone()]);
        assert_eq!(names(&r.kept), vec![newest.clone()]);
        assert!(!old.exists() && !newer.exists() && held.exists() && newest.exists());
        assert_eq!(cache_bytes(dir.path()).unwrap(), 200);
        let g = gc(dir.path()).unwrap();
        assert_eq!(names(&g.removed), vec![newest]);
        assert_eq!(names(&g.in_use), vec![held.clone()]);
        assert!(dir.path().join("notes.txt").exists());
        drop(_pin);
        assert_eq!(names(&gc(dir.path()).unwrap().removed), vec![held]);
        assert_eq!(cache_bytes(dir.path()).unwrap(), 0);
    }
}
