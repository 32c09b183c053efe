//! Deepgram Flux (`/v2/listen`): streaming recognition with turn detection built into the model.
//!
//! Flux reports whole turns (`TurnInfo` messages whose `transcript` is the turn so far) instead of Nova's
//! `is_final`/`speech_final` windows. Parley maps them twice: to [`SttEvent::TurnInfo`] (start, eager end, resumed,
//! end), which lets an engine start a reply speculatively on `EagerEndOfTurn` and drop it on `TurnResumed`; and to
//! the plain events (`SpeechStarted`, interim `Transcript`s, a final `speech_final` transcript at `EndOfTurn`), so an
//! engine written for Nova works unchanged. Twilio's μ-law 8 kHz audio is sent untouched.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::Message;
use url::Url;

use crate::websocket::{self, Socket, UpgradeHeader};

use super::{SpeechToText, SttError, SttEvent, SttInput, SttSession, Transcript, TurnEvent};

/// Provider name used in errors, logs and spans.
pub const PROVIDER: &str = "deepgram-flux";

const CHANNEL_CAPACITY: usize = 256;

/// Settings of the Flux client. `Debug` hides the API key.
#[derive(Clone)]
pub struct FluxConfig {
    /// WebSocket base URL without path: `wss://api.deepgram.com`, or a fake server's URL in tests.
    pub base_url: String,
    /// Sent as `Authorization: Token <key>`.
    pub api_key: String,
    /// `flux-general-en` or `flux-general-multi`.
    pub model: String,
    /// Confidence needed for `EndOfTurn` (0.5–0.9); `None` keeps Deepgram's 0.7.
    pub eot_threshold: Option<f64>,
    /// Enables `EagerEndOfTurn`/`TurnResumed` (0.3–0.9, at most `eot_threshold`); `None` disables them.
    pub eager_eot_threshold: Option<f64>,
    /// Silence that forces `EndOfTurn` (500–10000 ms); `None` keeps Deepgram's 5000.
    pub eot_timeout_ms: Option<u32>,
    /// Words to boost (product names, the caller's vocabulary).
    pub keyterms: Vec<String>,
    /// Upper bound on the WebSocket handshake.
    pub connect_timeout: Duration,
}

impl Default for FluxConfig {
    fn default() -> Self {
        FluxConfig {
            base_url: "wss://api.deepgram.com".into(),
            api_key: String::new(),
            model: "flux-general-en".into(),
            eot_threshold: None,
            eager_eot_threshold: None,
            eot_timeout_ms: None,
            keyterms: Vec::new(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for FluxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FluxConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("model", &self.model)
            .field("eot_threshold", &self.eot_threshold)
            .field("eager_eot_threshold", &self.eager_eot_threshold)
            .field("eot_timeout_ms", &self.eot_timeout_ms)
            .finish_non_exhaustive()
    }
}

/// `{base}/v2/listen?model=…&encoding=mulaw&sample_rate=8000…`.
pub fn websocket_url(config: &FluxConfig) -> Result<Url, SttError> {
    let invalid = |detail: String| SttError::Connect { provider: PROVIDER, detail };
    let mut url = Url::parse(config.base_url.trim()).map_err(|e| invalid(format!("invalid base_url: {e}")))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(invalid("the base_url scheme must be ws or wss".into()));
    }
    let path = format!("{}/v2/listen", url.path().trim_end_matches('/'));
    url.set_path(&path);
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("model", &config.model).append_pair("encoding", "mulaw").append_pair("sample_rate", "8000");
        if let Some(value) = config.eot_threshold {
            query.append_pair("eot_threshold", &value.to_string());
        }
        if let Some(value) = config.eager_eot_threshold {
            query.append_pair("eager_eot_threshold", &value.to_string());
        }
        if let Some(value) = config.eot_timeout_ms {
            query.append_pair("eot_timeout_ms", &value.to_string());
        }
        for term in &config.keyterms {
            query.append_pair("keyterm", term);
        }
    }
    Ok(url)
}

