//! A hash's code: precompiled cache or compile, then `instantiate_pre` and the typed
//! export check. Blocking; the registry runs it on tokio's blocking pool, once per hash.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::OnceCell;
use wasmtime::component::{Component, Linker};

use super::Counters;
use super::cache;
use super::files::MAX_PLUGIN_BYTES;
use super::ids::{PluginHash, World};
use crate::attempt::AttemptState;
use crate::bindings::StepHandlerPre;
use crate::bindings::hook::EventHookPre;
use crate::bindings::policy::RetryPolicyPre;
use crate::engine::SandboxEngine;
use crate::error::SandboxError;

/// A component's pre-checked instance, by world.
pub(crate) enum Pre {
    StepHandler(StepHandlerPre<AttemptState>),
    EventHook(EventHookPre<AttemptState>),
    RetryPolicy(RetryPolicyPre<AttemptState>),
    /// Code not loaded yet (see [`Code`]).
    NotLoaded,
}

/// A compiled component, ready to instantiate.
pub(crate) struct Compiled {
    pub pre: Pre,
    pub from_cache: bool,
    /// The shared lock on this code's cache file: no process evicts it while this lives.
    pub(super) _pin: Option<cache::Pin>,
}

/// The outcome of loading a hash's code. Errors are the deterministic ones (not a
/// component, missing import, wrong exports): remembered, never retried for that hash.
pub(super) type Outcome = Result<Arc<Compiled>, SandboxError>;

/// Filled once per hash, by a cache load during a scan or by the first use; shared by
/// every plugin with that hash, so concurrent first uses wait for one compile.
pub(super) type Cell = OnceCell<Outcome>;

/// A plugin's code, loaded lazily.
pub(crate) struct Code(pub(super) Arc<Cell>);

impl Code {
    pub(super) fn outcome(&self) -> Option<&Outcome> {
        self.0.get()
    }
}

impl Deref for Code {
    type Target = Compiled;
    /// `Sandbox` loads a plugin before running it; code that is not loaded reads as
    /// `Pre::NotLoaded`, which an attempt refuses, so a misuse is an error, not a panic.
    fn deref(&self) -> &Compiled {
        static NOT_LOADED: Compiled = Compiled {
            pre: Pre::NotLoaded,
            from_cache: false,
            _pin: None,
        };
        match self.0.get() {
            Some(Ok(c)) => c,
            _ => &NOT_LOADED,
        }
    }
}

pub(super) enum Attempt {
    /// The outcome for this hash, to remember.
    Done(Result<Compiled, SandboxError>),
    /// Cache only, and no usable cache file.
    NotCached,
    /// The bytes are not at hand now (file replaced or removed since the scan): not
    /// remembered, a later attempt may succeed.
    Unavailable(SandboxError),
}

/// What to read if the cache misses: `None` means cache only.
pub(super) struct Job<'a> {
    pub engine: &'a SandboxEngine,
    pub linker: &'a Linker<AttemptState>,
    pub hash: PluginHash,
    pub world: World,
    pub cache: Option<&'a Path>,
    /// The cache's bound in bytes, enforced after each write.
    pub cache_max_bytes: Option<u64>,
    pub source: Option<&'a Path>,
    pub counters: &'a Counters,
}

