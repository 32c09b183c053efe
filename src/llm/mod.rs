//! Streaming LLM chat with function calling: one trait, one file per provider.
//!
//! Cancellation is by drop: dropping an [`LlmStream`] aborts the HTTP request, which is what barge-in does.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

/// Errors from an LLM provider.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("could not reach {provider}: {detail}")]
    Connect { provider: &'static str, detail: String },
    #[error("{provider} answered HTTP {status}: {detail}")]
    Http { provider: &'static str, status: u16, detail: String },
    #[error("{provider} sent a stream Parley could not parse: {detail}")]
    Protocol { provider: &'static str, detail: String },
    #[error("{provider} reported an error mid-stream: {detail}")]
    Provider { provider: &'static str, detail: String },
    /// The model kept the caller waiting past a configured limit ([`DEFAULT_FIRST_TOKEN_TIMEOUT`],
    /// [`DEFAULT_IDLE_TIMEOUT`]). Failover treats it like a server error: the next provider is tried.
    #[error("{provider} sent nothing for {millis} ms while Parley waited for {waiting_for}")]
    Timeout { provider: &'static str, millis: u64, waiting_for: &'static str },
}

/// How long a model may take from the request to its first token (text, a tool call or its end). On the phone a
/// caller hears this wait as dead air, so the limit is a few seconds rather than the minutes an HTTP client allows:
/// past it the failover list moves on, or the agent speaks its fallback line.
pub const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(4);

/// Longest silence allowed between two tokens once the model has started answering.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who said a message in the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A function call the model asked for. `arguments` is the raw JSON text the model produced (it may be invalid).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One message of the conversation history, provider-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// Calls the assistant made in this message (assistant messages only).
    pub tool_calls: Vec<ToolCall>,
    /// Which call this message answers (tool messages only).
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self::plain(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::plain(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::plain(Role::Assistant, content)
    }
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { tool_call_id: Some(call_id.into()), ..Self::plain(Role::Tool, content) }
    }
    fn plain(role: Role, content: impl Into<String>) -> Self {
        ChatMessage { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }
}

/// A function the model may call, in provider-neutral form (a JSON Schema for its parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// One generation request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmRequest {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    Other(String),
}

/// Token usage as reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every prompt token of the request, read from the provider's prompt cache or not.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The part of `input_tokens` the provider read from its prompt cache: cheaper, and no prefill time.
    pub cached_input_tokens: u64,
    /// The part of `input_tokens` written to the prompt cache by this request (Anthropic reports it; it costs more
    /// once and makes the next turns' prefix a cache hit).
    pub cache_write_input_tokens: u64,
}

impl Usage {
    /// A usage with no cache figures.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Usage {
        Usage { input_tokens, output_tokens, ..Usage::default() }
    }
}

/// What a generation stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// A piece of reply text, to be spoken.
    TextDelta(String),
    /// Every tool call of this response, complete, once the stream has ended.
    ToolCalls(Vec<ToolCall>),
    /// The stream ended.
    Finished { reason: FinishReason, usage: Option<Usage>, request_id: Option<String> },
}

/// A generation in flight. Drop it to cancel.
pub type LlmStream = Pin<Box<dyn Stream<Item = Result<LlmEvent, LlmError>> + Send>>;

/// A streaming chat model.
#[async_trait]
pub trait LanguageModel: Send + Sync {
    /// Provider name for logs and spans.
    fn name(&self) -> &'static str;
    /// Model name for logs and spans.
    fn model(&self) -> &str;
    /// Sends the request; returns once the provider accepted it (HTTP status known).
    async fn stream(&self, request: LlmRequest) -> Result<LlmStream, LlmError>;
}

pub mod anthropic;
pub mod context;
pub mod failover;
pub mod history;
pub mod openai;
pub mod routing;
pub mod scripted;
pub mod speculative;
pub mod sse;
pub mod sse_driver;
pub mod tool_calls;
