//! Tasker's sandboxed step runtime.
//!
//! [`Sandbox::run`] runs one attempt of a step handler (a `tasker:plugin/step-handler`
//! component) in a fresh store with the attempt's [`AttemptLimits`] and [`AttemptGrants`], and returns
//! its JSON output or a typed [`SandboxError`], both with an [`AttemptReport`] (accounting,
//! logs, events, captured stdio). Plugins come from a directory watched by the
//! [`Registry`]. See `docs/sandbox.md`.

mod attempt;
mod bindings;
mod bounds;
mod caps;
mod components;
mod engine;
mod error;
mod fs_guard;
mod fs_streams;
mod guard;
mod host;
mod http;
mod limits;
mod net_guard;
mod redact;
mod registry;
mod stdio;
mod worlds;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};

pub use attempt::{
    AttemptFailure, AttemptOutput, AttemptReport, AttemptRequest, Dropped, PluginId, StepContext,
    Usage,
};
pub use caps::{AttemptGrants, Denial, HostDir};
pub use components::{MissingComponent, MissingComponents, check_components};
pub use engine::{AllocatorChoice, AllocatorInUse, EngineConfig, SandboxEngine};
pub use error::SandboxError;
pub use host::{EmittedEvent, LogRecord};
pub use http::{HttpConfig, HttpRecord};
pub use limits::{AttemptLimits, ENTRY_COST, MAX_OUTPUT_DEPTH, ResolvedLimits};
pub use registry::{CacheEntry, CacheReport, cache_bytes, cache_gc, evict, parse_size};
pub use registry::{
    Plugin, PluginHash, PluginRef, Registry, RegistryEvent, RegistryStats, ScanReport, UploadError,
    World,
};
pub use tasker_core::http_grant::HttpRule;
pub use worlds::{HookEvent, HookRequest, PolicyDecision, PolicyInput, PolicyRequest};

/// Host-wide sandbox settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Directory of `*.wasm` plugins.
    pub plugin_dir: PathBuf,
    /// Precompiled cache; `None` compiles every load.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Bound on the precompiled cache's `*.cwasm` bytes: least recently used files no
    /// process holds are evicted after each write (`None`: unbounded).
    #[serde(default)]
    pub cache_max_bytes: Option<u64>,
    /// Hot-reload the plugin directory (needs a tokio runtime when created).
    #[serde(default)]
    pub watch: bool,
    #[serde(default)]
    pub engine: EngineConfig,
    /// Defaults for limits an attempt leaves unset.
    #[serde(default)]
    pub defaults: ResolvedLimits,
    /// Outbound HTTP: trusted roots for guests' HTTPS.
    #[serde(default)]
    pub http: HttpConfig,
    /// What relative host paths of directory grants are relative to (templates keep them
    /// as written, so a template's identity does not depend on where its file was); `None`:
    /// the working directory when the sandbox starts.
    #[serde(default)]
    pub grants_base: Option<PathBuf>,
}

impl SandboxConfig {
    pub fn new(plugin_dir: impl Into<PathBuf>) -> Self {
        Self {
            plugin_dir: plugin_dir.into(),
            cache_dir: None,
            cache_max_bytes: None,
            watch: false,
            engine: EngineConfig::default(),
            defaults: ResolvedLimits::default(),
            http: HttpConfig::default(),
            grants_base: None,
        }
    }
}

/// The sandbox. Cheap to clone; `run` is `Send` and may be called concurrently.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<SandboxEngine>,
    registry: Arc<Registry>,
    defaults: ResolvedLimits,
    slots: Semaphore,
    tls: Arc<http::TlsRoots>,
    grants_base: PathBuf,
}

