//! The context budget on the wire: a call through Parley's real OpenAI-compatible client against the fake OpenAI
//! server, with a budget small enough that older turns must leave. Every request the server received is checked:
//! within the budget, the system prompt first, the running summary (written by the same server between turns) in
//! the requests after it, and the newest caller turn last.

mod common;

use common::init_logs;
use fake_providers::openai::{FakeOpenAiOptions, FakeReply};
use loadgen::{say, Rig, RigOptions};
use parley::engine::config::ConversationConfig;
use parley::llm::context::summary::{FOLD_HEADING, SUMMARY_HEADING};
use parley::llm::context::tokens::{TokenCounter, MESSAGE_OVERHEAD};
use parley::llm::context::ContextConfig;
use serde_json::Value;
use std::time::Duration;

const BUDGET: u32 = 130;
const NOTES: &str = "The caller is booking a table for two at seven.";

fn content(message: &Value) -> &str {
    message["content"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_call_stays_within_its_budget_on_the_wire_and_carries_the_summary() {
    init_logs();
    let openai = FakeOpenAiOptions::default()
        .rule(FOLD_HEADING, FakeReply::text(NOTES))
        .fallback(FakeReply::text("Okay."))
        .delays(Duration::from_millis(20), Duration::from_millis(2));
    let context =
        ContextConfig { max_tokens: BUDGET, keep_last_turns: 2, summary_max_chars: 150, ..Default::default() };
    let conversation = ConversationConfig {
        greeting: String::new(),
        system_prompt: "You are the phone agent of a restaurant. Answer in one short sentence.".into(),
        context,
        ..ConversationConfig::default()
    };
    let mut rig = Rig::start(RigOptions { openai, conversation, ..RigOptions::default() }).await;
    let mut call = rig.call(30).await;
    for _ in 0..9 {
        say(&mut call, 600).await;
        rig.next_report().await;
    }
    call.hang_up().await;

    let counter = TokenCounter::for_model("gpt-4o-mini");
    let requests = rig.openai.requests();
    let (summaries, replies): (Vec<_>, Vec<_>) =
        requests.iter().partition(|r| r.last_user_message().is_some_and(|text| text.contains(FOLD_HEADING)));
    assert_eq!(replies.len(), 9, "one request per caller turn");
    assert!(!summaries.is_empty(), "older turns were folded into a summary");
    for (turn, request) in replies.iter().enumerate() {
        let messages = request.messages();
        let tokens: u32 = messages.iter().map(|m| MESSAGE_OVERHEAD + counter.text(content(m))).sum();
        assert!(tokens <= BUDGET, "turn {}: {tokens} tokens sent, the budget is {BUDGET}", turn + 1);
        assert_eq!(messages[0]["role"], "system");
        assert!(content(&messages[0]).starts_with("You are the phone agent"), "turn {}", turn + 1);
        let last = messages.last().cloned().unwrap_or_default();
        assert_eq!(
            (last["role"].as_str(), content(&last)),
            (Some("user"), request.last_user_message().as_deref().unwrap_or(""))
        );
    }
    // The summary, once written, rides after the system prompt; the whole call is no longer sent.
    let last = replies.last().map(|r| r.messages()).unwrap_or_default();
    assert_eq!(content(&last[1]), format!("{SUMMARY_HEADING}{NOTES}"), "{last:#?}");
    assert!(last.len() < 2 * 9, "{} messages: the early turns left", last.len());
}
