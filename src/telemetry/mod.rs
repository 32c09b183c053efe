//! Logs, traces and metrics. Logs always go to stderr; traces and metrics go out over OTLP when `[telemetry]` says
//! so, and metrics are always readable at `GET /metrics`.

pub mod config;
pub mod latency;
pub mod metrics;
pub mod otel;
pub mod probe;
pub mod redact;
pub mod spans;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use config::{OtlpProtocol, TelemetryConfig};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("a log subscriber was already installed: {0}")]
    AlreadyInstalled(String),
}

/// What [`init`] installed; keep it for the life of the process and [`Telemetry::shutdown`] it at exit so the last
/// spans are exported.
#[derive(Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every span ended so far (tests read the collector right after).
    pub fn flush(&self) {
        if let Some(tracer) = &self.tracer {
            if let Err(err) = tracer.force_flush() {
                tracing::warn!(%err, "could not flush spans");
            }
        }
    }

    /// Flushes and stops the exporters. Blocks: call it off the async runtime (`spawn_blocking`).
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer {
            if let Err(err) = tracer.shutdown() {
                tracing::warn!(%err, "could not flush the last spans");
            }
        }
        metrics::global().shutdown();
    }
}

/// The resource every span and metric carries: `service.name`, `service.version`, `service.instance.id`.
pub fn resource(config: &TelemetryConfig) -> Resource {
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", config.effective_instance_id()),
        ])
        .build()
}

/// Installs the log subscriber and, as `config` asks, the OTLP trace and metric exporters. Must run inside the Tokio
/// runtime (the gRPC exporter needs it).
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    // The OTLP HTTP client is built on rustls without a bundled crypto provider, like the MCP client.
    crate::mcp::ensure_crypto_provider();
    let resource = resource(config);
    metrics::install(config, resource.clone())?;
    let tracer = if config.traces { Some(otel::install(config, resource)?) } else { None };
    let mut layers = vec![log_layer(&config.log)];
    if let Some(provider) = &tracer {
        // The call span is at INFO; the OTel layer keeps its own filter so `RUST_LOG=warn` does not drop traces.
        layers.push(span_layer(provider).with_filter(LevelFilter::INFO).boxed());
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|err| TelemetryError::AlreadyInstalled(err.to_string()))?;
    Ok(Telemetry { tracer })
}

/// The bridge from `tracing` spans to OpenTelemetry spans, keeping only attributes that mean something to whoever
/// reads the trace: the fields Parley records. tracing-opentelemetry's defaults would add the source file and line
/// (paths of the build machine), the module (`target`), the thread's name and id, and busy/idle nanoseconds (the
/// time a span's future was polled, not anything the caller waited for).
pub fn span_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(otel::SCOPE))
        .with_location(false)
        .with_target(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
}

/// rmcp, the MCP library, logs each connection's life (and a server's whole `instructions` text) at INFO and its
/// failed attempts at ERROR, repeating what Parley reports itself in plain words. Its lines show only when the
/// filter asks for debug (or names `rmcp`).
fn library_logs_at_debug(directive: &str) -> String {
    let verbose = EnvFilter::new(directive).max_level_hint().is_some_and(|level| level >= LevelFilter::DEBUG);
    if verbose || directive.contains("rmcp") {
        directive.to_owned()
    } else {
        format!("{directive},rmcp=off")
    }
}

/// The stderr log layer: `RUST_LOG` filters (default `default_filter`), `PARLEY_LOG_FORMAT=json` for JSON lines.
fn log_layer(default_filter: &str) -> Box<dyn Layer<Registry> + Send + Sync> {
    let directive = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| default_filter.to_owned());
    let filter = EnvFilter::try_new(library_logs_at_debug(&directive))
        .unwrap_or_else(|_| EnvFilter::new(library_logs_at_debug(default_filter)));
    let json = std::env::var("PARLEY_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json {
        layer.json().with_filter(filter).boxed()
    } else {
        layer.with_filter(filter).boxed()
    }
}

/// Installs the log subscriber only (tools and tests that do not export telemetry).
pub fn init_logging() {
    init_logging_with("info");
}

/// Installs the log subscriber only, showing `default_filter` when `RUST_LOG` is not set.
pub fn init_logging_with(default_filter: &str) {
    if let Err(err) = tracing_subscriber::registry().with(vec![log_layer(default_filter)]).try_init() {
        eprintln!("logging was already initialised: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mcp_library_logs_only_at_debug() {
        assert_eq!(library_logs_at_debug("info"), "info,rmcp=off");
        assert_eq!(library_logs_at_debug("warn,parley=info"), "warn,parley=info,rmcp=off");
        assert_eq!(library_logs_at_debug("debug"), "debug");
        assert_eq!(library_logs_at_debug("info,rmcp=info"), "info,rmcp=info");
    }
}
