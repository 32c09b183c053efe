//! ElevenLabs WebSocket text-to-speech (`multi-stream-input`: many contexts on one socket).
//!
//! One socket per [`TtsSession`]; each reply is an ElevenLabs context keyed by the engine's [`ContextId`]. Audio is
//! requested as `ulaw_8000`, the format Twilio plays, so it is forwarded as decoded.
//!
//! Context lifecycle, shaped by ElevenLabs' limits: a context is opened with a single-space text (plus voice
//! settings) before any other message names it; the last piece of a reply is followed by `flush` and
//! `close_context`, so `isFinal` arrives right after the last audio and the context stops counting against the limit
//! of five concurrent contexts per socket (exceeding it closes the socket with code 1008). Barge-in sends
//! `close_context` and remembers the id: late audio and `isFinal` of a cancelled context are dropped.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::http::header::HeaderName;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use url::Url;

use crate::websocket::{self, Socket, UpgradeHeader};

use super::{ContextId, TextToSpeech, TtsError, TtsEvent, TtsInput, TtsSession};

/// Provider name used in errors, logs and spans.
pub const PROVIDER: &str = "elevenlabs";

/// Contexts ElevenLabs allows open at once on one socket.
pub const MAX_CONTEXTS: usize = 5;

const CHANNEL_CAPACITY: usize = 256;

/// Settings of the ElevenLabs client. `Debug` hides the API key.
#[derive(Clone)]
pub struct ElevenLabsConfig {
    /// WebSocket base URL without path: `wss://api.elevenlabs.io`, or a fake server's URL in tests.
    pub base_url: String,
    /// Sent as the `xi-api-key` header.
    pub api_key: String,
    /// The voice to speak with (part of the URL path).
    pub voice_id: String,
    /// e.g. `eleven_flash_v2_5` (lowest latency); `eleven_v3` does not support this endpoint.
    pub model_id: String,
    /// Language for multilingual models; `None` lets the model decide.
    pub language_code: Option<String>,
    /// Seconds of silence before ElevenLabs closes the socket (default 20, max 180): a call can be quiet for a
    /// while when the caller talks at length, so Parley asks for the maximum.
    pub inactivity_timeout_s: Option<u32>,
    /// `voice_settings.stability`; `None` keeps the voice's own setting.
    pub stability: Option<f64>,
    /// `voice_settings.similarity_boost`; `None` keeps the voice's own setting.
    pub similarity_boost: Option<f64>,
    /// `voice_settings.speed`; `None` keeps the default.
    pub speed: Option<f64>,
    /// Upper bound on the WebSocket handshake.
    pub connect_timeout: Duration,
}

impl Default for ElevenLabsConfig {
    fn default() -> Self {
        ElevenLabsConfig {
            base_url: "wss://api.elevenlabs.io".into(),
            api_key: String::new(),
            voice_id: String::new(),
            model_id: "eleven_flash_v2_5".into(),
            language_code: None,
            inactivity_timeout_s: Some(180),
            stability: None,
            similarity_boost: None,
            speed: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for ElevenLabsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElevenLabsConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("voice_id", &self.voice_id)
            .field("model_id", &self.model_id)
            .field("language_code", &self.language_code)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Protocol (pure)
// ---------------------------------------------------------------------------------------------------------------

/// `{base}/v1/text-to-speech/{voice_id}/multi-stream-input?model_id=…&output_format=ulaw_8000…`.
pub fn websocket_url(config: &ElevenLabsConfig) -> Result<Url, TtsError> {
    let invalid = |detail: String| TtsError::Connect { provider: PROVIDER, detail };
    if config.voice_id.is_empty() {
        return Err(invalid("no voice_id configured".into()));
    }
    let mut url = Url::parse(config.base_url.trim()).map_err(|e| invalid(format!("invalid base_url: {e}")))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(invalid("the base_url scheme must be ws or wss".into()));
    }
    let path = format!("{}/v1/text-to-speech/{}/multi-stream-input", url.path().trim_end_matches('/'), config.voice_id);
    url.set_path(&path);
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("model_id", &config.model_id).append_pair("output_format", "ulaw_8000");
        if let Some(language) = &config.language_code {
            query.append_pair("language_code", language);
        }
        if let Some(seconds) = config.inactivity_timeout_s {
            query.append_pair("inactivity_timeout", &seconds.to_string());
        }
    }
    Ok(url)
}

/// The message opening a context: a single space, with the configured voice settings.
pub fn open_context_message(config: &ElevenLabsConfig, context: &str) -> Value {
    let mut settings = Map::new();
    for (name, value) in
        [("stability", config.stability), ("similarity_boost", config.similarity_boost), ("speed", config.speed)]
    {
        if let Some(value) = value {
            settings.insert(name.into(), json!(value));
        }
    }
    let mut message = json!({"text": " ", "context_id": context});
    if !settings.is_empty() {
        message["voice_settings"] = Value::Object(settings);
    }
    message
}

/// A text piece; it must end with a space so ElevenLabs does not join words across pieces.
pub fn text_message(context: &str, text: &str) -> Value {
    let text = if text.ends_with(char::is_whitespace) { text.to_owned() } else { format!("{text} ") };
    json!({"text": text, "context_id": context})
}

/// Server messages; the wire uses camelCase (`contextId`, `isFinal`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerMessage {
    #[serde(default)]
    audio: Option<String>,
    #[serde(default)]
    is_final: Option<bool>,
    #[serde(default)]
    context_id: Option<String>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    message: Option<String>,
}

