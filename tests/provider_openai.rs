//! The OpenAI-compatible client against the fake OpenAI server: real HTTP, real SSE, fixture replies.
//!
//! Timeouts here only keep a broken build from hanging; no assertion depends on how fast anything is.

use std::time::Duration;

use fake_providers::openai::{self as fake, FakeOpenAi, FakeOpenAiOptions, FakeReply};
use futures_util::StreamExt;
use parley::llm::history::{append_tool_round, ToolOutcome, ToolResult, CANCELLED_RESULT};
use parley::llm::openai::{OpenAiCompatible, OpenAiConfig};
use parley::llm::{
    ChatMessage, FinishReason, LanguageModel, LlmError, LlmEvent, LlmRequest, LlmStream, ToolCall, ToolSpec, Usage,
};
use serde_json::{json, Value};

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start_fake(options: FakeOpenAiOptions) -> FakeOpenAi {
    match fake::start(options).await {
        Ok(server) => server,
        Err(error) => panic!("fake OpenAI server did not start: {error}"),
    }
}

fn client_for(server: &FakeOpenAi) -> OpenAiCompatible {
    client_with(OpenAiConfig { base_url: server.base_url(), model: "gpt-4o-mini".into(), ..OpenAiConfig::default() })
}

fn client_with(config: OpenAiConfig) -> OpenAiCompatible {
    match OpenAiCompatible::new(config) {
        Ok(client) => client,
        Err(error) => panic!("client config rejected: {error}"),
    }
}

fn ask(text: &str) -> LlmRequest {
    LlmRequest {
        messages: vec![
            ChatMessage::system("You are a phone agent for Acme. Keep answers short."),
            ChatMessage::user(text),
        ],
        tools: vec![lookup_order_tool()],
    }
}

fn lookup_order_tool() -> ToolSpec {
    ToolSpec {
        name: "lookup_order".into(),
        description: "Look up an order by id".into(),
        parameters: json!({"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"]}),
    }
}

async fn open(client: &OpenAiCompatible, request: LlmRequest) -> Result<LlmStream, LlmError> {
    match tokio::time::timeout(PATIENCE, client.stream(request)).await {
        Ok(result) => result,
        Err(_) => panic!("stream() did not return"),
    }
}

async fn open_ok(client: &OpenAiCompatible, request: LlmRequest) -> LlmStream {
    match open(client, request).await {
        Ok(stream) => stream,
        Err(error) => panic!("request failed: {error}"),
    }
}

async fn next_item(stream: &mut LlmStream) -> Option<Result<LlmEvent, LlmError>> {
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(item) => item,
        Err(_) => panic!("no stream item within {PATIENCE:?}"),
    }
}

/// Everything the stream yields until it ends.
async fn collect(mut stream: LlmStream) -> Vec<Result<LlmEvent, LlmError>> {
    let mut items = Vec::new();
    while let Some(item) = next_item(&mut stream).await {
        items.push(item);
    }
    items
}

