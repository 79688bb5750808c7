//! Plugin registry: a directory of `*.wasm` components, each identified by the blake3 hash
//! of its bytes, compiled once (with an on-disk precompiled cache), checked against the
//! host with `instantiate_pre` at load, and hot-reloaded.
//!
//! Naming: a file `<name>@<version>.wasm` provides `name@version`; `<name>.wasm` provides
//! `name@0.0.0`. An optional sidecar `<stem>.plugin.json` (`{"name": "...", "version":
//! "..."}`) overrides both. Two files providing the same `name@version` is an error for
//! the later one (in path order).
//!
//! Reload: the active table is one `ArcSwap`. An attempt resolves its plugin once, so
//! calls in flight finish on the version they started with; the next call sees the new
//! table. A file whose new content fails to load is reported and its previous version
//! stays active. A removed file retires its names and hash. Versions replaced in place
//! stay resolvable by hash (so a retry pinned to a hash runs the same code) until their
//! file is removed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, broadcast};
use wasmtime::component::{Component, Linker};

use crate::attempt::AttemptState;
use crate::bindings::StepHandlerPre;
use crate::bindings::hook::EventHookPre;
use crate::bindings::policy::RetryPolicyPre;
use crate::engine::SandboxEngine;
use crate::error::SandboxError;

/// blake3 of a component's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginHash(pub [u8; 32]);

impl PluginHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Display for PluginHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PluginHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginHash({})", &self.to_hex()[..16])
    }
}

impl FromStr for PluginHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hex = s.strip_prefix("blake3:").unwrap_or(s);
        blake3::Hash::from_hex(hex)
            .map(|h| Self(*h.as_bytes()))
            .map_err(|e| format!("{s:?} is not a blake3 hash (64 hex digits): {e}"))
    }
}

impl Serialize for PluginHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PluginHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which plugin an attempt runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginRef {
    /// By name; `version: None` means the highest version loaded.
    Name {
        name: String,
        version: Option<String>,
    },
    /// Exactly this code (a retry or an audit).
    Hash(PluginHash),
}

impl FromStr for PluginRef {
    type Err = String;
    /// `name`, `name@version`, or `blake3:<hex>`.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(h) = s.strip_prefix("blake3:") {
            return Ok(Self::Hash(h.parse()?));
        }
        match s.split_once('@') {
            Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok(Self::Name {
                name: n.into(),
                version: Some(v.into()),
            }),
            None if !s.is_empty() => Ok(Self::Name {
                name: s.into(),
                version: None,
            }),
            _ => Err(format!(
                "{s:?} is not a plugin reference (name, name@version or blake3:<hex>)"
            )),
        }
    }
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name {
                name,
                version: Some(v),
            } => write!(f, "{name}@{v}"),
            Self::Name {
                name,
                version: None,
            } => f.write_str(name),
            Self::Hash(h) => write!(f, "blake3:{h}"),
        }
    }
}

/// Which `tasker:plugin` world a component exports (checked once, at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    StepHandler,
    EventHook,
    RetryPolicy,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::StepHandler => "step-handler",
            World::EventHook => "event-hook",
            World::RetryPolicy => "retry-policy",
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A component's pre-checked instance, by world.
pub(crate) enum Pre {
    StepHandler(StepHandlerPre<AttemptState>),
    EventHook(EventHookPre<AttemptState>),
    RetryPolicy(RetryPolicyPre<AttemptState>),
}

/// A compiled component, ready to instantiate.
pub(crate) struct Compiled {
    pub pre: Pre,
    pub from_cache: bool,
}

impl Compiled {
    pub(crate) fn world(&self) -> World {
        match self.pre {
            Pre::StepHandler(_) => World::StepHandler,
            Pre::EventHook(_) => World::EventHook,
            Pre::RetryPolicy(_) => World::RetryPolicy,
        }
    }
}

/// A loaded plugin: identity plus compiled code.
pub struct Plugin {
    pub hash: PluginHash,
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub size_bytes: u64,
    /// Whether the code came from the precompiled cache rather than a compile.
    pub from_cache: bool,
    pub(crate) compiled: Arc<Compiled>,
}

impl Plugin {
    /// The world this component exports.
    pub fn world(&self) -> World {
        self.compiled.world()
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
    /// The file could not be used; any previous version of it stays active.
    Rejected { path: PathBuf, error: SandboxError },
    Retired {
        path: PathBuf,
        name: String,
        version: String,
        hash: PluginHash,
    },
}

/// The outcome of one scan of the plugin directory.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub loaded: Vec<(PathBuf, PluginHash)>,
    pub rejected: Vec<(PathBuf, SandboxError)>,
    pub retired: Vec<(PathBuf, PluginHash)>,
}