/// The event a server text frame maps to; `None` for messages of cancelled contexts and for nothing to report.
fn event_of_text(text: &str, cancelled: &HashSet<ContextId>) -> Option<TtsEvent> {
    let message: ServerMessage = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(error) => {
            let error = TtsError::Protocol { provider: PROVIDER, detail: format!("{error} in {text:.200}") };
            return Some(TtsEvent::Error { context: None, error });
        }
    };
    let context = message.context_id.filter(|id| !id.is_empty());
    if context.as_ref().is_some_and(|id| cancelled.contains(id)) {
        return None;
    }
    if let Some(error) = message.error.filter(|e| !e.is_null()) {
        let detail = match (error.as_str(), message.message) {
            (Some(kind), Some(text)) => format!("{text} ({kind})"),
            (_, Some(text)) => text,
            (Some(kind), None) => kind.to_owned(),
            (None, None) => error.to_string(),
        };
        return Some(TtsEvent::Error { context, error: TtsError::Provider { provider: PROVIDER, detail } });
    }
    let context = context?;
    if let Some(audio) = message.audio.filter(|audio| !audio.is_empty()) {
        return Some(match base64::engine::general_purpose::STANDARD.decode(audio) {
            Ok(mulaw) => TtsEvent::Audio { context, mulaw: Bytes::from(mulaw) },
            Err(error) => TtsEvent::Error {
                context: Some(context),
                error: TtsError::Protocol { provider: PROVIDER, detail: format!("audio is not base64: {error}") },
            },
        });
    }
    if message.is_final == Some(true) {
        return Some(TtsEvent::Done { context });
    }
    None
}

// ---------------------------------------------------------------------------------------------------------------
// I/O
// ---------------------------------------------------------------------------------------------------------------

/// The ElevenLabs provider: one WebSocket per [`TtsSession`], one ElevenLabs context per reply.
#[derive(Debug, Clone)]
pub struct ElevenLabs {
    config: ElevenLabsConfig,
}

impl ElevenLabs {
    /// A provider with the given settings; nothing is connected until [`TextToSpeech::open`].
    pub fn new(config: ElevenLabsConfig) -> Self {
        ElevenLabs { config }
    }
}

