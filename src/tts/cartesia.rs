//! Cartesia WebSocket text-to-speech.
//!
//! One socket per [`TtsSession`] carries many replies; each reply is a Cartesia *context* keyed by the engine's
//! [`ContextId`]. Audio is requested as raw μ-law 8 kHz, the format Twilio plays, so it is forwarded as decoded.
//!
//! Barge-in safety: after [`TtsInput::Cancel`] the context id is remembered and every later message for it (audio
//! already in flight, `done`, errors) is dropped, so a cancelled reply can never reach the caller.
//!
//! The module is split in two: the pure protocol (URL, requests, server messages), unit-tested against
//! `proto-fixtures/cartesia/`, and the I/O task that owns the socket.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::http::header::{HeaderName, AUTHORIZATION};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use url::Url;

use crate::websocket::{self, Socket, UpgradeHeader};

use super::{ContextId, TextToSpeech, TtsError, TtsEvent, TtsInput, TtsSession};

/// Provider name used in errors, logs and spans.
pub const PROVIDER: &str = "cartesia";

/// The API version Parley's message types were written against; message shapes differ between versions.
pub const DEFAULT_VERSION: &str = "2025-04-16";

/// Capacity of the session's input and event channels: many LLM text pieces and audio chunks in flight.
const CHANNEL_CAPACITY: usize = 256;

// ---------------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------------

/// Settings of the Cartesia client. `Debug` hides the API key so the config can be logged safely.
#[derive(Clone)]
pub struct CartesiaConfig {
    /// WebSocket base URL without path; `wss://api.cartesia.ai` in production, a fake server's URL in tests.
    pub base_url: String,
    /// Cartesia API key, sent as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// Model, e.g. `sonic-3`.
    pub model_id: String,
    /// Voice id (`voice: {"mode":"id","id":…}`).
    pub voice_id: String,
    /// Language of the transcripts, e.g. `en`.
    pub language: String,
    /// Pinned `Cartesia-Version`, sent both as header and as `cartesia_version` query parameter.
    pub version: String,
    /// Server-side text buffering before generation, sent with every request. Cartesia's default (3000 ms, when
    /// the field is left out) is meant for raw LLM tokens; Parley sends whole sentences and clauses, so the default
    /// here is 0: generate what arrives at once.
    pub max_buffer_delay_ms: u32,
    /// Upper bound on the WebSocket handshake.
    pub connect_timeout: Duration,
}

impl Default for CartesiaConfig {
    fn default() -> Self {
        Self {
            base_url: "wss://api.cartesia.ai".to_owned(),
            api_key: String::new(),
            model_id: "sonic-3".to_owned(),
            voice_id: String::new(),
            language: "en".to_owned(),
            version: DEFAULT_VERSION.to_owned(),
            max_buffer_delay_ms: 0,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for CartesiaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CartesiaConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("model_id", &self.model_id)
            .field("voice_id", &self.voice_id)
            .field("language", &self.language)
            .field("version", &self.version)
            .field("max_buffer_delay_ms", &self.max_buffer_delay_ms)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Pure protocol: URL and client messages
// ---------------------------------------------------------------------------------------------------------------

/// Builds `…/tts/websocket?cartesia_version=…`. The version also goes in a header; the query wins if they differ,
/// so both carry the same pinned value.
pub fn websocket_url(config: &CartesiaConfig) -> Result<Url, TtsError> {
    let mut url = Url::parse(&config.base_url).map_err(|e| TtsError::Connect {
        provider: PROVIDER,
        detail: format!("invalid base URL {:?}: {e}", config.base_url),
    })?;
    url.set_path("/tts/websocket");
    url.query_pairs_mut().clear().append_pair("cartesia_version", &config.version);
    Ok(url)
}

/// A generation request: one piece of a context's text. Every piece of a context repeats all fields except
/// `transcript` and `continue`, as Cartesia requires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    pub model_id: String,
    /// Concatenated verbatim with the context's earlier pieces.
    pub transcript: String,
    pub voice: Voice,
    pub language: String,
    pub context_id: String,
    pub output_format: OutputFormat,
    /// `true`: more text follows; `false`: this is the context's last input.
    #[serde(rename = "continue")]
    pub continue_: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_timestamps: Option<bool>,
    /// Always sent: leaving it out means Cartesia's 3 s buffer (see [`CartesiaConfig::max_buffer_delay_ms`]).
    pub max_buffer_delay_ms: u32,
}

/// Voice selection by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Voice {
    /// Always `id` here.
    pub mode: String,
    pub id: String,
}

/// Audio format of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputFormat {
    pub container: String,
    pub encoding: String,
    pub sample_rate: u32,
}