/// Counters, for tests and `tasker plugins inspect`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    pub compiles: u64,
    pub cache_loads: u64,
}

#[derive(Default, Clone)]
struct Table {
    by_path: BTreeMap<PathBuf, Arc<Plugin>>,
    by_name: HashMap<String, BTreeMap<VersionKey, Arc<Plugin>>>,
    /// Last load failure per file, with the name the file claims.
    rejected: BTreeMap<PathBuf, (String, SandboxError)>,
}

/// Orders versions numerically where they are dotted numbers, textually otherwise.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct VersionKey(Vec<Result<u64, String>>, String);

impl VersionKey {
    fn new(v: &str) -> Self {
        Self(
            v.split(['.', '-', '+'])
                .map(|p| p.parse::<u64>().map_err(|_| p.to_string()))
                .collect(),
            v.to_string(),
        )
    }
}

type CompileCell = Arc<OnceCell<Result<Arc<Compiled>, SandboxError>>>;

pub struct Registry {
    engine: Arc<SandboxEngine>,
    linker: Arc<Linker<AttemptState>>,
    dir: PathBuf,
    cache_dir: Option<PathBuf>,
    table: ArcSwap<Table>,
    /// Every version loaded by this process, for pinned-hash attempts.
    by_hash: Mutex<HashMap<PluginHash, Arc<Plugin>>>,
    /// One cell per hash: concurrent first loads of one hash compile once.
    compiling: Mutex<HashMap<PluginHash, CompileCell>>,
    scan_lock: tokio::sync::Mutex<()>,
    events: broadcast::Sender<RegistryEvent>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    compiles: AtomicU64,
    cache_loads: AtomicU64,
}

impl Registry {
    pub(crate) fn new(
        engine: Arc<SandboxEngine>,
        linker: Arc<Linker<AttemptState>>,
        dir: PathBuf,
        cache_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            engine,
            linker,
            dir,
            cache_dir,
            table: ArcSwap::from_pointee(Table::default()),
            by_hash: Mutex::default(),
            compiling: Mutex::default(),
            scan_lock: tokio::sync::Mutex::new(()),
            events: broadcast::channel(1024).0,
            watcher: Mutex::new(None),
            compiles: AtomicU64::new(0),
            cache_loads: AtomicU64::new(0),
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
        RegistryStats {
            compiles: self.compiles.load(Ordering::Relaxed),
            cache_loads: self.cache_loads.load(Ordering::Relaxed),
        }
    }

