//! The interface between a call's Twilio session and whatever answers it: the echo agent ([`super::echo`]) or the
//! cascade agent ([`crate::engine::cascade`]).

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::events::CallEvents;
use super::tap::CallTap;
use super::CallInfo;
use crate::audio::playout::PlayoutHandle;

/// What the session tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// 20 ms of the caller's audio: 160 bytes of μ-law, in order, gaps filled with silence.
    Audio(Bytes),
    /// The caller pressed a key.
    Dtmf(String),
    /// The caller hung up or the stream stopped; no more events follow.
    Hangup,
}

/// Everything an agent needs for one call.
pub struct AgentContext {
    pub call: CallInfo,
    /// The caller's audio and keys, from the call's socket.
    pub events: CallEvents,
    pub playout: PlayoutHandle,
    /// Cancel to end the call from Parley's side (the session closes the stream, which hangs up).
    pub hang_up: CancellationToken,
    /// Where the agent reports the conversation's events (a no-op when no archive listens).
    pub tap: CallTap,
}

/// Answers one call until it ends. The media socket polls the agent's future in its own task (see
/// [`super::events`]); tests may run it as a task of its own.
#[async_trait]
pub trait Agent: Send {
    async fn run(self: Box<Self>, ctx: AgentContext);
}

/// Makes an agent per call.
pub trait AgentFactory: Send + Sync {
    fn create(&self, call: &CallInfo) -> Box<dyn Agent>;
}
