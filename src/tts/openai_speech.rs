//! OpenAI `/v1/audio/speech` text-to-speech (and the self-hosted servers that implement the same endpoint).
//!
//! The endpoint takes whole text, not a stream of tokens, so each text piece of a reply becomes one HTTP request;
//! the pieces of one context are spoken in order, one request at a time, while different contexts run
//! independently. Audio is requested as `pcm` (raw 24 kHz s16le) and converted to the 8 kHz μ-law Twilio plays by
//! [`decimate::Pcm24kToMulaw8k`] as the body streams in, so speech starts before the request completes.
//!
//! Barge-in: [`TtsInput::Cancel`] aborts the context's task, which drops the response body and so aborts the HTTP
//! request; nothing more is reported for that context. Higher latency than the WebSocket providers (request setup
//! per piece) makes this a fallback or self-hosted option rather than the primary low-latency path.

pub mod decimate;

use crate::http_client::describe;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use url::Url;

use self::decimate::Pcm24kToMulaw8k;
use super::{ContextId, TextToSpeech, TtsError, TtsEvent, TtsInput, TtsSession};
use crate::llm::openai::stream::error_message_from_text;

/// Provider name used in errors, logs and spans.
pub const PROVIDER: &str = "openai-speech";

/// Capacity of the session's input and event channels.
const CHANNEL_CAPACITY: usize = 256;

/// Longest `input` the endpoint accepts, in characters; longer pieces are split at word boundaries.
const MAX_INPUT_CHARS: usize = 4096;

/// Settings of the OpenAI speech client.
#[derive(Clone)]
pub struct OpenAiSpeechConfig {
    /// API root, e.g. `https://api.openai.com/v1`; `/audio/speech` is appended (a bare host gets `/v1` first).
    pub base_url: String,
    /// Bearer token; `None` for local servers that need none. Never printed by `Debug`.
    pub api_key: Option<String>,
    /// `tts-1`, `tts-1-hd`, `gpt-4o-mini-tts`, or a self-hosted server's model name.
    pub model: String,
    /// Voice name, e.g. `alloy`.
    pub voice: String,
    /// Speaking style instructions (not supported by `tts-1*`); `None` sends none.
    pub instructions: Option<String>,
    /// Speaking speed; `None` leaves the server's default.
    pub speed: Option<f64>,
    /// Limit for establishing the TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Limit from sending a request to its response headers.
    pub first_byte_timeout: Duration,
    /// Longest silence allowed between two pieces of an audio body.
    pub idle_timeout: Duration,
}

impl Default for OpenAiSpeechConfig {
    fn default() -> Self {
        OpenAiSpeechConfig {
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            model: "gpt-4o-mini-tts".into(),
            voice: "alloy".into(),
            instructions: None,
            speed: None,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

impl fmt::Debug for OpenAiSpeechConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiSpeechConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("voice", &self.voice)
            .field("instructions", &self.instructions)
            .field("speed", &self.speed)
            .finish_non_exhaustive()
    }
}

/// Why an [`OpenAiSpeech`] client could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiSpeechConfigError {
    #[error("invalid base_url {url:?}: {detail}")]
    BaseUrl { url: String, detail: String },
    #[error("the api_key contains characters that cannot be sent in an HTTP header")]
    ApiKey,
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// The OpenAI speech client; cheap to share, one [`TtsSession`] per call.
pub struct OpenAiSpeech {
    request: RequestMaker,
}

impl fmt::Debug for OpenAiSpeech {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiSpeech")
            .field("endpoint", &self.request.endpoint.as_str())
            .field("config", &self.request.config)
            .finish()
    }
}

impl OpenAiSpeech {
    /// Validates the configuration and builds the HTTP client (connections are pooled across requests).
    pub fn new(config: OpenAiSpeechConfig) -> Result<Self, OpenAiSpeechConfigError> {
        let endpoint = speech_url(&config.base_url)?;
        let mut headers = HeaderMap::new();
        if let Some(key) = config.api_key.as_deref().filter(|key| !key.is_empty()) {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| OpenAiSpeechConfigError::ApiKey)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|error| OpenAiSpeechConfigError::Client(error.to_string()))?;
        Ok(OpenAiSpeech { request: RequestMaker { config, endpoint, headers, http } })
    }

    /// The full URL requests are posted to.
    pub fn endpoint(&self) -> &str {
        self.request.endpoint.as_str()
    }
}