#[async_trait]
impl TextToSpeech for ElevenLabs {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn open(&self) -> Result<TtsSession, TtsError> {
        let url = websocket_url(&self.config)?;
        let headers = [UpgradeHeader { name: HeaderName::from_static("xi-api-key"), value: &self.config.api_key }];
        let (socket, _) = websocket::connect(&url, &headers, self.config.connect_timeout)
            .await
            .map_err(|error| TtsError::from_handshake(PROVIDER, error))?;
        let (input_tx, input_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (event_tx, event_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let io = SessionIo {
            config: self.config.clone(),
            socket,
            events: event_tx,
            open: Vec::new(),
            closing: HashSet::new(),
            cancelled: HashSet::new(),
        };
        tokio::spawn(io.run(input_rx));
        Ok(TtsSession { input: input_tx, events: event_rx })
    }
}

/// The task that owns one socket.
struct SessionIo {
    config: ElevenLabsConfig,
    socket: Socket,
    events: mpsc::Sender<TtsEvent>,
    /// Contexts opened and not yet finished (counted against [`MAX_CONTEXTS`]), oldest first.
    open: Vec<ContextId>,
    /// Open contexts whose last text was sent (flushed and closed), waiting for `isFinal`.
    closing: HashSet<ContextId>,
    /// Contexts cancelled by the engine; their late messages are dropped. Never pruned (a call has few replies).
    cancelled: HashSet<ContextId>,
}

impl SessionIo {
    async fn run(mut self, mut input: mpsc::Receiver<TtsInput>) {
        loop {
            tokio::select! {
                message = input.recv() => match message {
                    Some(TtsInput::Text { context, text, last }) => self.text(context, text, last).await,
                    Some(TtsInput::Cancel { context }) => self.cancel(context).await,
                    Some(TtsInput::Close) | None => {
                        let _ = self.send(json!({"close_socket": true})).await;
                        let _ = self.socket.close(None).await;
                        break;
                    }
                },
                frame = self.socket.next() => {
                    if !self.frame(frame).await {
                        break;
                    }
                }
            }
        }
        let _ = self.events.send(TtsEvent::Closed).await;
    }

    async fn send(&mut self, message: Value) -> Result<(), TtsError> {
        let text = message.to_string();
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|error| TtsError::Disconnected { provider: PROVIDER, detail: error.to_string() })
    }

    async fn text(&mut self, context: ContextId, text: String, last: bool) {
        if self.cancelled.contains(&context) || self.closing.contains(&context) {
            return;
        }
        let mut messages = Vec::new();
        if !self.open.contains(&context) {
            if self.open.len() >= MAX_CONTEXTS {
                let detail = format!("more than {MAX_CONTEXTS} replies at once on one socket");
                let error = TtsError::Provider { provider: PROVIDER, detail };
                let _ = self.events.send(TtsEvent::Error { context: Some(context), error }).await;
                return;
            }
            self.open.push(context.clone());
            messages.push(open_context_message(&self.config, &context));
        }
        if !text.trim().is_empty() {
            messages.push(text_message(&context, &text));
        }
        if last {
            self.closing.insert(context.clone());
            messages.push(json!({"context_id": context, "flush": true}));
            messages.push(json!({"context_id": context, "close_context": true}));
        }
        for message in messages {
            if let Err(error) = self.send(message).await {
                let _ = self.events.send(TtsEvent::Error { context: Some(context.clone()), error }).await;
                return;
            }
        }
    }

    /// Drops the context's remaining audio. A context still taking text is closed at the server (the barge-in
    /// abort); one already flushed and closed is left to finish: a second `close_context` could reach the server
    /// after its `isFinal`, naming a context it no longer knows.
    async fn cancel(&mut self, context: ContextId) {
        self.cancelled.insert(context.clone());
        let still_taking_text = self.open.contains(&context) && !self.closing.contains(&context);
        self.forget(&context);
        if still_taking_text {
            let _ = self.send(json!({"context_id": context, "close_context": true})).await;
        }
    }

    fn forget(&mut self, context: &ContextId) {
        self.open.retain(|id| id != context);
        self.closing.remove(context);
    }

