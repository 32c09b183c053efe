//! The scripted dialogue policy: a small set of hand-written rules that stands in for a language model so the offline
//! demo needs no account. It is **not** a language model and is never chosen unless asked for (`llm.provider =
//! "scripted"`, or `parley demo` with no model configured).
//!
//! It sits behind the same [`LanguageModel`] trait as the real providers, so the rest of the cascade — tool calls
//! through MCP, streaming into TTS, barge-in and history truncation — runs exactly as with a real model. The rules
//! cover the demo shop's order line:
//!
//! - an order number in the caller's words (digits, or number words as speech-to-text often writes them) → a call
//!   to the `lookup_order` tool, if the backend offers one;
//! - a tool result → read back, followed by an offer of more help;
//! - "when will it arrive" after a lookup → the arrival day from that lookup;
//! - thanks or goodbye → a farewell;
//! - anything else → a prompt for the order number.

use async_trait::async_trait;
use futures_util::stream;

use super::{
    ChatMessage, FinishReason, LanguageModel, LlmError, LlmEvent, LlmRequest, LlmStream, Role, ToolCall, Usage,
};

/// The provider name reported in logs and spans.
const PROVIDER: &str = "scripted";
/// The tool the rules call for an order number.
const LOOKUP_TOOL: &str = "lookup_order";

/// The rule-based stand-in for a model; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct ScriptedPolicy;

#[async_trait]
impl LanguageModel for ScriptedPolicy {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn model(&self) -> &str {
        "scripted-dialogue-policy"
    }

    async fn stream(&self, request: LlmRequest) -> Result<LlmStream, LlmError> {
        let events = match decide(&request) {
            Decision::Say(text) => {
                // Word by word, as a model streams, so the chunker and TTS see a real stream.
                let mut events: Vec<Result<LlmEvent, LlmError>> =
                    words_with_spaces(&text).map(|w| Ok(LlmEvent::TextDelta(w))).collect();
                events.push(Ok(finished(FinishReason::Stop)));
                events
            }
            Decision::Call(call) => vec![Ok(LlmEvent::ToolCalls(vec![call])), Ok(finished(FinishReason::ToolCalls))],
        };
        Ok(Box::pin(stream::iter(events)))
    }
}

fn finished(reason: FinishReason) -> LlmEvent {
    LlmEvent::Finished { reason, usage: Some(Usage::default()), request_id: None }
}

/// What the policy does next.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    Say(String),
    Call(ToolCall),
}

fn decide(request: &LlmRequest) -> Decision {
    let Some(last) = request.messages.last() else {
        return Decision::Say(ASK_FOR_NUMBER.into());
    };
    if last.role == Role::Tool {
        return Decision::Say(format!("{} Is there anything else I can help you with?", read_back(&last.content)));
    }
    let said = last.content.to_lowercase();
    if said.contains("bye") || said.contains("thank") {
        return Decision::Say("You're welcome. Thanks for calling, goodbye!".into());
    }
    if said.contains("arrive") || said.contains("when") {
        if let Some(day) = last_arrival(&request.messages) {
            return Decision::Say(format!("It should arrive {day}."));
        }
    }
    let offers_lookup = request.tools.iter().find(|t| t.name == LOOKUP_TOOL || t.name.ends_with(LOOKUP_TOOL));
    if let (Some(number), Some(tool)) = (order_number(&said), offers_lookup) {
        let turn = request.messages.iter().filter(|m| m.role == Role::User).count();
        return Decision::Call(ToolCall {
            id: format!("scripted-{turn}"),
            name: tool.name.clone(),
            arguments: serde_json::json!({ "order_id": number }).to_string(),
        });
    }
    Decision::Say(ASK_FOR_NUMBER.into())
}

const ASK_FOR_NUMBER: &str = "I can check an order for you. What is the order number?";

/// A tool result as a spoken sentence: the demo backend's `Order 456: shipped, arriving Friday (2 mugs).` becomes
/// `Order 456 is shipped, arriving Friday. It holds 2 mugs.`; other text is read as it is.
fn read_back(content: &str) -> String {
    let content = content.trim();
    let Some((head, rest)) = content.split_once(": ") else { return content.to_owned() };
    let rest = rest.trim_end_matches('.');
    match rest.split_once(" (") {
        Some((status, items)) => format!("{head} is {status}. It holds {}.", items.trim_end_matches(')')),
        None => format!("{head} is {rest}."),
    }
}

/// The arrival day in the latest tool result that gives one (`..., arriving Friday (...)`).
fn last_arrival(messages: &[ChatMessage]) -> Option<String> {
    messages.iter().rev().filter(|m| m.role == Role::Tool).find_map(|m| {
        let (_, after) = m.content.split_once("arriving ")?;
        let day = after.split(['(', ',', '.']).next()?.trim();
        (!day.is_empty()).then(|| day.to_owned())
    })
}

