//! Prometheus: the process's recorder (installed once, before any worker is built, so that
//! every metric handle reaches it), the gauges sampled from the store at scrape time, and the
//! scrape endpoint of `tasker worker --metrics-listen` and `tasker run --metrics-listen`
//! (`tasker serve` answers `/metrics` on its own router, through [`scrape_route`]).
//!
//! The metric names, kinds and help texts are `tasker_core::metrics::CATALOGUE`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use tasker_core::metrics::{self as m, Kind};
use tasker_sandbox::Sandbox;
use tasker_store::{AnyStore, Store};

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Scrapes closer together than this reuse the last sample of the store.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Bucket bounds per histogram, in its base unit.
fn buckets(name: &str) -> &'static [f64] {
    const SECONDS: &[f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0, 300.0,
    ];
    const FAST_SECONDS: &[f64] = &[
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ];
    const FUEL: &[f64] = &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
    const BYTES: &[f64] = &[
        65536.0,
        262144.0,
        1048576.0,
        4194304.0,
        16777216.0,
        67108864.0,
        268435456.0,
        1073741824.0,
        4294967296.0,
    ];
    match name {
        m::STORE_CALL => FAST_SECONDS,
        m::STEP_FUEL => FUEL,
        m::STEP_MEMORY => BYTES,
        _ => SECONDS,
    }
}

/// The Prometheus recorder with the catalogue's histogram buckets, not installed (the
/// benchmark wraps it to switch it on and off).
pub fn recorder() -> Result<PrometheusRecorder, String> {
    let mut b = PrometheusBuilder::new();
    for metric in m::CATALOGUE.iter().filter(|x| x.kind == Kind::Histogram) {
        b = b
            .set_buckets_for_metric(Matcher::Full(metric.name.into()), buckets(metric.name))
            .map_err(|e| e.to_string())?;
    }
    Ok(b.build_recorder())
}

/// Installs the Prometheus recorder for this process (once; later calls return the same
/// handle) and describes every metric of the catalogue.
pub fn install() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            let recorder = recorder()?;
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
            for metric in m::CATALOGUE {
                match metric.kind {
                    Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
                    Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
                    Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
                }
            }
            // Histograms are drained into their buckets by upkeep; a scrape runs it too.
            let h = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        h.run_upkeep();
                    }
                })
                .map_err(|e| format!("cannot start the metrics upkeep thread: {e}"))?;
            Ok(handle)
        })
        .clone()
}

/// What a scrape reports: the recorder's metrics and gauges sampled from the store.
#[derive(Clone)]
pub struct Exporter(Arc<ExporterInner>);

struct ExporterInner {
    handle: PrometheusHandle,
    store: Arc<AnyStore>,
    sandbox: Option<Sandbox>,
    last_sample: Mutex<Option<Instant>>,
}

impl Exporter {
    pub fn new(handle: PrometheusHandle, store: Arc<AnyStore>, sandbox: Option<Sandbox>) -> Self {
        Exporter(Arc::new(ExporterInner {
            handle,
            store,
            sandbox,
            last_sample: Mutex::new(None),
        }))
    }

    /// The exposition text, with the store's gauges at most [`SAMPLE_EVERY`] old.
    pub async fn render(&self) -> String {
        let due = {
            let mut last = self.0.last_sample.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.sample().await;
        }
        self.0.handle.run_upkeep();
        self.0.handle.render()
    }

    async fn sample(&self) {
        let store = &self.0.store;
        let now = chrono::Utc::now();
        match queue(store, now).await {
            Ok(q) => {
                for (state, n) in [
                    ("ready", q.counts.ready_steps),
                    ("waiting_for_retry", q.counts.waiting_for_retry_steps),
                    ("in_progress", q.counts.in_progress_steps),
                ] {
                    metrics::gauge!(m::QUEUE_STEPS, "state" => state).set(n as f64);
                }
                metrics::gauge!(m::QUEUE_OLDEST_READY).set(q.oldest_ready_age_seconds);
            }
            // The scrape still answers with what the process knows.
            Err(e) => tracing::warn!(error = %e, "metrics: cannot sample the queue"),
        }
        for (pool, size, idle) in store.pool_use() {
            let in_use = (size as usize).saturating_sub(idle);
            metrics::gauge!(m::POOL_CONNECTIONS, "pool" => pool, "state" => "idle")
                .set(idle as f64);
            metrics::gauge!(m::POOL_CONNECTIONS, "pool" => pool, "state" => "in_use")
                .set(in_use as f64);
        }
        if let Some(s) = &self.0.sandbox {
            metrics::gauge!(m::PLUGINS_LOADED).set(s.registry().plugins().len() as f64);
        }
    }
}

/// The queue as a scrape and `/health/status` report it.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    pub counts: tasker_store::HealthCounts,
    /// Seconds the oldest claimable step has waited (0 without one).
    pub oldest_ready_age_seconds: f64,
}

/// The store's counts and the age of the oldest ready step at `now`.
pub async fn queue(
    store: &AnyStore,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Queue, tasker_store::StoreError> {
    let c = store.health_counts(now).await?;
    // The earliest queued instant is the oldest ready step's when any step is ready.
    let oldest = match store.next_ready_at().await? {
        Some(t) if c.ready_steps > 0 && t <= now => {
            (now - t).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
        }
        _ => 0.0,
    };
    Ok(Queue {
        oldest_ready_age_seconds: oldest,
        counts: c,
    })
}

async fn scrape(State(e): State<Exporter>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], e.render().await)
}

/// The scrape endpoint of a worker process: `GET /metrics` only, without authentication
/// (listen on a loopback or private address).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    exporter: Exporter,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(exporter);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// `GET /metrics`: the Prometheus exposition of this process (its workers' metrics when it
/// runs some) and the store's queue gauges.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "meta",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub async fn scrape_route(State(state): State<crate::state::AppState>) -> axum::response::Response {
    match state.exporter() {
        Some(e) => scrape(State(e.clone())).await.into_response(),
        None => crate::problem::Problem::not_found(
            "metrics are off in this process (no recorder was installed)",
        )
        .into_response(),
    }
}
