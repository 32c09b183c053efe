//! Twilio's side of a bidirectional Media Stream, for replaying calls against Parley (`parley eval`, the simulated
//! caller, the load generator and the integration tests).
//!
//! It behaves like Twilio's media server as documented: it sends `connected`, `start`, paced or bulk `media`, `dtmf`
//! and `stop`; it "plays" the audio Parley sends in real time, echoes each `mark` when playback reaches it, and on
//! `clear` drops its buffer and echoes every pending mark at once. Everything it receives is logged with arrival
//! times so tests can assert on it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::twilio::messages::OutboundMessage;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why the simulated call failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("could not connect: {0}")]
    Connect(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the call is over")]
    Closed,
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// Something Parley sent, as the simulated Twilio received it.
#[derive(Debug, Clone)]
pub enum Received {
    /// A parsed outbound message.
    Message { at: Instant, message: OutboundMessage },
    /// A text frame that is not a valid outbound message (Twilio would report error 31951).
    Invalid { at: Instant, text: String },
    /// Parley closed the socket.
    Closed { at: Instant, code: Option<u16>, reason: String },
}

/// The simulated call's view of playback.
#[derive(Debug, Default)]
struct Playback {
    /// Audio Parley sent, decoded, in arrival order (what Twilio would play).
    audio: Vec<u8>,
    /// When the audio received so far finishes playing.
    finish_at: Option<Instant>,
    /// Marks waiting for playback to reach them: (due, name).
    pending_marks: VecDeque<(Instant, String, String)>,
    clears: u64,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Received>>,
    playback: Mutex<Playback>,
    changed: Notify,
}

/// What the `start` message says.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub stream_sid: String,
    pub call_sid: String,
    pub account_sid: String,
    pub custom_parameters: BTreeMap<String, String>,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            stream_sid: "MZ00000000000000000000000000000001".into(),
            call_sid: "CA00000000000000000000000000000001".into(),
            account_sid: "AC00000000000000000000000000000001".into(),
            custom_parameters: BTreeMap::from([
                ("from".into(), "+15550001111".into()),
                ("to".into(), "+15550002222".into()),
            ]),
        }
    }
}

/// What Twilio presents at a Media Stream upgrade when Parley validates signatures: the per-call token the voice
/// webhook puts in the Stream URL, and `X-Twilio-Signature` over the public form of that URL.
#[derive(Clone)]
pub struct TwilioAuth {
    /// The account's auth token (signs the upgrade; Parley's stream tokens are keyed from it).
    pub auth_token: String,
    /// The public Stream URL Twilio would sign (`wss://voice.example.com/twilio/media`), without the token.
    pub signed_url: String,
}

impl std::fmt::Debug for TwilioAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioAuth").field("signed_url", &self.signed_url).finish_non_exhaustive()
    }
}

/// How long the tokens the simulated Twilio mints stay valid.
const SIMULATED_TOKEN_TTL_SECS: u64 = 60;

