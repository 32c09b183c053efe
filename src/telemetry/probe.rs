//! Whether the OTLP collector answers, for `parley check`. The exporters send in the background and only log a
//! failed export, so without this a wrong endpoint shows up as an empty tracing backend, hours later.
//!
//! OTLP/HTTP is probed with a real export request carrying no data (an empty protobuf message is a valid one): a
//! collector answers 2xx, so a 401 or 404 is caught as well as a refused connection. OTLP/gRPC is probed with a TCP
//! connection to the endpoint.

use std::time::Duration;

use super::config::{OtlpProtocol, TelemetryConfig};
use super::otel::signal_url;

/// How long a probe waits for the collector.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One plain sentence per enabled OTLP signal whose collector does not answer as it should; empty when export is
/// off or everything answers.
pub async fn unreachable_collectors(config: &TelemetryConfig) -> Vec<String> {
    let protocol = config.effective_protocol();
    let signals = [("traces", config.traces), ("metrics", config.otlp_metrics)];
    let mut problems = Vec::new();
    let mut probed = Vec::new();
    for (signal, enabled) in signals {
        if !enabled {
            continue;
        }
        let url = endpoint(config, protocol, signal);
        if probed.contains(&url) {
            continue;
        }
        let outcome = match protocol {
            OtlpProtocol::HttpProtobuf => probe_http(&url).await,
            OtlpProtocol::Grpc => probe_grpc(&url).await,
        };
        if let Err(problem) = outcome {
            problems.push(format!("OTLP {signal} are not exported: {problem}"));
        }
        probed.push(url);
    }
    problems
}

/// The URL the exporter of `signal` sends to: the configured endpoint, else the standard OTLP variables, else the
/// SDK's localhost default.
pub fn endpoint(config: &TelemetryConfig, protocol: OtlpProtocol, signal: &str) -> String {
    let per_signal = std::env::var(format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.to_ascii_uppercase())).ok();
    let base = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok();
    match protocol {
        OtlpProtocol::HttpProtobuf => match (&config.endpoint, per_signal, base) {
            (Some(endpoint), _, _) => signal_url(endpoint, signal),
            (None, Some(url), _) => url,
            (None, None, Some(base)) => signal_url(&base, signal),
            (None, None, None) => signal_url("http://localhost:4318", signal),
        },
        OtlpProtocol::Grpc => {
            config.endpoint.clone().or(per_signal).or(base).unwrap_or_else(|| "http://localhost:4317".to_owned())
        }
    }
}

async fn probe_http(url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder().timeout(PROBE_TIMEOUT).build().map_err(|e| e.to_string())?;
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Vec::new())
        .send()
        .await
        .map_err(|err| request_failure(&err, url))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {} from {url}", status.as_u16()))
    }
}

async fn probe_grpc(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url} is not a URL: {e}"))?;
    let host = parsed.host_str().ok_or_else(|| format!("{url} names no host"))?.to_owned();
    let port = parsed.port_or_known_default().unwrap_or(4317);
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(format!("connection refused at {url}"))
        }
        Ok(Err(err)) => Err(format!("could not connect to {url}: {err}")),
        Err(_) => Err(format!("no answer within {} s from {url}", PROBE_TIMEOUT.as_secs())),
    }
}

fn request_failure(error: &reqwest::Error, url: &str) -> String {
    if error.is_timeout() {
        return format!("no answer within {} s from {url}", PROBE_TIMEOUT.as_secs());
    }
    crate::mcp::failure::connection_failure(error, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_endpoint_gets_the_signal_path() {
        let config = TelemetryConfig { endpoint: Some("http://collector:4318".into()), ..TelemetryConfig::default() };
        assert_eq!(endpoint(&config, OtlpProtocol::HttpProtobuf, "traces"), "http://collector:4318/v1/traces");
        assert_eq!(endpoint(&config, OtlpProtocol::Grpc, "traces"), "http://collector:4318");
    }

    #[tokio::test]
    async fn nothing_is_probed_when_export_is_off() {
        let config = TelemetryConfig { endpoint: Some("http://127.0.0.1:9".into()), ..TelemetryConfig::default() };
        assert!(unreachable_collectors(&config).await.is_empty());
    }
}
