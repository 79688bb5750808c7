//! Plugin registry: a directory of `*.wasm` components, each identified by the blake3 hash
//! of its bytes, compiled at most once per hash (with an on-disk precompiled cache),
//! checked against the host with `instantiate_pre`, and hot-reloaded.
//!
//! Naming: a file `<name>@<version>.wasm` provides `name@version`; `<name>.wasm` provides
//! `name@0.0.0`. An optional sidecar `<stem>.plugin.json` (`{"name": "...", "version":
//! "..."}`) overrides both. Two files providing the same `name@version` is an error for
//! the later one (in path order).
//!
//! Work only on change: a scan reads and hashes only files whose size, mtime or inode
//! changed (a per-path memo keeps what the last read gave, errors included), and finds the
//! world from the component's export names without compiling. The first scan compiles
//! nothing: it loads precompiled code from the cache where there is some, and everything
//! else compiles on first use. Later scans compile a new or changed file before it
//! replaces anything, so a bad replacement never displaces a good version.
//!
//! Reload: the active table is one `ArcSwap`. An attempt resolves its plugin once, so
//! calls in flight finish on the version they started with; the next call sees the new
//! table. A file whose new content fails to load is reported once and its previous version
//! stays active. A removed file retires its names and hash. Versions replaced in place
//! stay resolvable by hash (so a retry pinned to a hash runs the same code) until their
//! file is removed.

mod cache;
mod compile;
mod files;
mod ids;
mod upload;
mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::broadcast;
use wasmtime::component::Linker;

pub use cache::{CacheEntry, CacheReport, cache_bytes, evict, gc as cache_gc, parse_size};
pub(crate) use compile::Pre;
pub use ids::{PluginHash, PluginRef, World};
pub use upload::UploadError;

use crate::attempt::AttemptState;
use crate::engine::SandboxEngine;
use crate::error::SandboxError;
use compile::{Attempt, Cell, Code, Job};
use files::{Content, Observed};
use ids::VersionKey;

/// A plugin: identity, world, and its code (loaded on first use, see [`Registry::load`]).
pub struct Plugin {
    pub hash: PluginHash,
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub size_bytes: u64,
    /// Whether the code was loaded from the precompiled cache (by the scan that found
    /// the file) rather than compiled.
    pub from_cache: bool,
    /// When this registry found the file (its code may be compiled later, at first use).
    pub found_at: std::time::SystemTime,
    world: World,
    pub(crate) compiled: Code,
}

impl Plugin {
    /// The world this component exports (from its export names; the typed check at load
    /// confirms it).
    pub fn world(&self) -> World {
        self.world
    }

    /// Whether the code is compiled and ready to instantiate.
    pub fn is_loaded(&self) -> bool {
        matches!(self.compiled.outcome(), Some(Ok(_)))
    }

    /// The remembered load failure of this version, naming its file.
    fn load_error(&self) -> Option<SandboxError> {
        match self.compiled.outcome() {
            Some(Err(e)) => Some(at(&self.path, e.clone())),
            _ => None,
        }
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("hash", &self.hash)
            .field("path", &self.path)
            .finish()
    }
}

/// What changed in the registry.
#[derive(Debug, Clone)]
pub enum RegistryEvent {
    Loaded {
        path: PathBuf,
        name: String,
        version: String,
        hash: PluginHash,
    },
    /// The file could not be used (found by a scan, or at its first use); any previous
    /// version of it stays active.
    Rejected { path: PathBuf, error: SandboxError },
    Retired {
        path: PathBuf,
        name: String,
        version: String,
        hash: PluginHash,
    },
}

/// What one scan of the plugin directory changed: files it activated, rejections it found
/// (a file still refused for the same reason is not reported again; see
/// [`Registry::rejected`]) and files it retired.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub loaded: Vec<(PathBuf, PluginHash)>,
    pub rejected: Vec<(PathBuf, SandboxError)>,
    pub retired: Vec<(PathBuf, PluginHash)>,
}

