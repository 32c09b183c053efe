//! Anthropic Messages streaming with tool use.
//!
//! Split like the OpenAI client: [`request`] builds the JSON body (pure), [`stream`] decodes the named SSE events into
//! [`LlmEvent`]s (pure), and this module does the HTTP: the `x-api-key`/`anthropic-version` headers, timeouts, error
//! bodies, and cancellation — dropping the [`LlmStream`] drops the response body, which closes the connection, which
//! is how Anthropic learns the caller barged in (and stops billing output tokens).

pub mod request;
pub mod stream;

use crate::http_client::{describe, header_text, millis};
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use tokio::time::Instant;
use url::Url;

pub use request::build_body;
pub use stream::MessageDecoder;

use super::openai::stream::error_message_from_text;
use super::openai::ToolNames;
use super::sse::{SseEvent, SseParser};
use super::{LanguageModel, LlmError, LlmEvent, LlmRequest, LlmStream};

const PROVIDER: &str = "anthropic";

/// Settings of the Anthropic client.
#[derive(Clone)]
pub struct AnthropicConfig {
    /// API root, e.g. `https://api.anthropic.com`. A bare host gets `/v1/messages`, a path gets `/messages` appended,
    /// a URL already ending in `/messages` is used as is (proxies and gateways).
    pub base_url: String,
    /// Sent as `x-api-key`. Never printed by `Debug`.
    pub api_key: String,
    /// Model name sent with every request.
    pub model: String,
    /// Output token limit; Anthropic requires one on every request.
    pub max_tokens: u32,
    /// Sampling temperature; `None` leaves the server's default.
    pub temperature: Option<f64>,
    /// The `anthropic-version` header: the wire format this client was written against.
    pub version: String,
    /// Limit for establishing the TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Limit from sending the request to the first bytes of the response body.
    pub first_byte_timeout: Duration,
    /// Longest silence allowed between two pieces of the body once it has started (Anthropic pings while thinking).
    pub idle_timeout: Duration,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        AnthropicConfig {
            base_url: "https://api.anthropic.com".into(),
            api_key: String::new(),
            model: "claude-sonnet-4-5".into(),
            max_tokens: 400,
            temperature: None,
            version: "2023-06-01".into(),
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

impl fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .field("temperature", &self.temperature)
            .field("version", &self.version)
            .field("connect_timeout", &self.connect_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// Why an [`Anthropic`] client could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum AnthropicConfigError {
    #[error("invalid base_url {url:?}: {detail}")]
    BaseUrl { url: String, detail: String },
    #[error("the api_key is empty or contains characters that cannot be sent in an HTTP header")]
    ApiKey,
    #[error("invalid anthropic-version {0:?}")]
    Version(String),
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// A streaming Anthropic Messages client.
pub struct Anthropic {
    config: AnthropicConfig,
    endpoint: Url,
    headers: HeaderMap,
    http: reqwest::Client,
}

impl fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Anthropic").field("endpoint", &self.endpoint.as_str()).field("config", &self.config).finish()
    }
}

impl Anthropic {
    /// Validates the configuration and builds the HTTP client (connections are pooled across turns of a call).
    pub fn new(config: AnthropicConfig) -> Result<Self, AnthropicConfigError> {
        let endpoint = messages_url(&config.base_url)?;
        let headers = request_headers(&config)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|error| AnthropicConfigError::Client(describe(&error)))?;
        Ok(Anthropic { config, endpoint, headers, http })
    }

    /// The full URL requests are posted to.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// The configuration this client was built from.
    pub fn config(&self) -> &AnthropicConfig {
        &self.config
    }

