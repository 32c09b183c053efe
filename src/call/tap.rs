//! The call tap: a copy of everything that happens on a call — both audio legs as they were actually sent, and the
//! conversation's events — for whatever keeps a record of calls (the archive) without slowing the call down.
//!
//! Senders never wait: events go into an unbounded channel that the consumer drains on its own task.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::CallInfo;

/// Something that happened on a call, stamped with when it happened.
#[derive(Debug, Clone)]
pub enum TapEvent {
    /// 20 ms of the caller's audio, in order, gaps filled (μ-law).
    CallerAudio { at: Instant, frame: Bytes },
    /// A frame of the agent's audio sent to Twilio (μ-law); it plays when the audio before it has played.
    AgentAudioSent { at: Instant, frame: Bytes },
    /// Twilio was told to drop the agent's unplayed audio (barge-in).
    AgentAudioCleared { at: Instant },
    /// Something the conversation did.
    Conversation { at: Instant, event: ConversationEvent },
    /// The call is over; no more events follow.
    Ended { at: Instant, reason: String },
}

/// What happened on a call: the one event type the engine sends through the tap and the archive's timeline records
/// (`archive::TimelineEvent` is this type). The engine sends the conversation's events; the call's own
/// (`CallStarted`, `AgentAudioCleared`, `CallEnded`) are written by the archive from the tap's other events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConversationEvent {
    CallStarted {
        call_sid: String,
        stream_sid: String,
    },
    /// What the caller said in a turn, by the hot-path STT.
    CallerTurn {
        turn: u64,
        text: String,
    },
    /// What the agent said, as far as the caller heard it.
    AgentSaid {
        turn: u64,
        text: String,
        interrupted: bool,
    },
    ToolCall {
        turn: u64,
        id: String,
        name: String,
        arguments: String,
    },
    ToolResult {
        turn: u64,
        id: String,
        content: String,
        is_error: bool,
    },
    BargeIn {
        turn: u64,
        reaction_ms: f64,
    },
    /// A barge-in turned out to be noise (no words followed): the paused reply goes on, from `backed_up_ms` before
    /// the point the caller last heard, after `paused_ms` of silence.
    ReplyResumed {
        turn: u64,
        paused_ms: f64,
        backed_up_ms: f64,
    },
    /// Each stage's milliseconds for one turn.
    Latency {
        turn: u64,
        stages: Vec<(String, f64)>,
    },
    ProviderError {
        stage: String,
        provider: String,
        error: String,
    },
    Dtmf {
        digit: String,
    },
    /// Twilio was told to drop the agent's unplayed audio; the agent leg is cut here.
    AgentAudioCleared,
    /// What the call used and cost, priced by `[cost]` when the call ended.
    CallCost {
        cost: crate::cost::CallCost,
    },
    /// `reason` is the edge's ending, or `recovered` when the call was sealed after its owner was gone.
    CallEnded {
        reason: String,
    },
}

/// The sending side of a call's tap; cheap to clone, and a no-op when nobody listens.
#[derive(Debug, Clone, Default)]
pub struct CallTap {
    sender: Option<mpsc::UnboundedSender<TapEvent>>,
}

impl CallTap {
    /// A tap whose events arrive on the returned receiver.
    pub fn channel() -> (CallTap, mpsc::UnboundedReceiver<TapEvent>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (CallTap { sender: Some(sender) }, receiver)
    }

    pub fn is_active(&self) -> bool {
        self.sender.is_some()
    }

    pub fn send(&self, event: TapEvent) {
        if let Some(sender) = &self.sender {
            let _ = sender.send(event);
        }
    }

    /// Records a conversation event now.
    pub fn conversation(&self, event: ConversationEvent) {
        if self.sender.is_some() {
            self.send(TapEvent::Conversation { at: Instant::now(), event });
        }
    }
}

/// The playout reports the agent's audio through the tap: what was sent, and when the unplayed rest was cleared.
impl crate::audio::playout::PlayoutRecord for CallTap {
    fn agent_audio_sent(&self, at: Instant, frame: Bytes) {
        self.send(TapEvent::AgentAudioSent { at, frame });
    }

    fn agent_audio_cleared(&self, at: Instant) {
        self.send(TapEvent::AgentAudioCleared { at });
    }
}

/// Opens a tap for each call (the archive implements it).
pub trait TapFactory: Send + Sync {
    fn open(&self, call: &CallInfo) -> CallTap;
}

/// Shared handle on the tap factory, if any.
pub type Taps = Option<Arc<dyn TapFactory>>;
