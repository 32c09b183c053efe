//! Deepgram live (`/v1/listen`) streaming speech-to-text.
//!
//! The caller's μ-law 8 kHz audio goes to Deepgram untouched as binary WebSocket frames; Deepgram answers with JSON
//! text frames (`Results`, `SpeechStarted`, `UtteranceEnd`, `Metadata`, `Error`) that are mapped to [`SttEvent`]s.
//!
//! The module is split in two: the pure protocol (URL building, control messages, server message types, mapping to
//! events), which is unit-tested against `proto-fixtures/deepgram/`, and the I/O task that owns the socket.

use std::fmt;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use url::Url;

use crate::deadline::Deadline;
use crate::wake_gate::WakeGate;
use crate::websocket::{self, Socket, UpgradeHeader};

use super::{SpeechToText, SttError, SttEvent, SttInput, SttSession, Transcript, INPUT_CAPACITY};

/// Provider name used in errors, logs and spans.
pub const PROVIDER: &str = "deepgram";

/// Capacity of the session's event channel: a few seconds of results, so a slow engine does not stall the socket.
const EVENT_CAPACITY: usize = 256;
/// Queued inputs written with one socket write at most.
const INPUTS_PER_WRITE: usize = 32;

// ---------------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------------

/// Settings of the Deepgram live client. `Debug` hides the API key so the config can be logged safely.
#[derive(Clone)]
pub struct DeepgramConfig {
    /// WebSocket base URL without path; `wss://api.deepgram.com` in production, a fake server's URL in tests.
    pub base_url: String,
    /// Deepgram API key, sent as `Authorization: Token <key>`.
    pub api_key: String,
    /// Model name, e.g. `nova-3` or `nova-2-phonecall`.
    pub model: String,
    /// BCP-47 language hint (`en`, `en-US`, `multi`).
    pub language: String,
    /// Milliseconds of silence after which Deepgram finalizes and sets `speech_final`.
    pub endpointing_ms: u32,
    /// Gap after the last final word before an `UtteranceEnd` (needs interim results; values below 1000 are
    /// rejected by Deepgram). `None` disables `UtteranceEnd`.
    pub utterance_end_ms: Option<u32>,
    /// Ask for interim (`is_final: false`) results; forced on when `utterance_end_ms` is set.
    pub interim_results: bool,
    /// Ask for `SpeechStarted` messages, the fast barge-in signal.
    pub vad_events: bool,
    /// Let Deepgram format numbers, dates and punctuation.
    pub smart_format: bool,
    /// Nova-3 key terms (names, products) to boost; each becomes one `keyterm` query parameter.
    pub keyterms: Vec<String>,
    /// How long the stream may go without audio before a `KeepAlive` is sent (Deepgram closes idle streams after
    /// 10 s).
    pub keepalive_interval: Duration,
    /// Upper bound on the WebSocket handshake.
    pub connect_timeout: Duration,
    /// How long to wait for Deepgram's final results and close after `CloseStream` before giving up.
    pub close_timeout: Duration,
}