#[async_trait]
impl TextToSpeech for OpenAiSpeech {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn open(&self) -> Result<TtsSession, TtsError> {
        let (input_tx, input_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (event_tx, event_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let session = Session { request: self.request.clone(), events: event_tx, contexts: HashMap::new() };
        tokio::spawn(session.run(input_rx));
        Ok(TtsSession { input: input_tx, events: event_rx })
    }
}

/// The URL to post to, derived from the configured API root.
pub fn speech_url(base_url: &str) -> Result<Url, OpenAiSpeechConfigError> {
    let invalid = |detail: String| OpenAiSpeechConfigError::BaseUrl { url: base_url.to_owned(), detail };
    let mut url = Url::parse(base_url.trim()).map_err(|error| invalid(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https".into()));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let path = if path.ends_with("/audio/speech") {
        path
    } else if path.is_empty() {
        "/v1/audio/speech".to_owned()
    } else {
        format!("{path}/audio/speech")
    };
    url.set_path(&path);
    Ok(url)
}

/// The JSON body for one piece of text.
pub fn request_body(config: &OpenAiSpeechConfig, input: &str) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(config.model));
    body.insert("input".into(), json!(input));
    body.insert("voice".into(), json!(config.voice));
    body.insert("response_format".into(), json!("pcm"));
    body.insert("stream_format".into(), json!("audio"));
    if let Some(instructions) = config.instructions.as_deref().filter(|text| !text.is_empty()) {
        body.insert("instructions".into(), json!(instructions));
    }
    if let Some(speed) = config.speed {
        body.insert("speed".into(), json!(speed));
    }
    Value::Object(body)
}

/// Splits text longer than the endpoint's limit at spaces (or anywhere, for a single giant word).
fn split_input(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while rest.chars().count() > MAX_INPUT_CHARS {
        let limit = rest.char_indices().nth(MAX_INPUT_CHARS).map_or(rest.len(), |(at, _)| at);
        let cut = rest[..limit].rfind(' ').filter(|&at| at > 0).unwrap_or(limit);
        pieces.push(rest[..cut].trim().to_owned());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces
}

/// Everything needed to send one request; cloned into each context's task.
#[derive(Clone)]
struct RequestMaker {
    config: OpenAiSpeechConfig,
    endpoint: Url,
    headers: HeaderMap,
    http: reqwest::Client,
}

impl RequestMaker {
    /// Speaks one piece: sends the request and forwards the converted audio as it arrives.
    async fn speak(&self, context: &ContextId, text: &str, events: &mpsc::Sender<TtsEvent>) -> Result<(), TtsError> {
        let send = self
            .http
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .json(&request_body(&self.config, text))
            .send();
        let response = match tokio::time::timeout(self.config.first_byte_timeout, send).await {
            Err(_) => return Err(connect_error(format!("no answer within {:?}", self.config.first_byte_timeout))),
            Ok(Err(error)) => return Err(connect_error(describe(&error))),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            let body = tokio::time::timeout(self.config.first_byte_timeout, response.text()).await;
            let message = match body {
                Ok(Ok(body)) => error_message_from_text(&body),
                _ => "(error body not received)".into(),
            };
            return Err(TtsError::Rejected { provider: PROVIDER, status: status.as_u16(), detail: message });
        }
        let mut body = response.bytes_stream();
        let mut converter = Pcm24kToMulaw8k::new();
        loop {
            match tokio::time::timeout(self.config.idle_timeout, body.next()).await {
                Err(_) => {
                    let detail = format!("the audio stalled for {:?}", self.config.idle_timeout);
                    return Err(TtsError::Disconnected { provider: PROVIDER, detail });
                }
                Ok(None) => return Ok(()),
                Ok(Some(Err(error))) => {
                    return Err(TtsError::Disconnected { provider: PROVIDER, detail: describe(&error) });
                }
                Ok(Some(Ok(bytes))) => {
                    let mulaw = converter.push(&bytes);
                    if !mulaw.is_empty() {
                        let event = TtsEvent::Audio { context: context.clone(), mulaw: Bytes::from(mulaw) };
                        if events.send(event).await.is_err() {
                            return Ok(()); // the session's owner is gone; nobody listens any more
                        }
                    }
                }
            }
        }
    }
}

fn connect_error(detail: String) -> TtsError {
    TtsError::Connect { provider: PROVIDER, detail }
}

/// What a context's task is told.
enum Piece {
    Text(String),
    End,
}

/// A context being spoken: its queue of pieces and the task working through it.
struct ContextTask {
    pieces: mpsc::UnboundedSender<Piece>,
    task: JoinHandle<()>,
}

/// The session task: routes engine input to one task per context.
struct Session {
    request: RequestMaker,
    events: mpsc::Sender<TtsEvent>,
    contexts: HashMap<ContextId, ContextTask>,
}

impl Session {
    async fn run(mut self, mut input: mpsc::Receiver<TtsInput>) {
        while let Some(message) = input.recv().await {
            self.contexts.retain(|_, context| !context.task.is_finished());
            match message {
                TtsInput::Text { context, text, last } => self.text(context, text, last),
                TtsInput::Cancel { context } => {
                    if let Some(cancelled) = self.contexts.remove(&context) {
                        cancelled.task.abort();
                    }
                }
                TtsInput::Close => break,
            }
        }
        for (_, context) in self.contexts.drain() {
            context.task.abort();
        }
        let _ = self.events.send(TtsEvent::Closed).await;
    }

    fn text(&mut self, context: ContextId, text: String, last: bool) {
        let entry = self.contexts.entry(context.clone()).or_insert_with(|| {
            let (pieces, queue) = mpsc::unbounded_channel();
            let task = tokio::spawn(speak_context(self.request.clone(), context, queue, self.events.clone()));
            ContextTask { pieces, task }
        });
        for piece in split_input(&text) {
            let _ = entry.pieces.send(Piece::Text(piece));
        }
        if last {
            let _ = entry.pieces.send(Piece::End);
        }
    }
}

/// Speaks the pieces of one context in order, then reports it done; the first failure ends the context.
async fn speak_context(
    request: RequestMaker,
    context: ContextId,
    mut queue: mpsc::UnboundedReceiver<Piece>,
    events: mpsc::Sender<TtsEvent>,
) {
    while let Some(piece) = queue.recv().await {
        match piece {
            Piece::Text(text) => {
                if let Err(error) = request.speak(&context, &text, &events).await {
                    tracing::debug!(provider = PROVIDER, %context, %error, "speech request failed");
                    let _ = events.send(TtsEvent::Error { context: Some(context), error }).await;
                    return;
                }
            }
            Piece::End => {
                let _ = events.send(TtsEvent::Done { context }).await;
                return;
            }
        }
    }
}

/// `[tts.openai_speech]`: unset fields keep the client's defaults (`tts::openai_speech::OpenAiSpeechConfig`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiSpeechSettings {
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub voice: Option<String>,
    pub instructions: Option<String>,
    pub speed: Option<f64>,
    /// Environment variable holding the API key; an unset variable means no key (local servers).
    pub api_key_env: String,
}

impl Default for OpenAiSpeechSettings {
    fn default() -> Self {
        OpenAiSpeechSettings {
            base_url: None,
            model: None,
            voice: None,
            instructions: None,
            speed: None,
            api_key_env: "OPENAI_API_KEY".into(),
        }
    }
}

impl OpenAiSpeechSettings {
    /// The speech client's configuration; the key is required for OpenAI's own API only.
    pub fn client_config(&self) -> Result<OpenAiSpeechConfig, Vec<crate::settings::SettingsError>> {
        let mut errors = Vec::new();
        let needs_key = crate::settings::is_openai_api(self.base_url.as_deref());
        let defaults = OpenAiSpeechConfig::default();
        let config = OpenAiSpeechConfig {
            api_key: crate::settings::api_key(&self.api_key_env, "tts.openai_speech", needs_key, &mut errors),
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model: self.model.clone().unwrap_or(defaults.model),
            voice: self.voice.clone().unwrap_or(defaults.voice),
            instructions: self.instructions.clone().or(defaults.instructions),
            speed: self.speed.or(defaults.speed),
            ..OpenAiSpeechConfig::default()
        };
        crate::settings::finish(config, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_derived_from_the_base_url() {
        let url = |base: &str| speech_url(base).map(|u| u.to_string()).unwrap_or_else(|e| e.to_string());
        assert_eq!(url("https://api.openai.com/v1"), "https://api.openai.com/v1/audio/speech");
        assert_eq!(url("http://127.0.0.1:8880"), "http://127.0.0.1:8880/v1/audio/speech");
        assert_eq!(url("http://127.0.0.1:8880/v1/audio/speech"), "http://127.0.0.1:8880/v1/audio/speech");
        assert!(speech_url("ws://x").is_err());
    }

    #[test]
    fn documented_request_shape_with_pcm_output() {
        let config = OpenAiSpeechConfig {
            instructions: Some("Speak warmly.".into()),
            speed: Some(1.0),
            ..OpenAiSpeechConfig::default()
        };
        assert_eq!(
            request_body(&config, "Hello there."),
            json!({"model": "gpt-4o-mini-tts", "input": "Hello there.", "voice": "alloy",
                   "instructions": "Speak warmly.", "response_format": "pcm", "speed": 1.0, "stream_format": "audio"})
        );
    }

    #[test]
    fn long_text_is_split_at_spaces_within_the_limit() {
        let text = "word ".repeat(2000);
        let pieces = split_input(&text);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= MAX_INPUT_CHARS && !p.ends_with(' ')));
        assert_eq!(pieces.join(" "), text.trim());
        assert!(split_input("   ").is_empty());
    }

    #[test]
    fn debug_hides_the_key() {
        let client = OpenAiSpeech::new(OpenAiSpeechConfig { api_key: Some("sk-x".into()), ..Default::default() });
        let printed = format!("{client:?}");
        assert!(printed.contains("Ok(") && !printed.contains("sk-x"), "{printed}");
    }
}
