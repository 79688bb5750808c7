//! What every request handler shares. Nothing here is per-instance state a client depends
//! on: several servers on one database answer alike.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tasker_core::clock::{Clock, SystemClock};
use tasker_engine::EventBus;
use tasker_sandbox::Sandbox;
use tasker_store::AnyStore;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            auth: AuthMode::Tokens,
            max_body_bytes: 1 << 20,
            max_plugin_bytes: 64 << 20,
        }
    }
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    store: Arc<AnyStore>,
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
            bus,
            sandbox,
            clock: Arc::new(SystemClock),
            config,
        }))
    }

    /// The same with another clock (tests).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|a| Inner {
            store: a.store.clone(),
            bus: a.bus.clone(),
            sandbox: a.sandbox.clone(),
            clock: a.clock.clone(),
            config: a.config.clone(),
        });
        AppState(Arc::new(Inner { clock, ..inner }))
    }

    pub fn store(&self) -> &AnyStore {
        &self.0.store
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