impl OutputFormat {
    /// Raw μ-law 8 kHz: exactly what Twilio plays, so no transcoding on the hot path.
    pub fn twilio_mulaw() -> Self {
        Self { container: "raw".to_owned(), encoding: "pcm_mulaw".to_owned(), sample_rate: 8000 }
    }
}

/// Stops generation of one context (barge-in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub context_id: String,
    pub cancel: bool,
}

/// The request for one piece of text; `last` closes the context (an empty text is fine then).
pub fn generation_request(config: &CartesiaConfig, context: &str, text: &str, last: bool) -> GenerationRequest {
    GenerationRequest {
        model_id: config.model_id.clone(),
        transcript: text.to_owned(),
        voice: Voice { mode: "id".to_owned(), id: config.voice_id.clone() },
        language: config.language.clone(),
        context_id: context.to_owned(),
        output_format: OutputFormat::twilio_mulaw(),
        continue_: !last,
        add_timestamps: None,
        max_buffer_delay_ms: config.max_buffer_delay_ms,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Pure protocol: server messages
// ---------------------------------------------------------------------------------------------------------------

/// Every server → client message, discriminated by `type`. Unknown types land in [`ServerMessage::Unknown`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Chunk(ChunkMessage),
    Timestamps(TimestampsMessage),
    PhonemeTimestamps(PhonemeTimestampsMessage),
    FlushDone(FlushDoneMessage),
    Done(DoneMessage),
    Error(ErrorMessage),
    #[serde(other)]
    Unknown,
}

impl ServerMessage {
    /// The context the message belongs to, if any.
    pub fn context_id(&self) -> Option<&str> {
        match self {
            Self::Chunk(m) => m.context_id.as_deref(),
            Self::Timestamps(m) => m.context_id.as_deref(),
            Self::PhonemeTimestamps(m) => m.context_id.as_deref(),
            Self::FlushDone(m) => m.context_id.as_deref(),
            Self::Done(m) => m.context_id.as_deref(),
            Self::Error(m) => m.context_id.as_deref(),
            Self::Unknown => None,
        }
    }
}

/// A piece of audio, base64 of raw bytes in the requested encoding.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ChunkMessage {
    pub data: String,
    pub done: bool,
    pub status_code: Option<u16>,
    pub step_time: Option<f64>,
    pub context_id: Option<String>,
}

impl ChunkMessage {
    /// The decoded audio bytes.
    pub fn audio(&self) -> Result<Bytes, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.data).map(Bytes::from)
    }
}

/// Word timings, seconds from the start of the context's audio.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct TimestampsMessage {
    pub done: bool,
    pub status_code: Option<u16>,
    pub context_id: Option<String>,
    pub word_timestamps: Option<WordTimestamps>,
}

/// Parallel arrays of words and their start/end seconds.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct WordTimestamps {
    pub words: Vec<String>,
    pub start: Vec<f64>,
    pub end: Vec<f64>,
}

/// Phoneme timings (`add_phoneme_timestamps`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct PhonemeTimestampsMessage {
    pub done: bool,
    pub context_id: Option<String>,
    pub phoneme_timestamps: Option<PhonemeTimestamps>,
}

