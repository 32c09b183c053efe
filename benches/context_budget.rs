//! The model's share of a long call: prompt tokens and time to first token per turn, with and without the context
//! budget and the provider's prompt cache.
//!
//! A 40-turn support call is held through Parley's own context window and OpenAI-compatible client against the fake
//! OpenAI server. Every third turn the agent ran a tool whose answer is 4,000 characters (what
//! `mcp.result_max_chars` lets through). The fake reports prompt and cached tokens the way OpenAI does (prefixes
//! from 1,024 tokens, in steps of 128) and makes the first token wait 150 ms plus 50 µs per uncached prompt token
//! (20,000 tokens a second of prefill), so a long uncached prompt costs time as it does on a real server. The window's
//! running summaries are written between turns against the same fake and are not timed; they are counted.
//! Run with `cargo bench --bench context_budget`.

use std::time::{Duration, Instant};

use fake_providers::openai::{FakeOpenAiOptions, FakeReply};
use futures_util::StreamExt;
use parley::llm::context::summary::FOLD_HEADING;
use parley::llm::context::tokens::TokenCounter;
use parley::llm::context::{ContextConfig, ContextWindow};
use parley::llm::history::{append_tool_round, ToolOutcome, ToolResult};
use parley::llm::openai::{OpenAiCompatible, OpenAiConfig};
use parley::llm::{ChatMessage, LanguageModel, LlmEvent, LlmRequest, ToolCall, ToolSpec};

const TURNS: usize = 40;
const BASE_FIRST_TOKEN: Duration = Duration::from_millis(150);
const PREFILL_PER_TOKEN: Duration = Duration::from_micros(50);
const MODEL: &str = "gpt-4o-mini";
const SYSTEM_PROMPT: &str = "You are the phone agent of Acme Home, a shop for kitchen and home goods. You speak on a \
    telephone call: answer in one or two short sentences of plain spoken language, no lists, no markdown. Look orders \
    up with the tools before you answer about them, never guess an order's status, and confirm before you cancel.";

struct Mode {
    name: &'static str,
    budget: u32,
    cache: bool,
}

/// What one turn's request cost.
struct TurnCost {
    prompt_tokens: u64,
    cached_tokens: u64,
    first_token: Duration,
    /// Parley's own time making the request's messages (the budget check, a fold, the copy): engine-loop time.
    window_time: Duration,
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let rss_before = rss_kib();
    let loading = Instant::now();
    let counter = TokenCounter::for_model(MODEL);
    let loaded = loading.elapsed();
    let rss_growth = rss_kib().saturating_sub(rss_before);
    let result = order_json(7);
    let counting = Instant::now();
    let tokens = counter.text(&result);
    println!(
        "tokenizer for {MODEL}: loaded in {:.0} ms and {:.1} MiB of memory (once per process); a {}-character tool \
         result is {tokens} tokens, counted in {:.0} µs (once per message)",
        ms(loaded),
        rss_growth as f64 / 1024.0,
        result.len(),
        counting.elapsed().as_secs_f64() * 1e6
    );
    let modes = [
        Mode { name: "whole call, no cache", budget: 0, cache: false },
        Mode { name: "whole call, cache", budget: 0, cache: true },
        Mode { name: "budget 4000, no cache", budget: 4_000, cache: false },
        Mode { name: "budget 4000, cache", budget: 4_000, cache: true },
    ];
    println!("40-turn call, a 4,000-character tool result every third turn; fake prefill 50 µs per uncached token");
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9} {:>11}",
        "mode",
        "t1 tok",
        "t1 ttft",
        "t40 tok",
        "t40 cache",
        "t40 ttft",
        "max tok",
        "call tok",
        "mean ttft",
        "summaries",
        "window max"
    );
    for mode in &modes {
        let (costs, summaries) = runtime.block_on(hold_call(mode));
        let (first, last) = (&costs[0], &costs[costs.len() - 1]);
        let total: u64 = costs.iter().map(|c| c.prompt_tokens).sum();
        let max = costs.iter().map(|c| c.prompt_tokens).max().unwrap_or(0);
        let mean = costs.iter().map(|c| c.first_token.as_secs_f64()).sum::<f64>() / costs.len() as f64;
        let window_max = costs.iter().map(|c| c.window_time).max().unwrap_or_default();
        println!(
            "{:<24} {:>9} {:>7.0}ms {:>9} {:>9} {:>7.0}ms {:>9} {:>11} {:>7.0}ms {:>9} {:>9.0}µs",
            mode.name,
            first.prompt_tokens,
            ms(first.first_token),
            last.prompt_tokens,
            last.cached_tokens,
            ms(last.first_token),
            max,
            total,
            mean * 1000.0,
            summaries,
            window_max.as_secs_f64() * 1e6
        );
    }
}

/// This process's resident memory, from /proc (0 where there is none).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).unwrap_or(0)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

