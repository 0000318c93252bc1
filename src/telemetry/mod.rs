//! Logs, audit events, traces and metrics.
//!
//! * Logs: `tracing` to stderr, text or JSON, filtered by `RUST_LOG` (default `info`).
//! * Audit ([`audit`]): one event per decision at target `agent_sts::audit`; ids only,
//!   never token or key text.
//! * Traces ([`trace`]): OpenTelemetry spans exported over OTLP/HTTP when an endpoint is
//!   configured; otherwise no exporter exists and span callsites are disabled.
//! * Metrics ([`metrics`]): Prometheus text at `GET /metrics`.

pub mod audit;
pub mod metrics;
mod otlp_client;
pub mod trace;

use crate::config::{LogFormat, OtelSettings};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

pub use trace::SPAN_TARGET;

/// Holds the trace exporter; [`Telemetry::shutdown`] flushes the spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Where spans go, for the start-up log.
    pub traces_endpoint: Option<String>,
}

impl Telemetry {
    /// Export what is queued and stop the exporter (bounded by the SDK's export timeout).
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "trace exporter shutdown");
            }
        }
    }
}

/// Where traces go: `otel.endpoint` (with `/v1/traces` appended), else the standard
/// variables, else nowhere. `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
pub fn traces_endpoint(otel: &OtelSettings, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    if let Some(base) = otel.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
        return Some(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    if let Some(full) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Some(full);
    }
    set("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Install the log subscriber and, when an endpoint is configured, the trace exporter.
/// A second call (tests) keeps the first subscriber.
pub fn init(format: LogFormat, otel: &OtelSettings) -> Result<Telemetry, String> {
    audit::set_format(format);
    let endpoint = traces_endpoint(otel, &env_var);
    let provider = match &endpoint {
        Some(url) => Some(tracer_provider(url, otel)?),
        None => None,
    };
    // The fmt layer never sees the broker's spans; only the OpenTelemetry layer does.
    let logs = || {
        let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        env.and(filter_fn(|m| m.target() != SPAN_TARGET))
    };
    // Colour codes only on a terminal: a log file or journald would keep the escapes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;
    let base = fmt::layer().with_writer(std::io::stderr).with_target(true).with_ansi(ansi);
    let mut layers: Vec<Boxed> = vec![match format {
        LogFormat::Text => base.with_filter(logs()).boxed(),
        LogFormat::Json => base
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(logs())
            .boxed(),
    }];
    if let Some(p) = &provider {
        use opentelemetry::trace::TracerProvider;
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("agent-sts"))
                .with_filter(filter_fn(|m| m.target() == SPAN_TARGET))
                .boxed(),
        );
    }
    if tracing_subscriber::registry().with(layers).try_init().is_ok() && provider.is_some() {
        trace::set_exporting();
    }
    Ok(Telemetry { provider, traces_endpoint: endpoint })
}

fn tracer_provider(url: &str, otel: &OtelSettings) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::trace::Sampler;
    let mut headers: std::collections::HashMap<String, String> =
        otel.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // The config's headers win over OTEL_EXPORTER_OTLP_HEADERS, which the exporter also reads.
    headers.retain(|k, _| !k.is_empty());
    let client = otlp_client::OtlpHttpClient::new(std::time::Duration::from_secs(10))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_headers(headers)
        .build()
        .map_err(|e| format!("otel: cannot build the OTLP exporter for {url}: {e}"))?;
    let service = otel
        .service_name
        .clone()
        .or_else(|| env_var("OTEL_SERVICE_NAME").filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "agent-sts".into());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(otel.sample_ratio))))
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_comes_from_config_then_the_standard_variables() {
        let none = |_: &str| None;
        let mut otel = OtelSettings::default();
        assert_eq!(traces_endpoint(&otel, &none), None, "off when nothing is set");
        let base = |k: &str| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://c:4318/".to_string());
        assert_eq!(traces_endpoint(&otel, &base).as_deref(), Some("http://c:4318/v1/traces"));
        let full = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => Some("http://t:4318/custom".to_string()),
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://c:4318".to_string()),
            _ => None,
        };
        assert_eq!(traces_endpoint(&otel, &full).as_deref(), Some("http://t:4318/custom"));
        otel.endpoint = Some("http://cfg:4318".into());
        assert_eq!(traces_endpoint(&otel, &full).as_deref(), Some("http://cfg:4318/v1/traces"));
        let disabled = |k: &str| (k == "OTEL_SDK_DISABLED").then(|| "true".to_string());
        assert_eq!(traces_endpoint(&otel, &disabled), None);
    }
}
