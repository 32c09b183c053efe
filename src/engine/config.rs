//! Settings of the cascade agent that are not about a particular provider.

use serde::Deserialize;

use super::call_control::CallControlConfig;
use super::turn::TurnConfig;
use super::vad::VadAggressiveness;
use crate::llm::context::ContextConfig;

/// How the agent converses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConversationConfig {
    /// The system prompt: who the agent is and how it talks.
    pub system_prompt: String,
    /// Said when the call is answered (empty: the agent waits for the caller).
    pub greeting: String,
    /// Said when a provider fails mid-turn, so the caller is never left in silence.
    pub fallback_line: String,
    /// Tool rounds per reply before the model must answer in words.
    pub max_tool_rounds: usize,
    /// Said when the model has not begun its answer, or a tool is still running, `filler_after_ms` into a reply, so
    /// the caller does not hear dead air.
    pub filler_line: String,
    pub filler_after_ms: u64,
    /// The longest the sentence chunker waits for the next token when it alone can tell whether a piece has ended
    /// ("3." of "3.5", "Dr."); every other sentence goes to TTS the moment its last character arrives.
    pub text_hold_max_ms: u64,
    /// Keys the caller presses make one turn once they press `#` or stop pressing for this long.
    pub keypad_commit_ms: u64,
    /// Caller audio kept since the last turn, replayed into a new STT session when one is lost mid-turn (at most what
    /// a session's input holds, [`crate::stt::INPUT_CAPACITY`] frames, about 20 s).
    pub stt_replay_ms: u64,
    /// Start the reply's model request on the STT's eager end of turn (Deepgram Flux with `eager_eot_threshold`),
    /// dropped if the caller goes on. Saves the model's time to first token; costs a request per false alarm.
    pub speculative_replies: bool,
    pub vad_aggressiveness: VadAggressiveness,
    pub turn: TurnConfig,
    /// How much of the call each model request carries (`[conversation.context]`).
    pub context: ContextConfig,
    /// The built-in `end_call` and `transfer_call` tools.
    pub call_control: CallControlConfig,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        ConversationConfig {
            system_prompt:
                "You are a friendly phone agent. You are speaking on a telephone call, so answer in one or two \
                            short sentences of plain spoken language: no lists, no markdown, no emoji."
                    .into(),
            greeting: "Hello, thanks for calling. How can I help you today?".into(),
            fallback_line: "Sorry, I'm having trouble right now. Could you say that again?".into(),
            max_tool_rounds: 4,
            filler_line: "One moment while I check that.".into(),
            filler_after_ms: 1_000,
            text_hold_max_ms: super::chunker::DEFAULT_AMBIGUITY_WAIT_MS,
            keypad_commit_ms: 2_000,
            stt_replay_ms: 15_000,
            speculative_replies: true,
            vad_aggressiveness: VadAggressiveness::Aggressive,
            turn: TurnConfig::default(),
            context: ContextConfig::default(),
            call_control: CallControlConfig::default(),
        }
    }
}
