//! `tasker worker`: a long-lived node until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use tasker_runtime::Node;
use tokio_util::sync::CancellationToken;

use crate::app::{App, shutdown_signal};

impl App {
    /// `tasker worker`.
    pub async fn worker(
        &self,
        concurrency: Option<usize>,
        id: Option<String>,
        metrics_listen: Option<SocketAddr>,
    ) -> Result<ExitCode> {
        let listener = super::metrics::bind(metrics_listen).await?;
        // Before the worker exists, so that its metric handles reach the recorder.
        let handle = listener
            .as_ref()
            .map(|_| super::metrics::recorder())
            .transpose()?;
        let cfg = self.worker_config(concurrency, id);
        let store = Arc::new(self.store(cfg.concurrency.clamp(2, 16) as u32).await?);
        let sandbox = self.sandbox(true).await?;
        let stop = CancellationToken::new();
        let scrape = match (listener, handle) {
            (Some(l), Some(h)) => Some(super::metrics::endpoint(
                l,
                h,
                store.clone(),
                Some(sandbox.clone()),
                stop.clone(),
            )?),
            _ => None,
        };
        eprintln!(
            "worker {} started: {} concurrent steps, plugins from {}",
            cfg.id,
            cfg.concurrency,
            self.settings.plugin_dir.display()
        );
        let node = Node::wasm(store, &sandbox, cfg)
            .with_pruner(self.pruner_config())
            .with_scheduler(Some(tasker_runtime::SchedulerConfig::default()))
            .start(stop.clone());
        let signals = tokio::spawn({
            let stop = stop.clone();
            let signal = shutdown_signal();
            async move {
                signal.await;
                eprintln!("shutting down: finishing running steps");
                stop.cancel();
            }
        });
        let totals = node.join().await;
        signals.abort();
        stop.cancel();
        if let Some(s) = scrape {
            let _ = s.await;
        }
        eprintln!(
            "worker stopped: {} claimed, {} completed, {} failed for good, {} failed and retried, {} lease losses",
            totals.claimed,
            totals.completed,
            totals.failed - totals.retried,
            totals.retried,
            totals.lease_lost
        );
        Ok(ExitCode::SUCCESS)
    }
}