    /// Turns a non-success response into [`LlmError::Http`] carrying the message of Anthropic's error body.
    async fn http_error(&self, response: reqwest::Response) -> LlmError {
        let status = response.status().as_u16();
        let retry_after = header_text(response.headers(), RETRY_AFTER);
        let body = match tokio::time::timeout(self.config.first_byte_timeout, response.text()).await {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => format!("(error body unreadable: {})", describe(&error)),
            Err(_) => "(error body not received in time)".into(),
        };
        let mut detail = error_message_from_text(&body);
        if let Some(seconds) = retry_after {
            detail.push_str(&format!("; retry after {seconds} s"));
        }
        LlmError::Http { provider: PROVIDER, status, detail }
    }
}

#[async_trait]
impl LanguageModel for Anthropic {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn stream(&self, request: LlmRequest) -> Result<LlmStream, LlmError> {
        let body = build_body(&self.config, &request);
        let names = ToolNames::for_request(&request);
        let deadline = Instant::now() + self.config.first_byte_timeout;
        let send = self.http.post(self.endpoint.clone()).headers(self.headers.clone()).json(&body).send();
        let response = match tokio::time::timeout_at(deadline, send).await {
            Err(_) => {
                return Err(LlmError::Timeout { provider: PROVIDER, millis: millis(self.config.first_byte_timeout) })
            }
            Ok(Err(error)) => return Err(LlmError::Connect { provider: PROVIDER, detail: describe(&error) }),
            Ok(Ok(response)) => response,
        };
        if !response.status().is_success() {
            return Err(self.http_error(response).await);
        }
        if header_text(response.headers(), CONTENT_TYPE).is_some_and(|t| t.starts_with("application/json")) {
            let body = tokio::time::timeout(self.config.first_byte_timeout, response.text()).await;
            let detail = match body {
                Ok(Ok(body)) => error_message_from_text(&body),
                _ => "answered with JSON instead of an event stream".into(),
            };
            return Err(LlmError::Provider { provider: PROVIDER, detail });
        }
        let request_id = header_text(response.headers(), HeaderName::from_static("request-id"));
        tracing::debug!(provider = PROVIDER, model = %self.config.model, request_id = ?request_id, "llm stream accepted");
        let driver = Driver {
            body: Box::pin(response.bytes_stream()),
            sse: SseParser::new(),
            decoder: Some(MessageDecoder::new(PROVIDER, names)),
            queue: VecDeque::new(),
            request_id,
            first_byte_deadline: Some(deadline),
            first_byte_timeout: self.config.first_byte_timeout,
            idle_timeout: self.config.idle_timeout,
        };
        Ok(Box::pin(futures_util::stream::unfold(driver, |mut driver| async move {
            driver.next().await.map(|item| (item, driver))
        })))
    }
}

/// Reads the response body and turns it into events. Owning the body is what makes cancellation work: when the
/// caller drops the stream, the driver and its body go with it and the connection is closed.
struct Driver {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    sse: SseParser,
    /// `None` once the response is over (finished or failed).
    decoder: Option<MessageDecoder>,
    queue: VecDeque<Result<LlmEvent, LlmError>>,
    request_id: Option<String>,
    /// Set until the first body bytes arrive.
    first_byte_deadline: Option<Instant>,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
}

