//! `--metrics-listen ADDR` of `tasker worker` and `tasker run`: the Prometheus recorder and
//! a scrape endpoint beside the work.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use tasker_sandbox::Sandbox;
use tasker_server::metrics::{Exporter, PrometheusHandle, install, serve_metrics};
use tasker_store::AnyStore;
use tokio_util::sync::CancellationToken;

/// Installs the recorder; call before building workers, so that their handles record.
pub fn recorder() -> Result<PrometheusHandle> {
    install().map_err(|e| anyhow!(e))
}

/// The metrics listener, bound before the command writes anything, so that a taken address
/// is refused with nothing done.
pub async fn bind(addr: Option<SocketAddr>) -> Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    Ok(Some(listener))
}

/// Serves `GET /metrics` on `listener` until `stop`. Scripts (and the tests) read the
/// address from the line printed here: keep its form.
pub fn endpoint(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    store: Arc<AnyStore>,
    sandbox: Option<Sandbox>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let bound = listener.local_addr()?;
    eprintln!("metrics on http://{bound}/metrics");
    let exporter = Exporter::new(handle, store, sandbox);
    Ok(tokio::spawn(async move {
        if let Err(e) =
            serve_metrics(listener, exporter, async move { stop.cancelled().await }).await
        {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    }))
}