impl Default for DeepgramConfig {
    fn default() -> Self {
        Self {
            base_url: "wss://api.deepgram.com".to_owned(),
            api_key: String::new(),
            model: "nova-3".to_owned(),
            language: "en".to_owned(),
            endpointing_ms: 300,
            utterance_end_ms: Some(1000),
            interim_results: true,
            vad_events: true,
            smart_format: true,
            keyterms: Vec::new(),
            keepalive_interval: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for DeepgramConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeepgramConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("model", &self.model)
            .field("language", &self.language)
            .field("endpointing_ms", &self.endpointing_ms)
            .field("utterance_end_ms", &self.utterance_end_ms)
            .field("interim_results", &self.interim_results)
            .field("vad_events", &self.vad_events)
            .field("smart_format", &self.smart_format)
            .field("keyterms", &self.keyterms)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("connect_timeout", &self.connect_timeout)
            .field("close_timeout", &self.close_timeout)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Pure protocol: URL and control messages
// ---------------------------------------------------------------------------------------------------------------

/// Builds the `/v1/listen` URL with every option as a query parameter. Audio is always raw μ-law 8 kHz mono, the
/// format Twilio delivers, so no transcoding is needed.
pub fn listen_url(config: &DeepgramConfig) -> Result<Url, SttError> {
    let mut url = Url::parse(&config.base_url).map_err(|e| SttError::Connect {
        provider: PROVIDER,
        detail: format!("invalid base URL {:?}: {e}", config.base_url),
    })?;
    url.set_path("/v1/listen");
    let interim = config.interim_results || config.utterance_end_ms.is_some();
    {
        let mut query = url.query_pairs_mut();
        query.clear();
        query
            .append_pair("model", &config.model)
            .append_pair("encoding", "mulaw")
            .append_pair("sample_rate", "8000")
            .append_pair("channels", "1")
            .append_pair("interim_results", bool_str(interim));
        if let Some(ms) = config.utterance_end_ms {
            query.append_pair("utterance_end_ms", &ms.to_string());
        }
        query
            .append_pair("vad_events", bool_str(config.vad_events))
            .append_pair("endpointing", &config.endpointing_ms.to_string())
            .append_pair("smart_format", bool_str(config.smart_format))
            .append_pair("language", &config.language);
        for term in &config.keyterms {
            query.append_pair("keyterm", term);
        }
    }
    Ok(url)
}

fn bool_str(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

/// Client → server control messages, sent as JSON text frames (a binary frame would be taken for audio).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ControlMessage {
    /// Keeps an idle stream open; Deepgram closes a stream after 10 s without audio or `KeepAlive`.
    KeepAlive,
    /// Flush buffered audio now; results come back with `from_finalize: true`.
    Finalize,
    /// Finish processing, send final results and `Metadata`, then close.
    CloseStream,
}

impl ControlMessage {
    /// The JSON text of the message.
    pub fn to_json(self) -> String {
        match self {
            Self::KeepAlive => r#"{"type":"KeepAlive"}"#,
            Self::Finalize => r#"{"type":"Finalize"}"#,
            Self::CloseStream => r#"{"type":"CloseStream"}"#,
        }
        .to_owned()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Pure protocol: server messages
// ---------------------------------------------------------------------------------------------------------------

/// Every server → client message, discriminated by `type`. Unknown types land in [`ServerMessage::Unknown`] so a
/// new Deepgram message never breaks a call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum ServerMessage {
    Results(ResultsMessage),
    SpeechStarted(SpeechStartedMessage),
    UtteranceEnd(UtteranceEndMessage),
    Metadata(MetadataMessage),
    Error(ErrorMessage),
    #[serde(other)]
    Unknown,
}

/// A transcription result for one window of audio. Fields are lenient (`default`) because Deepgram omits some of
/// them, e.g. `speech_final` on interims.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ResultsMessage {
    pub channel_index: Vec<u32>,
    /// Seconds of audio this window covers.
    pub duration: f64,
    /// Stream-relative start of the window, seconds.
    pub start: f64,
    pub is_final: bool,
    pub speech_final: bool,
    pub from_finalize: bool,
    pub channel: ResultsChannel,
    pub metadata: Option<ResultsMetadata>,
}

/// The alternatives of one channel; Parley uses the first.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ResultsChannel {
    pub alternatives: Vec<Alternative>,
}

/// One transcription hypothesis.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Alternative {
    pub transcript: String,
    pub confidence: f64,
    pub languages: Vec<String>,
    pub words: Vec<Word>,
}

/// One recognised word with stream-relative timing.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
    pub confidence: f64,
    pub punctuated_word: Option<String>,
    pub speaker: Option<u32>,
    pub language: Option<String>,
}

/// Request and model identification attached to each result; useful when reporting a problem to Deepgram.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ResultsMetadata {
    pub request_id: Option<String>,
    pub model_info: Option<ModelInfo>,
    pub model_uuid: Option<String>,
}

/// The model that produced a result.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ModelInfo {
    pub name: Option<String>,
    pub version: Option<String>,
    pub arch: Option<String>,
}