/// One simulated call.
pub struct SimCall {
    outgoing: mpsc::UnboundedSender<Message>,
    shared: Arc<Shared>,
    stream_sid: String,
    sequence: u64,
    chunk: u64,
    media_ms: u64,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl SimCall {
    /// Opens the WebSocket, with an `X-Twilio-Signature` header when given.
    pub async fn connect(url: &str, signature: Option<&str>) -> Result<SimCall, SimError> {
        let mut request = url.into_client_request()?;
        if let Some(signature) = signature {
            let value = signature.parse().map_err(|_| SimError::Timeout("a valid signature header".into()))?;
            request.headers_mut().insert("x-twilio-signature", value);
        }
        let config = crate::websocket::client_config();
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
        Ok(Self::from_socket(socket))
    }

    /// Opens the stream of `call_sid` as Twilio does after Parley's voice webhook answered: with `auth`, the URL
    /// carries the call's stream token (minted here as the webhook would) and the upgrade is signed over its public
    /// form; without it (Parley validates no signatures) the plain URL is used.
    pub async fn connect_as_twilio(url: &str, auth: Option<&TwilioAuth>, call_sid: &str) -> Result<SimCall, SimError> {
        use crate::twilio::stream_token::{stream_url_with_token, unix_now, StreamTokens};
        let Some(auth) = auth else { return Self::connect(url, None).await };
        let token =
            StreamTokens::from_auth_token(&auth.auth_token).mint(call_sid, unix_now() + SIMULATED_TOKEN_TTL_SECS);
        let validator = crate::twilio::signature::SignatureValidator::new(&auth.auth_token);
        let signature = validator.sign(&stream_url_with_token(&auth.signed_url, &token), &[]);
        Self::connect(&stream_url_with_token(url, &token), Some(&signature)).await
    }

    fn from_socket(socket: Socket) -> SimCall {
        let (sink, stream) = socket.split();
        let shared = Arc::new(Shared::default());
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(sink, outgoing_rx));
        let reader = tokio::spawn(read_loop(stream, Arc::clone(&shared), outgoing.clone()));
        SimCall { outgoing, shared, stream_sid: String::new(), sequence: 0, chunk: 0, media_ms: 0, reader, writer }
    }

    /// Sends `connected` then `start`.
    pub fn start(&mut self, options: &StartOptions) -> Result<(), SimError> {
        self.stream_sid = options.stream_sid.clone();
        self.send_json(serde_json::json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}))?;
        self.sequence += 1;
        self.send_json(serde_json::json!({
            "event": "start",
            "sequenceNumber": self.sequence.to_string(),
            "start": {
                "accountSid": options.account_sid,
                "streamSid": options.stream_sid,
                "callSid": options.call_sid,
                "tracks": ["inbound"],
                "customParameters": options.custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
            },
            "streamSid": options.stream_sid,
        }))
    }

    /// Sends one media message with the next chunk number and timestamp.
    pub fn send_media(&mut self, mulaw: &[u8]) -> Result<(), SimError> {
        let payload = base64::engine::general_purpose::STANDARD.encode(mulaw);
        self.send_media_payload(&payload, mulaw.len())
    }

    /// Sends a media message whose payload is given verbatim (to send broken payloads).
    pub fn send_media_payload(&mut self, payload: &str, audio_len: usize) -> Result<(), SimError> {
        self.sequence += 1;
        self.chunk += 1;
        let message = serde_json::json!({
            "event": "media",
            "sequenceNumber": self.sequence.to_string(),
            "media": {"track": "inbound", "chunk": self.chunk.to_string(), "timestamp": self.media_ms.to_string(), "payload": payload},
            "streamSid": self.stream_sid,
        });
        self.media_ms += audio_len as u64 / 8;
        self.send_json(message)
    }

    /// Streams audio in 20 ms media messages paced in real time, as Twilio does.
    pub async fn stream_audio(&mut self, mulaw: &[u8]) -> Result<(), SimError> {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for frame in mulaw.chunks(160) {
            tick.tick().await;
            self.send_media(frame)?;
        }
        Ok(())
    }

    pub fn send_dtmf(&mut self, digit: &str) -> Result<(), SimError> {
        self.sequence += 1;
        self.send_json(serde_json::json!({
            "event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": self.sequence.to_string(),
            "dtmf": {"track": "inbound_track", "digit": digit}
        }))
    }

    /// Sends `stop`, as when the caller hangs up.
    pub fn send_stop(&mut self) -> Result<(), SimError> {
        self.sequence += 1;
        self.send_json(serde_json::json!({
            "event": "stop", "sequenceNumber": self.sequence.to_string(), "streamSid": self.stream_sid,
            "stop": {"accountSid": "AC00000000000000000000000000000001", "callSid": "CA00000000000000000000000000000001"}
        }))
    }

    /// Sends any text frame (malformed JSON, unknown events…).
    pub fn send_text(&self, text: impl Into<String>) -> Result<(), SimError> {
        self.outgoing.send(Message::text(text.into())).map_err(|_| SimError::Closed)
    }

    pub fn send_binary(&self, bytes: Vec<u8>) -> Result<(), SimError> {
        self.outgoing.send(Message::binary(bytes)).map_err(|_| SimError::Closed)
    }

    fn send_json(&self, value: serde_json::Value) -> Result<(), SimError> {
        self.send_text(value.to_string())
    }

    /// Sends a close frame and waits for the socket to finish.
    pub async fn hang_up(self) {
        let _ = self.outgoing.send(Message::Close(Some(CloseFrame { code: 1000.into(), reason: "".into() })));
        drop(self.outgoing);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.writer).await;
        self.reader.abort();
    }

    /// Drops the TCP connection without any close handshake, like a network failure.
    pub fn vanish(self) {
        self.writer.abort();
        self.reader.abort();
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.log).clone()
    }

    /// Every outbound message received so far.
    pub fn messages(&self) -> Vec<OutboundMessage> {
        self.received()
            .into_iter()
            .filter_map(|r| match r {
                Received::Message { message, .. } => Some(message),
                _ => None,
            })
            .collect()
    }

    /// The audio Parley sent, concatenated (what Twilio would have queued for playback).
    pub fn audio_received(&self) -> Vec<u8> {
        lock(&self.shared.playback).audio.clone()
    }

    /// How many `clear`s arrived.
    pub fn clears(&self) -> u64 {
        lock(&self.shared.playback).clears
    }

    /// Waits until `done` holds for what has been received, or times out.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Result<(), SimError> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if done(&lock(&self.shared.log)) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(SimError::Timeout(what.to_owned()));
            }
        }
    }

    /// A read-only view of the call that stays usable while another task owns the [`SimCall`] to send audio.
    pub fn observer(&self) -> Observer {
        Observer { shared: Arc::clone(&self.shared) }
    }

    /// Waits for Parley to close the socket and returns the close code.
    pub async fn wait_closed(&self, timeout: Duration) -> Result<Option<u16>, SimError> {
        self.wait_until("the socket to close", timeout, |log| log.iter().any(|r| matches!(r, Received::Closed { .. })))
            .await?;
        Ok(lock(&self.shared.log)
            .iter()
            .find_map(|r| match r {
                Received::Closed { code, .. } => Some(*code),
                _ => None,
            })
            .flatten())
    }
}

