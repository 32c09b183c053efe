//! Decodes the Chat Completions event stream (pure, no I/O).
//!
//! Text deltas are handed out as soon as their chunk is decoded, so speech can start on the first words; tool-call
//! fragments are accumulated and delivered once, complete, when the stream ends, followed by the finish event. The
//! decoder tolerates what OpenAI-compatible servers really send: `choices: []` usage chunks, `usage` on any chunk,
//! `finish_reason: "stop"` with tool calls, and `{"error":…}` objects in the middle of the stream.

use serde::Deserialize;
use serde_json::Value;

use super::request::ToolNames;
use crate::llm::sse::SseEvent;
use crate::llm::sse_driver::StreamDecoder;
use crate::llm::tool_calls::{ToolCallAccumulator, ToolCallFragment};
use crate::llm::{FinishReason, LlmError, LlmEvent, Usage};

/// Longest excerpt of an unparseable payload quoted in an error.
const EXCERPT_CHARS: usize = 200;

/// State of one streamed response.
#[derive(Debug)]
pub struct ChunkDecoder {
    provider: &'static str,
    names: ToolNames,
    calls: ToolCallAccumulator,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    response_id: Option<String>,
    /// Pieces of the answer decoded so far (text, tool-call fragments, the finish reason, `[DONE]`).
    pieces: u64,
    done: bool,
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    message: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    #[serde(default)]
    index: Option<u64>,
    /// A string normally; some servers send integers.
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
}

/// `usage.prompt_tokens_details`: how much of the prompt came from the server's prefix cache.
#[derive(Debug, Deserialize)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl ChunkDecoder {
    /// A decoder for one response; `names` maps wire tool names back to the offered ones.
    pub fn new(provider: &'static str, names: ToolNames) -> Self {
        ChunkDecoder {
            provider,
            names,
            calls: ToolCallAccumulator::new(),
            finish_reason: None,
            usage: None,
            response_id: None,
            pieces: 0,
            done: false,
        }
    }

    /// One chunk per event normally. Servers that separate chunks by single newlines put several `data:` lines into
    /// one event; those are split back apart when the whole does not parse.
    fn parse_chunks(&self, data: &str) -> Result<Vec<Chunk>, LlmError> {
        match serde_json::from_str::<Chunk>(data) {
            Ok(chunk) => Ok(vec![chunk]),
            Err(error) if !data.contains('\n') => Err(self.unparseable(data, &error)),
            Err(_) => data
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && *line != "[DONE]")
                .map(|line| serde_json::from_str::<Chunk>(line).map_err(|error| self.unparseable(line, &error)))
                .collect(),
        }
    }

    fn apply(&mut self, chunk: Chunk, out: &mut Vec<LlmEvent>) -> Result<(), LlmError> {
        if let Some(error) = chunk.error.filter(|error| !error.is_null()) {
            return Err(self.provider_error(error_message(&error)));
        }
        if chunk.object.as_deref() == Some("error") {
            let detail = chunk.message.as_ref().map(error_message).unwrap_or_else(|| "unspecified error".into());
            return Err(self.provider_error(detail));
        }
        if self.response_id.is_none() {
            self.response_id = chunk.id.filter(|id| !id.is_empty());
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(Usage {
                input_tokens: usage.prompt_tokens.unwrap_or(0),
                output_tokens: usage.completion_tokens.unwrap_or(0),
                cached_input_tokens: usage.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
                cache_write_input_tokens: 0,
            });
        }
        // Parley asks for one choice; anything else (an empty list, other indexes) carries nothing to say.
        for choice in chunk.choices.unwrap_or_default().into_iter().filter(|c| c.index.unwrap_or(0) == 0) {
            self.apply_choice(choice, out);
        }
        Ok(())
    }

    fn apply_choice(&mut self, choice: Choice, out: &mut Vec<LlmEvent>) {
        if let Some(delta) = choice.delta {
            for text in [delta.content, delta.refusal].into_iter().flatten() {
                if !text.is_empty() {
                    self.pieces += 1;
                    out.push(LlmEvent::TextDelta(text));
                }
            }
            for call in delta.tool_calls.unwrap_or_default() {
                self.pieces += 1;
                self.calls.push(fragment(call));
            }
        }
        if let Some(reason) = choice.finish_reason.filter(|reason| !reason.is_empty()) {
            self.pieces += 1;
            self.finish_reason = Some(reason);
        }
    }

    fn provider_error(&self, detail: String) -> LlmError {
        LlmError::Provider { provider: self.provider, detail }
    }

    fn unparseable(&self, data: &str, error: &serde_json::Error) -> LlmError {
        LlmError::Protocol { provider: self.provider, detail: format!("{error} in chunk {}", excerpt(data)) }
    }
}

