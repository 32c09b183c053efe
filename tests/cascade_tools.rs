//! The cascade with the backend's tools: the fake LLM calls an MCP tool of the demo backend, over Streamable HTTP and
//! over stdio, and the caller hears the result; slow tools get a filler line and are cancelled on barge-in;
//! destructive tools wait for the caller's spoken yes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::init_logs;
use demo_backend::{DemoBackend, Hooks, JournalEntry, Store};
use fake_providers::deepgram::{FakeDeepgramOptions, Script};
use fake_providers::openai::{FakeOpenAiOptions, FakeReply};
use loadgen::{listen_until, media_count, say, Rig, RigOptions, WAIT};
use parley::engine::config::ConversationConfig;
use parley::mcp::{McpBridge, McpConfig, McpServerConfig, McpTransportConfig};
use parley::twilio::messages::OutboundMessage;
use serde_json::{json, Value};
use sim_caller::{speech, Received};
use tokio_util::sync::CancellationToken;

struct Demo {
    db: PathBuf,
    transport: McpTransportConfig,
    _stop: Option<StopOnDrop>,
    _dir: tempfile::TempDir,
}

struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The demo backend over Streamable HTTP, in this process.
async fn demo_http(delay: Duration) -> Demo {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("demo.db");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    let backend = DemoBackend::new(Store::open(&db).expect("store").into(), Hooks { delay, crash_once: None });
    let stop = CancellationToken::new();
    tokio::spawn(demo_backend::serve_http(listener, backend, stop.clone()));
    let transport = McpTransportConfig::Http { url, bearer_token_env: None, headers_env: Default::default() };
    Demo { db, transport, _stop: Some(StopOnDrop(stop)), _dir: dir }
}

/// The demo backend binary over stdio, spawned by the bridge.
fn demo_stdio() -> Demo {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("demo.db");
    let exe = std::env::current_exe().expect("test executable");
    let binary = exe.parent().and_then(Path::parent).expect("target dir").join("demo-backend");
    assert!(binary.exists(), "{} is missing: `cargo test --workspace` builds it", binary.display());
    let transport = McpTransportConfig::Stdio {
        command: binary.to_string_lossy().into_owned(),
        args: vec!["--stdio".into(), "--db".into(), db.to_string_lossy().into_owned()],
        env: Default::default(),
        inherit_env: vec![],
        cwd: None,
    };
    Demo { db, transport, _stop: None, _dir: dir }
}

async fn bridge(demo: &Demo) -> Arc<McpBridge> {
    let server = McpServerConfig::new("shop", demo.transport.clone());
    let bridge = McpBridge::connect(McpConfig { servers: vec![server], ..McpConfig::default() }).await.expect("bridge");
    assert!(bridge.tool_count() >= 5, "{}", bridge.report());
    Arc::new(bridge)
}

async fn rig(
    openai: FakeOpenAiOptions,
    deepgram: FakeDeepgramOptions,
    tools: Arc<McpBridge>,
    conversation: ConversationConfig,
) -> Rig {
    init_logs();
    Rig::start(RigOptions { openai, deepgram, tools, conversation, ..RigOptions::default() }).await
}

fn quiet_agent() -> ConversationConfig {
    RigOptions::default().conversation
}

fn journal(db: &Path) -> Vec<JournalEntry> {
    demo_backend::read_journal(db).expect("journal readable")
}

fn lookup_456() -> FakeReply {
    FakeReply::tool_call("call_1", "lookup_order", r#"{"order_id":"456"}"#)
}

fn spoken(rig: &Rig, context: &str) -> String {
    rig.cartesia.connections().iter().map(|c| c.transcript_of(context)).collect()
}

async fn order_lookup_call(demo: Demo) {
    let tools = bridge(&demo).await;
    let openai =
        FakeOpenAiOptions::default().reply(lookup_456()).after_tool(FakeReply::text("Here is what I found: {result}"));
    let mut rig = rig(openai, FakeDeepgramOptions::default(), tools, quiet_agent()).await;
    let mut call = rig.call(7).await;
    say(&mut call, 1_000).await;
    rig.next_report().await;

    let entries = journal(&demo.db);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0].tool, "lookup_order");
    let meta = &entries[0].meta;
    assert_eq!(meta["parley/callSid"], format!("CA{:032}", 7));
    assert_eq!(meta["parley/turnIndex"], 0);
    // The tool's answer went back to the model, and the caller heard it.
    let requests = rig.openai.requests();
    assert_eq!(requests.len(), 2);
    let tool_message = requests[1].body["messages"].as_array().and_then(|m| m.last().cloned()).expect("messages");
    assert_eq!(tool_message["role"], "tool");
    assert_eq!(tool_message["tool_call_id"], "call_1");
    let said = spoken(&rig, "t1-r1");
    assert!(said.starts_with("Here is what I found:") && said.contains("shipped"), "{said}");
    assert!(!said.contains("One moment"), "no filler for a fast tool: {said}");
    assert!(media_count(&call.received()) > 0);
    call.hang_up().await;
}

