//! The Anthropic client against the fake Anthropic server: real HTTP, real named-event SSE, fixture replies.
//!
//! Timeouts here only keep a broken build from hanging; no assertion depends on how fast anything is.

use std::time::Duration;

use fake_providers::anthropic::{self as fake, FakeAnthropic, FakeAnthropicOptions, FakeReply};
use futures_util::StreamExt;
use parley::llm::anthropic::{Anthropic, AnthropicConfig};
use parley::llm::history::{append_tool_round, ToolOutcome, ToolResult};
use parley::llm::{
    ChatMessage, FinishReason, LanguageModel, LlmError, LlmEvent, LlmRequest, LlmStream, ToolCall, ToolSpec, Usage,
};
use serde_json::json;

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start_fake(options: FakeAnthropicOptions) -> FakeAnthropic {
    match fake::start(options).await {
        Ok(server) => server,
        Err(error) => panic!("fake Anthropic server did not start: {error}"),
    }
}

fn client_with(config: AnthropicConfig) -> Anthropic {
    match Anthropic::new(config) {
        Ok(client) => client,
        Err(error) => panic!("client config rejected: {error}"),
    }
}

fn client_for(server: &FakeAnthropic) -> Anthropic {
    client_with(AnthropicConfig {
        base_url: server.base_url(),
        api_key: "sk-ant-test".into(),
        max_tokens: 400,
        ..AnthropicConfig::default()
    })
}

fn lookup_order_tool() -> ToolSpec {
    ToolSpec {
        name: "lookup_order".into(),
        description: "Look up an order by id".into(),
        parameters: json!({"type":"object","properties":{"order_id":{"type":"string"}},"required":["order_id"]}),
    }
}

fn ask(text: &str) -> LlmRequest {
    LlmRequest {
        messages: vec![ChatMessage::system("You are a phone agent for Acme."), ChatMessage::user(text)],
        tools: vec![lookup_order_tool()],
    }
}

async fn open(client: &Anthropic, request: LlmRequest) -> Result<LlmStream, LlmError> {
    match tokio::time::timeout(PATIENCE, client.stream(request)).await {
        Ok(result) => result,
        Err(_) => panic!("stream() did not return"),
    }
}

async fn open_ok(client: &Anthropic, request: LlmRequest) -> LlmStream {
    match open(client, request).await {
        Ok(stream) => stream,
        Err(error) => panic!("request failed: {error}"),
    }
}

async fn collect(mut stream: LlmStream) -> Vec<Result<LlmEvent, LlmError>> {
    let mut items = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, stream.next()).await {
            Ok(Some(item)) => items.push(item),
            Ok(None) => return items,
            Err(_) => panic!("no stream item within {PATIENCE:?}"),
        }
    }
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

#[tokio::test]
async fn documented_stream_gives_text_then_the_tool_call() {
    let server =
        start_fake(FakeAnthropicOptions::default().no_delays().reply(FakeReply::fixture("text_then_tool_use.sse")))
            .await;
    let items = collect(open_ok(&client_for(&server), ask("Where is my order 456?")).await).await;
    assert_eq!(text_of(&items), "Let me check.");
    let tail: Vec<_> = items.into_iter().skip(1).map(|item| item.map_err(|e| e.to_string())).collect();
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
                request_id: Some("req_fake_1".into()),
            }),
        ]
    );
    let request = server.last_request();
    let request = request.as_ref();
    assert_eq!(request.and_then(|r| r.api_key.as_deref()), Some("sk-ant-test"));
    assert_eq!(request.and_then(|r| r.version.as_deref()), Some("2023-06-01"));
    let system = request.and_then(|r| r.body.get("system").cloned());
    assert_eq!(
        system,
        Some(
            json!([{"type": "text", "text": "You are a phone agent for Acme.", "cache_control": {"type": "ephemeral"}}])
        ),
        "the system prompt is one block carrying the prompt-cache breakpoint"
    );
    assert_eq!(request.and_then(|r| r.body.get("max_tokens").cloned()), Some(json!(400)));
}

#[tokio::test]
async fn a_tool_round_trips_with_tool_results_in_a_user_message() {
    let options = FakeAnthropicOptions::default()
        .no_delays()
        .reply(FakeReply::tool_use("toolu_1", "lookup.order", "{\"order_id\":\"456\"}"))
        .after_tool(FakeReply::text("It says {result}."));
    let server = start_fake(options).await;
    let client = client_for(&server);
    let mut request = ask("Where is my order 456?");
    request.tools[0].name = "lookup.order".into(); // an MCP-style name that needs the wire mapping
    let items = collect(open_ok(&client, request.clone()).await).await;
    let calls = match items.first() {
        Some(Ok(LlmEvent::ToolCalls(calls))) => calls.clone(),
        other => panic!("expected tool calls, got {other:?}"),
    };
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].arguments, "{\"order_id\":\"456\"}");
    let results = vec![ToolResult { call_id: calls[0].id.clone(), outcome: ToolOutcome::ok("shipped") }];
    append_tool_round(&mut request.messages, "", &calls, &results);
    let items = collect(open_ok(&client, request).await).await;
    assert_eq!(text_of(&items), "It says shipped.");
    assert!(matches!(items.last(), Some(Ok(LlmEvent::Finished { reason: FinishReason::Stop, .. }))));
    let sent = server.last_request().map(|r| r.messages()).unwrap_or_default();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[2].pointer("/content/0/type"), Some(&json!("tool_result")));
    assert_eq!(sent[2].pointer("/content/0/tool_use_id"), Some(&json!("toolu_1")));
    assert_eq!(sent[1].pointer("/content/0/input"), Some(&json!({"order_id": "456"})));
}

