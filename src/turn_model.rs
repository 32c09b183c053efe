//! What the engine needs from a model that judges, from the caller's voice, whether their turn is complete (the
//! `smart` end-of-turn strategy).
//!
//! The interface sits below both sides, like [`crate::tool_executor`]: the engine asks it at each pause in the
//! caller's speech, [`crate::local::smart_turn`] implements it with a local model, and neither reaches into the other.

use std::time::Duration;

use futures_util::future::BoxFuture;

/// The model's judgement of one pause.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnJudgement {
    /// How likely the caller has finished (0–1).
    pub complete_probability: f32,
    /// Whether the probability passed the model's threshold.
    pub complete: bool,
    /// The inference's own time (features and model), for the turn's record.
    pub inference: Duration,
}

/// Judges a caller's turn from their audio, off the engine's task (a model takes tens of milliseconds).
pub trait TurnModel: Send + Sync {
    /// `mulaw_8k`: the caller's most recent audio, up to 8 s, as the call receives it (8 kHz G.711 μ-law). The work
    /// is handed over at once; the returned future only waits for the answer. An error lets the engine fall back to
    /// the silence timeout.
    fn judge(&self, mulaw_8k: Vec<u8>) -> BoxFuture<'static, Result<TurnJudgement, String>>;
}
