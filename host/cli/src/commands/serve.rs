//! `tasker serve`: the HTTP API, optionally with workers in the same process.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tasker_core::clock::SystemClock;
use tasker_engine::EventBus;
use tasker_runtime::{Node, SchedulerConfig, spawn_pruner, spawn_scheduler};
use tasker_server::{AppState, AuthMode, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::app::{App, shutdown_signal};

/// How `tasker serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Steps run by an in-process worker (0: none, the API only).
    pub workers: usize,
    /// No tokens: only on loopback, unless `insecure_no_auth`.
    pub no_auth: bool,
    pub insecure_no_auth: bool,
    /// `/metrics` without a token.
    pub public_metrics: bool,
    pub max_body_bytes: usize,
}

impl App {
    /// `tasker serve`.
    pub async fn serve(&self, opts: ServeOptions) -> Result<ExitCode> {
        let auth = if opts.no_auth || opts.insecure_no_auth {
            AuthMode::Disabled
        } else {
            AuthMode::Tokens
        };
        if let Err(e) = tasker_server::check_listen(opts.listen, auth, opts.insecure_no_auth) {
            bail!(e);
        }
        // Before any worker exists, so that its metric handles reach the recorder.
        let handle = super::metrics::recorder()?;
        let pool = (opts.workers as u32).clamp(4, 32);
        let store = Arc::new(self.store(pool).await?);
        let backend = store.backend();
        let sandbox = self.sandbox(true).await?;
        let bus = EventBus::default();
        let state = AppState::new(
            store.clone(),
            sandbox.clone(),
            bus.clone(),
            ServerConfig {
                auth,
                max_body_bytes: opts.max_body_bytes,
                public_metrics: opts.public_metrics,
                ui_dir: std::env::var_os("TASKER_UI_DIR").map(Into::into),
                ..ServerConfig::default()
            },
        )
        .with_metrics(handle);
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let pruner = self.pruner_config();
        let node = (opts.workers > 0).then(|| {
            let cfg = self.worker_config(Some(opts.workers), None);
            Node::wasm(store.clone(), &sandbox, cfg)
                .with_bus(bus)
                .with_pruner(pruner.clone())
                .with_scheduler(Some(SchedulerConfig::default()))
                .start(stop.clone())
        });
        // Nor does firing schedules: a server without workers runs the scheduler alone.
        let lone_scheduler = node.is_none().then(|| {
            spawn_scheduler(
                store.clone(),
                SchedulerConfig::default(),
                Arc::new(SystemClock),
                stop.clone(),
            )
            .0
        });
        // Without workers the server still prunes: retention must not depend on where steps run.
        let lone_pruner = match (&node, pruner) {
            (None, Some(cfg)) => {
                Some(spawn_pruner(store, cfg, Arc::new(SystemClock), stop.clone()).0)
            }
            _ => None,
        };
        // Scripts (and the tests) read the address from this line: keep its form.
        eprintln!(
            "serving http://{addr} ({}, {} workers, auth {})",
            backend,
            opts.workers,
            if auth == AuthMode::Tokens {
                "tokens"
            } else {
                "off"
            }
        );
        eprintln!("web page: http://{addr}/");
        let signal = shutdown_signal();
        let stopping = stop.clone();
        tasker_server::serve(listener, state, async move {
            signal.await;
            eprintln!("shutting down: finishing requests and running steps");
            stopping.cancel();
        })
        .await
        .context("the server failed")?;
        stop.cancel();
        if let Some(node) = node {
            node.join().await;
        }
        if let Some(p) = lone_pruner {
            let _ = p.await;
        }
        if let Some(p) = lone_scheduler {
            let _ = p.await;
        }
        eprintln!("server stopped");
        Ok(ExitCode::SUCCESS)
    }
}