async fn hold_call(mode: &Mode) -> (Vec<TurnCost>, usize) {
    let options = FakeOpenAiOptions {
        prefill_per_token: PREFILL_PER_TOKEN,
        prompt_cache: mode.cache,
        ..FakeOpenAiOptions::default()
            .rule(FOLD_HEADING, FakeReply::text("Notes: the caller asked about orders 100 to 2000, all shipped."))
            .fallback(FakeReply::text("Order 4500 shipped on Monday with UPS and should arrive on Friday."))
            .delays(BASE_FIRST_TOKEN, Duration::from_millis(1))
    };
    let fake = fake_providers::openai::start(options).await.expect("fake OpenAI");
    let client = OpenAiCompatible::new(OpenAiConfig {
        base_url: fake.base_url(),
        api_key: Some("bench-key".into()),
        model: MODEL.into(),
        ..OpenAiConfig::default()
    })
    .expect("client");
    let tools = tools();
    let context = ContextConfig { max_tokens: mode.budget, ..ContextConfig::default() };
    let mut window = ContextWindow::new(context, TokenCounter::for_model(MODEL));
    let mut history = vec![ChatMessage::system(SYSTEM_PROMPT)];
    let mut costs = Vec::with_capacity(TURNS);
    let mut summaries = 0;
    for turn in 1..=TURNS {
        history.push(ChatMessage::user(format!(
            "Hi again, this is about order {turn}00: can you tell me where it is and when it will get here?"
        )));
        let building = Instant::now();
        let fold = window.fit(&mut history, &tools);
        let request = LlmRequest { messages: window.messages(&history), tools: tools.clone() };
        let window_time = building.elapsed();
        if let Some(fold) = fold {
            // The engine writes this summary in a task while the reply goes on; here it is simply not timed.
            let summary = summarise(&client, fold.request.request).await;
            summaries += 1;
            window.summary_ready(&mut history, fold.id, summary);
        }
        let (cost, reply) = ask(&client, request).await;
        costs.push(TurnCost { window_time, ..cost });
        if turn.is_multiple_of(3) {
            let call = ToolCall {
                id: format!("call_{turn}"),
                name: "lookup_order".into(),
                arguments: format!("{{\"order_id\":\"{turn}00\"}}"),
            };
            let result = ToolResult { call_id: call.id.clone(), outcome: ToolOutcome::ok(order_json(turn)) };
            append_tool_round(&mut history, "", &[call], &[result]);
        }
        history.push(ChatMessage::assistant(reply));
        if let Some(fold) = window.between_turns(&mut history, &tools) {
            let summary = summarise(&client, fold.request.request).await;
            summaries += 1;
            window.summary_ready(&mut history, fold.id, summary);
        }
    }
    (costs, summaries)
}

/// One reply request: time to the first token, and the usage the server reported.
async fn ask(client: &OpenAiCompatible, request: LlmRequest) -> (TurnCost, String) {
    let sent = Instant::now();
    let mut stream = client.stream(request).await.expect("request accepted");
    let mut first_token = None;
    let mut reply = String::new();
    let mut usage = None;
    while let Some(event) = stream.next().await {
        match event.expect("stream") {
            LlmEvent::TextDelta(text) => {
                first_token.get_or_insert_with(|| sent.elapsed());
                reply.push_str(&text);
            }
            LlmEvent::Finished { usage: reported, .. } => usage = reported,
            LlmEvent::ToolCalls(_) => {}
        }
    }
    let usage = usage.unwrap_or_default();
    let cost = TurnCost {
        prompt_tokens: usage.input_tokens,
        cached_tokens: usage.cached_input_tokens,
        first_token: first_token.unwrap_or_default(),
        window_time: Duration::ZERO,
    };
    (cost, reply)
}

async fn summarise(client: &OpenAiCompatible, request: LlmRequest) -> Option<String> {
    let (_, text) = ask(client, request).await;
    Some(text)
}

fn tools() -> Vec<ToolSpec> {
    let tool = |name: &str, description: &str| ToolSpec {
        name: name.into(),
        description: description.into(),
        parameters: serde_json::json!({"type": "object", "properties": {"order_id": {"type": "string",
            "description": "The order number the caller gave"}}, "required": ["order_id"]}),
    };
    vec![
        tool("lookup_order", "Look an order up by its number: status, items, carrier and expected delivery."),
        tool("cancel_order", "Cancel an order that has not shipped yet. Ask the caller to confirm first."),
        tool("reorder", "Place the same order again for the caller."),
    ]
}

/// A backend's full answer about an order, 4,000 characters as `mcp.result_max_chars` allows.
fn order_json(turn: usize) -> String {
    let mut items = Vec::new();
    let mut item = 0;
    loop {
        let next = format!(
            r#"{{"sku":"SKU-{turn}-{item}","name":"kitchen item number {item}","price":{item}.99,"warehouse":"Leeds"}}"#
        );
        if items.iter().map(String::len).sum::<usize>() + next.len() > 3_800 {
            break;
        }
        items.push(next);
        item += 1;
    }
    format!(
        r#"{{"order_id":"{turn}00","status":"shipped","carrier":"UPS","eta":"Friday","items":[{}]}}"#,
        items.join(",")
    )
}
