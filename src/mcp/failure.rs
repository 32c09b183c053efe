//! Why a connection to an MCP server failed, in one plain sentence naming the endpoint ("connection refused at
//! http://…", "HTTP 401 from http://…", "no answer to initialize within 5 s from …"), for `parley check`, the
//! report and the logs. rmcp's own error texts name Rust types and nest several layers deep; an operator reading
//! `parley check` needs what failed and where.

use std::time::Duration;

use rmcp::service::ClientInitializeError;
use rmcp::transport::streamable_http_client::StreamableHttpError;
use rmcp::ServiceError;

use crate::mcp::config::McpTransportConfig;

/// Where a server is reached, without credentials or query: the HTTP endpoint, or the stdio command.
pub fn endpoint(transport: &McpTransportConfig) -> String {
    match transport {
        McpTransportConfig::Http { url, .. } => match url::Url::parse(url) {
            Ok(mut parsed) => {
                let _ = parsed.set_username("");
                let _ = parsed.set_password(None);
                parsed.set_query(None);
                parsed.set_fragment(None);
                parsed.to_string()
            }
            Err(_) => "(invalid URL)".to_string(),
        },
        McpTransportConfig::Stdio { command, .. } => command.clone(),
    }
}

/// A request that got no answer in time.
pub fn no_answer(request: &str, timeout: Duration, endpoint: &str) -> String {
    format!("no answer to {request} within {} from {endpoint}", seconds(timeout))
}

/// `5 s`, `1.5 s`, `0.25 s`.
fn seconds(duration: Duration) -> String {
    let text = format!("{:.3}", duration.as_secs_f64());
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} s")
}

/// The MCP handshake failed.
pub fn initialize(error: &ClientInitializeError, endpoint: &str) -> String {
    match error {
        ClientInitializeError::TransportError { error, .. } => transport(error.error.as_ref(), endpoint),
        ClientInitializeError::LegacyFallbackFailed { discover, fallback } => {
            // The first attempt's failure says most about the endpoint (a refused connection fails both alike).
            let first =
                if matches!(**discover, ClientInitializeError::TransportError { .. }) { discover } else { fallback };
            initialize(first, endpoint)
        }
        ClientInitializeError::ConnectionClosed(_) => {
            format!("{endpoint} closed the connection before answering initialize")
        }
        ClientInitializeError::JsonRpcError(data) => format!("{endpoint} refused initialize: {}", data.message),
        ClientInitializeError::NoCompatibleProtocolVersion { server_supported, .. } => {
            let versions: Vec<String> = server_supported.iter().map(|v| v.to_string()).collect();
            format!("{endpoint} speaks no MCP version Parley supports (it offers {})", versions.join(", "))
        }
        ClientInitializeError::Cancelled => format!("connecting to {endpoint} was cancelled"),
        _ => format!("{endpoint} did not answer initialize as MCP requires"),
    }
}

/// A request after the handshake failed.
pub fn service(error: &ServiceError) -> String {
    match error {
        ServiceError::McpError(data) => data.message.to_string(),
        ServiceError::TransportSend(error) => transport(error.error.as_ref(), "the server"),
        ServiceError::TransportClosed => "the connection closed".to_string(),
        ServiceError::Timeout { timeout } => format!("no answer within {}", seconds(*timeout)),
        other => other.to_string(),
    }
}

/// A transport failure: the HTTP client's, or a child process's I/O error.
fn transport(error: &(dyn std::error::Error + 'static), endpoint: &str) -> String {
    if let Some(http) = error.downcast_ref::<StreamableHttpError<reqwest013::Error>>() {
        return http_failure(http, endpoint);
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        return format!("{endpoint} could not be reached: {io}");
    }
    format!("{endpoint} could not be reached: {error}")
}

fn http_failure(error: &StreamableHttpError<reqwest013::Error>, endpoint: &str) -> String {
    match error {
        StreamableHttpError::Client(client) => request_failure(client, endpoint),
        StreamableHttpError::HttpStatus(status) => format!("HTTP {} from {endpoint}", status.status),
        StreamableHttpError::AuthRequired(_) => format!("HTTP 401 from {endpoint} (authentication required)"),
        StreamableHttpError::InsufficientScope(_) => format!("HTTP 403 from {endpoint} (insufficient scope)"),
        StreamableHttpError::UnexpectedServerResponse(text) => match status_in(text) {
            Some(status) => format!("HTTP {status} from {endpoint}"),
            None => format!("{endpoint} answered with something that is not MCP: {}", first_line(text)),
        },
        StreamableHttpError::UnexpectedContentType(kind) => {
            format!("{endpoint} answered with content type {} instead of MCP", kind.as_deref().unwrap_or("(none)"))
        }
        StreamableHttpError::Io(io) => format!("{endpoint} could not be reached: {io}"),
        other => format!("{endpoint} failed: {}", first_line(&other.to_string())),
    }
}

/// reqwest's error: refused or failed connections, timeouts, and statuses.
fn request_failure(error: &reqwest013::Error, endpoint: &str) -> String {
    if let Some(status) = error.status() {
        return format!("HTTP {} from {endpoint}", status.as_u16());
    }
    if error.is_timeout() {
        return format!("no answer from {endpoint}");
    }
    connection_failure(error, endpoint)
}

/// A failed HTTP request in plain words, from the I/O error at the bottom of its source chain: "connection refused
/// at http://…". Shared with the OTLP probe of `parley check`.
pub fn connection_failure(error: &(dyn std::error::Error + 'static), endpoint: &str) -> String {
    let mut source = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => format!("connection refused at {endpoint}"),
                std::io::ErrorKind::ConnectionReset => format!("connection reset by {endpoint}"),
                _ => format!("could not connect to {endpoint}: {io}"),
            };
        }
        source = current.source();
    }
    format!("could not reach {endpoint}")
}

/// The status of rmcp's `HTTP 401 Unauthorized: <body>` texts.
fn status_in(text: &str) -> Option<u16> {
    let rest = text.strip_prefix("HTTP ")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The first line of a text, at most 200 characters (server answers can be whole pages).
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_short() {
        assert_eq!(seconds(Duration::from_secs(5)), "5 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(seconds(Duration::from_millis(250)), "0.25 s");
    }

    #[test]
    fn statuses_are_read_from_rmcp_texts() {
        assert_eq!(status_in("HTTP 401 Unauthorized: nope"), Some(401));
        assert_eq!(status_in("HTTP 503: down"), Some(503));
        assert_eq!(status_in("something else"), None);
    }

    #[test]
    fn endpoints_lose_credentials_and_query() {
        let transport = McpTransportConfig::Http {
            url: "https://user:secret@backend.example/mcp?token=abc".into(),
            bearer_token_env: None,
            headers_env: Default::default(),
        };
        assert_eq!(endpoint(&transport), "https://backend.example/mcp");
    }

    #[test]
    fn http_statuses_read_as_a_sentence() {
        let error =
            StreamableHttpError::<reqwest013::Error>::UnexpectedServerResponse("HTTP 401 Unauthorized: x".into());
        assert_eq!(http_failure(&error, "http://127.0.0.1:1/mcp"), "HTTP 401 from http://127.0.0.1:1/mcp");
    }
}