/// Parallel arrays of phonemes and their start/end seconds.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct PhonemeTimestamps {
    pub phonemes: Vec<String>,
    pub start: Vec<f64>,
    pub end: Vec<f64>,
}

/// A manual flush finished; later chunks carry the next `flush_id`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct FlushDoneMessage {
    pub done: bool,
    pub flush_done: bool,
    pub flush_id: Option<u64>,
    pub status_code: Option<u16>,
    pub context_id: Option<String>,
}

/// The context produced all its audio.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct DoneMessage {
    pub done: bool,
    pub status_code: Option<u16>,
    pub context_id: Option<String>,
}

/// An error, in either shape: current (`title`, `message`, `error_code`) or older (`error` string).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ErrorMessage {
    pub done: bool,
    pub title: Option<String>,
    pub message: Option<String>,
    pub error_code: Option<String>,
    /// The older API versions' single error string.
    pub error: Option<String>,
    pub status_code: Option<u16>,
    pub context_id: Option<String>,
}

impl ErrorMessage {
    /// One line for logs and [`TtsError::Provider`], whichever shape arrived.
    pub fn detail(&self) -> String {
        let mut text = [&self.title, &self.message, &self.error]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(": ");
        if text.is_empty() {
            text.push_str("unspecified error");
        }
        match (&self.error_code, self.status_code) {
            (Some(code), Some(status)) => format!("{text} ({code}, HTTP {status})"),
            (Some(code), None) => format!("{text} ({code})"),
            (None, Some(status)) => format!("{text} (HTTP {status})"),
            (None, None) => text,
        }
    }
}

/// Only the discriminator, to name an unknown message type in the logs.
#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Parses one server text frame.
pub fn parse_server_message(text: &str) -> Result<ServerMessage, serde_json::Error> {
    serde_json::from_str(text)
}

/// Maps a server message of a live context to an engine event; `None` for messages the engine has no use for
/// (timestamps, flush acknowledgements, unknown types, undecodable audio).
pub fn event_of(message: ServerMessage) -> Option<TtsEvent> {
    match message {
        ServerMessage::Chunk(chunk) => {
            let context = chunk.context_id.clone()?;
            match chunk.audio() {
                Ok(mulaw) if mulaw.is_empty() => None,
                Ok(mulaw) => Some(TtsEvent::Audio { context, mulaw }),
                Err(error) => {
                    tracing::warn!(provider = PROVIDER, %context, %error, "skipping undecodable audio chunk");
                    None
                }
            }
        }
        ServerMessage::Done(done) => done.context_id.map(|context| TtsEvent::Done { context }),
        ServerMessage::Error(error) => Some(TtsEvent::Error {
            error: TtsError::Provider { provider: PROVIDER, detail: error.detail() },
            context: error.context_id,
        }),
        ServerMessage::Timestamps(_)
        | ServerMessage::PhonemeTimestamps(_)
        | ServerMessage::FlushDone(_)
        | ServerMessage::Unknown => None,
    }
}

/// Parses a text frame and maps it, dropping messages of cancelled contexts and logging (never failing on)
/// unparseable or unknown ones.
fn event_of_text(text: &str, cancelled: &HashSet<ContextId>) -> Option<TtsEvent> {
    let message = match parse_server_message(text) {
        Ok(message) => message,
        Err(error) => {
            tracing::warn!(provider = PROVIDER, %error, len = text.len(), "skipping unparseable message");
            return None;
        }
    };
    if let ServerMessage::Unknown = message {
        let kind = serde_json::from_str::<TypeOnly>(text).ok().and_then(|t| t.kind).unwrap_or_default();
        tracing::warn!(provider = PROVIDER, kind, "skipping unknown message type");
        return None;
    }
    if let Some(context) = message.context_id() {
        if cancelled.contains(context) {
            tracing::trace!(provider = PROVIDER, context, "dropping message of a cancelled context");
            return None;
        }
    }
    event_of(message)
}