    /// Active plugins, by file.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.table.load().by_path.values().cloned().collect()
    }

    /// Files whose latest content was refused, and why.
    pub fn rejected(&self) -> Vec<(PathBuf, SandboxError)> {
        self.table
            .load()
            .rejected
            .iter()
            .map(|(p, (_, e))| (p.clone(), e.clone()))
            .collect()
    }

    /// Find the plugin for an attempt. Resolve once per attempt: the returned `Arc` keeps
    /// that version alive for the whole call even if the file is replaced meanwhile.
    pub fn resolve(&self, r: &PluginRef) -> Result<Arc<Plugin>, SandboxError> {
        match r {
            PluginRef::Hash(h) => {
                self.by_hash.lock().unwrap_or_else(|e| e.into_inner()).get(h).cloned().ok_or_else(|| {
                    SandboxError::load(format!(
                        "no plugin with hash {h} is loaded (never loaded here, or its file was removed)"
                    ))
                })
            }
            PluginRef::Name { name, version } => {
                let table = self.table.load();
                let found = table.by_name.get(name).and_then(|versions| match version {
                    Some(v) => versions.get(&VersionKey::new(v)).cloned(),
                    None => versions.values().next_back().cloned(),
                });
                if let Some(p) = found {
                    return Ok(p);
                }
                // Nothing active: say why, with the load error if the file was refused.
                if let Some((path, (_, err))) = table.rejected.iter().find(|(_, (n, _))| n == name) {
                    return Err(match err {
                        SandboxError::Incompatible { message } => SandboxError::Incompatible {
                            message: format!("{r} ({}): {message}", path.display()),
                        },
                        other => SandboxError::load(format!("{r} ({}): {other}", path.display())),
                    });
                }
                let known: Vec<String> = table
                    .by_name
                    .get(name)
                    .map(|vs| vs.values().map(|p| p.version.clone()).collect())
                    .unwrap_or_default();
                Err(SandboxError::load(if known.is_empty() {
                    format!("no plugin named {name:?} in {}", self.dir.display())
                } else {
                    format!("plugin {r} not found in {}; loaded versions: {}", self.dir.display(), known.join(", "))
                }))
            }
        }
    }

    /// Scan the directory now: load new and changed files, retire removed ones.
    pub async fn rescan(self: &Arc<Self>) -> Result<ScanReport, SandboxError> {
        let _guard = self.scan_lock.lock().await;
        let dir = self.dir.clone();
        let files = tokio::task::spawn_blocking(move || read_plugin_files(&dir))
            .await
            .map_err(|e| SandboxError::internal(format!("scan task failed: {e}")))??;

        let old = self.table.load_full();
        let mut next = Table::default();
        let mut report = ScanReport::default();
        let mut events = Vec::new();

        // Compile new and changed files concurrently (off the runtime, once per hash).
        let mut pending = Vec::new();
        for file in files {
            let meta = match &file.meta {
                Ok(m) => m.clone(),
                Err(e) => {
                    self.reject(
                        &old,
                        &mut next,
                        &mut report,
                        &mut events,
                        &file.path,
                        file.stem_name(),
                        e.clone(),
                    );
                    continue;
                }
            };
            if let Some(p) = old.by_path.get(&file.path)
                && p.hash == file.hash
                && p.name == meta.name
                && p.version == meta.version
            {
                next.by_path.insert(file.path.clone(), p.clone());
                continue;
            }
            let reg = self.clone();
            let (hash, bytes) = (file.hash, file.bytes.clone());
            let task = tokio::spawn(async move { reg.load_compiled(hash, bytes).await });
            pending.push((file, meta, task));
        }
        for (file, meta, task) in pending {
            let res = task
                .await
                .unwrap_or_else(|e| Err(SandboxError::internal(format!("load task failed: {e}"))));
            match res {
                Ok(compiled) => {
                    let plugin = Arc::new(Plugin {
                        hash: file.hash,
                        name: meta.name.clone(),
                        version: meta.version.clone(),
                        path: file.path.clone(),
                        size_bytes: file.bytes.len() as u64,
                        from_cache: compiled.from_cache,
                        compiled,
                    });
                    self.by_hash
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(file.hash)
                        .or_insert(plugin.clone());
                    report.loaded.push((file.path.clone(), file.hash));
                    events.push(RegistryEvent::Loaded {
                        path: file.path.clone(),
                        name: meta.name,
                        version: meta.version,
                        hash: file.hash,
                    });
                    next.by_path.insert(file.path.clone(), plugin);
                }
                Err(e) => {
                    let e = match e {
                        SandboxError::Load { message } => {
                            SandboxError::load(format!("{}: {message}", file.path.display()))
                        }
                        SandboxError::Incompatible { message } => SandboxError::Incompatible {
                            message: format!("{}: {message}", file.path.display()),
                        },
                        other => other,
                    };
                    self.reject(
                        &old,
                        &mut next,
                        &mut report,
                        &mut events,
                        &file.path,
                        meta.name,
                        e,
                    );
                }
            }
        }

        // Removed files retire their names and hashes.
        let mut by_hash = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        for (path, p) in &old.by_path {
            if !next.by_path.contains_key(path) {
                report.retired.push((path.clone(), p.hash));
                events.push(RegistryEvent::Retired {
                    path: path.clone(),
                    name: p.name.clone(),
                    version: p.version.clone(),
                    hash: p.hash,
                });
            }
        }
        let live: std::collections::HashSet<PluginHash> =
            next.by_path.values().map(|p| p.hash).collect();
        for (_, hash) in &report.retired {
            if !live.contains(hash) {
                by_hash.remove(hash);
            }
        }
        drop(by_hash);

        // Names: the first file (in path order) providing a name@version wins.
        let mut conflicts = Vec::new();
        for (path, p) in &next.by_path {
            let versions = next.by_name.entry(p.name.clone()).or_default();
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
                )),
                None => {
                    versions.insert(VersionKey::new(&p.version), p.clone());
                }
            }
        }
        for (path, name, e) in conflicts {
            next.by_path.remove(&path);
            next.rejected.insert(path.clone(), (name, e.clone()));
            report.rejected.push((path.clone(), e.clone()));
            events.push(RegistryEvent::Rejected { path, error: e });
        }

        self.table.store(Arc::new(next));
        for ev in events {
            match &ev {
                RegistryEvent::Rejected { error, .. } => tracing::warn!(%error, "plugin rejected"),
                RegistryEvent::Loaded {
                    name,
                    version,
                    hash,
                    ..
                } => {
                    tracing::info!(%name, %version, %hash, "plugin loaded")
                }
                RegistryEvent::Retired { name, version, .. } => {
                    tracing::info!(%name, %version, "plugin retired")
                }
            }
            let _ = self.events.send(ev);
        }
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    fn reject(
        &self,
        old: &Table,
        next: &mut Table,
        report: &mut ScanReport,
        events: &mut Vec<RegistryEvent>,
        path: &Path,
        name: String,
        error: SandboxError,
    ) {
        // Keep the previous good version of this file serving.
        if let Some(prev) = old.by_path.get(path) {
            next.by_path.insert(path.to_path_buf(), prev.clone());
        }
        next.rejected
            .insert(path.to_path_buf(), (name, error.clone()));
        report.rejected.push((path.to_path_buf(), error.clone()));
        events.push(RegistryEvent::Rejected {
            path: path.to_path_buf(),
            error,
        });
    }

    /// Compile (or load from cache) and pre-instantiate, once per hash.
    async fn load_compiled(
        &self,
        hash: PluginHash,
        bytes: Arc<Vec<u8>>,
    ) -> Result<Arc<Compiled>, SandboxError> {
        let cell = self
            .compiling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(hash)
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let engine = self.engine.clone();
            let linker = self.linker.clone();
            let cache = self
                .cache_dir
                .as_ref()
                .map(|d| d.join(format!("{hash}-{}.cwasm", engine.compat_key())));
            let res = tokio::task::spawn_blocking(move || {
                compile(&engine, &linker, &bytes, cache.as_deref())
            })
            .await
            .map_err(|e| SandboxError::internal(format!("compile task failed: {e}")))
            .and_then(|r| r);
            match &res {
                Ok(c) if c.from_cache => self.cache_loads.fetch_add(1, Ordering::Relaxed),
                Ok(_) => self.compiles.fetch_add(1, Ordering::Relaxed),
                Err(_) => 0,
            };
            res.map(Arc::new)
        })
        .await
        .clone()
    }

    /// Watch the directory and rescan on changes (debounced). Needs a tokio runtime; the
    /// watch lives as long as the registry.
    pub fn watch(self: &Arc<Self>) -> Result<(), SandboxError> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                let _ = tx.send(());
            }
        })
        .map_err(|e| SandboxError::internal(format!("cannot watch {}: {e}", self.dir.display())))?;
        watcher
            .watch(&self.dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| {
                SandboxError::internal(format!("cannot watch {}: {e}", self.dir.display()))
            })?;
        *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);

        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Let a burst of writes (copy, then sidecar) settle into one scan.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
                let Some(reg) = weak.upgrade() else { break };
                if let Err(e) = reg.rescan().await {
                    tracing::warn!(error = %e, "plugin rescan failed");
                }
            }
        });
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Meta {
    name: String,
    version: String,
}

