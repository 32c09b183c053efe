//! Decodes the Anthropic Messages event stream (pure, no I/O).
//!
//! Text deltas are handed out as soon as they are decoded, so speech can start on the first words. `tool_use` blocks
//! are accumulated per block index (`input_json_delta` pieces concatenated) and delivered once, complete, when the
//! message ends, followed by the finish event. `ping` and unknown events are ignored (Anthropic may add new ones);
//! an `error` event mid-stream (e.g. `overloaded_error`, the streaming form of HTTP 529) ends the response.

use serde::Deserialize;
use serde_json::Value;

use crate::llm::openai::stream::error_message_from_text;
use crate::llm::openai::ToolNames;
use crate::llm::sse::SseEvent;
use crate::llm::sse_driver::StreamDecoder;
use crate::llm::{FinishReason, LlmError, LlmEvent, ToolCall, Usage};

/// Longest excerpt of an unparseable payload quoted in an error.
const EXCERPT_CHARS: usize = 200;

/// State of one streamed message.
#[derive(Debug)]
pub struct MessageDecoder {
    provider: &'static str,
    names: ToolNames,
    /// `tool_use` blocks in the order they started, with their block index.
    calls: Vec<(u64, PartialCall)>,
    stop_reason: Option<String>,
    usage: Option<Usage>,
    /// `usage.input_tokens` as Anthropic reports it: the prompt tokens outside its cache.
    uncached_input: u64,
    message_id: Option<String>,
    /// Pieces of the answer decoded so far (content deltas, `tool_use` starts, the stop reason, `message_stop`).
    pieces: u64,
    done: bool,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    json: String,
}