fn text_of(items: &[Result<LlmEvent, LlmError>]) -> String {
    items
        .iter()
        .filter_map(|item| match item {
            Ok(LlmEvent::TextDelta(text)) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn calls_of(items: &[Result<LlmEvent, LlmError>]) -> Vec<ToolCall> {
    items
        .iter()
        .find_map(|item| match item {
            Ok(LlmEvent::ToolCalls(calls)) => Some(calls.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn finish_of(items: &[Result<LlmEvent, LlmError>]) -> (FinishReason, Option<Usage>, Option<String>) {
    match items.last() {
        Some(Ok(LlmEvent::Finished { reason, usage, request_id })) => (reason.clone(), *usage, request_id.clone()),
        other => panic!("stream did not end with Finished: {other:?}"),
    }
}

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() }
}

#[tokio::test]
async fn text_arrives_incrementally_before_the_reply_is_complete() {
    // The server sends the role chunk and two words, then stalls. A client that buffered the whole response would
    // never deliver those words; a streaming one delivers them while the server is still "thinking".
    let server =
        start_fake(FakeOpenAiOptions::default().no_delays().reply(FakeReply::fixture("text_reply.sse").stall_after(3)))
            .await;
    let client = client_for(&server);
    let mut stream = open_ok(&client, ask("Where is my order 456?")).await;
    let first = next_item(&mut stream).await;
    assert!(matches!(&first, Some(Ok(LlmEvent::TextDelta(text))) if text == "Let me"), "{first:?}");
    let second = next_item(&mut stream).await;
    assert!(matches!(&second, Some(Ok(LlmEvent::TextDelta(text))) if text == " check"), "{second:?}");
}

#[tokio::test]
async fn text_reply_with_usage_chunk_finishes_cleanly() {
    let server = start_fake(FakeOpenAiOptions::default().no_delays().reply(FakeReply::fixture("text_reply.sse"))).await;
    let client = client_for(&server);
    let items = collect(open_ok(&client, ask("Where is my order 456?")).await).await;
    assert_eq!(text_of(&items), "Let me check that order for you.");
    assert!(calls_of(&items).is_empty());
    let (reason, usage, request_id) = finish_of(&items);
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(usage, Some(Usage::new(85, 9)));
    // The response header wins over the chunk id.
    assert_eq!(request_id.as_deref(), Some("req_fake_1"));
}

#[tokio::test]
async fn generated_text_reply_with_the_default_delays() {
    let server =
        start_fake(FakeOpenAiOptions::default().fallback(FakeReply::text("Your order shipped on Monday."))).await;
    let client = client_for(&server);
    let items = collect(open_ok(&client, ask("Where is my order?")).await).await;
    let deltas = items.iter().filter(|item| matches!(item, Ok(LlmEvent::TextDelta(_)))).count();
    assert!(deltas > 3, "token-sized pieces expected: {items:?}");
    assert_eq!(text_of(&items), "Your order shipped on Monday.");
    let (reason, usage, _) = finish_of(&items);
    assert_eq!(reason, FinishReason::Stop);
    assert!(usage.is_some_and(|u| u.output_tokens > 0 && u.input_tokens > 0), "{usage:?}");
}

#[tokio::test]
async fn fragmented_tool_call_is_accumulated() {
    let server =
        start_fake(FakeOpenAiOptions::default().no_delays().reply(FakeReply::fixture("text_then_tool_call.sse"))).await;
    let client = client_for(&server);
    let items = collect(open_ok(&client, ask("Where is my order 456?")).await).await;
    assert_eq!(text_of(&items), "Let me check.");
    assert_eq!(calls_of(&items), vec![call("call_abc", "lookup_order", "{\"order_id\":\"456\"}")]);
    let (reason, usage, _) = finish_of(&items);
    assert_eq!(reason, FinishReason::ToolCalls);
    assert_eq!(usage, Some(Usage::new(85, 19)));
}

#[tokio::test]
async fn parallel_tool_calls_are_accumulated_in_order() {
    let server = start_fake(
        FakeOpenAiOptions::default()
            .no_delays()
            .reply(FakeReply::fixture("parallel_tool_calls.sse"))
            .reply(FakeReply::fixture("ollama_parallel_same_index.sse")),
    )
    .await;
    let client = client_for(&server);
    let openai = collect(open_ok(&client, ask("Orders 456 and 789?")).await).await;
    assert_eq!(
        calls_of(&openai),
        vec![
            call("call_a1", "lookup_order", "{\"order_id\":\"456\"}"),
            call("call_b2", "lookup_order", "{\"order_id\":\"789\"}")
        ]
    );
    let ollama = collect(open_ok(&client, ask("Orders 456 and 789?")).await).await;
    assert_eq!(calls_of(&ollama).len(), 2, "{ollama:?}");
}

#[tokio::test]
async fn generated_tool_call_reply_round_trips() {
    let server = start_fake(
        FakeOpenAiOptions::default()
            .no_delays()
            .rule("order", FakeReply::tool_call("call_9", "lookup_order", "{\"order_id\":\"456\"}")),
    )
    .await;
    let client = client_for(&server);
    let items = collect(open_ok(&client, ask("Where is my order 456?")).await).await;
    assert_eq!(calls_of(&items), vec![call("call_9", "lookup_order", "{\"order_id\":\"456\"}")]);
    assert_eq!(finish_of(&items).0, FinishReason::ToolCalls);
}

#[tokio::test]
async fn http_500_and_429_are_clear_errors() {
    let server = start_fake(
        FakeOpenAiOptions::default().no_delays().reply(FakeReply::http_500()).reply(FakeReply::rate_limited()),
    )
    .await;
    let client = client_for(&server);
    match open(&client, ask("hi")).await {
        Err(LlmError::Http { status: 500, detail, .. }) => {
            assert!(detail.contains("The server had an error while processing your request"), "{detail}");
        }
        other => panic!("expected HTTP 500, got {:?}", other.map(|_| "a stream")),
    }
    match open(&client, ask("hi")).await {
        Err(LlmError::Http { status: 429, detail, .. }) => {
            assert!(detail.contains("Rate limit reached") && detail.contains("rate_limit_exceeded"), "{detail}");
            assert!(detail.contains("retry after 20 s"), "{detail}");
        }
        other => panic!("expected HTTP 429, got {:?}", other.map(|_| "a stream")),
    }
}

#[tokio::test]
async fn error_mid_stream_is_a_provider_error_after_the_text() {
    let server =
        start_fake(FakeOpenAiOptions::default().no_delays().reply(FakeReply::fixture("error_mid_stream.sse"))).await;
    let client = client_for(&server);
    let items = collect(open_ok(&client, ask("Where is my order?")).await).await;
    assert_eq!(text_of(&items), "Your order");
    match items.last() {
        Some(Err(LlmError::Provider { detail, .. })) => assert!(detail.contains("server had an error"), "{detail}"),
        other => panic!("expected a provider error, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_cut_mid_stream_is_an_error_not_a_short_reply() {
    let server =
        start_fake(FakeOpenAiOptions::default().no_delays().reply(FakeReply::fixture("text_reply.sse").close_after(3)))
            .await;
    let client = client_for(&server);
    let items = collect(open_ok(&client, ask("Where is my order?")).await).await;
    assert_eq!(text_of(&items), "Let me check");
    assert!(matches!(items.last(), Some(Err(LlmError::Connect { .. } | LlmError::Protocol { .. }))), "{items:?}");
    assert!(!items.iter().any(|item| matches!(item, Ok(LlmEvent::Finished { .. }))));
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_request_at_the_server() {
    let server =
        start_fake(FakeOpenAiOptions::default().no_delays().reply(FakeReply::fixture("text_reply.sse").stall_after(3)))
            .await;
    let client = client_for(&server);
    let mut stream = open_ok(&client, ask("Where is my order?")).await;
    assert!(matches!(next_item(&mut stream).await, Some(Ok(LlmEvent::TextDelta(_)))));
    assert_eq!(server.disconnects(), 0);
    drop(stream);
    assert!(server.wait_for_disconnects(1, PATIENCE).await, "the server never saw the client leave");
}

#[tokio::test]
async fn a_finished_stream_is_not_counted_as_cancelled() {
    let server = start_fake(FakeOpenAiOptions::default().no_delays().reply(FakeReply::fixture("text_reply.sse"))).await;
    let client = client_for(&server);
    let items = collect(open_ok(&client, ask("Where is my order?")).await).await;
    finish_of(&items);
    // A second request on the same client proves the server is still serving; the first must not count as abandoned.
    let items = collect(open_ok(&client, ask("And now?")).await).await;
    finish_of(&items);
    assert_eq!(server.disconnects(), 0);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = start_fake(FakeOpenAiOptions::default().no_delays().reply(FakeReply::hang())).await;
    let client = client_with(OpenAiConfig {
        base_url: server.base_url(),
        first_token_timeout: Duration::from_millis(300),
        ..OpenAiConfig::default()
    });
    match open(&client, ask("hi")).await {
        Err(LlmError::Timeout { millis: 300, .. }) => {}
        other => panic!("expected a timeout, got {:?}", other.map(|_| "a stream")),
    }
}

/// A model that accepts the request (200, event stream) and then says nothing — with no bytes at all, or only the
/// `role` preamble chunk — fails after the configured first-token limit, not the (much longer) idle limit.
#[tokio::test]
async fn a_model_that_accepts_and_sends_nothing_fails_after_the_first_token_timeout() {
    let first_token = Duration::from_millis(300);
    for events_before_silence in [0, 1] {
        let reply = FakeReply::text("Sure, let me check.").stall_after(events_before_silence);
        let server = start_fake(FakeOpenAiOptions::default().no_delays().reply(reply)).await;
        let client = client_with(OpenAiConfig {
            base_url: server.base_url(),
            first_token_timeout: first_token,
            idle_timeout: PATIENCE * 2,
            ..OpenAiConfig::default()
        });
        let started = tokio::time::Instant::now();
        let items = collect(open_ok(&client, ask("hi")).await).await;
        let waited = started.elapsed();
        assert!(
            matches!(items.as_slice(), [Err(LlmError::Timeout { millis: 300, waiting_for: "the first token", .. })]),
            "after {events_before_silence} events: {items:?}"
        );
        assert!(waited >= first_token, "gave up after {waited:?}");
        assert!(server.wait_for_disconnects(1, PATIENCE).await, "the abandoned request was not closed");
    }
}

#[tokio::test]
async fn a_stream_that_stalls_hits_the_idle_timeout() {
    let server =
        start_fake(FakeOpenAiOptions::default().no_delays().reply(FakeReply::fixture("text_reply.sse").stall_after(2)))
            .await;
    let client = client_with(OpenAiConfig {
        base_url: server.base_url(),
        idle_timeout: Duration::from_millis(300),
        ..OpenAiConfig::default()
    });
    let items = collect(open_ok(&client, ask("hi")).await).await;
    assert!(!text_of(&items).is_empty(), "{items:?}");
    assert!(
        matches!(items.last(), Some(Err(LlmError::Timeout { millis: 300, waiting_for: "the next token", .. }))),
        "{items:?}"
    );
}

#[tokio::test]
async fn invalid_arguments_json_is_delivered_as_raw_text() {
    let server =
        start_fake(FakeOpenAiOptions::default().no_delays().reply(FakeReply::fixture("invalid_arguments.sse"))).await;
    let client = client_for(&server);
    let items = collect(open_ok(&client, ask("Where is my order 456?")).await).await;
    assert_eq!(calls_of(&items), vec![call("call_trunc", "lookup_order", "{\"order_id\":\"45")]);
    assert!(serde_json::from_str::<Value>(&calls_of(&items)[0].arguments).is_err());
    assert_eq!(finish_of(&items).0, FinishReason::Length);
}

#[tokio::test]
async fn request_body_and_history_reach_the_server() {
    let server = start_fake(
        FakeOpenAiOptions::default()
            .no_delays()
            .reply(FakeReply::fixture("parallel_tool_calls.sse"))
            .reply(FakeReply::text("Order 456 has shipped.")),
    )
    .await;
    let client = client_with(OpenAiConfig {
        base_url: server.base_url(),
        api_key: Some("sk-test".into()),
        model: "gpt-4o-mini".into(),
        temperature: Some(0.5),
        max_completion_tokens: Some(300),
        ..OpenAiConfig::default()
    });
    let mut history = ask("Where are orders 456 and 789?").messages;
    let items =
        collect(open_ok(&client, LlmRequest { messages: history.clone(), tools: vec![lookup_order_tool()] }).await)
            .await;
    let calls = calls_of(&items);
    assert_eq!(calls.len(), 2);

    // The caller barged in: only "Let me" was spoken, the second lookup never ran.
    let results = [ToolResult { call_id: calls[0].id.clone(), outcome: ToolOutcome::ok("{\"status\":\"shipped\"}") }];
    append_tool_round(&mut history, "Let me", &calls, &results);
    let items =
        collect(open_ok(&client, LlmRequest { messages: history, tools: vec![lookup_order_tool()] }).await).await;
    assert_eq!(text_of(&items), "Order 456 has shipped.");

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(first.body["model"], json!("gpt-4o-mini"));
    assert_eq!(first.body["stream"], json!(true));
    assert_eq!(first.body["stream_options"], json!({"include_usage": true}));
    assert_eq!(first.body["max_completion_tokens"], json!(300));
    assert_eq!(first.body["temperature"], json!(0.5));
    assert_eq!(
        first.body["tools"][0],
        json!({"type": "function", "function": {
        "name": "lookup_order", "description": "Look up an order by id",
        "parameters": {"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"]}}})
    );
    assert_eq!(first.last_user_message().as_deref(), Some("Where are orders 456 and 789?"));

    let messages = requests[1].messages();
    assert_eq!(messages.len(), 5, "{messages:?}");
    assert_eq!(
        messages[2],
        json!({"role": "assistant", "content": "Let me", "tool_calls": [
        {"id": "call_a1", "type": "function", "function": {"name": "lookup_order", "arguments": "{\"order_id\":\"456\"}"}},
        {"id": "call_b2", "type": "function", "function": {"name": "lookup_order", "arguments": "{\"order_id\":\"789\"}"}}]})
    );
    assert_eq!(messages[3], json!({"role": "tool", "tool_call_id": "call_a1", "content": "{\"status\":\"shipped\"}"}));
    assert_eq!(messages[4], json!({"role": "tool", "tool_call_id": "call_b2", "content": CANCELLED_RESULT}));
}

#[tokio::test]
async fn unanswered_tool_calls_are_rejected_like_openai_does() {
    let server = start_fake(FakeOpenAiOptions::default().no_delays()).await;
    let client = client_for(&server);
    let assistant =
        ChatMessage { tool_calls: vec![call("call_x", "lookup_order", "{}")], ..ChatMessage::assistant("") };
    let request =
        LlmRequest { messages: vec![ChatMessage::user("hi"), assistant, ChatMessage::user("hello?")], tools: vec![] };
    match open(&client, request).await {
        Err(LlmError::Http { status: 400, detail, .. }) => assert!(detail.contains("call_x"), "{detail}"),
        other => panic!("expected HTTP 400, got {:?}", other.map(|_| "a stream")),
    }
}

#[tokio::test]
async fn base_url_without_v1_and_without_usage_option() {
    let server = start_fake(FakeOpenAiOptions::default().no_delays()).await;
    let client = client_with(OpenAiConfig {
        base_url: format!("http://{}", server.addr()),
        include_usage: false,
        ..OpenAiConfig::default()
    });
    let items = collect(open_ok(&client, ask("hi")).await).await;
    assert_eq!(text_of(&items), "Okay.");
    let (reason, usage, _) = finish_of(&items);
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(usage, None);
    let request = server.last_request();
    assert!(
        request.as_ref().is_some_and(|r| r.body.get("stream_options").is_none() && r.authorization.is_none()),
        "{request:?}"
    );
}

#[tokio::test]
async fn unreachable_server_is_a_connect_error() {
    // Bind then free a port so nothing listens there.
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(error) => panic!("no free port: {error}"),
    };
    let client =
        client_with(OpenAiConfig { base_url: format!("http://127.0.0.1:{port}/v1"), ..OpenAiConfig::default() });
    assert!(matches!(open(&client, ask("hi")).await, Err(LlmError::Connect { .. })));
}
