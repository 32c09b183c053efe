//! Anthropic Messages streaming with tool use.
//!
//! Split like the OpenAI client: [`request`] builds the JSON body (pure), [`stream`] decodes the named SSE events into
//! [`LlmEvent`](super::LlmEvent)s (pure), and this module holds the settings and the `x-api-key`/`anthropic-version`
//! headers. The HTTP (timeouts, error bodies, connection reuse, cancellation by drop — which is how Anthropic learns
//! the caller barged in and stops billing output tokens) is [`super::sse_driver`], shared with the OpenAI client.

pub mod request;
pub mod stream;

use crate::http_client::describe;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT};
use url::Url;

pub use request::build_body;
pub use stream::MessageDecoder;

use super::openai::ToolNames;
use super::sse_driver::{self, SseCall, StreamLimits};
use super::{LanguageModel, LlmError, LlmRequest, LlmStream, DEFAULT_FIRST_TOKEN_TIMEOUT, DEFAULT_IDLE_TIMEOUT};

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
    /// Limit from sending the request to the first token of the answer (text, a tool call or its end); the caller
    /// hears this wait as silence. `message_start` and pings do not count as the answer.
    pub first_token_timeout: Duration,
    /// Longest silence allowed between two tokens once the answer has started (pings do not count).
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
            first_token_timeout: DEFAULT_FIRST_TOKEN_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
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
            .field("first_token_timeout", &self.first_token_timeout)
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
        sse_driver::open(SseCall {
            provider: PROVIDER,
            request: self.http.post(self.endpoint.clone()).headers(self.headers.clone()).json(&body),
            limits: StreamLimits { first_token: self.config.first_token_timeout, idle: self.config.idle_timeout },
            request_id_header: HeaderName::from_static("request-id"),
            decoder: MessageDecoder::new(PROVIDER, names),
        })
        .await
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

/// `[llm.anthropic]`: unset fields keep the client's defaults (`llm::anthropic::AnthropicConfig`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicSettings {
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    /// The `anthropic-version` header.
    pub version: Option<String>,
    /// Environment variable holding the API key (required).
    pub api_key_env: String,
}

impl Default for AnthropicSettings {
    fn default() -> Self {
        AnthropicSettings {
            base_url: None,
            model: None,
            max_tokens: None,
            temperature: None,
            version: None,
            api_key_env: "ANTHROPIC_API_KEY".into(),
        }
    }
}

impl AnthropicSettings {
    /// The Messages client's configuration; the key is required.
    pub fn client_config(&self) -> Result<AnthropicConfig, Vec<crate::settings::SettingsError>> {
        let mut errors = Vec::new();
        let api_key =
            crate::settings::api_key(&self.api_key_env, "llm.anthropic", true, &mut errors).unwrap_or_default();
        let defaults = AnthropicConfig::default();
        let config = AnthropicConfig {
            api_key,
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model: self.model.clone().unwrap_or(defaults.model),
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
            temperature: self.temperature.or(defaults.temperature),
            version: self.version.clone().unwrap_or(defaults.version),
            ..AnthropicConfig::default()
        };
        crate::settings::finish(config, errors)
    }
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
