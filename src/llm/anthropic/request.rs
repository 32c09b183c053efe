//! Builds the Anthropic Messages request body (pure, no I/O).
//!
//! Parley's provider-neutral history does not map one to one onto Anthropic messages, and Anthropic answers 400 when
//! the shape is off, so the mapping here enforces its rules:
//!
//! - system messages become the top-level `system`, one text block (Anthropic has no system role);
//! - the stable prefix carries prompt-cache breakpoints (`cache_control`): the last tool definition, the system
//!   prompt's block and the last block of the conversation, so every turn of a call after the first reads the tools,
//!   the prompt and the history up to the previous turn from Anthropic's cache instead of paying for them again in
//!   time to first token (a prefix shorter than the model's minimum is simply not cached); further system messages
//!   (the running summary of a long call) are blocks after the prompt's;
//! - an assistant turn with tool calls becomes content blocks: its text (if any), then one `tool_use` block per call
//!   with `input` as a JSON *object* (Parley keeps the raw argument text, OpenAI style);
//! - tool messages become `tool_result` blocks of a *user* message, first in that message, and the results of one
//!   round share one user message (every `tool_use` must be answered in the immediately following user message);
//! - consecutive messages of the same role are merged, and empty assistant turns are dropped (Anthropic rejects
//!   empty text blocks).
//!
//! Tool names get the same wire-safe mapping as for OpenAI (Anthropic accepts the same `^[a-zA-Z0-9_-]{1,64}$`).

use serde_json::{json, Map, Value};

use super::AnthropicConfig;
use crate::llm::history::CANCELLED_RESULT;
use crate::llm::openai::wire_tool_name;
use crate::llm::{ChatMessage, LlmRequest, Role, ToolCall, ToolSpec};

/// Prefix `llm::history` gives to the content of a failed tool call; such results are sent with `is_error: true`.
const ERROR_PREFIX: &str = "error: ";

/// A prompt-cache breakpoint: Anthropic caches the request up to and including the block that carries it (tools are
/// rendered before the system prompt, so the system block's breakpoint covers both).
fn cache_breakpoint() -> Value {
    json!({"type": "ephemeral"})
}

/// The JSON body for `POST {base}/v1/messages` with `stream: true`.
pub fn build_body(config: &AnthropicConfig, request: &LlmRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(config.model));
    body.insert("max_tokens".into(), json!(config.max_tokens));
    let mut system = request.messages.iter().filter(|m| m.role == Role::System && !m.content.is_empty());
    if let Some(prompt) = system.next() {
        // The prompt is the same on every turn: a breakpoint. What follows it (the running summary of a long call)
        // changes now and then, so it comes after.
        let mut blocks = vec![json!({"type": "text", "text": prompt.content, "cache_control": cache_breakpoint()})];
        blocks.extend(system.map(|more| text_block(&more.content)));
        body.insert("system".into(), Value::Array(blocks));
    }
    let mut messages = messages_json(&request.messages);
    mark_history_tail(&mut messages);
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        let mut tools: Vec<Value> = request.tools.iter().map(tool_json).collect();
        if let Some(Value::Object(last)) = tools.last_mut() {
            last.insert("cache_control".into(), cache_breakpoint());
        }
        body.insert("tools".into(), Value::Array(tools));
        body.insert("tool_choice".into(), json!({"type": "auto"}));
    }
    if let Some(temperature) = config.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    body.insert("stream".into(), json!(true));
    Value::Object(body)
}

/// Puts a breakpoint on the last block of the conversation, so the next turn, which repeats all of it, reads it from
/// the cache and pays only for what is new.
fn mark_history_tail(messages: &mut [Value]) {
    let last_block = messages.last_mut().and_then(|m| m.get_mut("content")).and_then(Value::as_array_mut);
    if let Some(Value::Object(block)) = last_block.and_then(|blocks| blocks.last_mut()) {
        block.insert("cache_control".into(), cache_breakpoint());
    }
}