impl StreamDecoder for ChunkDecoder {
    /// Decodes one SSE event; returns the text deltas to deliver now.
    fn on_event(&mut self, event: &SseEvent) -> Result<Vec<LlmEvent>, LlmError> {
        if self.done {
            return Ok(Vec::new());
        }
        if event.event.as_deref() == Some("error") {
            return Err(self.provider_error(error_message_from_text(&event.data)));
        }
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        if data == "[DONE]" {
            self.done = true;
            self.pieces += 1;
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for chunk in self.parse_chunks(data)? {
            self.apply(chunk, &mut out)?;
        }
        Ok(out)
    }

    /// Whether `data: [DONE]` arrived (nothing after it matters).
    fn is_done(&self) -> bool {
        self.done
    }

    /// Pieces of the answer decoded so far; the `role` preamble and usage-only chunks are not part of the answer.
    fn answer_pieces(&self) -> u64 {
        self.pieces
    }

    /// Ends the response: the accumulated tool calls (if any) and the finish event. A body that ended with neither
    /// `[DONE]` nor a `finish_reason` was cut off, and is reported as such rather than as a short reply.
    fn finish(self, header_request_id: Option<String>) -> Result<Vec<LlmEvent>, LlmError> {
        if !self.done && self.finish_reason.is_none() {
            return Err(LlmError::Protocol {
                provider: self.provider,
                detail: "the stream ended before the response was complete".into(),
            });
        }
        let names = self.names;
        let calls: Vec<_> = self
            .calls
            .finish()
            .into_iter()
            .map(|mut call| {
                call.name = names.original(std::mem::take(&mut call.name));
                call
            })
            .collect();
        let reason = finish_reason(self.finish_reason.as_deref(), !calls.is_empty());
        let mut events = Vec::with_capacity(2);
        if !calls.is_empty() {
            events.push(LlmEvent::ToolCalls(calls));
        }
        let request_id = header_request_id.or(self.response_id);
        events.push(LlmEvent::Finished { reason, usage: self.usage, request_id });
        Ok(events)
    }
}

fn fragment(call: WireToolCall) -> ToolCallFragment {
    let id = match call.id {
        Some(Value::String(id)) => Some(id),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    let (name, arguments) = match call.function {
        Some(function) => (function.name, function.arguments),
        None => (None, None),
    };
    ToolCallFragment { index: call.index, id, name, arguments }
}

/// The provider's reason, except that accumulated tool calls make it a tool turn whatever the server said: OpenAI
/// itself, Gemini's compatibility layer and older Ollama report `stop` with streamed calls.
fn finish_reason(wire: Option<&str>, has_calls: bool) -> FinishReason {
    match wire {
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        _ if has_calls => FinishReason::ToolCalls,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("stop") | None => FinishReason::Stop,
        Some(other) => FinishReason::Other(other.to_owned()),
    }
}

/// The human-readable part of an OpenAI-style error value: `{"message":…}`, a bare string, or the JSON itself.
pub fn error_message(error: &Value) -> String {
    match error {
        Value::String(text) => text.clone(),
        Value::Object(fields) => {
            let message = fields.get("message").and_then(Value::as_str);
            let code =
                fields.get("code").and_then(Value::as_str).or_else(|| fields.get("type").and_then(Value::as_str));
            match (message, code) {
                (Some(message), Some(code)) => format!("{message} ({code})"),
                (Some(message), None) => message.to_owned(),
                _ => excerpt(&error.to_string()),
            }
        }
        other => excerpt(&other.to_string()),
    }
}

/// The message of an error body as text: the `error` field of a JSON body when there is one, else the text itself.
pub fn error_message_from_text(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(fields)) => match fields.get("error").filter(|e| !e.is_null()) {
            Some(error) => error_message(error),
            None if fields.contains_key("message") => error_message(&Value::Object(fields)),
            None => excerpt(body.trim()),
        },
        _ if body.trim().is_empty() => "empty body".into(),
        _ => excerpt(body.trim()),
    }
}

