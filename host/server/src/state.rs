//! What every request handler shares. Nothing here is per-instance state a client depends
//! on: several servers on one database answer alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use tasker_core::clock::{Clock, SystemClock};
use tasker_core::template::Template;
use tasker_engine::EventBus;
use tasker_sandbox::Sandbox;
use tasker_store::{AnyStore, Store, StoreError};
use tokio::sync::watch;

/// Templates a server keeps in memory at most.
const MAX_CACHED_TEMPLATES: usize = 1024;

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `Authorization: Bearer <token>` on every route but the public ones.
    Tokens,
    /// Everything is allowed (a development server on loopback, or `--insecure-no-auth`).
    Disabled,
}

/// Settings of one server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub auth: AuthMode,
    /// Largest JSON or YAML body accepted.
    pub max_body_bytes: usize,
    /// Largest plugin upload accepted.
    pub max_plugin_bytes: usize,
    /// `/metrics` without a token (`--public-metrics`).
    pub public_metrics: bool,
    /// Serve the web page's files from this directory instead of the embedded ones
    /// (`TASKER_UI_DIR`, for front-end work: a reload shows an edit).
    pub ui_dir: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            auth: AuthMode::Tokens,
            max_body_bytes: 1 << 20,
            max_plugin_bytes: 64 << 20,
            public_metrics: false,
            ui_dir: None,
        }
    }
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    store: Arc<AnyStore>,
    /// Registered templates by key. A registered version never changes (the store refuses
    /// another definition under its key), so a cached one is never stale.
    templates: Mutex<HashMap<String, Arc<Template>>>,
    /// Bumped when the event log may have grown (started by the first event stream).
    wake: OnceLock<Arc<watch::Sender<u64>>>,
    /// Cancelled when the server begins to shut down: event streams end, so that the
    /// graceful shutdown is not held open by clients that never disconnect.
    closing: tokio_util::sync::CancellationToken,
    /// The Prometheus scrape of this process, when a recorder is installed.
    exporter: Option<crate::metrics::Exporter>,
    bus: EventBus,
    sandbox: Sandbox,
    clock: Arc<dyn Clock>,
    config: ServerConfig,
}

impl AppState {
    /// `sandbox` is the plugin registry a submitted template's components are checked
    /// against; `bus` receives the events of the operations done here (in-process workers
    /// and subscribers share it).
    pub fn new(
        store: Arc<AnyStore>,
        sandbox: Sandbox,
        bus: EventBus,
        config: ServerConfig,
    ) -> Self {
        AppState(Arc::new(Inner {
            store,
            templates: Mutex::default(),
            wake: OnceLock::new(),
            closing: Default::default(),
            exporter: None,
            bus,
            sandbox,
            clock: Arc::new(SystemClock),
            config,
        }))
    }

    /// The same, answering `/metrics` from the process's recorder (see
    /// [`crate::metrics::install`]).
    pub fn with_metrics(self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        let exporter = crate::metrics::Exporter::new(
            handle,
            self.0.store.clone(),
            Some(self.0.sandbox.clone()),
        );
        self.rebuild(|inner| Inner {
            exporter: Some(exporter),
            ..inner
        })
    }

    pub fn exporter(&self) -> Option<&crate::metrics::Exporter> {
        self.0.exporter.as_ref()
    }

    /// The same with another clock (tests).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        self.rebuild(|inner| Inner { clock, ..inner })
    }

    /// This state with `change` made (before it is shared: a clone copies what it can).
    fn rebuild(self, change: impl FnOnce(Inner) -> Inner) -> Self {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|a| Inner {
            store: a.store.clone(),
            templates: Mutex::default(),
            wake: OnceLock::new(),
            closing: a.closing.clone(),
            exporter: a.exporter.clone(),
            bus: a.bus.clone(),
            sandbox: a.sandbox.clone(),
            clock: a.clock.clone(),
            config: a.config.clone(),
        });
        AppState(Arc::new(change(inner)))
    }

    pub fn store(&self) -> &AnyStore {
        &self.0.store
    }

    /// The registered template of this key (None: not registered), from the cache when
    /// it was read before.
    pub async fn template(&self, key: &str) -> Result<Option<Arc<Template>>, StoreError> {
        if let Some(t) = self.cache().get(key) {
            return Ok(Some(t.clone()));
        }
        let Some(t) = self.0.store.template(key).await? else {
            return Ok(None);
        };
        let t = Arc::new(t);
        let mut cache = self.cache();
        // Bounded: a server sees few templates, but a client may name many.
        if cache.len() >= MAX_CACHED_TEMPLATES {
            cache.clear();
        }
        cache.insert(key.to_owned(), t.clone());
        Ok(Some(t))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Template>>> {
        self.0.templates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that changes when the event log may have grown: this process's own
    /// events (its operations and in-process workers) and, on PostgreSQL, the store's
    /// NOTIFYs. Event streams also poll, so a missed wake-up costs at most a poll.
    pub fn event_wake(&self) -> watch::Receiver<u64> {
        self.0
            .wake
            .get_or_init(|| {
                let tx = Arc::new(watch::channel(0u64).0);
                let bump = |tx: &watch::Sender<u64>| tx.send_modify(|n| *n = n.wrapping_add(1));
                let mut sub = self.0.bus.subscribe(&["*"]);
                let on_bus = tx.clone();
                tokio::spawn(async move {
                    while sub.recv().await.is_some() {
                        bump(&on_bus);
                    }
                });
                if let Some(pg) = self.0.store.postgres() {
                    let notify = Arc::new(tokio::sync::Notify::new());
                    // Lives as long as the process: streams come and go, the listener stays.
                    tasker_engine::pg::spawn_ready_listener(
                        pg.pool().clone(),
                        notify.clone(),
                        tokio_util::sync::CancellationToken::new(),
                    );
                    let on_notify = tx.clone();
                    tokio::spawn(async move {
                        loop {
                            notify.notified().await;
                            bump(&on_notify);
                        }
                    });
                }
                tx
            })
            .subscribe()
    }

    /// Cancelled once the server is shutting down.
    pub fn closing(&self) -> &tokio_util::sync::CancellationToken {
        &self.0.closing
    }

    pub fn bus(&self) -> &EventBus {
        &self.0.bus
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.0.sandbox
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.0.clock.now()
    }

    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    pub fn auth_enabled(&self) -> bool {
        self.0.config.auth == AuthMode::Tokens
    }
}