/// The `messages` array: user/assistant turns with content blocks, same-role neighbours merged.
fn messages_json(messages: &[ChatMessage]) -> Vec<Value> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in messages {
        let (role, blocks) = match message.role {
            Role::System => continue,
            Role::User if message.content.is_empty() => continue,
            Role::User => ("user", vec![text_block(&message.content)]),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !message.content.is_empty() {
                    blocks.push(text_block(&message.content));
                }
                blocks.extend(message.tool_calls.iter().map(tool_use_block));
                if blocks.is_empty() {
                    continue;
                }
                ("assistant", blocks)
            }
            Role::Tool => ("user", vec![tool_result_block(message)]),
        };
        match turns.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns.into_iter().map(|(role, blocks)| json!({"role": role, "content": order_results_first(blocks)})).collect()
}

/// Anthropic requires `tool_result` blocks before any text in a user message.
fn order_results_first(blocks: Vec<Value>) -> Vec<Value> {
    let (mut results, others): (Vec<Value>, Vec<Value>) =
        blocks.into_iter().partition(|block| block.get("type").and_then(Value::as_str) == Some("tool_result"));
    results.extend(others);
    results
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// A `tool_use` block. Arguments that are not a JSON object (a cut-off stream, a confused model) are sent as `{}`:
/// Anthropic rejects any other `input`, and the tool's error result already tells the model what went wrong.
fn tool_use_block(call: &ToolCall) -> Value {
    let input = match serde_json::from_str::<Value>(&call.arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => json!({}),
    };
    json!({"type": "tool_use", "id": call.id, "name": wire_tool_name(&call.name), "input": input})
}

fn tool_result_block(message: &ChatMessage) -> Value {
    let is_error = message.content.starts_with(ERROR_PREFIX) || message.content == CANCELLED_RESULT;
    json!({
        "type": "tool_result",
        "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
        "content": message.content,
        "is_error": is_error,
    })
}

fn tool_json(tool: &ToolSpec) -> Value {
    json!({"name": wire_tool_name(&tool.name), "description": tool.description, "input_schema": tool.parameters})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::history::{append_tool_round, ToolOutcome, ToolResult};

    fn lookup_tool() -> ToolSpec {
        ToolSpec {
            name: "lookup_order".into(),
            description: "Look up an order by id".into(),
            parameters: json!({"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"]}),
        }
    }

    #[test]
    fn documented_request_shape() {
        let config =
            AnthropicConfig { model: "claude-sonnet-4-5".into(), max_tokens: 400, ..AnthropicConfig::default() };
        let request = LlmRequest {
            messages: vec![
                ChatMessage::system("You are a phone agent for Acme."),
                ChatMessage::user("Where is my order 456?"),
            ],
            tools: vec![lookup_tool()],
        };
        let body = build_body(&config, &request);
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 400,
                "system": [{"type": "text", "text": "You are a phone agent for Acme.",
                            "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Where is my order 456?",
                                                           "cache_control": {"type": "ephemeral"}}]}],
                "tools": [{"name": "lookup_order", "description": "Look up an order by id",
                           "input_schema": {"type":"object","properties":{"order_id":{"type":"string"}},
                                            "required":["order_id"]},
                           "cache_control": {"type": "ephemeral"}}],
                "tool_choice": {"type": "auto"},
                "stream": true,
            })
        );
    }

    #[test]
    fn tool_round_becomes_tool_use_then_user_tool_results() {
        let mut history = vec![ChatMessage::system("sys"), ChatMessage::user("Where is my order 456?")];
        let calls = vec![
            ToolCall { id: "toolu_1".into(), name: "lookup_order".into(), arguments: "{\"order_id\":\"456\"}".into() },
            ToolCall { id: "toolu_2".into(), name: "mcp.refund".into(), arguments: "{\"order_id\":".into() },
        ];
        let results = vec![ToolResult { call_id: "toolu_1".into(), outcome: ToolOutcome::ok("shipped") }];
        append_tool_round(&mut history, "Let me check.", &calls, &results);
        history.push(ChatMessage::user("And the other one?"));
        let body = build_body(&AnthropicConfig::default(), &LlmRequest { messages: history, tools: Vec::new() });
        let messages = body.get("messages").cloned().unwrap_or_default();
        assert_eq!(
            messages,
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Where is my order 456?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {"order_id": "456"}},
                    {"type": "tool_use", "id": "toolu_2", "name": wire_tool_name("mcp.refund"), "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "shipped", "is_error": false},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": CANCELLED_RESULT, "is_error": true},
                    {"type": "text", "text": "And the other one?", "cache_control": {"type": "ephemeral"}},
                ]},
            ])
        );
        assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
    }

    #[test]
    fn the_cached_prefix_is_marked_once_and_the_same_from_turn_to_turn() {
        let book = ToolSpec { name: "book_table".into(), ..lookup_tool() };
        let tools = vec![lookup_tool(), book];
        let system = ChatMessage::system("You are a phone agent for Acme.");
        let config = AnthropicConfig::default();
        let first = build_body(
            &config,
            &LlmRequest { messages: vec![system.clone(), ChatMessage::user("Hello?")], tools: tools.clone() },
        );
        let later = vec![
            system,
            ChatMessage::user("Hello?"),
            ChatMessage::assistant("Hi, how can I help?"),
            ChatMessage::user("Book a table."),
        ];
        let second = build_body(&config, &LlmRequest { messages: later, tools });
        assert_eq!(first["tools"].to_string(), second["tools"].to_string(), "the tools are byte-stable");
        assert_eq!(first["system"].to_string(), second["system"].to_string(), "the system prompt is byte-stable");
        let marked: Vec<bool> =
            first["tools"].as_array().into_iter().flatten().map(|t| t.get("cache_control").is_some()).collect();
        assert_eq!(marked, vec![false, true], "one breakpoint, on the last tool");
        assert_eq!(first["system"][0]["cache_control"], json!({"type": "ephemeral"}));
        let tail = |body: &Value| body["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
        assert_eq!(tail(&second)["content"][0]["cache_control"], json!({"type": "ephemeral"}), "the history's tail");
        let earlier = second["messages"][0]["content"][0].clone();
        assert!(earlier.get("cache_control").is_none(), "only the newest block of the history is marked: {earlier}");
    }

    #[test]
    fn the_running_summary_follows_the_cached_prompt() {
        let messages = vec![
            ChatMessage::system("You are a phone agent for Acme."),
            ChatMessage::system("Notes: the caller's dog is Biscuit."),
            ChatMessage::user("What is my dog called?"),
        ];
        let body = build_body(&AnthropicConfig::default(), &LlmRequest { messages, tools: Vec::new() });
        assert_eq!(
            body["system"],
            json!([
                {"type": "text", "text": "You are a phone agent for Acme.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Notes: the caller's dog is Biscuit."},
            ])
        );
    }

    #[test]
    fn empty_turns_are_dropped_and_same_roles_merge() {
        let messages = vec![
            ChatMessage::user("hello"),
            ChatMessage::assistant(""),
            ChatMessage::user("are you there?"),
            ChatMessage::system("second system part"),
        ];
        let config = AnthropicConfig { temperature: Some(0.3), ..AnthropicConfig::default() };
        let body = build_body(&config, &LlmRequest { messages, tools: Vec::new() });
        assert_eq!(body["system"][0]["text"], json!("second system part"));
        assert_eq!(body.get("temperature"), Some(&json!(0.3)));
        assert_eq!(
            body.get("messages"),
            Some(&json!([{"role": "user", "content": [
                {"type": "text", "text": "hello"},
                {"type": "text", "text": "are you there?", "cache_control": {"type": "ephemeral"}}]}]))
        );
    }

    #[test]
    fn failed_tool_results_are_flagged_as_errors() {
        let message = ChatMessage::tool_result("toolu_9", "error: backend down");
        assert_eq!(tool_result_block(&message).get("is_error"), Some(&json!(true)));
    }
}