impl Driver {
    async fn next(&mut self) -> Option<Result<LlmEvent, LlmError>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            match &self.decoder {
                None => return None,
                Some(decoder) if decoder.is_done() => self.end(),
                Some(_) => self.read().await,
            }
        }
    }

    /// Waits for the next piece of the body (within the applicable timeout) and decodes it.
    async fn read(&mut self) {
        let (deadline, limit) = match self.first_byte_deadline {
            Some(deadline) => (deadline, self.first_byte_timeout),
            None => (Instant::now() + self.idle_timeout, self.idle_timeout),
        };
        match tokio::time::timeout_at(deadline, self.body.next()).await {
            Err(_) => self.fail(LlmError::Timeout { provider: PROVIDER, millis: millis(limit) }),
            Ok(Some(Ok(bytes))) => {
                self.first_byte_deadline = None;
                let events = self.sse.push(&bytes);
                self.decode(events);
            }
            Ok(Some(Err(error))) => {
                let detail = format!("the stream was interrupted: {}", describe(&error));
                self.fail(LlmError::Connect { provider: PROVIDER, detail });
            }
            Ok(None) => {
                let events = self.sse.finish();
                self.decode(events);
                self.end();
            }
        }
    }

    fn decode(&mut self, events: Vec<SseEvent>) {
        for event in events {
            let Some(decoder) = self.decoder.as_mut() else { return };
            if decoder.is_done() {
                return;
            }
            match decoder.on_event(&event) {
                Ok(deltas) => self.queue.extend(deltas.into_iter().map(Ok)),
                Err(error) => self.fail(error),
            }
        }
    }

    /// Queues the end of the response (tool calls and finish, or the truncation error).
    fn end(&mut self) {
        if let Some(decoder) = self.decoder.take() {
            match decoder.finish(self.request_id.take()) {
                Ok(events) => self.queue.extend(events.into_iter().map(Ok)),
                Err(error) => self.fail(error),
            }
        }
    }

    fn fail(&mut self, error: LlmError) {
        tracing::debug!(provider = PROVIDER, %error, "llm stream failed");
        self.decoder = None;
        self.queue.push_back(Err(error));
    }
}

/// The URL to post to, derived from the configured API root.
pub fn messages_url(base_url: &str) -> Result<Url, AnthropicConfigError> {
    let invalid = |detail: String| AnthropicConfigError::BaseUrl { url: base_url.to_owned(), detail };
    let mut url = Url::parse(base_url.trim()).map_err(|error| invalid(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https".into()));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let path = if path.ends_with("/messages") {
        path
    } else if path.is_empty() {
        "/v1/messages".to_owned()
    } else {
        format!("{path}/messages")
    };
    url.set_path(&path);
    Ok(url)
}

fn request_headers(config: &AnthropicConfig) -> Result<HeaderMap, AnthropicConfigError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    if config.api_key.is_empty() {
        return Err(AnthropicConfigError::ApiKey);
    }
    let mut key = HeaderValue::from_str(&config.api_key).map_err(|_| AnthropicConfigError::ApiKey)?;
    key.set_sensitive(true);
    headers.insert(HeaderName::from_static("x-api-key"), key);
    let version =
        HeaderValue::from_str(&config.version).map_err(|_| AnthropicConfigError::Version(config.version.clone()))?;
    headers.insert(HeaderName::from_static("anthropic-version"), version);
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_derived_from_the_base_url() {
        let url = |base: &str| messages_url(base).map(|u| u.to_string()).unwrap_or_else(|e| e.to_string());
        assert_eq!(url("https://api.anthropic.com"), "https://api.anthropic.com/v1/messages");
        assert_eq!(url("https://api.anthropic.com/v1/"), "https://api.anthropic.com/v1/messages");
        assert_eq!(url("http://127.0.0.1:9000/v1/messages"), "http://127.0.0.1:9000/v1/messages");
        assert!(messages_url("ftp://example.com").is_err());
    }

    #[test]
    fn headers_and_debug_output() {
        let config = AnthropicConfig { api_key: "sk-ant-secret".into(), ..AnthropicConfig::default() };
        let headers = request_headers(&config).unwrap_or_default();
        assert_eq!(headers.get("x-api-key").and_then(|v| v.to_str().ok()), Some("sk-ant-secret"));
        assert_eq!(headers.get("anthropic-version").and_then(|v| v.to_str().ok()), Some("2023-06-01"));
        let printed = format!("{:?}", Anthropic::new(config));
        assert!(printed.contains("Ok(") && !printed.contains("sk-ant-secret"), "{printed}");
    }

    #[test]
    fn a_missing_or_invalid_key_is_rejected() {
        assert!(matches!(Anthropic::new(AnthropicConfig::default()), Err(AnthropicConfigError::ApiKey)));
        let bad = AnthropicConfig { api_key: "a\nb".into(), ..AnthropicConfig::default() };
        assert!(matches!(Anthropic::new(bad), Err(AnthropicConfigError::ApiKey)));
    }
}
