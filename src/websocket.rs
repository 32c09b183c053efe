//! Parley's WebSocket connections: the settings every socket shares (Twilio's media stream and the streaming
//! providers), and the one way a provider's socket is opened.
//!
//! tungstenite's default read buffer is 128 KiB per socket, allocated up front and zero-filled before every read.
//! Parley's sockets carry small messages (a 20 ms media frame is about 250 bytes of JSON, a provider's message a few
//! KiB), so with the default the buffers were most of a call's memory and their zeroing the largest single CPU cost
//! under load.
//!
//! Every WebSocket provider (Deepgram, Deepgram Flux, Cartesia, ElevenLabs) opens its session through [`connect`]:
//! one connect limit, auth headers marked sensitive so they never reach a log, and one meaning for a failed
//! handshake ([`HandshakeError`]) that each stage turns into its error the same way — an HTTP 401 on the upgrade is
//! `Rejected { status: 401 }` whichever provider answered it.

use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::http::Response;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Error as WsError;
use url::Url;

/// Read buffer per socket: room for any routine message; a larger one is simply read in several steps.
pub const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Longest excerpt of a refusal's body kept in the error (the provider's reason, not a whole HTML page).
const MAX_REJECT_BODY_CHARS: usize = 512;

/// An open provider socket.
pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The configuration for Parley's outgoing WebSocket connections (providers).
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES)
}

/// Why a provider's socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The URL or a header cannot be sent at all (a configuration mistake, e.g. a newline in a key).
    #[error("{0}")]
    Request(String),
    /// No answer within the connect limit, or the network failed before the server could answer.
    #[error("{0}")]
    Connect(String),
    /// The server answered the upgrade with an HTTP status instead (401 bad key, 400 bad parameters, 429 busy).
    #[error("handshake rejected with HTTP {status}: {detail}")]
    Rejected { status: u16, detail: String },
}

/// A header of the upgrade request. Every value is marked sensitive (keys, tokens): none is ever printed.
pub struct UpgradeHeader<'a> {
    pub name: HeaderName,
    pub value: &'a str,
}

/// Opens a provider socket: the upgrade request to `url` with `headers`, within `timeout`. Returns the socket and
/// the server's upgrade response (its headers carry request ids).
pub async fn connect(
    url: &Url,
    headers: &[UpgradeHeader<'_>],
    timeout: Duration,
) -> Result<(Socket, Response<Option<Vec<u8>>>), HandshakeError> {
    let mut request =
        url.as_str().into_client_request().map_err(|error| HandshakeError::Request(format!("invalid URL: {error}")))?;
    for header in headers {
        let mut value = HeaderValue::from_str(header.value).map_err(|_| {
            HandshakeError::Request(format!("the {} header contains characters not allowed in HTTP", header.name))
        })?;
        value.set_sensitive(true);
        request.headers_mut().insert(header.name.clone(), value);
    }
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(client_config()), true);
    match tokio::time::timeout(timeout, connect).await {
        Err(_) => Err(HandshakeError::Connect(format!("handshake timed out after {timeout:?}"))),
        Ok(Err(error)) => Err(handshake_error(error)),
        Ok(Ok(opened)) => Ok(opened),
    }
}

/// An HTTP answer to the upgrade is a rejection carrying the status and the start of the body (or the status's
/// reason); anything else is a connection failure.
fn handshake_error(error: WsError) -> HandshakeError {
    match error {
        WsError::Http(response) => {
            let status = response.status();
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let body = body.trim();
            let detail = if body.is_empty() {
                status.canonical_reason().unwrap_or("handshake refused").to_owned()
            } else {
                crate::text::excerpt(body, MAX_REJECT_BODY_CHARS)
            };
            HandshakeError::Rejected { status: status.as_u16(), detail }
        }
        other => HandshakeError::Connect(other.to_string()),
    }
}

/// What a close frame says, for the error that reports a lost session.
pub fn close_detail(close: Option<&CloseFrame>) -> String {
    match close {
        Some(frame) => format!("close frame {}: {}", u16::from(frame.code), frame.reason.as_str()),
        None => "close frame without a reason".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::http;

    #[test]
    fn an_http_answer_to_the_upgrade_is_a_rejection_with_its_reason() {
        let response = |status: u16, body: Option<&str>| {
            let response = http::Response::builder().status(status).body(body.map(|b| b.as_bytes().to_vec()));
            WsError::Http(Box::new(response.unwrap_or_default()))
        };
        match handshake_error(response(401, Some(" {\"err_msg\":\"INVALID_AUTH\"} "))) {
            HandshakeError::Rejected { status: 401, detail } => assert_eq!(detail, "{\"err_msg\":\"INVALID_AUTH\"}"),
            other => panic!("{other:?}"),
        }
        match handshake_error(response(429, None)) {
            HandshakeError::Rejected { status: 429, detail } => assert_eq!(detail, "Too Many Requests"),
            other => panic!("{other:?}"),
        }
        let long = "x".repeat(2000);
        let HandshakeError::Rejected { detail, .. } = handshake_error(response(400, Some(&long))) else {
            panic!("not a rejection");
        };
        assert_eq!(detail.chars().count(), MAX_REJECT_BODY_CHARS + 1);
        assert!(matches!(handshake_error(WsError::ConnectionClosed), HandshakeError::Connect(_)));
    }

    #[tokio::test]
    async fn a_header_that_cannot_be_sent_is_refused_without_printing_it() {
        let url = Url::parse("ws://127.0.0.1:9/").unwrap_or_else(|e| panic!("{e}"));
        let headers = [UpgradeHeader { name: HeaderName::from_static("xi-api-key"), value: "secret\nkey" }];
        match connect(&url, &headers, Duration::from_secs(1)).await {
            Err(HandshakeError::Request(detail)) => {
                assert!(detail.contains("xi-api-key") && !detail.contains("secret"), "{detail}")
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("connected"),
        }
    }
}