fn excerpt(text: &str) -> String {
    crate::text::excerpt(text, EXCERPT_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::sse::SseParser;
    use crate::llm::ToolCall;

    /// Everything the decoder yields for a whole body, fed in small uneven pieces like a network would.
    fn decode(body: &str) -> Vec<Result<LlmEvent, String>> {
        decode_with(body, ToolNames::default())
    }

    fn decode_with(body: &str, names: ToolNames) -> Vec<Result<LlmEvent, String>> {
        let mut parser = SseParser::new();
        let mut decoder = ChunkDecoder::new("openai", names);
        let mut out = Vec::new();
        let mut events = Vec::new();
        for piece in body.as_bytes().chunks(7) {
            events.extend(parser.push(piece));
        }
        events.extend(parser.finish());
        for event in &events {
            match decoder.on_event(event) {
                Ok(deltas) => out.extend(deltas.into_iter().map(Ok)),
                Err(error) => {
                    out.push(Err(error.to_string()));
                    return out;
                }
            }
        }
        match decoder.finish(None) {
            Ok(end) => out.extend(end.into_iter().map(Ok)),
            Err(error) => out.push(Err(error.to_string())),
        }
        out
    }

    fn text_of(events: &[Result<LlmEvent, String>]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                Ok(LlmEvent::TextDelta(text)) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    fn calls_of(events: &[Result<LlmEvent, String>]) -> Vec<ToolCall> {
        events
            .iter()
            .find_map(|e| match e {
                Ok(LlmEvent::ToolCalls(calls)) => Some(calls.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn finished(events: &[Result<LlmEvent, String>]) -> Option<(FinishReason, Option<Usage>, Option<String>)> {
        match events.last() {
            Some(Ok(LlmEvent::Finished { reason, usage, request_id })) => {
                Some((reason.clone(), *usage, request_id.clone()))
            }
            _ => None,
        }
    }

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() }
    }

    const TEXT_REPLY: &str = include_str!("../../../proto-fixtures/openai/text_reply.sse");
    const TOOL_CALL: &str = include_str!("../../../proto-fixtures/openai/tool_call_fragmented.sse");
    const TEXT_THEN_TOOL: &str = include_str!("../../../proto-fixtures/openai/text_then_tool_call.sse");
    const PARALLEL: &str = include_str!("../../../proto-fixtures/openai/parallel_tool_calls.sse");
    const ERROR_MID: &str = include_str!("../../../proto-fixtures/openai/error_mid_stream.sse");
    const OLLAMA_SAME_INDEX: &str = include_str!("../../../proto-fixtures/openai/ollama_parallel_same_index.sse");
    const STOP_WITH_CALLS: &str = include_str!("../../../proto-fixtures/openai/stop_with_tool_calls.sse");
    const MISSING_INDEX: &str = include_str!("../../../proto-fixtures/openai/missing_index.sse");
    const FRESH_IDS: &str = include_str!("../../../proto-fixtures/openai/fresh_id_per_fragment.sse");
    const ARGS_OBJECT: &str = include_str!("../../../proto-fixtures/openai/arguments_object.sse");
    const NO_TYPE_NO_ID: &str = include_str!("../../../proto-fixtures/openai/missing_type_and_id.sse");
    const INVALID_ARGS: &str = include_str!("../../../proto-fixtures/openai/invalid_arguments.sse");

    #[test]
    fn cached_prompt_tokens_are_read_from_the_usage_details() {
        let body = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi.\"},\"finish_reason\":\"stop\"}]}\n\n\
            data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":2006,\"completion_tokens\":3,\"total_tokens\":2009,\"prompt_tokens_details\":{\"cached_tokens\":1920}}}\n\n\
            data: [DONE]\n\n";
        let usage = finished(&decode(body)).and_then(|(_, usage, _)| usage);
        assert_eq!(
            usage,
            Some(Usage {
                input_tokens: 2006,
                output_tokens: 3,
                cached_input_tokens: 1920,
                cache_write_input_tokens: 0
            })
        );
    }

    #[test]
    fn text_reply_streams_deltas_then_finishes_with_usage() {
        let events = decode(TEXT_REPLY);
        let deltas: Vec<_> = events.iter().filter(|e| matches!(e, Ok(LlmEvent::TextDelta(_)))).collect();
        assert!(deltas.len() > 1, "one delta per content chunk: {events:?}");
        assert_eq!(text_of(&events), "Let me check that order for you.");
        assert!(calls_of(&events).is_empty());
        assert_eq!(finished(&events), Some((FinishReason::Stop, Some(Usage::new(85, 9)), Some("chatcmpl-1".into()))));
    }

    #[test]
    fn fragmented_tool_call_is_accumulated() {
        let events = decode(TOOL_CALL);
        assert_eq!(text_of(&events), "");
        assert_eq!(calls_of(&events), vec![call("call_abc", "lookup_order", "{\"order_id\":\"456\"}")]);
        let (reason, usage, _) = finished(&events).unwrap_or((FinishReason::Other("none".into()), None, None));
        assert_eq!(reason, FinishReason::ToolCalls);
        assert_eq!(usage, Some(Usage::new(85, 19)));
    }

    #[test]
    fn text_and_tool_call_in_one_response() {
        let events = decode(TEXT_THEN_TOOL);
        assert_eq!(text_of(&events), "Let me check.");
        assert_eq!(calls_of(&events), vec![call("call_abc", "lookup_order", "{\"order_id\":\"456\"}")]);
        // Text first, then the calls, then the end.
        assert!(matches!(events[0], Ok(LlmEvent::TextDelta(_))));
        assert!(matches!(events[events.len() - 2], Ok(LlmEvent::ToolCalls(_))));
    }

    #[test]
    fn parallel_tool_calls_keep_their_order() {
        let events = decode(PARALLEL);
        assert_eq!(
            calls_of(&events),
            vec![
                call("call_a1", "lookup_order", "{\"order_id\":\"456\"}"),
                call("call_b2", "lookup_order", "{\"order_id\":\"789\"}"),
            ]
        );
        assert_eq!(finished(&events).map(|f| f.0), Some(FinishReason::ToolCalls));
    }

    #[test]
    fn error_object_mid_stream_becomes_a_provider_error_after_the_text_so_far() {
        let events = decode(ERROR_MID);
        assert_eq!(text_of(&events), "Your order");
        match events.last() {
            Some(Err(message)) => {
                assert!(message.contains("mid-stream"), "{message}");
                assert!(message.contains("The server had an error while processing your request"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn ollama_parallel_calls_at_the_same_index_stay_separate() {
        let events = decode(OLLAMA_SAME_INDEX);
        assert_eq!(
            calls_of(&events),
            vec![
                call("call_wteop8bt", "lookup_order", "{\"order_id\":\"456\"}"),
                call("call_rk2xye1l", "lookup_order", "{\"order_id\":\"789\"}"),
            ]
        );
    }

    #[test]
    fn stop_with_tool_calls_is_a_tool_turn() {
        let events = decode(STOP_WITH_CALLS);
        assert_eq!(calls_of(&events).len(), 1);
        assert_eq!(finished(&events).map(|f| f.0), Some(FinishReason::ToolCalls));
    }

    #[test]
    fn missing_index_is_tolerated() {
        let events = decode(MISSING_INDEX);
        assert_eq!(
            calls_of(&events),
            vec![call("Ab3dE5gH1", "lookup_order", "{\"order_id\":\"456\"}"), call("Zy9xW8vU7", "get_time", "{}")]
        );
    }

    #[test]
    fn fresh_id_per_fragment_is_one_call() {
        let events = decode(FRESH_IDS);
        assert_eq!(calls_of(&events), vec![call("call_101", "lookup_order", "{\"order_id\":\"456\"}")]);
    }

    #[test]
    fn arguments_as_an_object_become_a_string() {
        let events = decode(ARGS_OBJECT);
        assert_eq!(calls_of(&events), vec![call("call_obj", "lookup_order", "{\"order_id\":\"456\"}")]);
    }

    #[test]
    fn missing_type_and_id_gets_a_synthetic_id() {
        let calls = calls_of(&decode(NO_TYPE_NO_ID));
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "lookup_order");
        assert_eq!(calls[0].arguments, "{\"order_id\": \"456\"}");
        assert!(calls[0].id.starts_with("call_parley_"));
    }

    #[test]
    fn invalid_arguments_are_delivered_raw() {
        let events = decode(INVALID_ARGS);
        assert_eq!(calls_of(&events), vec![call("call_trunc", "lookup_order", "{\"order_id\":\"45")]);
        assert_eq!(finished(&events).map(|f| f.0), Some(FinishReason::Length));
    }

    #[test]
    fn wire_names_are_mapped_back() {
        let request = crate::llm::LlmRequest {
            messages: vec![],
            tools: vec![crate::llm::ToolSpec {
                name: "orders.lookup".into(),
                description: String::new(),
                parameters: serde_json::json!({}),
            }],
        };
        let wire = super::super::request::wire_tool_name("orders.lookup");
        let body = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"c\",\"function\":{{\"name\":\"{wire}\",\"arguments\":\"{{}}\"}}}}]}},\"finish_reason\":\"tool_calls\"}}]}}\n\ndata: [DONE]\n\n"
        );
        let events = decode_with(&body, ToolNames::for_request(&request));
        assert_eq!(calls_of(&events), vec![call("c", "orders.lookup", "{}")]);
    }

    #[test]
    fn truncated_stream_is_an_error_not_a_short_reply() {
        let cut = TEXT_REPLY.split("\"finish_reason\":\"stop\"").next().unwrap_or_default();
        let cut = &cut[..cut.rfind("\n\n").unwrap_or(0)];
        let events = decode(cut);
        assert!(!text_of(&events).is_empty());
        assert!(matches!(events.last(), Some(Err(message)) if message.contains("ended before")), "{events:?}");
    }

    #[test]
    fn finish_reason_without_done_is_accepted() {
        let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\n";
        let events = decode(body);
        assert_eq!(finished(&events).map(|f| f.0), Some(FinishReason::Stop));
    }

    #[test]
    fn chunks_separated_by_single_newlines_are_split() {
        let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"},\"finish_reason\":\"stop\"}]}\ndata: [DONE]\n\n";
        let events = decode(body);
        assert_eq!(text_of(&events), "ab");
        assert!(finished(&events).is_some());
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let events = decode("data: not json\n\n");
        assert!(matches!(events.last(), Some(Err(message)) if message.contains("could not parse")), "{events:?}");
    }

    #[test]
    fn vllm_style_error_object_is_a_provider_error() {
        let events = decode("data: {\"object\":\"error\",\"message\":\"context too long\",\"type\":\"BadRequestError\",\"code\":400}\n\n");
        assert!(matches!(events.last(), Some(Err(message)) if message.contains("context too long")), "{events:?}");
    }

    #[test]
    fn error_messages_from_bodies() {
        let body =
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(error_message_from_text(body), "Rate limit reached (rate_limit_exceeded)");
        assert_eq!(
            error_message_from_text(r#"{"error":"tools param requires --jinja flag"}"#),
            "tools param requires --jinja flag"
        );
        assert_eq!(error_message_from_text("Bad Gateway"), "Bad Gateway");
        assert_eq!(error_message_from_text(""), "empty body");
        assert_eq!(error_message_from_text(&"x".repeat(500)).chars().count(), EXCERPT_CHARS + 1);
    }
}
