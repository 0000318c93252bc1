//! Request spans and W3C trace context.
//!
//! Spans of the token path use the target [`SPAN_TARGET`], which only the OpenTelemetry
//! layer listens to. Without an OTLP endpoint that layer is not installed, so every span
//! callsite is disabled once and for all: creating a span is then a cached "no" and no
//! exporter exists.

use actix_web::http::header::HeaderMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Span;

/// The target of every span the broker opens (never logged by the fmt layer).
pub const SPAN_TARGET: &str = "agent_sts::span";

static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(super) fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The trace id of a W3C `traceparent` header (Trace Context section 3.2):
/// `00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`, lower-case, ids not all zero.
/// Future versions may append fields after the flags.
pub fn traceparent_trace_id(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("traceparent")?.to_str().ok()?.trim();
    let mut parts = v.split('-');
    let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let ok = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace_id, 32)
        && hex(parent_id, 16)
        && hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && parent_id.bytes().any(|b| b != b'0');
    ok.then_some(trace_id)
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The root span of one request (`name` e.g. "POST /token"), a child of the caller's trace
/// when it sent a valid `traceparent`. A disabled span when nothing exports.
pub fn request_span(name: &'static str, headers: &HeaderMap) -> Span {
    if !exporting() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        grant = tracing::field::Empty,
        agent = tracing::field::Empty,
        server = tracing::field::Empty,
        outcome = tracing::field::Empty,
        error = tracing::field::Empty,
        rule = tracing::field::Empty,
    );
    if headers.contains_key("traceparent") {
        use opentelemetry::propagation::TextMapPropagator;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx =
            opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let _ = span.set_parent(cx);
    }
    span
}

/// The trace id to put in the audit event: the exported span's, else the caller's.
pub fn trace_id(span: &Span, headers: &HeaderMap) -> Option<String> {
    if exporting() && !span.is_disabled() {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let id = span.context().span().span_context().trace_id();
        if id != opentelemetry::trace::TraceId::INVALID {
            return Some(id.to_string());
        }
    }
    traceparent_trace_id(headers).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_static("traceparent"), HeaderValue::from_str(v).expect("value"));
        h
    }

    /// W3C Trace Context section 3.2.2: the header's shape, and the all-zero ids refused.
    #[test]
    fn traceparent_is_parsed_strictly() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent_trace_id(&with(good)), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(traceparent_trace_id(&with(bad)), None, "{bad}");
        }
        assert!(traceparent_trace_id(&with("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"))
            .is_some());
        assert_eq!(traceparent_trace_id(&HeaderMap::new()), None);
    }
}