    /// Handles one incoming frame; false when the socket is gone.
    async fn frame(&mut self, frame: Option<Result<Message, WsError>>) -> bool {
        let event = match frame {
            Some(Ok(Message::Text(text))) => event_of_text(text.as_str(), &self.cancelled),
            Some(Ok(Message::Close(close))) => {
                let error =
                    TtsError::Disconnected { provider: PROVIDER, detail: websocket::close_detail(close.as_ref()) };
                let _ = self.events.send(TtsEvent::Error { context: None, error }).await;
                return false;
            }
            Some(Ok(_)) => None,
            Some(Err(error)) => {
                let error = TtsError::Disconnected { provider: PROVIDER, detail: error.to_string() };
                let _ = self.events.send(TtsEvent::Error { context: None, error }).await;
                return false;
            }
            None => {
                let detail = "the socket ended".to_owned();
                let error = TtsError::Disconnected { provider: PROVIDER, detail };
                let _ = self.events.send(TtsEvent::Error { context: None, error }).await;
                return false;
            }
        };
        if let Some(event) = event {
            if let TtsEvent::Done { context } | TtsEvent::Error { context: Some(context), .. } = &event {
                let context = context.clone();
                self.forget(&context);
            }
            if self.events.send(event).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// `[tts.elevenlabs]`: unset fields keep the client's defaults (`tts::elevenlabs::ElevenLabsConfig`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElevenLabsSettings {
    pub base_url: Option<String>,
    /// The voice to speak with (required).
    pub voice_id: String,
    pub model_id: Option<String>,
    pub language_code: Option<String>,
    pub stability: Option<f64>,
    pub similarity_boost: Option<f64>,
    pub speed: Option<f64>,
    /// Environment variable holding the API key (required).
    pub api_key_env: String,
}

impl Default for ElevenLabsSettings {
    fn default() -> Self {
        ElevenLabsSettings {
            base_url: None,
            voice_id: String::new(),
            model_id: None,
            language_code: None,
            stability: None,
            similarity_boost: None,
            speed: None,
            api_key_env: "ELEVENLABS_API_KEY".into(),
        }
    }
}

impl ElevenLabsSettings {
    /// The streaming client's configuration; the key and the voice are required.
    pub fn client_config(&self) -> Result<ElevenLabsConfig, Vec<crate::settings::SettingsError>> {
        let mut errors = Vec::new();
        let api_key =
            crate::settings::api_key(&self.api_key_env, "tts.elevenlabs", true, &mut errors).unwrap_or_default();
        crate::settings::required(&self.voice_id, "tts.elevenlabs", "voice_id", &mut errors);
        let defaults = ElevenLabsConfig::default();
        let config = ElevenLabsConfig {
            api_key,
            voice_id: self.voice_id.clone(),
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model_id: self.model_id.clone().unwrap_or(defaults.model_id),
            language_code: self.language_code.clone().or(defaults.language_code),
            stability: self.stability.or(defaults.stability),
            similarity_boost: self.similarity_boost.or(defaults.similarity_boost),
            speed: self.speed.or(defaults.speed),
            ..ElevenLabsConfig::default()
        };
        crate::settings::finish(config, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ElevenLabsConfig {
        ElevenLabsConfig { api_key: "xi-secret".into(), voice_id: "voice-1".into(), ..ElevenLabsConfig::default() }
    }

    #[test]
    fn url_requests_ulaw_8000_on_the_multi_context_endpoint() {
        let url = websocket_url(&config()).map(|u| u.to_string()).unwrap_or_else(|e| e.to_string());
        assert_eq!(
            url,
            "wss://api.elevenlabs.io/v1/text-to-speech/voice-1/multi-stream-input?model_id=eleven_flash_v2_5&output_format=ulaw_8000&inactivity_timeout=180"
        );
        assert!(websocket_url(&ElevenLabsConfig::default()).is_err());
        assert!(!format!("{:?}", config()).contains("xi-secret"));
    }

    #[test]
    fn documented_client_messages() {
        let with_settings = ElevenLabsConfig { stability: Some(0.5), similarity_boost: Some(0.8), ..config() };
        assert_eq!(
            open_context_message(&with_settings, "turn-17"),
            json!({ "text": " ", "context_id": "turn-17", "voice_settings": { "stability": 0.5, "similarity_boost": 0.8 } })
        );
        assert_eq!(open_context_message(&config(), "t"), json!({"text": " ", "context_id": "t"}));
        assert_eq!(
            text_message("turn-17", "Sure, one moment."),
            json!({ "text": "Sure, one moment. ", "context_id": "turn-17" })
        );
    }

    #[test]
    fn documented_server_messages() {
        let none = HashSet::new();
        let audio = include_str!("../../proto-fixtures/elevenlabs/audio.json");
        match event_of_text(audio, &none) {
            Some(TtsEvent::Audio { context, mulaw }) => {
                assert_eq!(context, "turn-17");
                assert_eq!(&mulaw[..], &[0xFF, 0x7F, 0x00, 0x80]);
            }
            other => panic!("expected audio, got {other:?}"),
        }
        let done = include_str!("../../proto-fixtures/elevenlabs/final.json");
        assert!(matches!(event_of_text(done, &none), Some(TtsEvent::Done { context }) if context == "turn-17"));
    }

    #[test]
    fn late_messages_of_cancelled_contexts_are_dropped() {
        let cancelled: HashSet<ContextId> = ["turn-17".to_owned()].into();
        assert!(event_of_text(include_str!("../../proto-fixtures/elevenlabs/audio.json"), &cancelled).is_none());
        assert!(event_of_text(include_str!("../../proto-fixtures/elevenlabs/final.json"), &cancelled).is_none());
    }
}