struct PluginFile {
    path: PathBuf,
    bytes: Arc<Vec<u8>>,
    hash: PluginHash,
    meta: Result<Meta, SandboxError>,
}

impl PluginFile {
    fn stem_name(&self) -> String {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        stem.split('@').next().unwrap_or_default().to_string()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    name: String,
    version: String,
}

fn read_plugin_files(dir: &Path) -> Result<Vec<PluginFile>, SandboxError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        SandboxError::load(format!(
            "cannot read plugin directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        // A file removed between listing and reading is simply gone.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let hash = PluginHash::of(&bytes);
        let meta = read_meta(&path);
        out.push(PluginFile {
            path,
            bytes: Arc::new(bytes),
            hash,
            meta,
        });
    }
    Ok(out)
}

fn read_meta(path: &Path) -> Result<Meta, SandboxError> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sidecar = path.with_file_name(format!("{stem}.plugin.json"));
    if let Ok(text) = std::fs::read_to_string(&sidecar) {
        let s: Sidecar = serde_json::from_str(&text).map_err(|e| {
            SandboxError::load(format!("{}: invalid manifest: {e}", sidecar.display()))
        })?;
        if s.name.is_empty() || s.version.is_empty() || s.name.contains('@') {
            return Err(SandboxError::load(format!(
                "{}: name and version must be non-empty and the name must not contain '@'",
                sidecar.display()
            )));
        }
        return Ok(Meta {
            name: s.name,
            version: s.version,
        });
    }
    match stem.split_once('@') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok(Meta {
            name: n.into(),
            version: v.into(),
        }),
        Some(_) => Err(SandboxError::load(format!(
            "{}: file name must be <name>@<version>.wasm",
            path.display()
        ))),
        None => Ok(Meta {
            name: stem,
            version: "0.0.0".into(),
        }),
    }
}

