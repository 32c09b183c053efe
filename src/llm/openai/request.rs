//! Builds the Chat Completions request body (pure, no I/O).
//!
//! Parley's provider-neutral history maps one to one onto OpenAI messages: assistant turns carry their `tool_calls`
//! (arguments as a JSON *string*), tool results are `tool` messages with the `tool_call_id` they answer. Tool names
//! are made wire-safe here because OpenAI only accepts `^[a-zA-Z0-9_-]{1,64}$` while MCP names may contain `.` or be
//! up to 128 characters; [`ToolNames`] maps them back when the model calls one.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{MaxTokensParam, OpenAiConfig};
use crate::llm::{ChatMessage, LlmRequest, Role, ToolCall, ToolSpec};

/// Longest tool name OpenAI accepts.
const MAX_TOOL_NAME: usize = 64;

/// The JSON body for `POST {base}/chat/completions` with `stream: true`.
pub fn build_body(config: &OpenAiConfig, request: &LlmRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(config.model));
    body.insert("messages".into(), Value::Array(request.messages.iter().map(message_json).collect()));
    if !request.tools.is_empty() {
        body.insert("tools".into(), Value::Array(request.tools.iter().map(tool_json).collect()));
        body.insert("tool_choice".into(), json!("auto"));
        if let Some(parallel) = config.parallel_tool_calls {
            body.insert("parallel_tool_calls".into(), json!(parallel));
        }
    }
    body.insert("stream".into(), json!(true));
    if config.include_usage {
        body.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    if let Some(limit) = config.max_completion_tokens {
        let key = match config.max_tokens_param {
            MaxTokensParam::MaxCompletionTokens => "max_completion_tokens",
            MaxTokensParam::MaxTokens => "max_tokens",
        };
        body.insert(key.into(), json!(limit));
    }
    if let Some(temperature) = config.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    Value::Object(body)
}

fn message_json(message: &ChatMessage) -> Value {
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut out = Map::new();
    out.insert("role".into(), json!(role));
    if message.role == Role::Assistant && !message.tool_calls.is_empty() {
        // OpenAI wants `content: null` rather than "" on an assistant turn that only called tools.
        let content = if message.content.is_empty() { Value::Null } else { json!(message.content) };
        out.insert("content".into(), content);
        out.insert("tool_calls".into(), Value::Array(message.tool_calls.iter().map(tool_call_json).collect()));
    } else {
        out.insert("content".into(), json!(message.content));
    }
    if message.role == Role::Tool {
        if let Some(id) = &message.tool_call_id {
            out.insert("tool_call_id".into(), json!(id));
        }
    }
    Value::Object(out)
}

fn tool_call_json(call: &ToolCall) -> Value {
    json!({
        "id": call.id,
        "type": "function",
        "function": { "name": wire_tool_name(&call.name), "arguments": call.arguments },
    })
}

fn tool_json(tool: &ToolSpec) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": wire_tool_name(&tool.name),
            "description": tool.description,
            "parameters": tool.parameters,
        },
    })
}

/// A tool name OpenAI accepts: the name itself when it already qualifies, otherwise its allowed characters (others
/// become `_`) cut short and suffixed with a hash of the original, so distinct names stay distinct.
pub fn wire_tool_name(name: &str) -> String {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !name.is_empty() && name.len() <= MAX_TOOL_NAME && name.chars().all(valid_char) {
        return name.to_owned();
    }
    let cleaned: String = name.chars().map(|c| if valid_char(c) { c } else { '_' }).take(MAX_TOOL_NAME - 9).collect();
    format!("{cleaned}_{:08x}", fnv1a32(name))
}

/// FNV-1a: a tiny, stable hash (the same name must map to the same wire name in every request of a call).
fn fnv1a32(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
}

/// Maps wire tool names back to the names Parley offered, for one request.
#[derive(Debug, Clone, Default)]
pub struct ToolNames {
    originals: HashMap<String, String>,
}

impl ToolNames {
    /// The mapping for the tools of `request`.
    pub fn for_request(request: &LlmRequest) -> Self {
        let originals = request
            .tools
            .iter()
            .map(|tool| (wire_tool_name(&tool.name), tool.name.clone()))
            .filter(|(wire, original)| wire != original)
            .collect();
        ToolNames { originals }
    }

    /// The offered name for a wire name; unknown names pass through unchanged.
    pub fn original(&self, wire: String) -> String {
        self.originals.get(&wire).cloned().unwrap_or(wire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OpenAiConfig {
        OpenAiConfig { model: "gpt-4o-mini".into(), ..OpenAiConfig::default() }
    }

    fn lookup_tool(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: "Look up an order by id".into(),
            parameters: json!({"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"]}),
        }
    }

