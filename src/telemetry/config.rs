//! The `[telemetry]` config section: whether Parley exports traces and metrics over OTLP, and where.

use serde::Deserialize;

/// Which OTLP transport carries traces and metrics to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC, the collector's port 4317.
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies, the collector's port 4318.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Tracing and metrics export. Off by default: without it Parley keeps only its logs and the Prometheus endpoint,
/// and builds no spans at all.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Export a trace per call (call → turn → stage spans) over OTLP.
    pub traces: bool,
    /// Also push metrics over OTLP (the Prometheus endpoint `/metrics` is served either way).
    pub otlp_metrics: bool,
    /// Serve `GET /metrics` in the Prometheus text format.
    pub prometheus: bool,
    /// The transport; unset means `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`), else HTTP/protobuf.
    pub protocol: Option<OtlpProtocol>,
    /// Collector base URL (`http://collector:4318`; for HTTP the `/v1/traces` and `/v1/metrics` paths are added).
    /// Unset means the standard `OTEL_EXPORTER_OTLP_*ENDPOINT` variables, else the SDK's localhost default.
    pub endpoint: Option<String>,
    /// `service.name` of the resource; `OTEL_SERVICE_NAME` does not override it when set here.
    pub service_name: String,
    /// `service.instance.id`; unset means hostname and process id, so replicas are told apart.
    pub instance_id: Option<String>,
    /// Fraction of calls traced (0.0–1.0), decided per call at its root span.
    pub sample_ratio: f64,
    /// How often metrics are pushed over OTLP.
    pub metrics_interval_secs: u64,
    /// What the stderr log shows when `RUST_LOG` is not set (an `EnvFilter` directive such as `info` or
    /// `warn,parley=info`).
    pub log: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log: "info".into(),
            traces: false,
            otlp_metrics: false,
            prometheus: true,
            protocol: None,
            endpoint: None,
            service_name: "parley".to_owned(),
            instance_id: None,
            sample_ratio: 1.0,
            metrics_interval_secs: 60,
        }
    }
}

impl TelemetryConfig {
    /// The transport to use: the config, else the standard environment variable, else HTTP/protobuf.
    pub fn effective_protocol(&self) -> OtlpProtocol {
        if let Some(protocol) = self.protocol {
            return protocol;
        }
        match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Ok(value) if value.trim().eq_ignore_ascii_case("grpc") => OtlpProtocol::Grpc,
            _ => OtlpProtocol::HttpProtobuf,
        }
    }

    /// `service.instance.id`: configured, else `hostname-pid`.
    pub fn effective_instance_id(&self) -> String {
        if let Some(id) = &self.instance_id {
            return id.clone();
        }
        format!("{}-{}", host_name(), std::process::id())
    }
}

/// This machine's (or pod's) name: `HOSTNAME`, else `/etc/hostname`, else "parley".
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "parley".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_use_the_otel_spelling() {
        #[derive(Deserialize)]
        struct Wrap {
            telemetry: TelemetryConfig,
        }
        let parsed: Wrap = toml::from_str("[telemetry]\ntraces = true\nprotocol = \"grpc\"\n").expect("parses");
        assert!(parsed.telemetry.traces);
        assert_eq!(parsed.telemetry.effective_protocol(), OtlpProtocol::Grpc);
        let parsed: Wrap = toml::from_str("[telemetry]\nprotocol = \"http/protobuf\"\n").expect("parses");
        assert_eq!(parsed.telemetry.protocol, Some(OtlpProtocol::HttpProtobuf));
        assert!(toml::from_str::<Wrap>("[telemetry]\nprotocol = \"http/json\"\n").is_err());
        assert!(toml::from_str::<Wrap>("[telemetry]\ntracing = true\n").is_err());
    }
}