#[tokio::test]
async fn http_errors_carry_anthropics_message() {
    let server = start_fake(FakeAnthropicOptions::default().no_delays().reply(FakeReply::overloaded())).await;
    match open(&client_for(&server), ask("hi")).await {
        Err(LlmError::Http { status: 529, detail, .. }) => assert!(detail.contains("Overloaded"), "{detail}"),
        Err(other) => panic!("expected HTTP 529, got {other}"),
        Ok(_) => panic!("expected HTTP 529, got a stream"),
    }
    let wrong_key =
        client_with(AnthropicConfig { base_url: server.base_url(), api_key: " ".into(), ..AnthropicConfig::default() });
    assert!(matches!(open(&wrong_key, ask("hi")).await, Err(LlmError::Http { status: 401, .. })));
}

#[tokio::test]
async fn error_event_mid_stream_is_a_provider_error_after_the_text() {
    let server =
        start_fake(FakeAnthropicOptions::default().no_delays().reply(FakeReply::fixture("error_mid_stream.sse"))).await;
    let items = collect(open_ok(&client_for(&server), ask("hi")).await).await;
    assert_eq!(text_of(&items), "Let me");
    assert!(matches!(items.last(), Some(Err(LlmError::Provider { .. }))), "{items:?}");
}

#[tokio::test]
async fn connection_cut_mid_stream_is_an_error_not_a_short_reply() {
    let reply = FakeReply::text("Your order shipped on Monday.").close_after(3);
    let server = start_fake(FakeAnthropicOptions::default().no_delays().reply(reply)).await;
    let items = collect(open_ok(&client_for(&server), ask("hi")).await).await;
    assert!(matches!(items.last(), Some(Err(_))), "{items:?}");
    assert!(!items.iter().any(|item| matches!(item, Ok(LlmEvent::Finished { .. }))));
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_request_at_the_server() {
    let reply = FakeReply::text("A long answer that the caller interrupts.").stall_after(3);
    let server = start_fake(FakeAnthropicOptions::default().no_delays().reply(reply)).await;
    let mut stream = open_ok(&client_for(&server), ask("hi")).await;
    let first = tokio::time::timeout(PATIENCE, stream.next()).await;
    assert!(matches!(first, Ok(Some(Ok(LlmEvent::TextDelta(_))))), "{first:?}");
    assert_eq!(server.disconnects(), 0);
    drop(stream);
    assert!(server.wait_for_disconnects(1, PATIENCE).await, "the server never saw the cancellation");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = start_fake(FakeAnthropicOptions::default().no_delays().reply(FakeReply::hang())).await;
    let client = client_with(AnthropicConfig {
        base_url: server.base_url(),
        api_key: "k".into(),
        first_token_timeout: Duration::from_millis(200),
        ..AnthropicConfig::default()
    });
    assert!(matches!(open(&client, ask("hi")).await, Err(LlmError::Timeout { .. })));
}

/// A model that accepts the request and sends nothing of its answer — no bytes at all, or only `message_start` —
/// fails after the configured first-token limit, not the (much longer) idle limit.
#[tokio::test]
async fn a_model_that_accepts_and_sends_nothing_fails_after_the_first_token_timeout() {
    let first_token = Duration::from_millis(300);
    for events_before_silence in [0, 1] {
        let reply = FakeReply::text("Sure, let me check.").stall_after(events_before_silence);
        let server = start_fake(FakeAnthropicOptions::default().no_delays().reply(reply)).await;
        let client = client_with(AnthropicConfig {
            base_url: server.base_url(),
            api_key: "k".into(),
            first_token_timeout: first_token,
            idle_timeout: PATIENCE * 2,
            ..AnthropicConfig::default()
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
async fn a_stream_that_stalls_mid_answer_hits_the_idle_timeout() {
    let reply = FakeReply::text("Sure, let me check on that for you.").stall_after(4);
    let server = start_fake(FakeAnthropicOptions::default().no_delays().reply(reply)).await;
    let client = client_with(AnthropicConfig {
        base_url: server.base_url(),
        api_key: "k".into(),
        idle_timeout: Duration::from_millis(300),
        ..AnthropicConfig::default()
    });
    let items = collect(open_ok(&client, ask("hi")).await).await;
    assert!(items.iter().any(|item| matches!(item, Ok(LlmEvent::TextDelta(_)))), "{items:?}");
    assert!(
        matches!(items.last(), Some(Err(LlmError::Timeout { millis: 300, waiting_for: "the next token", .. }))),
        "{items:?}"
    );
}