#[tokio::test]
async fn a_caller_asks_about_an_order_over_streamable_http() {
    order_lookup_call(demo_http(Duration::ZERO).await).await;
}

#[tokio::test]
async fn a_caller_asks_about_an_order_over_stdio() {
    order_lookup_call(demo_stdio()).await;
}

#[tokio::test]
async fn a_slow_tool_gets_a_filler_line() {
    let demo = demo_http(Duration::from_millis(2_000)).await;
    let tools = bridge(&demo).await;
    let openai = FakeOpenAiOptions::default().reply(lookup_456()).after_tool(FakeReply::text("Found it: {result}"));
    let mut rig = rig(openai, FakeDeepgramOptions::default(), tools, quiet_agent()).await;
    let mut call = rig.call(1).await;
    say(&mut call, 1_000).await;
    rig.next_report().await;
    let said = spoken(&rig, "t1-r1");
    assert!(said.starts_with("One moment while I check that. Found it:"), "{said}");
    call.hang_up().await;
}

#[tokio::test]
async fn barge_in_during_a_slow_tool_cancels_the_tool_call() {
    let demo = demo_http(Duration::from_secs(8)).await;
    let tools = bridge(&demo).await;
    let openai = FakeOpenAiOptions::default()
        .reply(lookup_456())
        .after_tool(FakeReply::text("Found it."))
        .fallback(FakeReply::text("Okay, what else?"));
    let mut rig = rig(openai, FakeDeepgramOptions::default(), tools, quiet_agent()).await;
    let mut call = rig.call(1).await;
    say(&mut call, 1_000).await;
    // The filler plays while the tool runs; the caller interrupts it.
    listen_until(&mut call, "the filler line", |log| media_count(log) >= 20).await;
    call.stream_audio(&speech(800)).await.unwrap();
    call.wait_until("clear", WAIT, |log| {
        log.iter().any(|r| matches!(r, Received::Message { message: OutboundMessage::Clear { .. }, .. }))
    })
    .await
    .unwrap();
    // The line goes quiet (silence frames, as Twilio streams): the recogniser sends the words that make the
    // barge-in real, and the paused reply with its tool call ends.
    call.stream_audio(&sim_caller::silence(600)).await.unwrap();
    let interrupted = rig.next_report().await;
    assert!(interrupted.barge_in_onset.is_some());
    // The backend saw the call cancelled.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let entries = journal(&demo.db);
        if entries.first().is_some_and(|e| e.outcome.as_deref() == Some("cancelled")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "tool call not cancelled at the backend: {entries:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next request answers the interrupted call as cancelled, so the history stays valid.
    rig.next_report().await;
    let requests = rig.openai.requests();
    let messages = requests.last().expect("a request").body["messages"].as_array().cloned().expect("messages");
    let tool = messages.iter().find(|m| m["role"] == "tool").expect("a tool message");
    assert_eq!(tool["content"], "cancelled by caller");
    call.hang_up().await;
}

/// A script of utterances, each one final result with `speech_final`.
fn script(utterances: &[&str]) -> Script {
    let utterances: Vec<Value> = utterances
        .iter()
        .map(|text| {
            json!([{
                "type": "Results", "channel_index": [0, 1], "duration": 1.0, "start": 0.0, "is_final": true,
                "speech_final": true, "from_finalize": false,
                "channel": {"alternatives": [{"transcript": text, "confidence": 0.99, "words": []}]}
            }])
        })
        .collect();
    Script::from_json(&json!({ "utterances": utterances }).to_string()).expect("script")
}

#[tokio::test]
async fn a_destructive_tool_waits_for_the_callers_yes() {
    let demo = demo_http(Duration::ZERO).await;
    let tools = bridge(&demo).await;
    let cancel_789 = || FakeReply::tool_call("call_c", "cancel_order", r#"{"order_id":"789"}"#);
    let openai =
        FakeOpenAiOptions::default().reply(cancel_789()).reply(cancel_789()).after_tool(FakeReply::text("{result}"));
    let deepgram = FakeDeepgramOptions {
        script: script(&["Please cancel order 789.", "Yes, go ahead."]),
        ..FakeDeepgramOptions::default()
    };
    let mut rig = rig(openai, deepgram, tools, quiet_agent()).await;
    let mut call = rig.call(1).await;
    say(&mut call, 1_000).await;
    rig.next_report().await;
    assert!(journal(&demo.db).is_empty(), "cancel_order ran before the caller confirmed");
    assert!(spoken(&rig, "t1-r1").contains("confirmation"), "{}", spoken(&rig, "t1-r1"));
    say(&mut call, 800).await;
    rig.next_report().await;
    let entries = journal(&demo.db);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0].tool, "cancel_order");
    assert_eq!(entries[0].outcome.as_deref(), Some("ok"));
    call.hang_up().await;
}
