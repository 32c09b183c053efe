//! The conversation as the model sees it: the history, kept true to what the caller heard, the part of it each
//! request carries (the context window), and the turn count.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::heard::SpeakingRate;
use super::in_flight::InFlight;
use crate::llm::context::tokens::TokenCounter;
use crate::llm::context::{ContextConfig, ContextWindow, Fold};
use crate::llm::history::append_tool_round;
use crate::llm::{ChatMessage, LanguageModel, LlmEvent, LlmRequest, Role, ToolSpec, Usage};

/// The longest a running summary may take to write; past it the folded turns leave without one.
pub const SUMMARY_TIMEOUT: Duration = Duration::from_secs(30);

/// The history of one call; see the module documentation.
pub struct Conversation {
    pub history: Vec<ChatMessage>,
    /// Caller turns so far (the current turn's number, 1-based).
    pub turn_index: u64,
    /// How fast the agent's voice speaks, learned from finished replies (for what an interrupted reply got across).
    pub rate: SpeakingRate,
    /// Destructive calls waiting for the caller's yes: (tool name, arguments).
    pub pending_confirmations: Vec<(String, serde_json::Value)>,
    /// What of the history each request carries.
    window: ContextWindow,
}

impl Conversation {
    pub fn new(system_prompt: &str, context: ContextConfig, counter: TokenCounter) -> Conversation {
        Conversation {
            history: vec![ChatMessage::system(system_prompt)],
            turn_index: 0,
            rate: SpeakingRate::default(),
            pending_confirmations: Vec::new(),
            window: ContextWindow::new(context, counter),
        }
    }

    /// The messages of the next model request: the system prompt, the running summary and the context window.
    pub fn request_messages(&self) -> Vec<ChatMessage> {
        self.window.messages(&self.history)
    }

    /// Before a reply's request: older turns leave when the window is over the budget. Returns a fold to summarise.
    pub fn fit(&mut self, tools: &[ToolSpec]) -> Option<Fold> {
        self.window.fit(&mut self.history, tools)
    }

    /// After a reply: folding starts early when the window nears the budget. Returns a fold to summarise.
    pub fn between_turns(&mut self, tools: &[ToolSpec]) -> Option<Fold> {
        self.window.between_turns(&mut self.history, tools)
    }

    /// A fold's summary arrived (or failed: `None`).
    pub fn summary_ready(&mut self, fold: u64, summary: Option<String>) {
        self.window.summary_ready(&mut self.history, fold, summary);
    }

    /// A caller turn: its words join the history, and any pending confirmation is answered by them. Returns the
    /// calls the caller confirmed.
    pub fn caller_turn(&mut self, text: &str) -> Vec<(String, serde_json::Value)> {
        append_user_text(&mut self.history, text);
        self.turn_index += 1;
        let pending = std::mem::take(&mut self.pending_confirmations);
        if is_affirmative(text) {
            pending
        } else {
            Vec::new()
        }
    }

    /// Writes a reply into the history as heard: `heard` is a prefix of the reply's text.
    pub fn commit(&mut self, reply: &InFlight, heard: &str) {
        let mut remaining = heard.len();
        for segment in &reply.segments {
            let take = remaining.min(segment.text.len());
            remaining -= take;
            let spoken = segment.text.get(..take).unwrap_or("").trim();
            append_tool_round(&mut self.history, spoken, &segment.calls, &segment.results);
        }
    }
}

/// Adds the caller's words to the history: to the last message when it is the caller's too (their turn went on).
pub fn append_user_text(history: &mut Vec<ChatMessage>, text: &str) {
    match history.last_mut() {
        Some(last) if last.role == Role::User => {
            last.content.push(' ');
            last.content.push_str(text);
        }
        _ => history.push(ChatMessage::user(text)),
    }
}

/// A running summary the model wrote, and what writing it cost in tokens.
#[derive(Debug, Default)]
pub struct WrittenSummary {
    /// `None` when the model failed, said nothing, or took longer than [`SUMMARY_TIMEOUT`].
    pub text: Option<String>,
    pub usage: Option<Usage>,
}

/// Writes a fold's summary with the model, in the task that calls it (never the engine loop).
pub async fn write_summary(llm: Arc<dyn LanguageModel>, request: LlmRequest) -> WrittenSummary {
    let mut written = WrittenSummary::default();
    let writing = tokio::time::timeout(SUMMARY_TIMEOUT, async {
        let Ok(mut stream) = llm.stream(request).await else { return };
        let mut text = String::new();
        while let Some(Ok(event)) = stream.next().await {
            match event {
                LlmEvent::TextDelta(delta) => text.push_str(&delta),
                LlmEvent::Finished { usage, .. } => {
                    written.usage = usage;
                    written.text = Some(text).filter(|text| !text.trim().is_empty());
                    return;
                }
                LlmEvent::ToolCalls(_) => {}
            }
        }
    });
    if writing.await.is_err() {
        written.text = None;
    }
    written
}

/// Whether the caller's words are a yes (to a confirmation question).
fn is_affirmative(text: &str) -> bool {
    const YES: [&str; 12] =
        ["yes", "yeah", "yep", "yup", "sure", "correct", "confirm", "confirmed", "ok", "okay", "absolutely", "please"];
    const NO: [&str; 5] = ["no", "not", "don't", "dont", "nope"];
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).collect();
    let said = |w: &str| words.contains(&w);
    YES.iter().any(|w| said(w)) && !NO.iter().any(|w| said(w)) || lower.contains("go ahead") || lower.contains("do it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_and_no() {
        for yes in ["Yes.", "Yeah, go ahead", "Sure, please do.", "That's correct", "Okay, do it"] {
            assert!(is_affirmative(yes), "{yes}");
        }
        for no in ["No.", "No, don't", "Wait, what?", "I'm not sure", "Let me think"] {
            assert!(!is_affirmative(no), "{no}");
        }
    }

    #[test]
    fn a_yes_releases_the_pending_confirmations_and_a_no_drops_them() {
        let mut conversation = Conversation::new("system", ContextConfig::default(), TokenCounter::Estimate);
        conversation.pending_confirmations.push(("cancel_order".into(), serde_json::json!({"id": 1})));
        assert_eq!(conversation.caller_turn("Yes, go ahead").len(), 1);
        conversation.pending_confirmations.push(("cancel_order".into(), serde_json::json!({"id": 1})));
        assert!(conversation.caller_turn("No, leave it").is_empty());
        assert!(conversation.pending_confirmations.is_empty());
        assert_eq!(conversation.turn_index, 2);
        assert_eq!(conversation.history.len(), 2, "consecutive caller turns join one message");
    }
}