/// Counters, for tests and `tasker plugins inspect`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Directory scans, the one at start included.
    pub scans: u64,
    /// Files read and hashed: new or changed since the scan before.
    pub files_hashed: u64,
    /// Compiles from source (`Component::new`), whatever their outcome.
    pub compiles: u64,
    /// Code loaded from the precompiled cache.
    pub cache_loads: u64,
    /// Rejections written to the log: once per file content (or first use) that fails.
    pub rejections_logged: u64,
}

#[derive(Default)]
struct Counters {
    scans: AtomicU64,
    files_hashed: AtomicU64,
    compiles: AtomicU64,
    cache_loads: AtomicU64,
    rejections_logged: AtomicU64,
}

#[derive(Default, Clone)]
struct Table {
    by_path: BTreeMap<PathBuf, Arc<Plugin>>,
    by_name: HashMap<String, BTreeMap<VersionKey, Arc<Plugin>>>,
    /// Refusals found by scans, per file, with the name the file claims.
    rejected: BTreeMap<PathBuf, (String, SandboxError)>,
}

/// How a scan treats code it has not loaded yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Use the precompiled cache if it has the code, else leave it to the first use.
    CacheOnly,
    /// Load it now (a scan after start), without logging failures: the scan reports
    /// them.
    Now,
    /// Load it now for an attempt; a failure is logged and announced here, once.
    FirstUse,
}