/// What a simulated call has received and where its playback is, readable from any task.
#[derive(Clone)]
pub struct Observer {
    shared: Arc<Shared>,
}

impl Observer {
    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.log).clone()
    }

    /// When the agent audio received so far finishes playing (`None` before any audio).
    pub fn playing_until(&self) -> Option<Instant> {
        lock(&self.shared.playback).finish_at
    }

    /// How many `clear`s arrived.
    pub fn clears(&self) -> u64 {
        lock(&self.shared.playback).clears
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<Socket, Message>,
    mut rx: mpsc::UnboundedReceiver<Message>,
) {
    while let Some(message) = rx.recv().await {
        let closing = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || closing {
            break;
        }
    }
}

async fn read_loop(
    mut stream: futures_util::stream::SplitStream<Socket>,
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Message>,
) {
    let (echo_tx, echo_rx) = mpsc::unbounded_channel::<()>();
    let echoer = tokio::spawn(echo_marks(Arc::clone(&shared), outgoing.clone(), echo_rx));
    while let Some(frame) = stream.next().await {
        let at = Instant::now();
        let entry = match frame {
            Ok(Message::Text(text)) => match serde_json::from_str::<OutboundMessage>(text.as_str()) {
                Ok(message) => {
                    play(&shared, &message, at, &outgoing);
                    let _ = echo_tx.send(());
                    Received::Message { at, message }
                }
                Err(_) => Received::Invalid { at, text: text.to_string() },
            },
            Ok(Message::Close(frame)) => {
                let (code, reason) =
                    frame.map(|f| (Some(u16::from(f.code)), f.reason.to_string())).unwrap_or((None, String::new()));
                Received::Closed { at, code, reason }
            }
            Ok(_) => continue,
            Err(_) => Received::Closed { at, code: None, reason: "connection lost".into() },
        };
        let closed = matches!(entry, Received::Closed { .. });
        lock(&shared.log).push(entry);
        shared.changed.notify_waiters();
        if closed {
            break;
        }
    }
    if !lock(&shared.log).iter().any(|r| matches!(r, Received::Closed { .. })) {
        lock(&shared.log).push(Received::Closed { at: Instant::now(), code: None, reason: "connection lost".into() });
        shared.changed.notify_waiters();
    }
    echoer.abort();
}