/// The first run of digits in the caller's words, with spelled-out digits ("four five six") and the teens and tens
/// speech recognisers write ("four fifty six") turned into digits; `None` when there is no number.
fn order_number(said: &str) -> Option<String> {
    let mut digits = String::new();
    let mut run_ended = false;
    for word in said.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
        match number_word(word) {
            Some(value) if !run_ended => digits.push_str(&value),
            Some(_) => break,
            None if !digits.is_empty() => run_ended = true,
            None => {}
        }
    }
    (!digits.is_empty()).then_some(digits)
}

/// Digits for one word: itself if numeric, else the number word's digits ("oh" counts as zero, as people say it).
fn number_word(word: &str) -> Option<String> {
    if word.chars().all(|c| c.is_ascii_digit()) {
        return Some(word.to_owned());
    }
    const WORDS: [(&str, &str); 29] = [
        ("zero", "0"),
        ("oh", "0"),
        ("one", "1"),
        ("two", "2"),
        ("three", "3"),
        ("four", "4"),
        ("five", "5"),
        ("six", "6"),
        ("seven", "7"),
        ("eight", "8"),
        ("nine", "9"),
        ("ten", "10"),
        ("eleven", "11"),
        ("twelve", "12"),
        ("thirteen", "13"),
        ("fourteen", "14"),
        ("fifteen", "15"),
        ("sixteen", "16"),
        ("seventeen", "17"),
        ("eighteen", "18"),
        ("nineteen", "19"),
        ("twenty", "2"),
        ("thirty", "3"),
        ("forty", "4"),
        ("fifty", "5"),
        ("sixty", "6"),
        ("seventy", "7"),
        ("eighty", "8"),
        ("ninety", "9"),
    ];
    WORDS.iter().find(|(name, _)| *name == word).map(|(_, digits)| (*digits).to_owned())
}

/// Splits text into words that keep their following space, so the pieces concatenate back to the text.
fn words_with_spaces(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_inclusive(' ').map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::llm::ToolSpec;

    fn lookup_tool() -> ToolSpec {
        ToolSpec {
            name: LOOKUP_TOOL.into(),
            description: "Look up an order".into(),
            parameters: serde_json::json!({"type": "object"}),
        }
    }

    fn request(messages: Vec<ChatMessage>) -> LlmRequest {
        LlmRequest { messages, tools: vec![lookup_tool()] }
    }

    #[test]
    fn order_numbers_come_from_digits_and_number_words() {
        assert_eq!(order_number("my order is 456 please").as_deref(), Some("456"));
        assert_eq!(order_number("order four five six.").as_deref(), Some("456"));
        assert_eq!(order_number("order number four, five, six").as_deref(), Some("456"));
        assert_eq!(order_number("it's one oh one one").as_deref(), Some("1011"));
        assert_eq!(order_number("order four fifty six").as_deref(), Some("456"));
        assert_eq!(order_number("where is my order"), None);
        assert_eq!(order_number("order 456 and then 789").as_deref(), Some("456"));
    }

    #[test]
    fn an_order_number_calls_the_lookup_tool() {
        let decision = decide(&request(vec![ChatMessage::user("Can you check order four five six?")]));
        let Decision::Call(call) = decision else { panic!("expected a tool call, got {decision:?}") };
        assert_eq!(call.name, LOOKUP_TOOL);
        assert_eq!(call.arguments, r#"{"order_id":"456"}"#);
    }

    #[test]
    fn without_the_tool_it_asks_instead_of_calling() {
        let decision = decide(&LlmRequest { messages: vec![ChatMessage::user("order 456")], tools: vec![] });
        assert_eq!(decision, Decision::Say(ASK_FOR_NUMBER.into()));
    }

    #[test]
    fn a_tool_result_is_read_back_and_the_arrival_day_remembered() {
        let result = ChatMessage::tool_result("scripted-1", "Order 456: shipped, arriving Friday (2 coffee mugs).");
        let Decision::Say(text) = decide(&request(vec![ChatMessage::user("order 456"), result.clone()])) else {
            panic!("expected speech")
        };
        assert!(text.starts_with("Order 456 is shipped, arriving Friday. It holds 2 coffee mugs."), "{text}");
        let asked = vec![ChatMessage::user("order 456"), result, ChatMessage::user("When will it arrive?")];
        assert_eq!(decide(&request(asked)), Decision::Say("It should arrive Friday.".into()));
    }

    #[test]
    fn thanks_end_the_conversation() {
        let Decision::Say(text) = decide(&request(vec![ChatMessage::user("Thank you, goodbye.")])) else {
            panic!("expected speech")
        };
        assert!(text.contains("goodbye"), "{text}");
    }

    #[tokio::test]
    async fn the_reply_streams_word_by_word_and_reassembles() {
        let mut stream = ScriptedPolicy.stream(request(vec![ChatMessage::user("hello")])).await.unwrap();
        let mut text = String::new();
        let mut deltas = 0;
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                LlmEvent::TextDelta(piece) => {
                    deltas += 1;
                    text.push_str(&piece);
                }
                LlmEvent::Finished { reason, .. } => assert_eq!(reason, FinishReason::Stop),
                LlmEvent::ToolCalls(calls) => panic!("unexpected calls {calls:?}"),
            }
        }
        assert_eq!(text, ASK_FOR_NUMBER);
        assert!(deltas > 5);
    }
}
