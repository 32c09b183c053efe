//! OpenAI-compatible Chat Completions streaming.
//!
//! One client serves OpenAI and every server that speaks its shape (Groq, vLLM, Ollama, llama.cpp's `llama-server`,
//! LiteLLM, …): only [`OpenAiConfig::base_url`] and a few request options differ. The work is split in three:
//! [`request`] builds the JSON body (pure), [`stream`] decodes the event stream into
//! [`LlmEvent`](super::LlmEvent)s (pure), and this module holds the endpoint's settings. The HTTP (timeouts, error
//! bodies, connection reuse, cancellation by drop) is [`super::sse_driver`], shared with the Anthropic client.

pub mod request;
pub mod stream;

use crate::http_client::describe;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION};
use url::Url;

pub use request::{build_body, wire_tool_name, ToolNames};
pub use stream::ChunkDecoder;

use super::sse_driver::{self, SseCall, StreamLimits};
use super::{LanguageModel, LlmError, LlmRequest, LlmStream, DEFAULT_FIRST_TOKEN_TIMEOUT, DEFAULT_IDLE_TIMEOUT};

/// Which request field carries the output token limit: newer OpenAI models want `max_completion_tokens`, older
/// models and many self-hosted servers only know `max_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MaxTokensParam {
    #[default]
    MaxCompletionTokens,
    MaxTokens,
}

/// Settings of one OpenAI-compatible endpoint.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// Provider label for logs, spans and errors (e.g. "openai", "groq", "vllm").
    pub provider: &'static str,
    /// API root, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`. A bare host gets `/v1`; a URL that
    /// already ends in `/chat/completions` is used as is; a query string (Azure's `api-version`) is kept.
    pub base_url: String,
    /// Bearer token; `None` for local servers that need none. Never printed by `Debug`.
    pub api_key: Option<String>,
    /// Model name sent with every request.
    pub model: String,
    /// Sampling temperature; `None` leaves the server's default.
    pub temperature: Option<f64>,
    /// Output token limit; `None` sends none.
    pub max_completion_tokens: Option<u32>,
    /// Field name used for [`Self::max_completion_tokens`].
    pub max_tokens_param: MaxTokensParam,
    /// Send `stream_options: {include_usage: true}` to get token usage; some servers reject the option.
    pub include_usage: bool,
    /// Send `parallel_tool_calls` when tools are offered; `None` leaves it out (not every server knows it).
    pub parallel_tool_calls: Option<bool>,
    /// Limit for establishing the TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Limit from sending the request to the first token of the answer (text, a tool call or its end); the caller
    /// hears this wait as silence.
    pub first_token_timeout: Duration,
    /// Longest silence allowed between two tokens once the answer has started.
    pub idle_timeout: Duration,
    /// Extra headers sent with every request (e.g. `OpenAI-Organization`, or `api-key` for Azure). Their values are
    /// never printed by `Debug`.
    pub extra_headers: Vec<(String, String)>,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            provider: "openai",
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            model: "gpt-4o-mini".into(),
            temperature: None,
            max_completion_tokens: None,
            max_tokens_param: MaxTokensParam::default(),
            include_usage: true,
            parallel_tool_calls: None,
            connect_timeout: Duration::from_secs(5),
            first_token_timeout: DEFAULT_FIRST_TOKEN_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            extra_headers: Vec::new(),
        }
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.extra_headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("OpenAiConfig")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("temperature", &self.temperature)
            .field("max_completion_tokens", &self.max_completion_tokens)
            .field("max_tokens_param", &self.max_tokens_param)
            .field("include_usage", &self.include_usage)
            .field("parallel_tool_calls", &self.parallel_tool_calls)
            .field("connect_timeout", &self.connect_timeout)
            .field("first_token_timeout", &self.first_token_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("extra_headers", &header_names)
            .finish()
    }
}

/// Why an [`OpenAiCompatible`] client could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiConfigError {
    #[error("invalid base_url {url:?}: {detail}")]
    BaseUrl { url: String, detail: String },
    #[error("invalid extra header {name:?}: {detail}")]
    Header { name: String, detail: String },
    #[error("the api_key contains characters that cannot be sent in an HTTP header")]
    ApiKey,
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// A streaming Chat Completions client for OpenAI and OpenAI-compatible servers.
pub struct OpenAiCompatible {
    config: OpenAiConfig,
    endpoint: Url,
    headers: HeaderMap,
    http: reqwest::Client,
}

impl fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompatible")
            .field("endpoint", &self.endpoint.as_str())
            .field("config", &self.config)
            .finish()
    }
}

impl OpenAiCompatible {
    /// Validates the configuration and builds the HTTP client (connections are pooled across turns of a call).
    pub fn new(config: OpenAiConfig) -> Result<Self, OpenAiConfigError> {
        let endpoint = chat_completions_url(&config.base_url)?;
        let headers = request_headers(&config)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|error| OpenAiConfigError::Client(describe(&error)))?;
        Ok(OpenAiCompatible { config, endpoint, headers, http })
    }

    /// The full URL requests are posted to.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// The configuration this client was built from.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }
}

#[async_trait]
impl LanguageModel for OpenAiCompatible {
    fn name(&self) -> &'static str {
        self.config.provider
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn stream(&self, request: LlmRequest) -> Result<LlmStream, LlmError> {
        let provider = self.config.provider;
        let body = build_body(&self.config, &request);
        let names = ToolNames::for_request(&request);
        sse_driver::open(SseCall {
            provider,
            request: self.http.post(self.endpoint.clone()).headers(self.headers.clone()).json(&body),
            limits: StreamLimits { first_token: self.config.first_token_timeout, idle: self.config.idle_timeout },
            request_id_header: HeaderName::from_static("x-request-id"),
            decoder: ChunkDecoder::new(provider, names),
        })
        .await
    }
}