pub struct Registry {
    engine: Arc<SandboxEngine>,
    linker: Arc<Linker<AttemptState>>,
    dir: PathBuf,
    cache_dir: Option<PathBuf>,
    cache_max_bytes: Option<u64>,
    table: ArcSwap<Table>,
    /// Every version seen by this process whose file is still there, for pinned-hash
    /// attempts.
    by_hash: Mutex<HashMap<PluginHash, Arc<Plugin>>>,
    /// One code cell per hash present in the directory or in `by_hash`.
    cells: Mutex<HashMap<PluginHash, Arc<Cell>>>,
    memo: Mutex<files::Memo>,
    scan_lock: tokio::sync::Mutex<()>,
    events: broadcast::Sender<RegistryEvent>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    counters: Arc<Counters>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prefix a load error with the file it is about.
fn at(path: &Path, e: SandboxError) -> SandboxError {
    match e {
        SandboxError::Load { message } => {
            SandboxError::load(format!("{}: {message}", path.display()))
        }
        SandboxError::Incompatible { message } => SandboxError::Incompatible {
            message: format!("{}: {message}", path.display()),
        },
        other => other,
    }
}

impl Registry {
    pub(crate) fn new(
        engine: Arc<SandboxEngine>,
        linker: Arc<Linker<AttemptState>>,
        dir: PathBuf,
        cache_dir: Option<PathBuf>,
        cache_max_bytes: Option<u64>,
    ) -> Self {
        Self {
            engine,
            linker,
            dir,
            cache_dir,
            cache_max_bytes,
            table: ArcSwap::from_pointee(Table::default()),
            by_hash: Mutex::default(),
            cells: Mutex::default(),
            memo: Mutex::default(),
            scan_lock: tokio::sync::Mutex::new(()),
            events: broadcast::channel(1024).0,
            watcher: Mutex::new(None),
            counters: Arc::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Registry changes (loads, rejections, retirements) as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    pub fn stats(&self) -> RegistryStats {
        let c = &self.counters;
        RegistryStats {
            scans: c.scans.load(Ordering::Relaxed),
            files_hashed: c.files_hashed.load(Ordering::Relaxed),
            compiles: c.compiles.load(Ordering::Relaxed),
            cache_loads: c.cache_loads.load(Ordering::Relaxed),
            rejections_logged: c.rejections_logged.load(Ordering::Relaxed),
        }
    }

    /// Active plugins, by file; their code may not be loaded yet. Versions whose code
    /// failed to load are in [`Registry::rejected`] instead.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.table
            .load()
            .by_path
            .values()
            .filter(|p| p.load_error().is_none())
            .cloned()
            .collect()
    }

    /// Files whose latest content was refused, by a scan or at first use, and why.
    pub fn rejected(&self) -> Vec<(PathBuf, SandboxError)> {
        let table = self.table.load();
        let mut out: BTreeMap<PathBuf, SandboxError> = table
            .rejected
            .iter()
            .map(|(p, (_, e))| (p.clone(), e.clone()))
            .collect();
        for (path, p) in &table.by_path {
            if let Some(e) = p.load_error() {
                out.entry(path.clone()).or_insert(e);
            }
        }
        out.into_iter().collect()
    }

    /// Find the plugin for an attempt, without loading its code (see [`Registry::load`]).
    /// By name without a version: the highest version whose code has not failed to load.
    pub fn resolve(&self, r: &PluginRef) -> Result<Arc<Plugin>, SandboxError> {
        let checked = |p: &Arc<Plugin>| match p.load_error() {
            Some(e) => Err(e),
            None => Ok(p.clone()),
        };
        match r {
            PluginRef::Hash(h) => {
                let found = lock(&self.by_hash).get(h).cloned();
                found.map_or_else(
                    || {
                        Err(SandboxError::load(format!(
                            "no plugin with hash {h} is loaded (never loaded here, or its file was removed)"
                        )))
                    },
                    |p| checked(&p),
                )
            }
            PluginRef::Name { name, version } => {
                let table = self.table.load();
                let versions = table.by_name.get(name);
                if let Some(versions) = versions {
                    let found = match version {
                        Some(v) => versions.get(&VersionKey::new(v)).map(checked),
                        None => versions
                            .values()
                            .rev()
                            .find(|p| p.load_error().is_none())
                            .or_else(|| versions.values().next_back())
                            .map(checked),
                    };
                    if let Some(res) = found {
                        return res;
                    }
                }
                // Nothing active: say why, with the load error if the file was refused.
                if let Some((path, (_, err))) = table.rejected.iter().find(|(_, (n, _))| n == name)
                {
                    return Err(match err {
                        SandboxError::Incompatible { message } => SandboxError::Incompatible {
                            message: format!("{r} ({}): {message}", path.display()),
                        },
                        other => SandboxError::load(format!("{r} ({}): {other}", path.display())),
                    });
                }
                let known: Vec<String> = versions
                    .map(|vs| vs.values().map(|p| p.version.clone()).collect())
                    .unwrap_or_default();
                Err(SandboxError::load(if known.is_empty() {
                    format!("no plugin named {name:?} in {}", self.dir.display())
                } else {
                    format!(
                        "plugin {r} not found in {}; loaded versions: {}",
                        self.dir.display(),
                        known.join(", ")
                    )
                }))
            }
        }
    }

    /// Resolve and make sure the code is loaded: compiled on a blocking thread on first use
    /// (once per hash; concurrent first uses wait for the same compile). Resolve once per
    /// attempt: the returned `Arc` keeps that version alive for the whole call even if the
    /// file is replaced meanwhile. A load failure is remembered until the file changes.
    pub async fn load(&self, r: &PluginRef) -> Result<Arc<Plugin>, SandboxError> {
        let mut first_err = None;
        loop {
            let p = match self.resolve(r) {
                Ok(p) => p,
                Err(e) => return Err(first_err.unwrap_or(e)),
            };
            match self
                .ensure(&p.compiled.0, p.hash, p.world, &p.path, Need::FirstUse)
                .await
            {
                Ok(()) => return Ok(p),
                // An unversioned name falls back to the next version down; the failure is
                // remembered, so `resolve` skips this one now.
                Err(e)
                    if matches!(r, PluginRef::Name { version: None, .. })
                        && p.load_error().is_some() =>
                {
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Load the code of every active plugin now (for listings that should show every
    /// problem). Returns the plugins whose code cannot be loaded.
    pub async fn load_all(&self) -> Vec<(PathBuf, SandboxError)> {
        let active: Vec<Arc<Plugin>> = self.table.load().by_path.values().cloned().collect();
        let mut failed = Vec::new();
        for p in active {
            if let Err(e) = self
                .ensure(&p.compiled.0, p.hash, p.world, &p.path, Need::FirstUse)
                .await
            {
                failed.push((p.path.clone(), e));
            }
        }
        failed
    }

    /// Fill a hash's code cell as `need` says. `Ok` with `CacheOnly` may leave it empty.
    async fn ensure(
        &self,
        cell: &Arc<Cell>,
        hash: PluginHash,
        world: World,
        path: &Path,
        need: Need,
    ) -> Result<(), SandboxError> {
        if let Some(done) = cell.get() {
            return done.as_ref().map(|_| ()).map_err(|e| at(path, e.clone()));
        }
        if need == Need::CacheOnly && self.cache_dir.is_none() {
            return Ok(());
        }
        let init = || async {
            let engine = self.engine.clone();
            let linker = self.linker.clone();
            let cache = self
                .cache_dir
                .as_ref()
                .map(|d| d.join(format!("{hash}-{}.cwasm", engine.compat_key())));
            let source = (need != Need::CacheOnly).then(|| path.to_path_buf());
            let counters = self.counters.clone();
            let cache_max_bytes = self.cache_max_bytes;
            let attempt = tokio::task::spawn_blocking(move || {
                compile::load(Job {
                    engine: &engine,
                    linker: &linker,
                    hash,
                    world,
                    cache: cache.as_deref(),
                    cache_max_bytes,
                    source: source.as_deref(),
                    counters: &counters,
                })
            })
            .await
            .unwrap_or_else(|e| {
                Attempt::Unavailable(SandboxError::internal(format!("load task failed: {e}")))
            });
            match attempt {
                Attempt::Done(res) => {
                    if let (Err(e), Need::FirstUse) = (&res, need) {
                        self.log_rejection(path, &at(path, e.clone()));
                    }
                    Ok(res.map(Arc::new))
                }
                Attempt::NotCached => Err(None),
                Attempt::Unavailable(e) => Err(Some(e)),
            }
        };
        match cell.get_or_try_init(init).await {
            Ok(done) => done.as_ref().map(|_| ()).map_err(|e| at(path, e.clone())),
            Err(None) => Ok(()),
            Err(Some(e)) => Err(e),
        }
    }

    fn log_rejection(&self, path: &Path, error: &SandboxError) {
        self.counters
            .rejections_logged
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%error, "plugin rejected");
        let _ = self.events.send(RegistryEvent::Rejected {
            path: path.to_path_buf(),
            error: error.clone(),
        });
    }

    fn cell(&self, hash: PluginHash) -> Arc<Cell> {
        lock(&self.cells).entry(hash).or_default().clone()
    }

    /// Scan the directory now: pick up new and changed files (loading their code before
    /// they replace anything), retire removed ones.
    pub async fn rescan(self: &Arc<Self>) -> Result<ScanReport, SandboxError> {
        self.scan(Need::Now).await
    }

    /// The scan at start: compiles nothing (see the module docs).
    pub(crate) async fn first_scan(self: &Arc<Self>) -> Result<ScanReport, SandboxError> {
        self.scan(Need::CacheOnly).await
    }

    async fn scan(self: &Arc<Self>, need: Need) -> Result<ScanReport, SandboxError> {
        let _guard = self.scan_lock.lock().await;
        self.counters.scans.fetch_add(1, Ordering::Relaxed);
        let reg = self.clone();
        let observed = tokio::task::spawn_blocking(move || {
            files::observe(&reg.dir, &mut lock(&reg.memo), &reg.counters.files_hashed)
        })
        .await
        .map_err(|e| SandboxError::internal(format!("scan task failed: {e}")))??;

        let old = self.table.load_full();
        let mut scan = Scan {
            old: &old,
            next: Table::default(),
            report: ScanReport::default(),
            events: Vec::new(),
            logged: 0,
        };
        let present: HashSet<PathBuf> = observed.iter().map(|o| o.path.clone()).collect();
        let mut live_hashes = HashSet::new();

        // New and changed files load their code concurrently, off the runtime.
        let mut pending = Vec::new();
        for Observed {
            path,
            meta,
            content,
            fresh,
        } in observed
        {
            let header = match content {
                Content::Known(h) => h,
                Content::Changing => {
                    scan.keep(&path);
                    continue;
                }
            };
            if let Ok(h) = &header {
                live_hashes.insert(h.hash);
            }
            let (meta, header) = match (meta, header) {
                (Ok(m), Ok(h)) => (m, h),
                (Err(e), _) => {
                    scan.reject(&path, files::stem_name(&path), e, fresh);
                    continue;
                }
                (Ok(m), Err(e)) => {
                    scan.reject(&path, m.name, e, fresh);
                    continue;
                }
            };
            if let Some(p) = old.by_path.get(&path)
                && p.hash == header.hash
                && p.name == meta.name
                && p.version == meta.version
            {
                scan.next.by_path.insert(path, p.clone());
                continue;
            }
            let cell = self.cell(header.hash);
            let reg = self.clone();
            let (c, p) = (cell.clone(), path.clone());
            let task =
                tokio::spawn(
                    async move { reg.ensure(&c, header.hash, header.world, &p, need).await },
                );
            pending.push((path, meta, header, cell, fresh, task));
        }
        for (path, meta, header, cell, fresh, task) in pending {
            let res = task
                .await
                .unwrap_or_else(|e| Err(SandboxError::internal(format!("load task failed: {e}"))));
            if let Err(e) = res {
                scan.reject(&path, meta.name, e, fresh);
                continue;
            }
            let from_cache = matches!(cell.get(), Some(Ok(c)) if c.from_cache);
            let plugin = Arc::new(Plugin {
                hash: header.hash,
                name: meta.name,
                version: meta.version,
                path: path.clone(),
                size_bytes: header.size,
                from_cache,
                found_at: std::time::SystemTime::now(),
                world: header.world,
                compiled: Code(cell),
            });
            lock(&self.by_hash)
                .entry(header.hash)
                .or_insert(plugin.clone());
            scan.next.by_path.insert(path, plugin);
        }

        scan.names();
        scan.changes();
        let Scan {
            next,
            report,
            events,
            logged,
            ..
        } = scan;

        // Replaced versions stay pinnable while their file is there; cells live while a
        // file or a pinnable version has their hash.
        {
            let mut by_hash = lock(&self.by_hash);
            let active: HashSet<PluginHash> = next.by_path.values().map(|p| p.hash).collect();
            by_hash.retain(|h, p| active.contains(h) || present.contains(&p.path));
            live_hashes.extend(by_hash.keys().copied());
            lock(&self.cells).retain(|h, _| live_hashes.contains(h));
        }

        self.table.store(Arc::new(next));
        self.counters
            .rejections_logged
            .fetch_add(logged, Ordering::Relaxed);
        for ev in events {
            match &ev {
                RegistryEvent::Rejected { error, .. } => tracing::warn!(%error, "plugin rejected"),
                RegistryEvent::Loaded {
                    name,
                    version,
                    hash,
                    ..
                } => tracing::info!(%name, %version, %hash, "plugin loaded"),
                RegistryEvent::Retired { name, version, .. } => {
                    tracing::info!(%name, %version, "plugin retired")
                }
            }
            let _ = self.events.send(ev);
        }
        // Retired versions no longer hold their cache files (once calls in flight end):
        // bound the cache again now rather than at the next write.
        drop(old);
        if !report.retired.is_empty()
            && let (Some(dir), Some(max)) = (self.cache_dir.clone(), self.cache_max_bytes)
        {
            let _ = tokio::task::spawn_blocking(move || compile::bound_dir(&dir, max)).await;
        }
        Ok(report)
    }
}

/// One scan's table under construction.
struct Scan<'a> {
    old: &'a Table,
    next: Table,
    report: ScanReport,
    events: Vec<RegistryEvent>,
    logged: u64,
}

impl Scan<'_> {
    /// Carry a file over as it was (it is being written; its change event brings another
    /// scan).
    fn keep(&mut self, path: &Path) {
        if let Some(prev) = self.old.by_path.get(path) {
            self.next.by_path.insert(path.to_path_buf(), prev.clone());
        }
        if let Some(r) = self.old.rejected.get(path) {
            self.next.rejected.insert(path.to_path_buf(), r.clone());
        }
    }

    /// Refuse this content (the error names the file); the previous good version of the
    /// file keeps serving. Reported (and logged) only when the file was read again or the
    /// reason changed.
    fn reject(&mut self, path: &Path, name: String, error: SandboxError, fresh: bool) {
        if let Some(prev) = self.old.by_path.get(path) {
            self.next.by_path.insert(path.to_path_buf(), prev.clone());
        }
        let known = self
            .old
            .rejected
            .get(path)
            .is_some_and(|(_, e)| e.to_string() == error.to_string());
        if fresh || !known {
            self.report
                .rejected
                .push((path.to_path_buf(), error.clone()));
            self.events.push(RegistryEvent::Rejected {
                path: path.to_path_buf(),
                error: error.clone(),
            });
            self.logged += 1;
        }
        self.next.rejected.insert(path.to_path_buf(), (name, error));
    }

    /// Names: the first file (in path order) providing a name@version wins.
    fn names(&mut self) {
        let mut conflicts = Vec::new();
        for (path, p) in &self.next.by_path {
            let versions = self.next.by_name.entry(p.name.clone()).or_default();
            match versions.get(&VersionKey::new(&p.version)) {
                Some(existing) => conflicts.push((
                    path.clone(),
                    p.name.clone(),
                    SandboxError::load(format!(
                        "{}: {}@{} is already provided by {}",
                        path.display(),
                        p.name,
                        p.version,
                        existing.path.display()
                    )),
                    !self
                        .old
                        .by_path
                        .get(path)
                        .is_some_and(|o| Arc::ptr_eq(o, p)),
                )),
                None => {
                    versions.insert(VersionKey::new(&p.version), p.clone());
                }
            }
        }
        for (path, name, e, fresh) in conflicts {
            self.next.by_path.remove(&path);
            // Not `reject`: the loser must not stay active through its old version.
            let known = self
                .old
                .rejected
                .get(&path)
                .is_some_and(|(_, old)| old.to_string() == e.to_string());
            if fresh || !known {
                self.report.rejected.push((path.clone(), e.clone()));
                self.events.push(RegistryEvent::Rejected {
                    path: path.clone(),
                    error: e.clone(),
                });
                self.logged += 1;
            }
            self.next.rejected.insert(path, (name, e));
        }
    }

    /// Loaded and retired, against the table before.
    fn changes(&mut self) {
        for (path, p) in &self.next.by_path {
            if !self
                .old
                .by_path
                .get(path)
                .is_some_and(|o| Arc::ptr_eq(o, p))
            {
                self.report.loaded.push((path.clone(), p.hash));
                self.events.push(RegistryEvent::Loaded {
                    path: path.clone(),
                    name: p.name.clone(),
                    version: p.version.clone(),
                    hash: p.hash,
                });
            }
        }
        for (path, p) in &self.old.by_path {
            if !self.next.by_path.contains_key(path) {
                self.report.retired.push((path.clone(), p.hash));
                self.events.push(RegistryEvent::Retired {
                    path: path.clone(),
                    name: p.name.clone(),
                    version: p.version.clone(),
                    hash: p.hash,
                });
            }
        }
    }
}
