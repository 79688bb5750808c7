//! (f) What observability costs: the Prometheus recorder and OTLP trace export, switched on
//! and off between rounds of the same workflow in one process. Both are global (a process
//! installs one recorder and one subscriber), so each is installed once behind a switch:
//! off, the recorder hands out no-op handles, the trace layer enables no span and the
//! engine sees no tracer, as in a process that installed neither.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;
use tasker_cli::traces::{OtelTracer, Otlp, TraceExport};
use tasker_core::trace::TraceParent;
use tasker_engine::traces::Tracer;

static METRICS_ON: AtomicBool = AtomicBool::new(false);
static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// Switches both on or off; `TASKER_BENCH_OBSERVE=metrics` or `traces` measures one alone.
pub fn set(on: bool) {
    let only = std::env::var("TASKER_BENCH_OBSERVE").unwrap_or_default();
    METRICS_ON.store(on && only != "traces", Ordering::SeqCst);
    TRACES_ON.store(on && only != "metrics", Ordering::SeqCst);
}

fn metrics_on() -> bool {
    METRICS_ON.load(Ordering::Relaxed)
}

fn on() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

/// The production recorder while on; no-op handles while off (a worker takes its handles
/// when it starts, so each round's workers see that round's setting).
struct Switch(PrometheusRecorder);

impl Recorder for Switch {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.0.describe_counter(key, unit, help)
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.0.describe_gauge(key, unit, help)
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.0.describe_histogram(key, unit, help)
    }
    fn register_counter(&self, key: &Key, meta: &Metadata<'_>) -> Counter {
        if metrics_on() {
            self.0.register_counter(key, meta)
        } else {
            Counter::noop()
        }
    }
    fn register_gauge(&self, key: &Key, meta: &Metadata<'_>) -> Gauge {
        if metrics_on() {
            self.0.register_gauge(key, meta)
        } else {
            Gauge::noop()
        }
    }
    fn register_histogram(&self, key: &Key, meta: &Metadata<'_>) -> Histogram {
        if metrics_on() {
            self.0.register_histogram(key, meta)
        } else {
            Histogram::noop()
        }
    }
}

/// The CLI's tracer, paused while off.
struct SwitchTracer;

impl Tracer for SwitchTracer {
    fn set_parent(&self, span: &tracing::Span, parent: &TraceParent) {
        OtelTracer.set_parent(span, parent)
    }
    fn context_of(&self, span: &tracing::Span) -> Option<TraceParent> {
        OtelTracer.context_of(span)
    }
    fn enabled(&self) -> bool {
        on()
    }
}

/// Installs both behind the switch (off), exporting spans to a loopback receiver that
/// accepts and drops them. Call before the async runtime starts (the exporter's client is
/// blocking); the receiver is served by `serve_receiver` inside it.
pub fn install() -> Result<(TraceExport, std::net::TcpListener)> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}", listener.local_addr()?);
    let export = tasker_cli::traces::provider(&Otlp::Endpoint(url))?
        .context("an endpoint turns the exporter on")?;
    let layer = export
        .layer()
        .with_filter(tracing_subscriber::filter::filter_fn(|_| on()));
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .context("the benchmark installs the only subscriber")?;
    tasker_engine::traces::install(Box::new(SwitchTracer));
    let recorder = tasker_server::metrics::recorder().map_err(anyhow::Error::msg)?;
    metrics::set_global_recorder(Switch(recorder)).context("the only recorder")?;
    Ok((export, listener))
}

/// Serves the receiver: every POST /v1/traces is answered 200 and dropped.
pub fn serve_receiver(listener: std::net::TcpListener) -> Result<()> {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|_: axum::body::Bytes| async {
            (
                [("content-type", "application/x-protobuf")],
                Vec::<u8>::new(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

/// The median of a few figures.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