impl Sandbox {
    /// Build the engine, scan the plugin directory once and, if configured, watch it.
    /// Nothing is compiled here: plugins compile on first use unless the precompiled cache
    /// has them. Files refused by the scan are listed in the returned report, not fatal.
    pub async fn new(config: SandboxConfig) -> Result<(Self, ScanReport), SandboxError> {
        let engine = SandboxEngine::new(config.engine.clone())?;
        config.defaults.validate()?;
        let mut linker = Linker::new(engine.engine());
        guard::add_to_linker(&mut linker)
            .map_err(|e| SandboxError::internal(format!("cannot link WASI: {e:#}")))?;
        let tls = Arc::new(http::TlsRoots::new(&config.http)?);
        bindings::tasker::plugin::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .and_then(|()| {
                bindings::tasker::plugin::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            })
            .and_then(|()| http::add_to_linker(&mut linker))
            .map_err(|e| {
                SandboxError::internal(format!("cannot link the host interfaces: {e:#}"))
            })?;
        let registry = Arc::new(Registry::new(
            engine.clone(),
            Arc::new(linker),
            config.plugin_dir,
            config.cache_dir,
            config.cache_max_bytes,
        ));
        let report = registry.first_scan().await?;
        if config.watch {
            registry.watch()?;
        }
        // Fixed at start: a later change of the working directory moves no grant.
        let grants_base = match config.grants_base {
            Some(b) if b.is_absolute() => b,
            b => {
                let cwd = std::env::current_dir().map_err(|e| {
                    SandboxError::internal(format!("cannot read the working directory: {e}"))
                })?;
                b.map_or_else(|| cwd.clone(), |b| cwd.join(b))
            }
        };
        let slots = Semaphore::new(config.engine.max_concurrent_attempts.max(1) as usize);
        Ok((
            Self {
                inner: Arc::new(Inner {
                    engine,
                    registry,
                    defaults: config.defaults,
                    slots,
                    tls,
                    grants_base,
                }),
            },
            report,
        ))
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The directory relative host paths of directory grants are resolved against.
    pub fn grants_base(&self) -> &std::path::Path {
        &self.inner.grants_base
    }

    pub fn engine(&self) -> &Arc<SandboxEngine> {
        &self.inner.engine
    }

    /// The limits an attempt with `limits` would run under.
    pub fn resolve_limits(&self, limits: &AttemptLimits) -> ResolvedLimits {
        limits.resolve(
            &self.inner.defaults,
            self.inner.engine.config().max_memory_bytes,
        )
    }

    /// Run one attempt. Never panics on guest behaviour; every failure is typed.
    pub async fn run(&self, req: AttemptRequest) -> Result<AttemptOutput, AttemptFailure> {
        let call = attempt::Call::Handle(attempt::to_wit(&req.ctx));
        self.run_call(&req.plugin, &req.limits, &req.grants, call)
            .await
    }

    /// Deliver one event to an `event-hook` component, sandboxed like a step attempt
    /// (fresh store, its own limits and grants). The hook's own `Err` is a retryable
    /// `handler_error`; a component of another world is `incompatible`.
    pub async fn run_hook(&self, req: HookRequest) -> Result<AttemptReport, AttemptFailure> {
        let call = attempt::Call::OnEvent(req.event.to_wit());
        self.run_call(&req.plugin, &req.limits, &req.grants, call)
            .await
            .map(|o| o.report)
    }

    /// Ask a `retry-policy` component for a decision, sandboxed like a step attempt.
    pub async fn run_policy(
        &self,
        req: PolicyRequest,
    ) -> Result<(PolicyDecision, AttemptReport), AttemptFailure> {
        let call = attempt::Call::Decide(req.failure.to_wit());
        let out = self
            .run_call(&req.plugin, &req.limits, &req.grants, call)
            .await?;
        match PolicyDecision::from_json(&out.output) {
            Some(d) => Ok((d, out.report)),
            None => Err(AttemptFailure {
                error: SandboxError::BadOutput {
                    reason: format!("not a decision: {}", out.output),
                },
                report: out.report,
            }),
        }
    }

    async fn run_call(
        &self,
        plugin: &PluginRef,
        limits: &AttemptLimits,
        grants: &AttemptGrants,
        call: attempt::Call,
    ) -> Result<AttemptOutput, AttemptFailure> {
        let limits = self.resolve_limits(limits);
        let queued = Instant::now();
        let _slot = self
            .inner
            .slots
            .acquire()
            .await
            .expect("semaphore is never closed");
        // Waiting for a slot, not the first use's compile below.
        let queue_wait = queued.elapsed();
        // Resolve once the attempt has a slot: a queued attempt runs the newest version,
        // a started one keeps the version it resolved. The first use compiles.
        let plugin = match self.inner.registry.load(plugin).await {
            Ok(p) => p,
            Err(error) => {
                let report = AttemptReport {
                    accounting: Usage {
                        fuel_budget: limits.fuel,
                        limits: Some(limits),
                        ..Usage::default()
                    },
                    ..AttemptReport::default()
                };
                return Err(AttemptFailure { error, report });
            }
        };
        attempt::run_call(
            self.inner.engine.engine(),
            &plugin,
            call,
            grants,
            limits,
            queue_wait,
            &self.inner.tls,
        )
        .await
    }
}