// ---------------------------------------------------------------------------------------------------------------
// I/O
// ---------------------------------------------------------------------------------------------------------------

/// The Cartesia provider: one WebSocket per [`TtsSession`], one Cartesia context per reply.
#[derive(Debug, Clone)]
pub struct Cartesia {
    config: CartesiaConfig,
}

impl Cartesia {
    /// A provider with the given settings; nothing is connected until [`TextToSpeech::open`].
    pub fn new(config: CartesiaConfig) -> Self {
        Self { config }
    }

    /// The settings this provider connects with.
    pub fn config(&self) -> &CartesiaConfig {
        &self.config
    }
}

#[async_trait]
impl TextToSpeech for Cartesia {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn open(&self) -> Result<TtsSession, TtsError> {
        let url = websocket_url(&self.config)?;
        let auth = format!("Bearer {}", self.config.api_key);
        let headers = [
            UpgradeHeader { name: AUTHORIZATION, value: &auth },
            UpgradeHeader { name: HeaderName::from_static("cartesia-version"), value: &self.config.version },
        ];
        let (socket, _) = websocket::connect(&url, &headers, self.config.connect_timeout)
            .await
            .map_err(|error| TtsError::from_handshake(PROVIDER, error))?;
        tracing::info!(provider = PROVIDER, version = %self.config.version, "socket opened");

        let (input_tx, input_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (event_tx, event_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let io = SessionIo {
            config: self.config.clone(),
            socket,
            input: input_rx,
            events: event_tx,
            cancelled: HashSet::new(),
        };
        tokio::spawn(io.run());
        Ok(TtsSession { input: input_tx, events: event_rx })
    }
}

/// The task that owns one Cartesia socket.
struct SessionIo {
    config: CartesiaConfig,
    socket: Socket,
    input: mpsc::Receiver<TtsInput>,
    events: mpsc::Sender<TtsEvent>,
    /// Contexts cancelled by the engine. Never pruned: late messages can come at any time, and a call sees at most
    /// a few hundred replies.
    cancelled: HashSet<ContextId>,
}

/// Whether the session loop goes on.
enum Flow {
    Continue,
    Stop,
}

impl SessionIo {
    /// Pumps text and cancels out, audio in. Ends with `Closed` (after an `Error { context: None }` if the socket
    /// was lost), unless the engine stopped listening.
    async fn run(mut self) {
        loop {
            let flow = tokio::select! {
                input = self.input.recv() => self.on_input(input).await,
                frame = self.socket.next() => self.on_frame(frame).await,
            };
            if let Flow::Stop = flow {
                break;
            }
        }
        // Best effort: the peer may already be gone.
        let _ = self.socket.close(None).await;
    }

    async fn on_input(&mut self, input: Option<TtsInput>) -> Flow {
        match input {
            Some(TtsInput::Text { context, text, last }) => self.send_text(&context, &text, last).await,
            Some(TtsInput::Cancel { context }) => self.cancel(context).await,
            Some(TtsInput::Close) | None => {
                let _ = self.socket.close(None).await;
                self.emit(TtsEvent::Closed).await;
                Flow::Stop
            }
        }
    }

    /// Sends one piece of a reply. Text for a cancelled context (LLM tokens still in flight after a barge-in) is
    /// dropped: the reply is over.
    async fn send_text(&mut self, context: &str, text: &str, last: bool) -> Flow {
        if self.cancelled.contains(context) {
            tracing::trace!(provider = PROVIDER, context, "dropping text of a cancelled context");
            return Flow::Continue;
        }
        let request = generation_request(&self.config, context, text, last);
        self.send_json(&request).await
    }

    async fn cancel(&mut self, context: ContextId) -> Flow {
        let request = CancelRequest { context_id: context.clone(), cancel: true };
        self.cancelled.insert(context);
        self.send_json(&request).await
    }