/// Blocking: cache lookup, else compile and write the cache; then `instantiate_pre` and
/// the typed export check.
fn compile(
    engine: &SandboxEngine,
    linker: &Linker<AttemptState>,
    bytes: &[u8],
    cache: Option<&Path>,
) -> Result<Compiled, SandboxError> {
    let started = Instant::now();
    let mut from_cache = false;
    let mut component = None;
    if let Some(path) = cache
        && path.exists()
    {
        // SAFETY: the cache directory is written only by this host (see docs/sandbox.md);
        // its files are keyed by content hash and engine compatibility hash.
        match unsafe { Component::deserialize_file(engine.engine(), path) } {
            Ok(c) => {
                component = Some(c);
                from_cache = true;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "discarding unusable precompiled file");
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let component = match component {
        Some(c) => c,
        None => {
            let c = Component::new(engine.engine(), bytes).map_err(|e| {
                SandboxError::load(format!("not a valid WebAssembly component: {e:#}"))
            })?;
            if let Some(path) = cache
                && let Err(e) = write_cache(&c, path)
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot write precompiled cache");
            }
            c
        }
    };
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| SandboxError::Incompatible {
            message: format!("needs an import the host does not provide: {e:#}"),
        })?;
    // The typed export check decides the world: a component exports exactly one of them.
    let pre = match StepHandlerPre::new(pre.clone()) {
        Ok(p) => Pre::StepHandler(p),
        Err(step_err) => match EventHookPre::new(pre.clone()) {
            Ok(p) => Pre::EventHook(p),
            Err(_) => match RetryPolicyPre::new(pre) {
                Ok(p) => Pre::RetryPolicy(p),
                Err(_) => {
                    return Err(SandboxError::Incompatible {
                        message: format!(
                            "does not export tasker:plugin/step-handler@0.1.0 (nor event-hook or retry-policy): {step_err:#}"
                        ),
                    });
                }
            },
        },
    };
    tracing::debug!(
        from_cache,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "component ready"
    );
    Ok(Compiled { pre, from_cache })
}

/// Write to a temporary name and rename, so a reader never sees half a file.
fn write_cache(c: &Component, path: &Path) -> std::io::Result<()> {
    let bytes = c
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!(
        "tmp{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_refs_parse() {
        assert_eq!(
            "echo".parse::<PluginRef>().unwrap(),
            PluginRef::Name {
                name: "echo".into(),
                version: None
            }
        );
        assert_eq!(
            "echo@1.2.0".parse::<PluginRef>().unwrap(),
            PluginRef::Name {
                name: "echo".into(),
                version: Some("1.2.0".into())
            }
        );
        let h = PluginHash::of(b"x");
        assert_eq!(
            format!("blake3:{h}").parse::<PluginRef>().unwrap(),
            PluginRef::Hash(h)
        );
        assert_eq!(
            PluginRef::Hash(h).to_string().parse::<PluginRef>().unwrap(),
            PluginRef::Hash(h)
        );
        assert!("blake3:zz".parse::<PluginRef>().is_err());
        assert!("@1".parse::<PluginRef>().is_err());
        assert!("".parse::<PluginRef>().is_err());
    }

    #[test]
    fn versions_order_numerically() {
        let mut v = ["1.10.0", "1.2.0", "1.9.9", "0.0.0"]
            .map(VersionKey::new)
            .to_vec();
        v.sort();
        let names: Vec<_> = v.iter().map(|k| k.1.as_str()).collect();
        assert_eq!(names, ["0.0.0", "1.2.0", "1.9.9", "1.10.0"]);
    }

    #[test]
    fn file_names_give_name_and_version() {
        let dir = std::env::temp_dir().join(format!("tasker-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = read_meta(&dir.join("tool@2.1.0.wasm")).unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str()), ("tool", "2.1.0"));
        let m = read_meta(&dir.join("tool.wasm")).unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str()), ("tool", "0.0.0"));
        assert_eq!(
            read_meta(&dir.join("tool@.wasm")).unwrap_err().kind(),
            "load"
        );
        std::fs::write(
            dir.join("x.plugin.json"),
            r#"{"name": "real", "version": "3.0.0"}"#,
        )
        .unwrap();
        let m = read_meta(&dir.join("x.wasm")).unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str()), ("real", "3.0.0"));
        std::fs::write(dir.join("y.plugin.json"), r#"{"name": "real"}"#).unwrap();
        let e = read_meta(&dir.join("y.wasm")).unwrap_err();
        assert!(e.to_string().contains("y.plugin.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
