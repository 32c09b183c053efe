//! Closing a tool round in the conversation history.
//!
//! Providers reject a request whose history has an assistant tool call without its answer (OpenAI answers 400), and
//! barge-in can interrupt a round at any point: while the model speaks, while tools run, or after some of them
//! finished. [`append_tool_round`] therefore always appends the assistant turn *with* its calls followed by exactly one
//! tool message per call, answering calls that never completed with [`CANCELLED_RESULT`].

use super::{ChatMessage, ToolCall};

/// What the model is told for a call that was cancelled (the caller interrupted before it completed).
pub const CANCELLED_RESULT: &str = "cancelled by caller";

/// How one tool call ended: the one outcome type of the tool path (the MCP bridge, the built-in tools, the engine and
/// the history all use it). A call that never completed (the caller interrupted) has no outcome at all; the history
/// answers it with [`CANCELLED_RESULT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    /// Text for the tool-result message (already size-capped): the output, or why the call failed.
    pub content: String,
    /// The tool failed (bad arguments, backend error, timeout); `content` says why, so the model can recover.
    pub is_error: bool,
}

impl ToolOutcome {
    pub fn ok(content: impl Into<String>) -> Self {
        ToolOutcome { content: content.into(), is_error: false }
    }

    pub fn error(content: impl Into<String>) -> Self {
        ToolOutcome { content: content.into(), is_error: true }
    }

    /// The text of the tool message.
    fn message(&self) -> String {
        if self.is_error {
            format!("error: {}", self.content)
        } else {
            self.content.clone()
        }
    }
}

/// The result of one call, matched to it by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    pub call_id: String,
    pub outcome: ToolOutcome,
}

/// Appends one model turn and the answers to its tool calls.
///
/// `assistant_text` is what the caller actually heard (after barge-in, only the spoken part). Every call in `calls`
/// gets one tool message, in call order; a call missing from `results` counts as cancelled, and results for unknown
/// ids are ignored. A turn with no calls appends just the assistant text (nothing when it is empty, since an empty
/// assistant message tells the model nothing).
pub fn append_tool_round(
    history: &mut Vec<ChatMessage>,
    assistant_text: &str,
    calls: &[ToolCall],
    results: &[ToolResult],
) {
    if calls.is_empty() {
        if !assistant_text.is_empty() {
            history.push(ChatMessage::assistant(assistant_text));
        }
        return;
    }
    history.push(ChatMessage { tool_calls: calls.to_vec(), ..ChatMessage::assistant(assistant_text) });
    for call in calls {
        let content = results
            .iter()
            .find(|result| result.call_id == call.id)
            .map_or_else(|| CANCELLED_RESULT.to_owned(), |result| result.outcome.message());
        history.push(ChatMessage::tool_result(call.id.clone(), content));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Role;

    fn call(id: &str) -> ToolCall {
        ToolCall { id: id.into(), name: "lookup_order".into(), arguments: "{\"order_id\":\"456\"}".into() }
    }

    fn result(id: &str, outcome: ToolOutcome) -> ToolResult {
        ToolResult { call_id: id.into(), outcome }
    }

    #[test]
    fn every_call_is_answered_in_call_order() {
        let mut history = vec![ChatMessage::user("Where are orders 456 and 789?")];
        let calls = [call("a"), call("b")];
        let results = [result("b", ToolOutcome::ok("shipped")), result("a", ToolOutcome::error("timeout"))];
        append_tool_round(&mut history, "Let me check.", &calls, &results);
        assert_eq!(history.len(), 4);
        assert_eq!(history[1].role, Role::Assistant);
        assert_eq!(history[1].content, "Let me check.");
        assert_eq!(history[1].tool_calls, calls.to_vec());
        assert_eq!(history[2], ChatMessage::tool_result("a", "error: timeout"));
        assert_eq!(history[3], ChatMessage::tool_result("b", "shipped"));
    }

    #[test]
    fn calls_without_a_result_are_answered_as_cancelled() {
        let mut history = Vec::new();
        let calls = [call("a"), call("b")];
        append_tool_round(&mut history, "", &calls, &[result("a", ToolOutcome::ok("done"))]);
        assert_eq!(history[1], ChatMessage::tool_result("a", "done"));
        assert_eq!(history[2], ChatMessage::tool_result("b", CANCELLED_RESULT));
    }

    #[test]
    fn results_for_unknown_calls_are_ignored() {
        let mut history = Vec::new();
        append_tool_round(&mut history, "", &[call("a")], &[result("zzz", ToolOutcome::ok("x"))]);
        assert_eq!(history.len(), 2);
        assert_eq!(history[1], ChatMessage::tool_result("a", CANCELLED_RESULT));
    }

    #[test]
    fn a_turn_without_calls_appends_only_spoken_text() {
        let mut history = Vec::new();
        append_tool_round(&mut history, "Your order", &[], &[]);
        assert_eq!(history, vec![ChatMessage::assistant("Your order")]);
        append_tool_round(&mut history, "", &[], &[]);
        assert_eq!(history.len(), 1);
    }
}
