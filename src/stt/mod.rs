//! Streaming speech-to-text: one trait, one file per provider.
//!
//! The engine opens one [`SttSession`] per call and pushes the caller's raw μ-law 8 kHz audio into it as it arrives;
//! providers that accept μ-law get it untouched (no transcoding on the hot path).

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

/// Errors a speech-to-text provider can report. Every variant keeps the call alive: the engine decides what to do.
#[derive(Debug, thiserror::Error)]
pub enum SttError {
    #[error("could not connect to {provider}: {detail}")]
    Connect { provider: &'static str, detail: String },
    #[error("{provider} rejected the request (HTTP {status}): {detail}")]
    Rejected { provider: &'static str, status: u16, detail: String },
    #[error("{provider} sent a message Parley could not parse: {detail}")]
    Protocol { provider: &'static str, detail: String },
    #[error("{provider} reported an error: {detail}")]
    Provider { provider: &'static str, detail: String },
    #[error("{provider} connection closed unexpectedly: {detail}")]
    Disconnected { provider: &'static str, detail: String },
}

impl SttError {
    /// A failed socket handshake, reported the same way by every WebSocket provider: an HTTP answer to the upgrade
    /// is [`SttError::Rejected`] with its status, anything else [`SttError::Connect`].
    pub fn from_handshake(provider: &'static str, error: crate::websocket::HandshakeError) -> SttError {
        match error {
            crate::websocket::HandshakeError::Rejected { status, detail } => {
                SttError::Rejected { provider, status, detail }
            }
            other => SttError::Connect { provider, detail: other.to_string() },
        }
    }
}

/// What the engine sends into a recognition session.
#[derive(Debug, Clone)]
pub enum SttInput {
    /// Raw G.711 μ-law, 8 kHz mono, any length.
    Audio(Bytes),
    /// Ask the provider to flush what it has heard so far as a final result.
    Finalize,
    /// End the session politely (the provider flushes and closes).
    Close,
}

/// One recognised stretch of speech.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// This window's text will not change again.
    pub is_final: bool,
    /// The provider's endpointing decided the caller stopped speaking.
    pub speech_final: bool,
    /// This result was flushed by [`SttInput::Finalize`].
    pub from_finalize: bool,
    /// Stream-relative audio time, seconds.
    pub start: f64,
    pub duration: f64,
}

/// What a recognition session reports back to the engine.
#[derive(Debug)]
pub enum SttEvent {
    Transcript(Transcript),
    /// The provider's VAD saw speech begin (stream-relative seconds).
    SpeechStarted {
        timestamp: f64,
    },
    /// The provider saw a gap after the last final word (stream-relative seconds).
    UtteranceEnd {
        last_word_end: f64,
    },
    /// A turn event from a provider with built-in turn detection (Deepgram Flux). Such providers also emit the
    /// plain events above (`SpeechStarted`, interim and final `Transcript`s), so an engine that ignores this one
    /// still works; the eager pair lets an engine start a reply speculatively and abandon it.
    TurnInfo {
        event: TurnEvent,
        /// The whole current turn so far (not a delta).
        transcript: String,
    },
    /// The provider failed; the session is over after this.
    Error(SttError),
    /// The session ended normally.
    Closed,
}

/// Turn events of providers with built-in turn detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEvent {
    /// The caller began speaking (a barge-in trigger).
    StartOfTurn,
    /// The caller is probably done: a reply may start speculatively.
    EagerEndOfTurn,
    /// The eager guess was wrong, the caller kept talking: abandon the speculative reply.
    TurnResumed,
    /// The caller finished; the transcript is the complete turn.
    EndOfTurn,
}

/// Inputs a session's `input` channel holds. The engine feeds it without ever waiting (a full channel drops the
/// frame, counted), so this is the whole backlog a session may build: a new session's replay of the caller's audio
/// since the last turn (15 s by default, 750 frames) and about five seconds more of a provider not keeping up.
pub const INPUT_CAPACITY: usize = 1024;

/// A live recognition session: audio in, events out. Dropping `input` closes the session. Providers make `input`
/// with [`INPUT_CAPACITY`].
pub struct SttSession {
    pub input: mpsc::Sender<SttInput>,
    pub events: mpsc::Receiver<SttEvent>,
}

/// A streaming speech-to-text provider.
#[async_trait]
pub trait SpeechToText: Send + Sync {
    /// Provider name for logs and spans.
    fn name(&self) -> &'static str;
    /// Opens one streaming session (one per call).
    async fn open(&self) -> Result<SttSession, SttError>;
}

pub mod deepgram;
pub mod deepgram_flux;
pub mod failover;
pub mod whisper;
