//! The running summary: turns that leave the context window, folded into a few lines by the model itself.
//!
//! The request is made here (pure); the engine runs it in a task of its own between turns and hands the text back
//! to the window. The summary then travels in every request as a second system message, right after the system
//! prompt, so the prompt and the tool list before it stay a cacheable prefix.

use crate::llm::{ChatMessage, LlmRequest, Role};

/// What the model is asked to do with the turns that leave.
pub const SUMMARY_INSTRUCTIONS: &str = "You keep the running notes of a phone call for the agent who is handling it. \
    Rewrite the notes so far together with the part of the conversation given, as short plain notes of at most \
    120 words: who the caller is, what they want, every name, number, date, order, booking and amount mentioned, \
    what was done, and what is still open. Keep every fact from the notes so far that still matters. Write only the \
    notes.";

/// Heads the part of the summary request that holds the turns to fold.
pub const FOLD_HEADING: &str = "Conversation to fold into the notes:";

/// Heads the summary when it is sent to the model.
pub const SUMMARY_HEADING: &str = "Notes on the earlier part of this call (those turns are no longer shown):\n";

/// A request for a new summary: the summary so far and the turns that leave the window.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRequest {
    pub request: LlmRequest,
}

impl SummaryRequest {
    pub fn new(summary_so_far: Option<&str>, folded: &[ChatMessage]) -> SummaryRequest {
        let notes = summary_so_far.unwrap_or("(none yet)");
        let user = format!("Notes so far:\n{notes}\n\n{FOLD_HEADING}\n{}", transcript(folded));
        let messages = vec![ChatMessage::system(SUMMARY_INSTRUCTIONS), ChatMessage::user(user)];
        SummaryRequest { request: LlmRequest { messages, tools: Vec::new() } }
    }
}

/// The summary as the message the model is sent.
pub fn summary_message(summary: &str) -> ChatMessage {
    ChatMessage::system(format!("{SUMMARY_HEADING}{summary}"))
}

/// The folded turns as lines of a transcript: who said what, which tools ran and what they answered.
fn transcript(messages: &[ChatMessage]) -> String {
    let mut lines = Vec::new();
    for message in messages {
        match message.role {
            Role::System => {}
            Role::User => lines.push(format!("Caller: {}", message.content)),
            Role::Assistant => {
                if !message.content.is_empty() {
                    lines.push(format!("Agent: {}", message.content));
                }
                lines.extend(
                    message.tool_calls.iter().map(|call| format!("Agent ran {}({})", call.name, call.arguments)),
                );
            }
            Role::Tool => lines.push(format!("Tool result: {}", message.content)),
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ToolCall;

    #[test]
    fn the_request_holds_the_notes_so_far_and_the_folded_turns() {
        let call = ToolCall { id: "c1".into(), name: "lookup_order".into(), arguments: "{\"id\":\"456\"}".into() };
        let folded = vec![
            ChatMessage::user("My dog is called Biscuit."),
            ChatMessage { tool_calls: vec![call], ..ChatMessage::assistant("Let me look.") },
            ChatMessage::tool_result("c1", "shipped"),
            ChatMessage::assistant("It shipped."),
        ];
        let request = SummaryRequest::new(Some("Caller is Ana."), &folded).request;
        assert!(request.tools.is_empty());
        assert_eq!(request.messages[0], ChatMessage::system(SUMMARY_INSTRUCTIONS));
        assert_eq!(
            request.messages[1].content,
            "Notes so far:\nCaller is Ana.\n\nConversation to fold into the notes:\nCaller: My dog is called Biscuit.\n\
             Agent: Let me look.\nAgent ran lookup_order({\"id\":\"456\"})\nTool result: shipped\nAgent: It shipped."
        );
    }
}