/// The URL to post to, derived from the configured API root.
pub fn chat_completions_url(base_url: &str) -> Result<Url, OpenAiConfigError> {
    let invalid = |detail: String| OpenAiConfigError::BaseUrl { url: base_url.to_owned(), detail };
    let mut url = Url::parse(base_url.trim()).map_err(|error| invalid(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https".into()));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let path = if path.ends_with("/chat/completions") {
        path
    } else if path.is_empty() {
        "/v1/chat/completions".to_owned()
    } else {
        format!("{path}/chat/completions")
    };
    url.set_path(&path);
    Ok(url)
}

fn request_headers(config: &OpenAiConfig) -> Result<HeaderMap, OpenAiConfigError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    if let Some(key) = config.api_key.as_deref().filter(|key| !key.is_empty()) {
        let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| OpenAiConfigError::ApiKey)?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    for (name, value) in &config.extra_headers {
        let invalid = |detail: String| OpenAiConfigError::Header { name: name.clone(), detail };
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|error| invalid(error.to_string()))?;
        let mut header_value =
            HeaderValue::from_str(value).map_err(|_| invalid("invalid characters in the value".into()))?;
        header_value.set_sensitive(true);
        headers.insert(header_name, header_value);
    }
    Ok(headers)
}

/// `[llm.openai]` in the configuration file: unset fields keep this client's defaults.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiSettings {
    pub base_url: Option<String>,
    pub model: String,
    pub temperature: Option<f64>,
    pub max_completion_tokens: Option<u32>,
    /// Some servers reject `stream_options.include_usage`.
    pub include_usage: Option<bool>,
    /// Environment variable holding the API key; unset variables mean no key (local servers).
    pub api_key_env: String,
}

impl Default for OpenAiSettings {
    fn default() -> Self {
        OpenAiSettings {
            base_url: None,
            model: "gpt-4o-mini".into(),
            temperature: Some(0.3),
            max_completion_tokens: Some(300),
            include_usage: None,
            api_key_env: "OPENAI_API_KEY".into(),
        }
    }
}

impl OpenAiSettings {
    /// The Chat Completions client's configuration; the key is required for OpenAI's own API only.
    pub fn client_config(&self) -> Result<OpenAiConfig, Vec<crate::settings::SettingsError>> {
        let mut errors = Vec::new();
        let needs_key = crate::settings::is_openai_api(self.base_url.as_deref());
        let defaults = OpenAiConfig::default();
        let config = OpenAiConfig {
            api_key: crate::settings::api_key(&self.api_key_env, "llm.openai", needs_key, &mut errors),
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model: self.model.clone(),
            temperature: self.temperature,
            max_completion_tokens: self.max_completion_tokens,
            include_usage: self.include_usage.unwrap_or(defaults.include_usage),
            ..OpenAiConfig::default()
        };
        crate::settings::finish(config, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_derived_from_the_base_url() {
        let url = |base: &str| chat_completions_url(base).map(|u| u.to_string()).unwrap_or_else(|e| e.to_string());
        assert_eq!(url("https://api.openai.com/v1"), "https://api.openai.com/v1/chat/completions");
        assert_eq!(url("https://api.groq.com/openai/v1/"), "https://api.groq.com/openai/v1/chat/completions");
        assert_eq!(url("http://127.0.0.1:11434"), "http://127.0.0.1:11434/v1/chat/completions");
        assert_eq!(url("http://localhost:8080/v1/chat/completions"), "http://localhost:8080/v1/chat/completions");
        assert_eq!(
            url("https://x.openai.azure.com/openai/deployments/d?api-version=2024-10-21"),
            "https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"
        );
        assert!(chat_completions_url("ftp://example.com").is_err());
        assert!(chat_completions_url("not a url").is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = OpenAiConfig {
            api_key: Some("sk-secret-value".into()),
            extra_headers: vec![("api-key".into(), "azure-secret".into())],
            ..OpenAiConfig::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("sk-secret-value") && !printed.contains("azure-secret"), "{printed}");
        assert!(printed.contains("api-key"));
        let client = OpenAiCompatible::new(config);
        let printed = format!("{client:?}");
        assert!(client.is_ok(), "{printed}");
        assert!(!printed.contains("sk-secret-value") && !printed.contains("azure-secret"), "{printed}");
    }

    #[test]
    fn headers_carry_the_key_only_when_configured() {
        let with_key = OpenAiConfig { api_key: Some("sk-1".into()), ..OpenAiConfig::default() };
        let headers = request_headers(&with_key).unwrap_or_default();
        assert_eq!(headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()), Some("Bearer sk-1"));
        let headers = request_headers(&OpenAiConfig::default()).unwrap_or_default();
        assert!(headers.get(AUTHORIZATION).is_none());
        assert_eq!(headers.get(ACCEPT).and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    }

    #[test]
    fn invalid_configuration_is_rejected() {
        let bad_header =
            OpenAiConfig { extra_headers: vec![("bad header".into(), "x".into())], ..OpenAiConfig::default() };
        assert!(matches!(OpenAiCompatible::new(bad_header), Err(OpenAiConfigError::Header { .. })));
        let bad_key = OpenAiConfig { api_key: Some("sk\nnewline".into()), ..OpenAiConfig::default() };
        let error = OpenAiCompatible::new(bad_key).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("api_key") && !error.contains("newline"), "{error}");
    }
}
