//! The OpenTelemetry tracing pipeline: an OTLP span exporter (gRPC or HTTP/protobuf), the W3C propagator, and the
//! helpers the engine uses to build spans with the times it measured.
//!
//! Parley's spans come from two sources: the call's root span is a `tracing` span (so the call's log lines carry it)
//! bridged by `tracing-opentelemetry`; the turn and stage spans are built with the OpenTelemetry API directly, because
//! their start and end times are only known once a stage is over (they come from [`super::latency`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tokio::time::Instant;

use super::config::{OtlpProtocol, TelemetryConfig};
use super::TelemetryError;

/// Name of the instrumentation scope of every Parley span.
pub const SCOPE: &str = "parley";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are being exported. Checked before building any span, so tracing off costs one atomic load.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The tracer of Parley's hand-built spans (a no-op until a provider is installed).
pub fn tracer() -> BoxedTracer {
    global::tracer(SCOPE)
}

/// Builds the tracer provider exporting over OTLP, installs it and the W3C propagator globally, and switches span
/// building on.
pub fn install(config: &TelemetryConfig, resource: Resource) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = match config.effective_protocol() {
        OtlpProtocol::Grpc => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if let Some(endpoint) = &config.endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            builder.build()
        }
        OtlpProtocol::HttpProtobuf => {
            let mut builder =
                opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary);
            if let Some(endpoint) = &config.endpoint {
                builder = builder.with_endpoint(signal_url(endpoint, "traces"));
            }
            builder.build()
        }
    }
    .map_err(|err| TelemetryError::Exporter(err.to_string()))?;
    let ratio = config.sample_ratio.clamp(0.0, 1.0);
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
        .with_resource(resource)
        .build();
    activate(&provider);
    Ok(provider)
}

/// Makes `provider` the tracer of Parley's spans and switches span building on (benchmarks install their own
/// provider with a no-op exporter this way).
pub fn activate(provider: &SdkTracerProvider) {
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Relaxed);
}

/// The per-signal URL of an OTLP/HTTP collector given as a base URL (the config field mirrors the generic
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, which is a base URL too).
pub fn signal_url(base: &str, signal: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(&format!("/v1/{signal}")) {
        base.to_owned()
    } else {
        format!("{base}/v1/{signal}")
    }
}

/// The W3C `traceparent` of a context's span, for the MCP `_meta` and HTTP header. `None` when tracing is off or
/// the context has no sampled span.
pub fn traceparent(cx: &Context) -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent")
}

/// A moment read on both clocks, to turn the engine's monotonic instants into span timestamps. A turn's spans all
/// use one anchor, so their times are consistent with each other to the nanosecond.
#[derive(Debug, Clone, Copy)]
pub struct ClockAnchor {
    instant: Instant,
    wall: SystemTime,
}

impl ClockAnchor {
    pub fn now() -> ClockAnchor {
        ClockAnchor { instant: Instant::now(), wall: SystemTime::now() }
    }

    /// The wall-clock time of `at`.
    pub fn wall_clock(&self, at: Instant) -> SystemTime {
        if at <= self.instant {
            self.wall.checked_sub(self.instant - at).unwrap_or(self.wall)
        } else {
            self.wall.checked_add(at - self.instant).unwrap_or(self.wall)
        }
    }
}

/// The wall-clock time of a monotonic instant, for spans built after the fact.
pub fn wall_clock(at: Instant) -> SystemTime {
    ClockAnchor::now().wall_clock(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_endpoints_get_the_signal_path_once() {
        assert_eq!(signal_url("http://c:4318", "traces"), "http://c:4318/v1/traces");
        assert_eq!(signal_url("http://c:4318/", "metrics"), "http://c:4318/v1/metrics");
        assert_eq!(signal_url("http://c:4318/v1/traces", "traces"), "http://c:4318/v1/traces");
    }

    #[test]
    fn wall_clock_keeps_the_order_of_instants() {
        let now = Instant::now();
        let earlier = now.checked_sub(std::time::Duration::from_millis(500)).unwrap_or(now);
        assert!(wall_clock(earlier) <= wall_clock(now));
    }
}
