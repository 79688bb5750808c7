//! OpenTelemetry traces over OTLP (HTTP/protobuf), off by default: on with `--otlp-endpoint`
//! or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
//! The spans are the engine's (`tasker_engine::traces`: a task's creation, each attempt, each
//! store call); this module exports them and installs the engine's [`Tracer`].

use anyhow::{Context as _, Result};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tasker_core::trace::TraceParent;
use tasker_engine::traces::Tracer;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Where traces go, when they go anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Otlp {
    Off,
    /// A base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT`): spans are posted to `<base>/v1/traces`.
    Endpoint(String),
    /// The exporter reads the standard environment variables itself.
    FromEnvironment,
}

impl Otlp {
    /// The flag wins; then the standard variables (`OTEL_TRACES_EXPORTER=none` turns them off).
    pub fn resolve(flag: Option<String>) -> Otlp {
        if let Some(url) = flag {
            return Otlp::Endpoint(url);
        }
        let set = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
        let off = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v == "none");
        if !off && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        {
            Otlp::FromEnvironment
        } else {
            Otlp::Off
        }
    }
}

/// The base URL's traces endpoint.
fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The exporting provider; flushes what is buffered when dropped (so every span of a
/// process that stops gracefully is sent).
pub struct TraceExport {
    provider: SdkTracerProvider,
}

impl Drop for TraceExport {
    fn drop(&mut self) {
        // A flush reports a failed export; shutdown alone may not.
        if let Err(e) = self.provider.force_flush() {
            eprintln!("warning: traces could not all be exported: {e}");
        }
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: traces could not all be exported: {e}");
        }
    }
}

/// Builds the exporter and the provider. Must run outside the async runtime (the exporter's
/// blocking HTTP client runs on the batch processor's own thread).
pub fn provider(otlp: &Otlp) -> Result<Option<TraceExport>> {
    let builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    let builder = match otlp {
        Otlp::Off => return Ok(None),
        Otlp::Endpoint(base) => {
            if base.starts_with("https://") {
                anyhow::bail!(
                    "--otlp-endpoint {base}: TLS is not built in yet; send to a collector or \
                     agent on this host or pod over http://"
                );
            }
            if !base.starts_with("http://") {
                anyhow::bail!("--otlp-endpoint {base} is not an http:// URL");
            }
            builder.with_endpoint(traces_url(base))
        }
        Otlp::FromEnvironment => builder,
    };
    let exporter = builder
        .build()
        .context("cannot set up the OTLP trace exporter")?;
    let resource = Resource::builder()
        .with_service_name("tasker")
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("process.pid", i64::from(std::process::id())),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok(Some(TraceExport { provider }))
}

impl TraceExport {
    /// The `tracing` layer that turns the engine's spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + 'static
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        use tracing_subscriber::Layer;
        let tracer = self.provider.tracer("tasker");
        // Only what a reader of the trace uses: an attempt's span is entered at every poll
        // of the sandbox (each millisecond tick), so per-entry work (busy/idle timing,
        // context activation) and per-span extras (thread, source location) cost
        // throughput.
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(tasker_core::trace::TARGET, tracing::Level::INFO),
            )
    }
}

/// The engine's view of the layer: parents and contexts as W3C traceparents.
pub struct OtelTracer;

impl Tracer for OtelTracer {
    fn set_parent(&self, span: &tracing::Span, parent: &TraceParent) {
        let cx = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        // Refused only for a span already started or disabled: it stays a root then.
        let _ = span.set_parent(Context::new().with_remote_span_context(cx));
    }

    fn context_of(&self, span: &tracing::Span) -> Option<TraceParent> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_a_base_url_as_the_standard_variable_is() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            Otlp::resolve(Some("http://x".into())),
            Otlp::Endpoint("http://x".into())
        );
    }

    #[test]
    fn a_bad_endpoint_is_refused_by_name() {
        let e = provider(&Otlp::Endpoint("127.0.0.1:4318".into()))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("--otlp-endpoint 127.0.0.1:4318 is not an http"),
            "{e}"
        );
        let e = provider(&Otlp::Endpoint("https://c:4318".into()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("TLS is not built in yet"), "{e}");
    }
}
