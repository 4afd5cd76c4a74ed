//! W3C trace context across NATS: a request carries its caller's place in a trace as a
//! `traceparent` header, and the request that handles it continues that trace, so one
//! create's work in order, goods and stock shares one trace id.
//!
//! Ids are always made and passed on, cheaply: [`continue_from`] gives each request a span
//! id of its own (and a trace id, when its caller sent none), records the trace id on the
//! request's `tracing` span, so every log line of the request names it, and [`scope`] keeps
//! the ids for [`inject`] while the handler runs. When the binary exports spans
//! (OpenTelemetry layer, `trace.otlp_endpoint`), the ids are the exported spans' own and the
//! caller's span is their parent, so the exported trees join up across workers.
//!
//! It owns the header format and the two directions; the choice of exporter and sampler is
//! the binary's.

use std::future::Future;

use async_nats::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header: `00-<trace id, 32 hex>-<parent span id, 16 hex>-<flags, 2 hex>`.
pub const TRACEPARENT: &str = "traceparent";

/// A request's place in its trace: the trace, and the span a callee's span is a child of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

impl Ids {
    /// The `traceparent` value naming these ids as the parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    /// Reads a `traceparent` value: `None` when it is malformed, names a version this code
    /// cannot read (`ff`), or has all-zero ids (W3C: such a header is ignored).
    pub fn parse(value: &str) -> Option<Ids> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four parts; a later version may append more.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(version, 2) || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let ids = Ids {
            trace_id: TraceId::from_hex(trace).ok()?,
            span_id: SpanId::from_hex(span).ok()?,
            flags: TraceFlags::new(
                u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8(),
            ),
        };
        (ids.trace_id != TraceId::INVALID && ids.span_id != SpanId::INVALID).then_some(ids)
    }
}

tokio::task_local! {
    /// The ids of the request this task is handling.
    static CURRENT: Ids;
}

/// The ids of `span`, a request's span not yet entered, as the child of the `traceparent`
/// in `headers` (a request without a valid one starts a trace); records the trace id as
/// the span's `trace_id` field. Run the handler under [`scope`] with them.
pub fn continue_from(span: &tracing::Span, headers: Option<&HeaderMap>) -> Ids {
    let parent = headers
        .and_then(|h| h.get(TRACEPARENT))
        .and_then(|v| Ids::parse(v.as_str()));
    let ids = exported_span_ids(span, parent).unwrap_or_else(|| {
        let ids = RandomIdGenerator::default();
        Ids {
            trace_id: parent.map_or_else(|| ids.new_trace_id(), |p| p.trace_id),
            span_id: ids.new_span_id(),
            flags: parent.map_or(TraceFlags::default(), |p| p.flags),
        }
    });
    span.record("trace_id", tracing::field::display(ids.trace_id));
    ids
}

/// With the OpenTelemetry layer: `span`'s own ids, with `parent` as its parent. Without it
/// (no export configured) `None`, after a downcast that finds no layer.
fn exported_span_ids(span: &tracing::Span, parent: Option<Ids>) -> Option<Ids> {
    if let Some(parent) = parent {
        let remote = SpanContext::new(
            parent.trace_id,
            parent.span_id,
            parent.flags,
            true,
            TraceState::default(),
        );
        // Fails when there is no layer, or the span has started, which a fresh one has not.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    span_ids(span)
}

fn span_ids(span: &tracing::Span) -> Option<Ids> {
    let cx = span.context();
    let ids = cx.span().span_context().clone();
    ids.is_valid().then(|| Ids {
        trace_id: ids.trace_id(),
        span_id: ids.span_id(),
        flags: ids.trace_flags(),
    })
}

/// Runs `handler` with `ids` as the current request's, for [`inject`].
pub async fn scope<F: Future>(ids: Ids, handler: F) -> F::Output {
    CURRENT.scope(ids, handler).await
}

/// The ids a call made now passes on: the current span's when spans are exported (so the
/// callee's span is a child of the exact step that called), otherwise the request's.
pub fn current() -> Option<Ids> {
    span_ids(&tracing::Span::current()).or_else(|| CURRENT.try_with(|ids| *ids).ok())
}

/// Adds the `traceparent` of [`current`] to `headers`; `false` (nothing added) outside a
/// request.
pub fn inject(headers: &mut HeaderMap) -> bool {
    let Some(ids) = current() else {
        return false;
    };
    headers.insert(TRACEPARENT, ids.traceparent().as_str());
    true
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";

    fn incoming() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, format!("00-{TRACE}-{CALLER}-01").as_str());
        headers
    }

    /// What a handler's call would send, for a request that arrived with `headers`.
    async fn passed_on(headers: Option<HeaderMap>) -> (Ids, Ids) {
        let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
        let ids = continue_from(&span, headers.as_ref());
        let sent = scope(ids, async {
            let mut outgoing = HeaderMap::new();
            assert!(inject(&mut outgoing));
            Ids::parse(outgoing.get(TRACEPARENT).unwrap().as_str()).unwrap()
        })
        .await;
        (ids, sent)
    }

    fn check_continued(ids: Ids, sent: Ids) {
        assert_eq!(ids.trace_id.to_string(), TRACE);
        assert_eq!(sent.trace_id, ids.trace_id);
        // The callee's parent is this request, not this request's caller.
        assert_eq!(sent.span_id, ids.span_id);
        assert_ne!(ids.span_id.to_string(), CALLER);
    }

    #[tokio::test]
    async fn a_request_continues_its_callers_trace_and_passes_it_on() {
        let (ids, sent) = passed_on(Some(incoming())).await;
        check_continued(ids, sent);
    }

    #[tokio::test]
    async fn with_spans_exported_the_ids_are_the_exported_spans() {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOn)
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _default = tracing::subscriber::set_default(subscriber);
        let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
        let ids = continue_from(&span, Some(&incoming()));
        assert_eq!(span_ids(&span), Some(ids));
        let (ids, sent) = passed_on(Some(incoming())).await;
        check_continued(ids, sent);
    }

    #[tokio::test]
    async fn a_request_without_a_valid_traceparent_starts_a_trace() {
        let mut garbage = HeaderMap::new();
        garbage.insert(
            TRACEPARENT,
            format!("00-{TRACE}-0000000000000000-01").as_str(),
        );
        let (first, sent) = passed_on(Some(garbage)).await;
        assert_eq!(sent, first);
        let (second, _) = passed_on(None).await;
        assert_ne!(first.trace_id.to_string(), TRACE);
        assert_ne!(first.trace_id, second.trace_id);
    }

    #[test]
    fn outside_a_request_nothing_is_injected() {
        let mut headers = HeaderMap::new();
        assert!(!inject(&mut headers));
        assert!(headers.get(TRACEPARENT).is_none());
    }

    #[test]
    fn traceparent_values() {
        let ids = Ids::parse(&format!("00-{TRACE}-{CALLER}-01")).unwrap();
        assert_eq!(ids.traceparent(), format!("00-{TRACE}-{CALLER}-01"));
        for bad in [
            "",
            "00",
            &format!("ff-{TRACE}-{CALLER}-01"),
            &format!("00-{TRACE}-{CALLER}-01-extra"),
            &format!("00-{}-{CALLER}-01", TRACE.to_uppercase()),
            &format!("00-{}-{CALLER}-01", "0".repeat(32)),
            &format!("00-{TRACE}-{CALLER}-1"),
        ] {
            assert_eq!(Ids::parse(bad), None, "{bad}");
        }
        // A later version may append fields; the first four are read.
        assert!(Ids::parse(&format!("01-{TRACE}-{CALLER}-00-more")).is_some());
    }
}