    #[test]
    fn documented_request_shape() {
        let config = OpenAiConfig {
            temperature: Some(0.25),
            max_completion_tokens: Some(300),
            parallel_tool_calls: Some(true),
            ..config()
        };
        let request = LlmRequest {
            messages: vec![
                ChatMessage::system("You are a phone agent for Acme. Keep answers short."),
                ChatMessage::user("Where is my order 456?"),
            ],
            tools: vec![lookup_tool("lookup_order")],
        };
        let body = build_body(&config, &request);
        assert_eq!(
            body,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    { "role": "system", "content": "You are a phone agent for Acme. Keep answers short." },
                    { "role": "user", "content": "Where is my order 456?" }
                ],
                "tools": [{ "type": "function", "function": {
                    "name": "lookup_order",
                    "description": "Look up an order by id",
                    "parameters": {"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"]}
                }}],
                "tool_choice": "auto",
                "parallel_tool_calls": true,
                "stream": true,
                "stream_options": { "include_usage": true },
                "max_completion_tokens": 300,
                "temperature": 0.25
            })
        );
    }

    #[test]
    fn tool_round_maps_to_assistant_tool_calls_and_tool_messages() {
        let call =
            ToolCall { id: "call_abc".into(), name: "lookup_order".into(), arguments: "{\"order_id\":\"456\"}".into() };
        let assistant = ChatMessage { tool_calls: vec![call], ..ChatMessage::assistant("Let me check.") };
        let request = LlmRequest {
            messages: vec![
                assistant,
                ChatMessage::tool_result("call_abc", "{\"status\":\"shipped\",\"eta\":\"Friday\"}"),
            ],
            tools: vec![],
        };
        let body = build_body(&config(), &request);
        assert_eq!(
            body["messages"],
            json!([
                { "role": "assistant", "content": "Let me check.",
                  "tool_calls": [ { "id": "call_abc", "type": "function",
                                    "function": { "name": "lookup_order", "arguments": "{\"order_id\":\"456\"}" } } ] },
                { "role": "tool", "tool_call_id": "call_abc", "content": "{\"status\":\"shipped\",\"eta\":\"Friday\"}" }
            ])
        );
        assert!(body.get("tools").is_none());
        assert!(body.get("tool_choice").is_none());
    }

    #[test]
    fn assistant_turn_with_only_calls_has_null_content() {
        let call = ToolCall { id: "c".into(), name: "f".into(), arguments: "{}".into() };
        let message = ChatMessage { tool_calls: vec![call], ..ChatMessage::assistant("") };
        assert_eq!(message_json(&message)["content"], Value::Null);
        assert_eq!(message_json(&ChatMessage::assistant(""))["content"], json!(""));
    }

    #[test]
    fn usage_option_and_token_limit_name_are_configurable() {
        let config = OpenAiConfig {
            include_usage: false,
            max_completion_tokens: Some(50),
            max_tokens_param: MaxTokensParam::MaxTokens,
            ..config()
        };
        let body = build_body(&config, &LlmRequest { messages: vec![ChatMessage::user("hi")], tools: vec![] });
        assert!(body.get("stream_options").is_none());
        assert!(body.get("max_completion_tokens").is_none());
        assert_eq!(body["max_tokens"], json!(50));
        assert_eq!(body["stream"], json!(true));
        assert!(body.get("temperature").is_none());
    }

    #[test]
    fn invalid_tool_names_are_escaped_and_mapped_back() {
        let long = "x".repeat(128);
        for name in ["orders.lookup", long.as_str(), ""] {
            let wire = wire_tool_name(name);
            assert!(!wire.is_empty() && wire.len() <= MAX_TOOL_NAME, "{wire}");
            assert!(wire.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{wire}");
        }
        assert_ne!(wire_tool_name("a.b"), wire_tool_name("a_b"));
        assert_eq!(wire_tool_name("lookup_order"), "lookup_order");

        let request = LlmRequest { messages: vec![], tools: vec![lookup_tool("orders.lookup"), lookup_tool("plain")] };
        let names = ToolNames::for_request(&request);
        let body = build_body(&config(), &request);
        let wire = body["tools"][0]["function"]["name"].as_str().unwrap_or_default().to_owned();
        assert_ne!(wire, "orders.lookup");
        assert_eq!(names.original(wire), "orders.lookup");
        assert_eq!(names.original("plain".into()), "plain");
        assert_eq!(names.original("unknown".into()), "unknown");
    }
}