/// Server messages Parley reads; unknown types are ignored (Deepgram may add some).
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum ServerMessage {
    Connected {},
    TurnInfo(TurnInfo),
    Error {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        description: Option<String>,
    },
    Warning {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        description: Option<String>,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct TurnInfo {
    event: String,
    #[serde(default)]
    transcript: String,
    #[serde(default)]
    audio_window_start: f64,
    #[serde(default)]
    audio_window_end: f64,
}

/// Tracks the current turn, so `Finalize` and the end of the stream can report it.
#[derive(Debug, Default)]
pub struct TurnState {
    /// The latest transcript of the open turn and its audio window; `None` between turns.
    open: Option<(String, f64, f64)>,
}

impl TurnState {
    /// The events one server text frame maps to; `Err` for a fatal error message.
    pub fn on_text(&mut self, text: &str) -> Result<Vec<SttEvent>, SttError> {
        let message: ServerMessage = serde_json::from_str(text).map_err(|error| SttError::Protocol {
            provider: PROVIDER,
            detail: format!("{error} in {}", text.chars().take(200).collect::<String>()),
        })?;
        match message {
            ServerMessage::TurnInfo(info) => Ok(self.on_turn_info(info)),
            ServerMessage::Error { code, description } => Err(SttError::Provider {
                provider: PROVIDER,
                detail: format!("{} ({})", description.unwrap_or_default(), code.unwrap_or_default()),
            }),
            ServerMessage::Warning { code, description } => {
                tracing::warn!(provider = PROVIDER, code = ?code, description = ?description, "provider warning");
                Ok(Vec::new())
            }
            ServerMessage::Connected {} | ServerMessage::Unknown => Ok(Vec::new()),
        }
    }

    fn on_turn_info(&mut self, info: TurnInfo) -> Vec<SttEvent> {
        let start = info.audio_window_start;
        let duration = (info.audio_window_end - start).max(0.0);
        let turn = |event| SttEvent::TurnInfo { event, transcript: info.transcript.clone() };
        match info.event.as_str() {
            "StartOfTurn" => {
                self.open = Some((info.transcript.clone(), start, duration));
                vec![SttEvent::SpeechStarted { timestamp: start }, turn(TurnEvent::StartOfTurn)]
            }
            "Update" => {
                self.open = Some((info.transcript.clone(), start, duration));
                if info.transcript.is_empty() {
                    return Vec::new();
                }
                vec![SttEvent::Transcript(transcript(&info.transcript, start, duration, false, false))]
            }
            "EagerEndOfTurn" => vec![turn(TurnEvent::EagerEndOfTurn)],
            "TurnResumed" => vec![turn(TurnEvent::TurnResumed)],
            "EndOfTurn" => {
                self.open = None;
                let end = info.audio_window_end;
                vec![
                    turn(TurnEvent::EndOfTurn),
                    SttEvent::Transcript(transcript(&info.transcript, start, duration, true, false)),
                    SttEvent::UtteranceEnd { last_word_end: end },
                ]
            }
            other => {
                tracing::debug!(provider = PROVIDER, event = other, "unknown turn event ignored");
                Vec::new()
            }
        }
    }

    /// Flux decides turns itself; a `Finalize` is answered at once with the open turn so far (empty if none), so an
    /// engine waiting for it never waits forever.
    pub fn finalize(&mut self) -> SttEvent {
        let (text, start, duration) = self.open.take().unwrap_or_default();
        SttEvent::Transcript(Transcript { from_finalize: true, ..transcript(&text, start, duration, true, false) })
    }

    /// At the end of the stream Flux sends no `EndOfTurn`; its last `Update` counts as final.
    pub fn end_of_stream(&mut self) -> Option<SttEvent> {
        let (text, start, duration) = self.open.take().filter(|(text, _, _)| !text.is_empty())?;
        Some(SttEvent::Transcript(transcript(&text, start, duration, true, false)))
    }
}

fn transcript(text: &str, start: f64, duration: f64, is_final: bool, from_finalize: bool) -> Transcript {
    Transcript { text: text.to_owned(), is_final, speech_final: is_final, from_finalize, start, duration }
}

/// The Flux provider: one WebSocket per [`SttSession`].
#[derive(Debug, Clone)]
pub struct DeepgramFlux {
    config: FluxConfig,
}

impl DeepgramFlux {
    /// A provider with the given settings; nothing is connected until [`SpeechToText::open`].
    pub fn new(config: FluxConfig) -> Self {
        DeepgramFlux { config }
    }
}

#[async_trait]
impl SpeechToText for DeepgramFlux {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn open(&self) -> Result<SttSession, SttError> {
        let url = websocket_url(&self.config)?;
        let auth = format!("Token {}", self.config.api_key);
        let headers = [UpgradeHeader { name: AUTHORIZATION, value: &auth }];
        let (socket, _) = websocket::connect(&url, &headers, self.config.connect_timeout)
            .await
            .map_err(|error| SttError::from_handshake(PROVIDER, error))?;
        let (input_tx, input_rx) = mpsc::channel(super::INPUT_CAPACITY);
        let (event_tx, event_rx) = mpsc::channel(CHANNEL_CAPACITY);
        tokio::spawn(run(socket, input_rx, event_tx));
        Ok(SttSession { input: input_tx, events: event_rx })
    }
}

/// Pumps audio out and turn events in until the socket ends; ends with `Closed` or `Error`.
async fn run(mut socket: Socket, mut input: mpsc::Receiver<SttInput>, events: mpsc::Sender<SttEvent>) {
    let mut state = TurnState::default();
    let mut closing = false;
    let ending = loop {
        tokio::select! {
            message = input.recv(), if !closing => match message {
                Some(SttInput::Audio(audio)) => {
                    if let Err(error) = socket.send(Message::binary(audio)).await {
                        break Some(SttError::Disconnected { provider: PROVIDER, detail: error.to_string() });
                    }
                }
                Some(SttInput::Finalize) => {
                    if events.send(state.finalize()).await.is_err() {
                        break None;
                    }
                }
                Some(SttInput::Close) | None => {
                    closing = true;
                    let _ = socket.send(Message::text(r#"{"type":"CloseStream"}"#)).await;
                }
            },
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => match state.on_text(text.as_str()) {
                    Ok(mapped) => {
                        for event in mapped {
                            if events.send(event).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => break Some(error),
                },
                Some(Ok(Message::Close(_))) | None if closing => break None,
                Some(Ok(Message::Close(close))) => {
                    break Some(SttError::Disconnected { provider: PROVIDER, detail: websocket::close_detail(close.as_ref()) });
                }
                None => break Some(SttError::Disconnected { provider: PROVIDER, detail: "the socket ended".into() }),
                Some(Ok(_)) => {}
                Some(Err(_)) if closing => break None,
                Some(Err(error)) => break Some(SttError::Disconnected { provider: PROVIDER, detail: error.to_string() }),
            },
        }
    };
    if let Some(last) = state.end_of_stream() {
        let _ = events.send(last).await;
    }
    let _ = events.send(ending.map_or(SttEvent::Closed, SttEvent::Error)).await;
}

/// `[stt.deepgram_flux]`: unset fields keep the client's defaults (`stt::deepgram_flux::FluxConfig`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeepgramFluxSettings {
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub eot_threshold: Option<f64>,
    /// Setting it enables the EagerEndOfTurn / TurnResumed events.
    pub eager_eot_threshold: Option<f64>,
    pub eot_timeout_ms: Option<u32>,
    pub keyterms: Vec<String>,
    /// Environment variable holding the API key (required).
    pub api_key_env: String,
}

impl Default for DeepgramFluxSettings {
    fn default() -> Self {
        DeepgramFluxSettings {
            base_url: None,
            model: None,
            eot_threshold: None,
            eager_eot_threshold: None,
            eot_timeout_ms: None,
            keyterms: Vec::new(),
            api_key_env: "DEEPGRAM_API_KEY".into(),
        }
    }
}

impl DeepgramFluxSettings {
    /// The Flux client's configuration; the key is required.
    pub fn client_config(&self) -> Result<FluxConfig, Vec<crate::settings::SettingsError>> {
        let mut errors = Vec::new();
        let api_key =
            crate::settings::api_key(&self.api_key_env, "stt.deepgram_flux", true, &mut errors).unwrap_or_default();
        let defaults = FluxConfig::default();
        let config = FluxConfig {
            api_key,
            base_url: self.base_url.clone().unwrap_or(defaults.base_url),
            model: self.model.clone().unwrap_or(defaults.model),
            eot_threshold: self.eot_threshold.or(defaults.eot_threshold),
            eager_eot_threshold: self.eager_eot_threshold.or(defaults.eager_eot_threshold),
            eot_timeout_ms: self.eot_timeout_ms.or(defaults.eot_timeout_ms),
            keyterms: self.keyterms.clone(),
            ..FluxConfig::default()
        };
        crate::settings::finish(config, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(lines: &str) -> Vec<String> {
        let mut state = TurnState::default();
        lines
            .lines()
            .filter(|line| !line.trim().is_empty())
            .flat_map(|line| match state.on_text(line) {
                Ok(events) => events.into_iter().map(|e| format!("{e:?}")).collect::<Vec<_>>(),
                Err(error) => vec![format!("error: {error}")],
            })
            .collect()
    }

    #[test]
    fn url_asks_for_mulaw_8k_and_the_thresholds() {
        let config =
            FluxConfig { eager_eot_threshold: Some(0.5), keyterms: vec!["Acme".into()], ..FluxConfig::default() };
        let url = websocket_url(&config).map(|u| u.to_string()).unwrap_or_else(|e| e.to_string());
        assert_eq!(
            url,
            "wss://api.deepgram.com/v2/listen?model=flux-general-en&encoding=mulaw&sample_rate=8000&eager_eot_threshold=0.5&keyterm=Acme"
        );
    }

    #[test]
    fn eager_end_then_resumed_then_end() {
        let got = events(include_str!("../../proto-fixtures/deepgram_flux/eager_then_resumed.jsonl"));
        let turns: Vec<&String> = got.iter().filter(|e| e.starts_with("TurnInfo")).collect();
        assert_eq!(turns.len(), 4, "{got:#?}");
        assert!(turns[0].contains("StartOfTurn") && turns[1].contains("EagerEndOfTurn"));
        assert!(turns[2].contains("TurnResumed") && turns[3].contains("EndOfTurn"));
        assert!(got.iter().any(|e| e.contains("is_final: true") && e.contains("my order is four five six")));
    }

    #[test]
    fn eager_end_confirmed_by_end_of_turn() {
        let got = events(include_str!("../../proto-fixtures/deepgram_flux/eager_then_end.jsonl"));
        let turns: Vec<&String> = got.iter().filter(|e| e.starts_with("TurnInfo")).collect();
        assert_eq!(turns.len(), 3, "{got:#?}");
        assert!(turns[1].contains("EagerEndOfTurn") && turns[1].contains("hello there"));
        assert!(turns[2].contains("EndOfTurn") && !turns[2].contains("Eager"));
    }

    #[test]
    fn fatal_error_and_finalize() {
        let got = events(r#"{"type":"Error","sequence_id":3,"code":"INTERNAL_SERVER_ERROR","description":"boom"}"#);
        assert!(got[0].starts_with("error:") && got[0].contains("INTERNAL_SERVER_ERROR"), "{got:?}");
        let mut state = TurnState::default();
        assert!(matches!(state.finalize(), SttEvent::Transcript(t) if t.from_finalize && t.text.is_empty()));
    }
}