/// Deepgram's VAD saw speech begin (`vad_events=true`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct SpeechStartedMessage {
    pub channel: Vec<u32>,
    /// Stream-relative seconds.
    pub timestamp: f64,
}

/// A gap followed the last finalized word (`utterance_end_ms`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct UtteranceEndMessage {
    pub channel: Vec<u32>,
    /// Stream-relative end of the last word, seconds.
    pub last_word_end: f64,
}

/// The summary Deepgram sends after `CloseStream`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct MetadataMessage {
    pub transaction_key: Option<String>,
    pub request_id: Option<String>,
    pub sha256: Option<String>,
    pub created: Option<String>,
    pub duration: f64,
    pub channels: u32,
}

/// An error reported in-band (`ListenV1Error`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct ErrorMessage {
    /// `SchemaError` or `InvalidConfigureMessage`.
    pub variant: Option<String>,
    pub description: Option<String>,
    /// The client message Deepgram could not accept.
    pub message: Option<String>,
    pub code: Option<String>,
}

impl ErrorMessage {
    /// One line for logs and [`SttError::Provider`].
    pub fn detail(&self) -> String {
        let mut parts = Vec::new();
        if let Some(variant) = &self.variant {
            parts.push(variant.clone());
        }
        if let Some(code) = &self.code {
            parts.push(code.clone());
        }
        if let Some(description) = &self.description {
            parts.push(description.clone());
        }
        if parts.is_empty() {
            "unspecified error".to_owned()
        } else {
            parts.join(": ")
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

/// What a server message means for the session.
#[derive(Debug)]
pub enum Reaction {
    /// Forward this event to the engine.
    Emit(SttEvent),
    /// Deepgram reported an error: forward it and end the session.
    Fail(SttError),
    /// Nothing for the engine (metadata, empty interims, unknown types).
    Ignore,
}

/// Maps a parsed server message to what the session should do. Empty interim results carry no information and are
/// dropped; empty finals are kept because their `speech_final` / `from_finalize` flags still end a turn.
pub fn react(message: ServerMessage) -> Reaction {
    match message {
        ServerMessage::Results(results) => match transcript_of(&results) {
            Some(transcript) => Reaction::Emit(SttEvent::Transcript(transcript)),
            None => Reaction::Ignore,
        },
        ServerMessage::SpeechStarted(started) => {
            Reaction::Emit(SttEvent::SpeechStarted { timestamp: started.timestamp })
        }
        ServerMessage::UtteranceEnd(end) => Reaction::Emit(SttEvent::UtteranceEnd { last_word_end: end.last_word_end }),
        ServerMessage::Metadata(metadata) => {
            tracing::debug!(
                provider = PROVIDER,
                request_id = metadata.request_id.as_deref().unwrap_or(""),
                audio_seconds = metadata.duration,
                "stream metadata"
            );
            Reaction::Ignore
        }
        ServerMessage::Error(error) => {
            Reaction::Fail(SttError::Provider { provider: PROVIDER, detail: error.detail() })
        }
        ServerMessage::Unknown => Reaction::Ignore,
    }
}

/// The engine-facing transcript of a result, or `None` for an empty interim.
pub fn transcript_of(results: &ResultsMessage) -> Option<Transcript> {
    let text =
        results.channel.alternatives.first().map(|alternative| alternative.transcript.clone()).unwrap_or_default();
    if text.is_empty() && !results.is_final {
        return None;
    }
    Some(Transcript {
        text,
        is_final: results.is_final,
        speech_final: results.speech_final,
        from_finalize: results.from_finalize,
        start: results.start,
        duration: results.duration,
    })
}

/// Parses and maps one text frame, logging (never failing on) unparseable or unknown messages.
fn react_to_text(text: &str) -> Reaction {
    match parse_server_message(text) {
        Ok(ServerMessage::Unknown) => {
            let kind = serde_json::from_str::<TypeOnly>(text).ok().and_then(|t| t.kind).unwrap_or_default();
            tracing::warn!(provider = PROVIDER, kind, "skipping unknown message type");
            Reaction::Ignore
        }
        Ok(message) => react(message),
        Err(error) => {
            tracing::warn!(provider = PROVIDER, %error, len = text.len(), "skipping unparseable message");
            Reaction::Ignore
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// I/O
// ---------------------------------------------------------------------------------------------------------------

/// The Deepgram live provider: one WebSocket per [`SttSession`].
#[derive(Debug, Clone)]
pub struct Deepgram {
    config: DeepgramConfig,
}

impl Deepgram {
    /// A provider with the given settings; nothing is connected until [`SpeechToText::open`].
    pub fn new(config: DeepgramConfig) -> Self {
        Self { config }
    }

    /// The settings this provider connects with.
    pub fn config(&self) -> &DeepgramConfig {
        &self.config
    }
}

#[async_trait]
impl SpeechToText for Deepgram {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn open(&self) -> Result<SttSession, SttError> {
        let url = listen_url(&self.config)?;
        let auth = format!("Token {}", self.config.api_key);
        let headers = [UpgradeHeader { name: AUTHORIZATION, value: &auth }];
        let (socket, response) = websocket::connect(&url, &headers, self.config.connect_timeout)
            .await
            .map_err(|error| SttError::from_handshake(PROVIDER, error))?;
        let request_id = response.headers().get("dg-request-id").and_then(|value| value.to_str().ok()).unwrap_or("");
        tracing::info!(provider = PROVIDER, request_id, "stream opened");

        let (input_tx, input_rx) = mpsc::channel(INPUT_CAPACITY);
        let (event_tx, event_rx) = mpsc::channel(EVENT_CAPACITY);
        let io = SessionIo {
            socket,
            input: input_rx,
            events: event_tx,
            keepalive_interval: self.config.keepalive_interval,
            close_timeout: self.config.close_timeout,
        };
        tokio::spawn(io.run());
        Ok(SttSession { input: input_tx, events: event_rx })
    }
}

/// The task that owns one Deepgram socket.
struct SessionIo {
    socket: Socket,
    input: mpsc::Receiver<SttInput>,
    events: mpsc::Sender<SttEvent>,
    keepalive_interval: Duration,
    close_timeout: Duration,
}

/// What woke the session besides the engine's inputs.
enum Woke {
    /// A frame from Deepgram (`None`: the socket ended).
    Frame(Option<Result<Message, WsError>>),
    /// The timer fired.
    Tick,
}

/// Whether the session loop goes on.
enum Flow {
    Continue,
    Stop,
}

impl SessionIo {
    /// Pumps audio and control messages out, events in, and a `KeepAlive` whenever nothing was sent for
    /// `keepalive_interval`. Ends with exactly one `Closed` or `Error` event (unless the engine stopped listening).
    async fn run(mut self) {
        let mut last_sent = Instant::now();
        let mut close_deadline: Option<Instant> = None;
        // One timer for the session (see `Deadline`): audio sent moves the keep-alive's time, not the timer.
        let mut wake = Deadline::new();
        // Deepgram's results come a few times a second, the caller's audio fifty: the socket's reads and the timer
        // are polled only after one of them woke the task, not after every frame sent.
        let mut rare = WakeGate::new();
        loop {
            let due = close_deadline.unwrap_or(last_sent + self.keepalive_interval);
            wake.want_behind(Some(due), &rare);
            let flow = tokio::select! {
                biased;
                input = self.input.recv(), if close_deadline.is_none() => {
                    let flow = self.on_inputs(input, &mut close_deadline).await;
                    last_sent = Instant::now();
                    flow
                }
                rare = poll_fn(|cx| rare.poll(cx, |cx| {
                    if let Poll::Ready(frame) = self.socket.poll_next_unpin(cx) {
                        return Poll::Ready(Woke::Frame(frame));
                    }
                    wake.poll_fired(cx).map(|()| Woke::Tick)
                })) => match rare {
                    Woke::Frame(frame) => self.on_frame(frame, close_deadline.is_some()).await,
                    Woke::Tick => {
                        let now = Instant::now();
                        if now < due {
                            Flow::Continue
                        } else if close_deadline.is_some() {
                            tracing::warn!(provider = PROVIDER, "no close from the server after CloseStream; closing");
                            self.emit(SttEvent::Closed).await;
                            Flow::Stop
                        } else {
                            last_sent = now;
                            self.send(Message::text(ControlMessage::KeepAlive.to_json())).await
                        }
                    }
                },
            };
            if let Flow::Stop = flow {
                break;
            }
        }
        // Best effort: the peer may already be gone.
        let _ = self.socket.close(None).await;
    }

    /// Writes `first` and whatever else the engine has queued (up to [`INPUTS_PER_WRITE`]) as frames of one socket
    /// write: under load, inputs that waited for the task go out in one system call instead of one each.
    async fn on_inputs(&mut self, first: Option<SttInput>, close_deadline: &mut Option<Instant>) -> Flow {
        let mut input = first;
        let mut written = 0;
        loop {
            let message = match input {
                // An empty binary frame is Deepgram's legacy "end of stream" signal, so never send one.
                Some(SttInput::Audio(audio)) if audio.is_empty() => None,
                Some(SttInput::Audio(audio)) => Some(Message::binary(audio)),
                Some(SttInput::Finalize) => Some(Message::text(ControlMessage::Finalize.to_json())),
                Some(SttInput::Close) | None => {
                    *close_deadline = Some(Instant::now() + self.close_timeout);
                    Some(Message::text(ControlMessage::CloseStream.to_json()))
                }
            };
            if let Some(message) = message {
                if let Err(error) = self.socket.feed(message).await {
                    return self.on_send_failed(error).await;
                }
            }
            written += 1;
            if close_deadline.is_some() || written == INPUTS_PER_WRITE {
                break;
            }
            match self.input.try_recv() {
                Ok(next) => input = Some(next),
                Err(_) => break,
            }
        }
        match self.socket.flush().await {
            Ok(()) => Flow::Continue,
            Err(error) => self.on_send_failed(error).await,
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<Message, WsError>>, closing: bool) -> Flow {
        match frame {
            Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
            Some(Ok(Message::Close(close))) => self.on_close(close, closing).await,
            Some(Ok(Message::Binary(data))) => {
                tracing::warn!(provider = PROVIDER, len = data.len(), "skipping unexpected binary message");
                Flow::Continue
            }
            Some(Ok(_)) => Flow::Continue,
            Some(Err(error)) => self.on_lost(error.to_string(), closing).await,
            None => self.on_lost("connection ended".to_owned(), closing).await,
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        match react_to_text(text) {
            Reaction::Emit(event) => self.emit(event).await,
            Reaction::Fail(error) => {
                tracing::warn!(provider = PROVIDER, %error, "provider error");
                self.emit(SttEvent::Error(error)).await;
                Flow::Stop
            }
            Reaction::Ignore => Flow::Continue,
        }
    }

    /// A close frame after our `CloseStream` is the normal end; any other close (e.g. `NET-0001` idle timeout,
    /// `DATA-xxxx` undecodable audio) is a failure the engine must hear about.
    async fn on_close(&mut self, close: Option<CloseFrame>, closing: bool) -> Flow {
        if closing {
            self.emit(SttEvent::Closed).await;
            return Flow::Stop;
        }
        self.on_lost(websocket::close_detail(close.as_ref()), false).await
    }

    async fn on_lost(&mut self, detail: String, closing: bool) -> Flow {
        if closing {
            self.emit(SttEvent::Closed).await;
        } else {
            tracing::warn!(provider = PROVIDER, %detail, "stream lost");
            self.emit(SttEvent::Error(SttError::Disconnected { provider: PROVIDER, detail })).await;
        }
        Flow::Stop
    }

    /// Sends one frame; a failed send means the socket is gone.
    async fn send(&mut self, message: Message) -> Flow {
        match self.socket.send(message).await {
            Ok(()) => Flow::Continue,
            Err(error) => self.on_send_failed(error).await,
        }
    }

    /// A write to the socket failed: the socket is gone.
    async fn on_send_failed(&mut self, error: WsError) -> Flow {
        self.on_lost(format!("send failed: {error}"), false).await
    }

    /// Forwards an event; if the engine dropped its receiver there is nobody to work for, so stop.
    async fn emit(&mut self, event: SttEvent) -> Flow {
        match self.events.send(event).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }
}

/// `[stt.deepgram]` in the configuration file: unset fields keep this client's defaults.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeepgramSettings {
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub language: Option<String>,
    pub endpointing_ms: Option<u32>,
    pub utterance_end_ms: Option<u32>,
    pub keyterms: Vec<String>,
    /// Environment variable holding the API key.
    pub api_key_env: String,
}

impl Default for DeepgramSettings {
    fn default() -> Self {
        DeepgramSettings {
            base_url: None,
            model: None,
            language: None,
            endpointing_ms: None,
            utterance_end_ms: None,
            keyterms: Vec::new(),
            api_key_env: "DEEPGRAM_API_KEY".into(),
        }
    }
}

impl DeepgramSettings {
    /// The streaming client's configuration; the key is required.
    pub fn client_config(&self) -> Result<DeepgramConfig, Vec<crate::settings::SettingsError>> {
        let mut errors = Vec::new();
        let api_key =
            crate::settings::api_key(&self.api_key_env, "stt.deepgram", true, &mut errors).unwrap_or_default();
        let defaults = DeepgramConfig::default();
        let config = DeepgramConfig {
            api_key,
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model: self.model.clone().unwrap_or(defaults.model),
            language: self.language.clone().unwrap_or(defaults.language),
            endpointing_ms: self.endpointing_ms.unwrap_or(defaults.endpointing_ms),
            utterance_end_ms: self.utterance_end_ms.or(defaults.utterance_end_ms),
            keyterms: self.keyterms.clone(),
            ..DeepgramConfig::default()
        };
        crate::settings::finish(config, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESULTS_FINAL: &str = include_str!("../../proto-fixtures/deepgram/results_final.json");
    const RESULTS_INTERIM: &str = include_str!("../../proto-fixtures/deepgram/results_interim.json");
    const SPEECH_STARTED: &str = include_str!("../../proto-fixtures/deepgram/speech_started.json");
    const UTTERANCE_END: &str = include_str!("../../proto-fixtures/deepgram/utterance_end.json");
    const METADATA: &str = include_str!("../../proto-fixtures/deepgram/metadata.json");
    const ERROR: &str = include_str!("../../proto-fixtures/deepgram/error.json");
    const KEEP_ALIVE: &str = include_str!("../../proto-fixtures/deepgram/keep_alive.json");
    const FINALIZE: &str = include_str!("../../proto-fixtures/deepgram/finalize.json");
    const CLOSE_STREAM: &str = include_str!("../../proto-fixtures/deepgram/close_stream.json");

    fn query(url: &Url) -> Vec<(String, String)> {
        url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    }

    fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
        pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn default_url_matches_the_documented_example() {
        let url = listen_url(&DeepgramConfig::default()).unwrap();
        assert_eq!(url.scheme(), "wss");
        assert_eq!(url.host_str(), Some("api.deepgram.com"));
        assert_eq!(url.path(), "/v1/listen");
        let pairs = query(&url);
        let expected = [
            ("model", "nova-3"),
            ("encoding", "mulaw"),
            ("sample_rate", "8000"),
            ("channels", "1"),
            ("interim_results", "true"),
            ("utterance_end_ms", "1000"),
            ("vad_events", "true"),
            ("endpointing", "300"),
            ("smart_format", "true"),
            ("language", "en"),
        ];
        for (key, value) in expected {
            assert_eq!(param(&pairs, key), Some(value), "query parameter {key}");
        }
        assert_eq!(pairs.len(), expected.len());
    }

    #[test]
    fn url_follows_the_config() {
        let config = DeepgramConfig {
            base_url: "ws://127.0.0.1:9000".to_owned(),
            model: "nova-2-phonecall".to_owned(),
            language: "en-US".to_owned(),
            endpointing_ms: 450,
            utterance_end_ms: None,
            interim_results: false,
            vad_events: false,
            smart_format: false,
            keyterms: vec!["Parley".to_owned(), "table for two".to_owned()],
            ..DeepgramConfig::default()
        };
        let url = listen_url(&config).unwrap();
        assert_eq!(url.scheme(), "ws");
        assert_eq!(url.port(), Some(9000));
        let pairs = query(&url);
        assert_eq!(param(&pairs, "model"), Some("nova-2-phonecall"));
        assert_eq!(param(&pairs, "language"), Some("en-US"));
        assert_eq!(param(&pairs, "endpointing"), Some("450"));
        assert_eq!(param(&pairs, "interim_results"), Some("false"));
        assert_eq!(param(&pairs, "utterance_end_ms"), None);
        assert_eq!(param(&pairs, "vad_events"), Some("false"));
        assert_eq!(param(&pairs, "smart_format"), Some("false"));
        let keyterms: Vec<&str> = pairs.iter().filter(|(k, _)| k == "keyterm").map(|(_, v)| v.as_str()).collect();
        assert_eq!(keyterms, ["Parley", "table for two"]);
    }

    #[test]
    fn utterance_end_forces_interim_results() {
        let config =
            DeepgramConfig { interim_results: false, utterance_end_ms: Some(1200), ..DeepgramConfig::default() };
        let pairs = query(&listen_url(&config).unwrap());
        assert_eq!(param(&pairs, "interim_results"), Some("true"));
        assert_eq!(param(&pairs, "utterance_end_ms"), Some("1200"));
    }

    #[test]
    fn bad_base_url_is_a_connect_error() {
        let config = DeepgramConfig { base_url: "not a url".to_owned(), ..DeepgramConfig::default() };
        assert!(matches!(listen_url(&config), Err(SttError::Connect { .. })));
    }

    #[test]
    fn debug_output_hides_the_api_key() {
        let config = DeepgramConfig { api_key: "dg-secret-123".to_owned(), ..DeepgramConfig::default() };
        let printed = format!("{:?}", Deepgram::new(config));
        assert!(!printed.contains("dg-secret-123"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn control_messages_match_the_documented_json() {
        let cases = [
            (ControlMessage::KeepAlive, KEEP_ALIVE),
            (ControlMessage::Finalize, FINALIZE),
            (ControlMessage::CloseStream, CLOSE_STREAM),
        ];
        for (message, fixture) in cases {
            let ours: serde_json::Value = serde_json::from_str(&message.to_json()).unwrap();
            let documented: serde_json::Value = serde_json::from_str(fixture).unwrap();
            assert_eq!(ours, documented);
            assert_eq!(serde_json::to_value(message).unwrap(), documented);
        }
    }

    #[test]
    fn parses_the_documented_final_result() {
        let ServerMessage::Results(results) = parse_server_message(RESULTS_FINAL).unwrap() else {
            panic!("not a Results message");
        };
        assert_eq!(results.channel_index, [0, 1]);
        assert!(results.is_final);
        assert!(results.speech_final);
        assert!(!results.from_finalize);
        assert_eq!(results.duration, 1.04);
        let alternative = &results.channel.alternatives[0];
        assert_eq!(alternative.transcript, "book a table");
        assert_eq!(alternative.confidence, 0.98);
        let word = &alternative.words[0];
        assert_eq!(word.word, "book");
        assert_eq!(word.punctuated_word.as_deref(), Some("Book"));
        assert_eq!((word.start, word.end), (0.1, 0.3));
        assert_eq!(word.speaker, Some(0));
        let model = results.metadata.unwrap().model_info.unwrap();
        assert_eq!(model.name.as_deref(), Some("nova-3"));
    }

    #[test]
    fn final_result_maps_to_a_speech_final_transcript() {
        let Reaction::Emit(SttEvent::Transcript(transcript)) = react_to_text(RESULTS_FINAL) else {
            panic!("no transcript");
        };
        assert_eq!(
            transcript,
            Transcript {
                text: "book a table".to_owned(),
                is_final: true,
                speech_final: true,
                from_finalize: false,
                start: 0.0,
                duration: 1.04,
            }
        );
    }

    #[test]
    fn interim_without_speech_final_parses_leniently() {
        let Reaction::Emit(SttEvent::Transcript(transcript)) = react_to_text(RESULTS_INTERIM) else {
            panic!("no transcript");
        };
        assert_eq!(transcript.text, "book a");
        assert!(!transcript.is_final);
        assert!(!transcript.speech_final);
        assert!(!transcript.from_finalize);
    }

    #[test]
    fn empty_interims_are_dropped_but_empty_finals_kept() {
        let mut interim: serde_json::Value = serde_json::from_str(RESULTS_INTERIM).unwrap();
        interim["channel"]["alternatives"][0]["transcript"] = "".into();
        assert!(matches!(react_to_text(&interim.to_string()), Reaction::Ignore));

        let mut flushed: serde_json::Value = serde_json::from_str(RESULTS_FINAL).unwrap();
        flushed["channel"]["alternatives"][0]["transcript"] = "".into();
        flushed["speech_final"] = false.into();
        flushed["from_finalize"] = true.into();
        let Reaction::Emit(SttEvent::Transcript(transcript)) = react_to_text(&flushed.to_string()) else {
            panic!("empty final dropped");
        };
        assert_eq!(transcript.text, "");
        assert!(transcript.is_final && transcript.from_finalize && !transcript.speech_final);
    }

    #[test]
    fn speech_started_maps_to_its_timestamp() {
        let reaction = react_to_text(SPEECH_STARTED);
        assert!(
            matches!(reaction, Reaction::Emit(SttEvent::SpeechStarted { timestamp }) if timestamp == 0.12),
            "{reaction:?}"
        );
    }

    #[test]
    fn utterance_end_maps_to_last_word_end() {
        let reaction = react_to_text(UTTERANCE_END);
        assert!(
            matches!(reaction, Reaction::Emit(SttEvent::UtteranceEnd { last_word_end }) if last_word_end == 2.4),
            "{reaction:?}"
        );
    }

    #[test]
    fn metadata_parses_and_is_not_forwarded() {
        let ServerMessage::Metadata(metadata) = parse_server_message(METADATA).unwrap() else {
            panic!("not Metadata");
        };
        assert_eq!(metadata.request_id.as_deref(), Some("8c8e…"));
        assert_eq!(metadata.created.as_deref(), Some("2024-08-29T22:37:55.202Z"));
        assert_eq!(metadata.channels, 0);
        assert!(matches!(react_to_text(METADATA), Reaction::Ignore));
    }

    #[test]
    fn error_message_fails_the_session_with_its_description() {
        let ServerMessage::Error(error) = parse_server_message(ERROR).unwrap() else {
            panic!("not Error");
        };
        assert_eq!(error.variant.as_deref(), Some("SchemaError"));
        assert_eq!(error.message.as_deref(), Some("<the bad client message>"));
        let Reaction::Fail(SttError::Provider { provider, detail }) = react_to_text(ERROR) else {
            panic!("error not mapped");
        };
        assert_eq!(provider, PROVIDER);
        assert_eq!(detail, "SchemaError: …");
    }

    #[test]
    fn unknown_types_and_garbage_are_skipped() {
        assert_eq!(parse_server_message(r#"{"type":"BrandNew","x":1}"#).unwrap(), ServerMessage::Unknown);
        for text in [r#"{"type":"BrandNew","x":1}"#, "{not json", "", r#"{"no_type":true}"#, "[1,2]"] {
            assert!(matches!(react_to_text(text), Reaction::Ignore), "{text}");
        }
    }

    #[test]
    fn wrongly_typed_fields_are_skipped_not_panicking() {
        let mut broken: serde_json::Value = serde_json::from_str(RESULTS_FINAL).unwrap();
        broken["is_final"] = "yes".into();
        assert!(matches!(react_to_text(&broken.to_string()), Reaction::Ignore));
    }
}
