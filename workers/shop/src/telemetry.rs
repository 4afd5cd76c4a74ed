//! Logging and traces, set up once at start-up.
//!
//! Trace ids are made and passed on by `shop_kit::trace` whatever is set here. With
//! `trace.otlp_endpoint` set, a process that serves requests (a worker, the gateway) also
//! gets the OpenTelemetry layer: its spans become OpenTelemetry spans, exported over
//! OTLP/HTTP. Without it, that layer is not installed at all: it would cost every span
//! (0.04 ms of CPU per create over the three workers, measured) for spans nobody reads.

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat, TraceConfig};

/// Flushes the spans still buffered when dropped, at the end of `main`.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("could not flush the last spans: {error}");
            }
        }
    }
}

/// Logs to stderr under `log`; with `traces` (the service's name and the trace settings),
/// spans get trace ids and, when configured, are exported.
pub fn init(log: &LogConfig, traces: Option<(&str, &TraceConfig)>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.filter));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // The log filter is the fmt layer's own: quieter logs must not switch off the spans
    // that carry trace ids between workers.
    let fmt = match log.format {
        LogFormat::Human => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
    };
    let Some((service, trace, endpoint)) =
        traces.and_then(|(s, t)| t.otlp_endpoint.as_deref().map(|e| (s, t, e)))
    else {
        tracing_subscriber::registry().with(fmt).init();
        return Ok(Telemetry { provider: None });
    };
    let provider = provider(service, trace, endpoint)?;
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("shop"))
        // Ids come from the span tree (`Span::context`), not from OpenTelemetry's
        // thread-local current context, which would be switched on every poll.
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(true)
        // Our spans only: a span of a library would start a trace of its own.
        .with_filter(Targets::new().with_target("shop", Level::INFO));
    tracing_subscriber::registry().with(fmt).with(otel).init();
    tracing::info!(%endpoint, ratio = trace.sample_ratio, "exporting spans (OTLP/HTTP)");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

fn provider(
    service: &str,
    trace: &TraceConfig,
    endpoint: &str,
) -> anyhow::Result<SdkTracerProvider> {
    let builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(format!("shop-{service}"))
            .build(),
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("setting up the OTLP exporter for {endpoint}"))?;
    Ok(builder
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            trace.sample_ratio,
        ))))
        .with_batch_exporter(exporter)
        .build())
}
