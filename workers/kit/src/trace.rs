//! W3C trace context across NATS: a request carries its caller's span as a `traceparent`
//! header, and the span that handles it becomes that span's child, so one create's spans in
//! order, goods and stock share one trace id.
//!
//! Spans are `tracing` spans; the binary's OpenTelemetry layer (`tracing-opentelemetry`)
//! gives each one its ids. Without that layer (a tool such as `shop req`), nothing is
//! injected and an incoming `traceparent` is ignored, at no cost.
//!
//! It owns the header format and the two directions, [`inject`] and [`continue_from`]; the
//! choice of exporter and sampler is the binary's.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header: `00-<trace id, 32 hex>-<parent span id, 16 hex>-<flags, 2 hex>`.
pub const TRACEPARENT: &str = "traceparent";

/// Adds the current span's `traceparent` (and `tracestate`, when it has one) to `headers`.
/// Returns whether it did: a span without trace ids adds nothing.
pub fn inject(headers: &mut HeaderMap) -> bool {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return false;
    }
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    true
}

/// Makes `span` (not yet entered) a child of the trace in `headers`, when they carry a
/// valid `traceparent`, and records the trace id as its `trace_id` field, so every log line
/// inside the span names the trace. A request without one starts a trace of its own.
pub fn continue_from(span: &tracing::Span, headers: Option<&HeaderMap>) {
    if span.is_disabled() {
        return;
    }
    if let Some(headers) = headers.filter(|h| h.get(TRACEPARENT).is_some()) {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        if parent.span().span_context().is_valid() {
            // Fails only when the span has started already, which a fresh span has not.
            let _ = span.set_parent(parent);
        }
    }
    let cx = span.context();
    let ids = cx.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
    }
}

/// The current span's trace id as 32 lowercase hex digits, if it has one.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let ids = cx.span().span_context().clone();
    ids.is_valid().then(|| ids.trace_id().to_string())
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// A subscriber with the OpenTelemetry layer as the binary sets it up, without export.
    fn subscriber() -> impl tracing::Subscriber + Send + Sync {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOff)
            .build();
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
    }

    #[test]
    fn a_request_continues_its_callers_trace_and_passes_it_on() {
        tracing::subscriber::with_default(subscriber(), || {
            let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
            let mut incoming = HeaderMap::new();
            incoming.insert(
                TRACEPARENT,
                format!("00-{trace}-00f067aa0ba902b7-01").as_str(),
            );
            let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
            continue_from(&span, Some(&incoming));
            let _entered = span.enter();
            assert_eq!(current_trace_id().as_deref(), Some(trace));

            let mut outgoing = HeaderMap::new();
            assert!(inject(&mut outgoing));
            let sent = outgoing.get(TRACEPARENT).unwrap().as_str().to_owned();
            let parts: Vec<&str> = sent.split('-').collect();
            assert_eq!(parts.len(), 4, "{sent}");
            assert_eq!(parts[1], trace, "{sent}");
            // The child's own span id, not the caller's.
            assert_ne!(parts[2], "00f067aa0ba902b7", "{sent}");
        });
    }

    #[test]
    fn a_request_without_a_traceparent_starts_a_trace() {
        tracing::subscriber::with_default(subscriber(), || {
            let mut garbage = HeaderMap::new();
            garbage.insert(TRACEPARENT, "not a trace");
            let first = tracing::info_span!("request", trace_id = tracing::field::Empty);
            continue_from(&first, Some(&garbage));
            let first_id = first.in_scope(current_trace_id).unwrap();
            let second = tracing::info_span!("request", trace_id = tracing::field::Empty);
            continue_from(&second, None);
            let second_id = second.in_scope(current_trace_id).unwrap();
            assert_eq!(first_id.len(), 32);
            assert_ne!(first_id, second_id);
        });
    }

    #[test]
    fn without_the_layer_nothing_is_injected() {
        let mut headers = HeaderMap::new();
        assert!(!inject(&mut headers));
        assert!(headers.get(TRACEPARENT).is_none());
    }
}