/// Every event's data repeats its type, so the data alone is decoded (the `event:` line is only a hint).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: WireMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: WireDelta,
    },
    ContentBlockStop {},
    MessageDelta {
        #[serde(default)]
        delta: Option<WireMessageDelta>,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop {},
    Ping {},
    Error {
        #[serde(default)]
        error: Option<Value>,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    ToolUse {
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// `thinking_delta`, `signature_delta`, `citations_delta` and future kinds: nothing to speak or run.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct WireMessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    /// Prompt tokens read neither from the cache nor written to it.
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl MessageDecoder {
    /// A decoder for one response; `names` maps wire tool names back to the offered ones.
    pub fn new(provider: &'static str, names: ToolNames) -> Self {
        MessageDecoder {
            provider,
            names,
            calls: Vec::new(),
            stop_reason: None,
            usage: None,
            uncached_input: 0,
            message_id: None,
            pieces: 0,
            done: false,
        }
    }

    /// `message_start` carries the input tokens, `message_delta` the cumulative output tokens (and sometimes input
    /// tokens again): later values replace earlier ones. Anthropic counts cache reads and writes apart from
    /// `input_tokens`; Parley's `input_tokens` is all of the prompt, as OpenAI reports it.
    fn merge_usage(&mut self, wire: WireUsage) {
        let usage = self.usage.get_or_insert_with(Usage::default);
        if let Some(input) = wire.input_tokens {
            self.uncached_input = input;
        }
        if let Some(output) = wire.output_tokens {
            usage.output_tokens = output;
        }
        if let Some(read) = wire.cache_read_input_tokens {
            usage.cached_input_tokens = read;
        }
        if let Some(written) = wire.cache_creation_input_tokens {
            usage.cache_write_input_tokens = written;
        }
        usage.input_tokens = self.uncached_input + usage.cached_input_tokens + usage.cache_write_input_tokens;
    }

    fn provider_error(&self, detail: String) -> LlmError {
        LlmError::Provider { provider: self.provider, detail }
    }
}

impl StreamDecoder for MessageDecoder {
    /// Decodes one SSE event; returns the text deltas to deliver now.
    fn on_event(&mut self, event: &SseEvent) -> Result<Vec<LlmEvent>, LlmError> {
        let data = event.data.trim();
        if self.done || data.is_empty() {
            return Ok(Vec::new());
        }
        let wire: WireEvent = match serde_json::from_str(data) {
            Ok(wire) => wire,
            Err(_) if event.event.as_deref() == Some("error") => {
                return Err(self.provider_error(error_message_from_text(data)));
            }
            Err(error) => {
                return Err(LlmError::Protocol {
                    provider: self.provider,
                    detail: format!("{error} in event {}", excerpt(data)),
                })
            }
        };
        let mut out = Vec::new();
        let answers = match &wire {
            WireEvent::ContentBlockStart { content_block, .. } => matches!(content_block, WireBlock::ToolUse { .. }),
            WireEvent::ContentBlockDelta { .. } | WireEvent::MessageStop {} => true,
            WireEvent::MessageDelta { delta, .. } => delta.as_ref().is_some_and(|d| d.stop_reason.is_some()),
            _ => false,
        };
        if answers {
            self.pieces += 1;
        }
        match wire {
            WireEvent::MessageStart { message } => {
                self.message_id = message.id.filter(|id| !id.is_empty());
                if let Some(usage) = message.usage {
                    self.merge_usage(usage);
                }
            }
            WireEvent::ContentBlockStart { index, content_block: WireBlock::ToolUse { id, name } } => {
                self.calls.push((index, PartialCall { id, name, json: String::new() }));
            }
            WireEvent::ContentBlockStart { .. } => {}
            WireEvent::ContentBlockDelta { delta: WireDelta::TextDelta { text }, .. } => {
                if !text.is_empty() {
                    out.push(LlmEvent::TextDelta(text));
                }
            }
            WireEvent::ContentBlockDelta { index, delta: WireDelta::InputJsonDelta { partial_json } } => {
                match self.calls.iter_mut().rev().find(|(i, _)| *i == index) {
                    Some((_, call)) => call.json.push_str(&partial_json),
                    None => {
                        return Err(LlmError::Protocol {
                            provider: self.provider,
                            detail: format!("input_json_delta for block {index}, which is not a tool_use block"),
                        })
                    }
                }
            }
            WireEvent::ContentBlockDelta { .. } | WireEvent::ContentBlockStop {} | WireEvent::Ping {} => {}
            WireEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.and_then(|d| d.stop_reason).filter(|r| !r.is_empty()) {
                    self.stop_reason = Some(reason);
                }
                if let Some(usage) = usage {
                    self.merge_usage(usage);
                }
            }
            WireEvent::MessageStop {} => self.done = true,
            WireEvent::Error { error } => {
                let detail = match error {
                    Some(error) => error_message_from_text(&serde_json::json!({ "error": error }).to_string()),
                    None => "unspecified error".into(),
                };
                return Err(self.provider_error(detail));
            }
            WireEvent::Unknown => {}
        }
        Ok(out)
    }

    /// Whether `message_stop` arrived (nothing after it matters).
    fn is_done(&self) -> bool {
        self.done
    }

    /// Pieces of the answer decoded so far; `message_start`, `ping` and the start of an empty text block are not
    /// part of the answer, a thinking delta is (the model is working).
    fn answer_pieces(&self) -> u64 {
        self.pieces
    }

    /// Ends the response: the tool calls (if any) and the finish event. A body that ended with neither
    /// `message_stop` nor a `stop_reason` was cut off, and is reported as such rather than as a short reply.
    fn finish(self, header_request_id: Option<String>) -> Result<Vec<LlmEvent>, LlmError> {
        if !self.done && self.stop_reason.is_none() {
            return Err(LlmError::Protocol {
                provider: self.provider,
                detail: "the stream ended before the message was complete".into(),
            });
        }
        let names = self.names;
        let calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .filter(|(_, call)| !call.name.is_empty())
            .map(|(_, call)| ToolCall {
                id: call.id,
                name: names.original(call.name),
                // A tool without arguments may have no deltas at all; its input is then the empty object.
                arguments: if call.json.trim().is_empty() { "{}".into() } else { call.json },
            })
            .collect();
        let reason = finish_reason(self.stop_reason.as_deref(), !calls.is_empty());
        let mut events = Vec::with_capacity(2);
        if !calls.is_empty() {
            events.push(LlmEvent::ToolCalls(calls));
        }
        let request_id = header_request_id.or(self.message_id);
        events.push(LlmEvent::Finished { reason, usage: self.usage, request_id });
        Ok(events)
    }
}

/// Anthropic's `stop_reason`, except that accumulated tool calls make it a tool turn unless the output was cut off.
fn finish_reason(wire: Option<&str>, has_calls: bool) -> FinishReason {
    match wire {
        Some("max_tokens") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        _ if has_calls => FinishReason::ToolCalls,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("end_turn" | "stop_sequence") | None => FinishReason::Stop,
        Some(other) => FinishReason::Other(other.to_owned()),
    }
}

fn excerpt(text: &str) -> String {
    crate::text::excerpt(text, EXCERPT_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::sse::SseParser;

    /// Everything the decoder yields for a whole body, fed in small uneven pieces like a network would.
    fn decode(body: &str) -> Vec<Result<LlmEvent, String>> {
        let mut parser = SseParser::new();
        let mut decoder = MessageDecoder::new("anthropic", ToolNames::default());
        let mut out = Vec::new();
        let mut events = Vec::new();
        for piece in body.as_bytes().chunks(7) {
            events.extend(parser.push(piece));
        }
        events.extend(parser.finish());
        for event in events {
            match decoder.on_event(&event) {
                Ok(items) => out.extend(items.into_iter().map(Ok)),
                Err(error) => {
                    out.push(Err(error.to_string()));
                    return out;
                }
            }
        }
        match decoder.finish(None) {
            Ok(items) => out.extend(items.into_iter().map(Ok)),
            Err(error) => out.push(Err(error.to_string())),
        }
        out
    }

    fn text(items: &[Result<LlmEvent, String>]) -> String {
        items
            .iter()
            .filter_map(|item| match item {
                Ok(LlmEvent::TextDelta(text)) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn documented_text_then_tool_use() {
        let items = decode(include_str!("../../../proto-fixtures/anthropic/text_then_tool_use.sse"));
        assert_eq!(text(&items), "Let me check.");
        let tail: Vec<_> = items.into_iter().skip(1).collect();
        assert_eq!(
            tail,
            vec![
                Ok(LlmEvent::ToolCalls(vec![ToolCall {
                    id: "toolu_01A09q90qw90lq917835lq9".into(),
                    name: "lookup_order".into(),
                    arguments: "{\"order_id\": \"456\"}".into(),
                }])),
                Ok(LlmEvent::Finished {
                    reason: FinishReason::ToolCalls,
                    usage: Some(Usage::new(412, 58)),
                    request_id: Some("msg_01XFDUDYJgAACzvnptvVoYEL".into()),
                }),
            ]
        );
    }

    #[test]
    fn cache_reads_and_writes_count_as_input_and_are_reported_apart() {
        let sse = "event: message_start\n\
            data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":21,\"cache_creation_input_tokens\":188,\"cache_read_input_tokens\":1800,\"output_tokens\":1}}}\n\n\
            event: content_block_start\n\
            data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
            event: content_block_delta\n\
            data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Sure.\"}}\n\n\
            event: message_delta\n\
            data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n\
            event: message_stop\n\
            data: {\"type\":\"message_stop\"}\n\n";
        let items = decode(sse);
        let expected =
            Usage { input_tokens: 2009, output_tokens: 3, cached_input_tokens: 1800, cache_write_input_tokens: 188 };
        assert!(
            matches!(items.last(), Some(Ok(LlmEvent::Finished { usage: Some(usage), .. })) if *usage == expected),
            "{items:?}"
        );
    }

    #[test]
    fn text_reply_ignores_ping_and_unknown_events() {
        let items = decode(include_str!("../../../proto-fixtures/anthropic/text_reply.sse"));
        assert_eq!(text(&items), "Your order shipped and arrives Friday.");
        assert!(matches!(
            items.last(),
            Some(Ok(LlmEvent::Finished {
                reason: FinishReason::Stop,
                usage: Some(Usage { output_tokens: 12, .. }),
                ..
            }))
        ));
    }

    #[test]
    fn tool_without_arguments_gets_an_empty_object() {
        let items = decode(include_str!("../../../proto-fixtures/anthropic/tool_use_no_input.sse"));
        assert!(
            matches!(items.first(), Some(Ok(LlmEvent::ToolCalls(calls))) if calls.len() == 1 && calls[0].arguments == "{}"),
            "{items:?}"
        );
    }

    #[test]
    fn overloaded_error_mid_stream_is_a_provider_error() {
        let items = decode(include_str!("../../../proto-fixtures/anthropic/error_mid_stream.sse"));
        assert_eq!(text(&items), "Let me");
        match items.last() {
            Some(Err(error)) => assert!(error.contains("Overloaded") && error.contains("overloaded_error"), "{error}"),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let body = include_str!("../../../proto-fixtures/anthropic/text_reply.sse");
        let cut = body.find("event: message_delta").unwrap_or(body.len());
        match decode(&body[..cut]).last() {
            Some(Err(error)) => assert!(error.contains("ended before"), "{error}"),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn max_tokens_wins_over_tool_calls() {
        assert_eq!(finish_reason(Some("max_tokens"), true), FinishReason::Length);
        assert_eq!(finish_reason(Some("end_turn"), true), FinishReason::ToolCalls);
        assert_eq!(finish_reason(Some("pause_turn"), false), FinishReason::Other("pause_turn".into()));
    }
}