    async fn send_json<T: Serialize>(&mut self, message: &T) -> Flow {
        let json = match serde_json::to_string(message) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(provider = PROVIDER, %error, "could not serialise a request");
                return Flow::Continue;
            }
        };
        match self.socket.send(Message::text(json)).await {
            Ok(()) => Flow::Continue,
            Err(error) => self.on_lost(format!("send failed: {error}")).await,
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Flow {
        match frame {
            Some(Ok(Message::Text(text))) => match event_of_text(text.as_str(), &self.cancelled) {
                Some(event) => self.emit(event).await,
                None => Flow::Continue,
            },
            Some(Ok(Message::Close(close))) => self.on_lost(websocket::close_detail(close.as_ref())).await,
            Some(Ok(Message::Binary(data))) => {
                tracing::warn!(provider = PROVIDER, len = data.len(), "skipping unexpected binary message");
                Flow::Continue
            }
            Some(Ok(_)) => Flow::Continue,
            Some(Err(error)) => self.on_lost(error.to_string()).await,
            None => self.on_lost("connection ended".to_owned()).await,
        }
    }

    /// The server went away (Cartesia closes idle sockets after a few minutes): a session-wide error, then
    /// `Closed`, so the engine knows to open a new session.
    async fn on_lost(&mut self, detail: String) -> Flow {
        tracing::warn!(provider = PROVIDER, %detail, "socket lost");
        let error = TtsEvent::Error { context: None, error: TtsError::Disconnected { provider: PROVIDER, detail } };
        if let Flow::Continue = self.emit(error).await {
            self.emit(TtsEvent::Closed).await;
        }
        Flow::Stop
    }

    /// Forwards an event; if the engine dropped its receiver there is nobody to work for, so stop.
    async fn emit(&mut self, event: TtsEvent) -> Flow {
        match self.events.send(event).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }
}

/// `[tts.cartesia]` in the configuration file: unset fields keep this client's defaults.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CartesiaSettings {
    pub base_url: Option<String>,
    pub model_id: Option<String>,
    pub voice_id: String,
    pub language: Option<String>,
    pub version: Option<String>,
    pub api_key_env: String,
}

impl Default for CartesiaSettings {
    fn default() -> Self {
        CartesiaSettings {
            base_url: None,
            model_id: None,
            voice_id: String::new(),
            language: None,
            version: None,
            api_key_env: "CARTESIA_API_KEY".into(),
        }
    }
}

impl CartesiaSettings {
    /// The streaming client's configuration; the key and the voice are required.
    pub fn client_config(&self) -> Result<CartesiaConfig, Vec<crate::settings::SettingsError>> {
        let mut errors = Vec::new();
        let api_key =
            crate::settings::api_key(&self.api_key_env, "tts.cartesia", true, &mut errors).unwrap_or_default();
        crate::settings::required(&self.voice_id, "tts.cartesia", "voice_id", &mut errors);
        let defaults = CartesiaConfig::default();
        let config = CartesiaConfig {
            api_key,
            voice_id: self.voice_id.clone(),
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model_id: self.model_id.clone().unwrap_or(defaults.model_id),
            language: self.language.clone().unwrap_or(defaults.language),
            version: self.version.clone().unwrap_or(defaults.version),
            ..CartesiaConfig::default()
        };
        crate::settings::finish(config, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = include_str!("../../proto-fixtures/cartesia/generation_request.json");
    const CANCEL: &str = include_str!("../../proto-fixtures/cartesia/cancel.json");
    const CHUNK: &str = include_str!("../../proto-fixtures/cartesia/chunk.json");
    const TIMESTAMPS: &str = include_str!("../../proto-fixtures/cartesia/timestamps.json");
    const PHONEMES: &str = include_str!("../../proto-fixtures/cartesia/phoneme_timestamps.json");
    const FLUSH_DONE: &str = include_str!("../../proto-fixtures/cartesia/flush_done.json");
    const DONE: &str = include_str!("../../proto-fixtures/cartesia/done.json");
    const ERROR: &str = include_str!("../../proto-fixtures/cartesia/error.json");
    const ERROR_LEGACY: &str = include_str!("../../proto-fixtures/cartesia/error_legacy.json");

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    fn documented_config() -> CartesiaConfig {
        CartesiaConfig {
            api_key: "sk-secret".to_owned(),
            voice_id: "a0e99841-438c-4a64-b679-ae501e7d6091".to_owned(),
            ..CartesiaConfig::default()
        }
    }

    #[test]
    fn default_url_pins_the_version() {
        let url = websocket_url(&CartesiaConfig::default()).unwrap();
        assert_eq!(url.as_str(), "wss://api.cartesia.ai/tts/websocket?cartesia_version=2025-04-16");
    }

    #[test]
    fn url_follows_the_base_url() {
        let config = CartesiaConfig {
            base_url: "ws://127.0.0.1:7000".to_owned(),
            version: "2026-03-01".to_owned(),
            ..CartesiaConfig::default()
        };
        assert_eq!(
            websocket_url(&config).unwrap().as_str(),
            "ws://127.0.0.1:7000/tts/websocket?cartesia_version=2026-03-01"
        );
        let bad = CartesiaConfig { base_url: "::".to_owned(), ..CartesiaConfig::default() };
        assert!(matches!(websocket_url(&bad), Err(TtsError::Connect { .. })));
    }

    #[test]
    fn debug_output_hides_the_api_key() {
        let printed = format!("{:?}", Cartesia::new(documented_config()));
        assert!(!printed.contains("sk-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn documented_request_round_trips() {
        let request: GenerationRequest = serde_json::from_str(REQUEST).unwrap();
        assert_eq!(request.context_id, "turn-17");
        assert!(request.continue_);
        assert_eq!(request.output_format, OutputFormat::twilio_mulaw());
        assert_eq!(serde_json::to_value(&request).unwrap(), json(REQUEST));
    }

    #[test]
    fn built_request_matches_the_documented_one() {
        let mut ours =
            serde_json::to_value(generation_request(&documented_config(), "turn-17", "Hello, how can I help ", false))
                .unwrap();
        let mut documented = json(REQUEST);
        // Parley asks for no timestamps: the engine has no event for them.
        documented.as_object_mut().unwrap().remove("add_timestamps");
        assert_eq!(ours, documented);

        let last = generation_request(&documented_config(), "turn-17", "", true);
        ours = serde_json::to_value(last).unwrap();
        assert_eq!(ours["continue"], false);
        assert_eq!(ours["transcript"], "");
    }

    #[test]
    fn whole_pieces_ask_for_no_server_buffering() {
        let request = generation_request(&CartesiaConfig::default(), "c", "hi", false);
        let value = serde_json::to_value(request).unwrap();
        assert_eq!(value["max_buffer_delay_ms"], 0);
        assert!(value.get("add_timestamps").is_none());
    }

    #[test]
    fn cancel_matches_the_documented_json() {
        let ours = CancelRequest { context_id: "turn-17".to_owned(), cancel: true };
        assert_eq!(serde_json::to_value(&ours).unwrap(), json(CANCEL));
    }

    #[test]
    fn chunk_decodes_to_audio() {
        let ServerMessage::Chunk(chunk) = parse_server_message(CHUNK).unwrap() else {
            panic!("not a chunk");
        };
        assert_eq!(chunk.status_code, Some(206));
        assert_eq!(chunk.step_time, Some(123.0));
        let event = event_of(ServerMessage::Chunk(chunk));
        let Some(TtsEvent::Audio { context, mulaw }) = event else {
            panic!("no audio: {event:?}");
        };
        assert_eq!(context, "turn-17");
        assert_eq!(&mulaw[..], [0xff, 0x7f, 0x7e, 0x7d, 0x7e, 0x7f]);
    }

    #[test]
    fn bad_base64_is_skipped() {
        let mut chunk = json(CHUNK);
        chunk["data"] = "<base64 audio>".into();
        assert!(event_of_text(&chunk.to_string(), &HashSet::new()).is_none());
    }

    #[test]
    fn timestamps_parse_and_are_not_forwarded() {
        let ServerMessage::Timestamps(message) = parse_server_message(TIMESTAMPS).unwrap() else {
            panic!("not timestamps");
        };
        let words = message.word_timestamps.unwrap();
        assert_eq!(words.words, ["Hello", "world"]);
        assert_eq!(words.end, [0.4, 0.9]);
        assert!(event_of_text(TIMESTAMPS, &HashSet::new()).is_none());

        let ServerMessage::PhonemeTimestamps(phonemes) = parse_server_message(PHONEMES).unwrap() else {
            panic!("not phoneme timestamps");
        };
        assert_eq!(phonemes.phoneme_timestamps.unwrap().phonemes.len(), 2);
        assert!(event_of_text(PHONEMES, &HashSet::new()).is_none());
    }

    #[test]
    fn flush_done_parses_and_is_not_forwarded() {
        let ServerMessage::FlushDone(flush) = parse_server_message(FLUSH_DONE).unwrap() else {
            panic!("not flush_done");
        };
        assert_eq!(flush.flush_id, Some(1));
        assert!(flush.flush_done);
        assert!(event_of_text(FLUSH_DONE, &HashSet::new()).is_none());
    }

    #[test]
    fn done_maps_to_done() {
        let event = event_of_text(DONE, &HashSet::new());
        assert!(matches!(&event, Some(TtsEvent::Done { context }) if context == "turn-17"), "{event:?}");
    }

    #[test]
    fn current_error_shape_maps_to_a_context_error() {
        let event = event_of_text(ERROR, &HashSet::new());
        let Some(TtsEvent::Error { context: Some(context), error: TtsError::Provider { detail, .. } }) = event else {
            panic!("not a context error: {event:?}");
        };
        assert_eq!(context, "…");
        assert_eq!(detail, "Invalid model: … (model_not_found, HTTP 400)");
    }

    #[test]
    fn legacy_error_shape_maps_to_a_session_error() {
        let event = event_of_text(ERROR_LEGACY, &HashSet::new());
        let Some(TtsEvent::Error { context: None, error: TtsError::Provider { detail, .. } }) = event else {
            panic!("not a session error: {event:?}");
        };
        assert_eq!(detail, "Invalid model: … (HTTP 400)");
    }

    #[test]
    fn every_message_of_a_cancelled_context_is_dropped() {
        let cancelled: HashSet<ContextId> = ["turn-17".to_owned()].into();
        for fixture in [CHUNK, TIMESTAMPS, FLUSH_DONE, DONE] {
            assert!(event_of_text(fixture, &cancelled).is_none(), "{fixture}");
        }
        let mut error = json(ERROR);
        error["context_id"] = "turn-17".into();
        assert!(event_of_text(&error.to_string(), &cancelled).is_none());
        // Other contexts still flow.
        let mut chunk = json(CHUNK);
        chunk["context_id"] = "turn-18".into();
        assert!(matches!(event_of_text(&chunk.to_string(), &cancelled), Some(TtsEvent::Audio { .. })));
    }

    #[test]
    fn unknown_types_and_garbage_are_skipped() {
        assert_eq!(parse_server_message(r#"{"type":"brand_new"}"#).unwrap(), ServerMessage::Unknown);
        for text in [r#"{"type":"brand_new"}"#, "{not json", "", r#"{"data":"AA=="}"#] {
            assert!(event_of_text(text, &HashSet::new()).is_none(), "{text}");
        }
    }
}
