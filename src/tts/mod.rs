//! Streaming text-to-speech: one trait, one file per provider.
//!
//! One [`TtsSession`] per call carries many replies; each reply is a *context* so that a barge-in cancels exactly one
//! reply and late audio of a cancelled reply can be told apart and dropped.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

/// Errors from a text-to-speech provider.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("could not connect to {provider}: {detail}")]
    Connect { provider: &'static str, detail: String },
    /// The provider answered the session's request with an HTTP error (401 bad key, 400 bad parameters).
    #[error("{provider} rejected the request (HTTP {status}): {detail}")]
    Rejected { provider: &'static str, status: u16, detail: String },
    #[error("{provider} sent a message Parley could not parse: {detail}")]
    Protocol { provider: &'static str, detail: String },
    #[error("{provider} reported an error: {detail}")]
    Provider { provider: &'static str, detail: String },
    #[error("{provider} connection closed unexpectedly: {detail}")]
    Disconnected { provider: &'static str, detail: String },
}

impl TtsError {
    /// A failed socket handshake, reported the same way by every WebSocket provider: an HTTP answer to the upgrade
    /// is [`TtsError::Rejected`] with its status, anything else [`TtsError::Connect`].
    pub fn from_handshake(provider: &'static str, error: crate::websocket::HandshakeError) -> TtsError {
        match error {
            crate::websocket::HandshakeError::Rejected { status, detail } => {
                TtsError::Rejected { provider, status, detail }
            }
            other => TtsError::Connect { provider, detail: other.to_string() },
        }
    }
}

/// Identifies one reply's audio.
pub type ContextId = String;

/// What the engine sends into a synthesis session.
#[derive(Debug, Clone)]
pub enum TtsInput {
    /// More text of a reply; `last` closes the context (the text may be empty then).
    Text { context: ContextId, text: String, last: bool },
    /// Stop generating this reply at once (barge-in).
    Cancel { context: ContextId },
    /// End the session.
    Close,
}

/// What a synthesis session reports.
#[derive(Debug)]
pub enum TtsEvent {
    /// Raw G.711 μ-law 8 kHz audio of a live (not cancelled) context.
    Audio { context: ContextId, mulaw: Bytes },
    /// The context has produced all its audio.
    Done { context: ContextId },
    /// The provider failed for one context (`Some`) or for the whole session (`None`).
    Error { context: Option<ContextId>, error: TtsError },
    /// The session ended.
    Closed,
}

/// A live synthesis session: text in, audio out.
pub struct TtsSession {
    pub input: mpsc::Sender<TtsInput>,
    pub events: mpsc::Receiver<TtsEvent>,
}

/// A streaming text-to-speech provider.
#[async_trait]
pub trait TextToSpeech: Send + Sync {
    /// Provider name for logs and spans.
    fn name(&self) -> &'static str;
    /// Opens one session (one per call).
    async fn open(&self) -> Result<TtsSession, TtsError>;
}

pub mod cartesia;
pub mod elevenlabs;
pub mod espeak;
pub mod failover;
pub mod openai_speech;