/// Twilio's playback model: audio plays in order in real time; a mark is due when the audio before it has played.
fn play(shared: &Shared, message: &OutboundMessage, now: Instant, outgoing: &mpsc::UnboundedSender<Message>) {
    let mut playback = lock(&shared.playback);
    match message {
        OutboundMessage::Media { media, .. } => {
            let audio = &media.payload;
            let duration = Duration::from_micros(audio.len() as u64 * 125);
            let start = playback.finish_at.map_or(now, |f| f.max(now));
            playback.finish_at = Some(start + duration);
            playback.audio.extend_from_slice(audio);
        }
        OutboundMessage::Mark { stream_sid, mark } => {
            let due = playback.finish_at.map_or(now, |f| f.max(now));
            playback.pending_marks.push_back((due, mark.name.clone(), stream_sid.clone()));
        }
        OutboundMessage::Clear { stream_sid } => {
            playback.clears += 1;
            playback.finish_at = Some(now);
            for (_, name, _) in playback.pending_marks.drain(..) {
                let _ = outgoing.send(Message::text(mark_echo(stream_sid, &name)));
            }
        }
    }
}

/// Echoes marks as playback reaches them.
async fn echo_marks(
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Message>,
    mut wake: mpsc::UnboundedReceiver<()>,
) {
    loop {
        let next_due = lock(&shared.playback).pending_marks.front().map(|(due, _, _)| *due);
        tokio::select! {
            woke = wake.recv() => if woke.is_none() { return },
            () = async { if let Some(due) = next_due { tokio::time::sleep_until(due).await } }, if next_due.is_some() => {
                let now = Instant::now();
                let mut playback = lock(&shared.playback);
                while playback.pending_marks.front().is_some_and(|(due, _, _)| *due <= now) {
                    if let Some((_, name, stream_sid)) = playback.pending_marks.pop_front() {
                        let _ = outgoing.send(Message::text(mark_echo(&stream_sid, &name)));
                    }
                }
            }
        }
    }
}

fn mark_echo(stream_sid: &str, name: &str) -> String {
    serde_json::json!({"event": "mark", "sequenceNumber": "0", "streamSid": stream_sid, "mark": {"name": name}})
        .to_string()
}

/// A μ-law tone, for audio that is easy to recognise when it comes back.
pub fn tone(frequency_hz: f32, millis: u32, amplitude: i16) -> Vec<u8> {
    let samples = millis as usize * 8;
    (0..samples)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let s = (t * frequency_hz * std::f32::consts::TAU).sin() * f32::from(amplitude);
            crate::audio::mulaw::encode_sample(s as i16)
        })
        .collect()
}

/// A speech-like μ-law signal (a 150 Hz voice with harmonics, modulated like syllables): what a VAD calls speech.
pub fn speech(millis: u32) -> Vec<u8> {
    (0..millis as usize * 8)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let envelope = 0.6 + 0.4 * (t * 4.0 * std::f32::consts::TAU).sin();
            let voice: f32 = (1..=8).map(|h| (t * 150.0 * h as f32 * std::f32::consts::TAU).sin() / h as f32).sum();
            crate::audio::mulaw::encode_sample((voice * envelope * 6000.0) as i16)
        })
        .collect()
}

/// Digital silence as μ-law.
pub fn silence(millis: u32) -> Vec<u8> {
    vec![0xFF; millis as usize * 8]
}