/// Blocking: cache lookup, else (if there is a source) compile and write the cache; then
/// `instantiate_pre` and the typed export check for the world the scan found.
pub(super) fn load(job: Job<'_>) -> Attempt {
    let started = Instant::now();
    let engine = job.engine.engine();
    let mut from_cache = false;
    let mut component = None;
    let mut pin = None;
    if let Some(path) = job.cache
        && let Some((locked, mapped)) = cache::pin(path)
    {
        // SAFETY: the cache directory is written only by this host (see docs/sandbox.md);
        // its files are keyed by content hash and engine compatibility hash, written by
        // rename and never changed in place, and `mapped` is the file we hold locked.
        match unsafe { Component::deserialize_file(engine, &mapped) } {
            Ok(c) => {
                component = Some(c);
                from_cache = true;
                pin = Some(locked);
                cache::touch(path);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "discarding unusable precompiled file");
                drop(locked);
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let component = match (component, job.source) {
        (Some(c), _) => c,
        (None, None) => return Attempt::NotCached,
        (None, Some(source)) => {
            let bytes = match read_source(source, job.hash) {
                Ok(b) => b,
                Err(e) => return Attempt::Unavailable(e),
            };
            job.counters.compiles.fetch_add(1, Ordering::Relaxed);
            let c = match Component::new(engine, &bytes) {
                Ok(c) => c,
                Err(e) => {
                    return Attempt::Done(Err(SandboxError::load(format!(
                        "not a valid WebAssembly component: {e:#}"
                    ))));
                }
            };
            if let Some(path) = job.cache {
                match write_cache(&c, path) {
                    Ok(()) => {
                        pin = cache::pin(path).map(|(p, _)| p);
                        if let Some(max) = job.cache_max_bytes {
                            bound(path, max);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot write precompiled cache")
                    }
                }
            }
            c
        }
    };
    let res = check(job.linker, &component, job.world).map(|pre| Compiled {
        pre,
        from_cache,
        _pin: pin,
    });
    if from_cache && res.is_ok() {
        job.counters.cache_loads.fetch_add(1, Ordering::Relaxed);
    }
    if res.is_ok() {
        let source = if from_cache { "cache" } else { "compiled" };
        metrics::histogram!(tasker_core::metrics::PLUGIN_COMPILE, "source" => source)
            .record(started.elapsed().as_secs_f64());
    }
    tracing::debug!(
        hash = %job.hash,
        from_cache,
        ok = res.is_ok(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "component loaded"
    );
    Attempt::Done(res)
}

/// Evict least recently used cache files (never one in use) until the directory of `written`
/// is within `max` bytes.
pub(super) fn bound(written: &Path, max: u64) {
    if let Some(dir) = written.parent() {
        bound_dir(dir, max);
    }
}

/// Evict least recently used cache files of `dir` (never one in use) down to `max` bytes.
pub(super) fn bound_dir(dir: &Path, max: u64) {
    match cache::evict(dir, max) {
        Ok(r) => {
            if !r.removed.is_empty() {
                tracing::debug!(
                    files = r.removed.len(),
                    bytes = r.removed_bytes(),
                    "evicted precompiled files"
                );
            }
            if r.remaining_bytes() > max {
                tracing::warn!(
                    dir = %dir.display(),
                    bytes = r.remaining_bytes(),
                    max,
                    in_use = r.in_use.len(),
                    "precompiled cache above its bound: the files left are in use"
                );
            }
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot bound the precompiled cache")
        }
    }
}

/// The file's bytes, if they still hash to what the scan saw.
fn read_source(path: &Path, hash: PluginHash) -> Result<Vec<u8>, SandboxError> {
    let changed = || {
        SandboxError::load(format!(
            "{}: no longer holds blake3:{hash} (replaced or removed before its first use, and not in the precompiled cache)",
            path.display()
        ))
    };
    let len = std::fs::metadata(path).map_err(|_| changed())?.len();
    if len > MAX_PLUGIN_BYTES {
        return Err(changed());
    }
    let bytes = std::fs::read(path).map_err(|_| changed())?;
    if PluginHash::of(&bytes) != hash {
        return Err(changed());
    }
    Ok(bytes)
}

pub(super) fn check(
    linker: &Linker<AttemptState>,
    component: &Component,
    world: World,
) -> Result<Pre, SandboxError> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| SandboxError::Incompatible {
            message: format!("needs an import the host does not provide: {e:#}"),
        })?;
    let typed = match world {
        World::StepHandler => StepHandlerPre::new(pre).map(Pre::StepHandler),
        World::EventHook => EventHookPre::new(pre).map(Pre::EventHook),
        World::RetryPolicy => RetryPolicyPre::new(pre).map(Pre::RetryPolicy),
    };
    typed.map_err(|e| SandboxError::Incompatible {
        message: format!(
            "does not export tasker:plugin/{world}@0.1.1 as this host defines it (0.1.0 components also load): {e:#}"
        ),
    })
}

/// Write to a temporary name and rename, so a reader never sees half a file.
pub(super) fn write_cache(c: &Component, path: &Path) -> std::io::Result<()> {
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
