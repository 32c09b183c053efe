//! Telemetry end to end: a simulated call's spans reach an OTLP/HTTP receiver running in this test (call → turn →
//! stage tree, GenAI attributes, the barge-in event), a tool span's `traceparent` reaches the demo backend, and
//! `/metrics` reports the call.
//!
//! One process-wide telemetry setup serves every test here (the tracer provider and log subscriber are global); each
//! test tells its spans apart by its own call SID.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use demo_backend::{DemoBackend, Hooks, Store};
use fake_providers::deepgram::FakeDeepgramOptions;
use fake_providers::openai::{FakeOpenAiOptions, FakeReply};
use loadgen::{listen_until, media_count, say, Rig, RigOptions, WAIT};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use parley::mcp::{McpBridge, McpConfig, McpServerConfig, McpTransportConfig};
use parley::telemetry::{OtlpProtocol, Telemetry, TelemetryConfig};
use parley::twilio::messages::OutboundMessage;
use prost::Message as _;
use sim_caller::{silence, speech, Received, SimCall};
use tokio_util::sync::CancellationToken;

/// A span as received, with its resource's attributes.
#[derive(Clone, Debug)]
struct Exported {
    span: Span,
    resource: Vec<KeyValue>,
}

struct Setup {
    telemetry: Telemetry,
    spans: Arc<Mutex<Vec<Exported>>>,
}

static SETUP: OnceLock<Setup> = OnceLock::new();

/// Starts the OTLP receiver (on its own runtime, so it outlives each test's) and installs telemetry pointing at it.
fn setup() -> &'static Setup {
    SETUP.get_or_init(|| {
        let spans: Arc<Mutex<Vec<Exported>>> = Arc::default();
        let store = Arc::clone(&spans);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                addr_tx.send(listener.local_addr().expect("addr")).expect("address sent");
                let app = axum::Router::new().route(
                    "/v1/traces",
                    post(move |body: Bytes| {
                        let store = Arc::clone(&store);
                        async move {
                            let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                            let mut spans = store.lock().expect("lock");
                            for resource_spans in request.resource_spans {
                                let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
                                for scope in resource_spans.scope_spans {
                                    for span in scope.spans {
                                        spans.push(Exported { span, resource: resource.clone() });
                                    }
                                }
                            }
                            ExportTraceServiceResponse::default().encode_to_vec()
                        }
                    }),
                );
                axum::serve(listener, app).await.expect("receiver runs");
            });
        });
        let addr = addr_rx.recv().expect("receiver address");
        let config = TelemetryConfig {
            traces: true,
            protocol: Some(OtlpProtocol::HttpProtobuf),
            endpoint: Some(format!("http://{addr}")),
            service_name: "parley-test".into(),
            instance_id: Some("test-instance".into()),
            ..TelemetryConfig::default()
        };
        // Called from inside a test's runtime, as `init` asks.
        let telemetry = parley::telemetry::init(&config).expect("telemetry installs");
        Setup { telemetry, spans }
    })
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn text<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attributes, key) {
        Some(AnyValue::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn number(attributes: &[KeyValue], key: &str) -> Option<f64> {
    match attr(attributes, key) {
        Some(AnyValue::DoubleValue(v)) => Some(*v),
        Some(AnyValue::IntValue(v)) => Some(*v as f64),
        _ => None,
    }
}

/// Hangs up, waits for the call to end at Parley, flushes, and returns the call's trace once its root has arrived.
async fn finish_and_collect(rig: &Rig, call: SimCall, call_sid: &str) -> Vec<Exported> {
    call.hang_up().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while rig.server.registry().active() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the call did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        tokio::task::spawn_blocking(|| setup().telemetry.flush()).await.expect("flush");
        let spans = setup().spans.lock().expect("lock").clone();
        let root =
            spans.iter().find(|s| s.span.name == "call" && text(&s.span.attributes, "call_sid") == Some(call_sid));
        if let Some(root) = root {
            let trace_id = root.span.trace_id.clone();
            return spans.into_iter().filter(|s| s.span.trace_id == trace_id).collect();
        }
        assert!(tokio::time::Instant::now() < deadline, "the call's span was not exported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn children<'a>(spans: &'a [Exported], parent: &Span) -> Vec<&'a Span> {
    let mut found: Vec<&Span> = spans.iter().map(|s| &s.span).filter(|s| s.parent_span_id == parent.span_id).collect();
    found.sort_by_key(|s| s.start_time_unix_nano);
    found
}

fn named<'a>(spans: &[&'a Span], prefix: &str) -> Option<&'a Span> {
    spans.iter().copied().find(|s| s.name.starts_with(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_traced_as_call_turn_and_stage_spans() {
    setup();
    const LONG_REPLY: &str = "Let me tell you about our restaurant. We have tables by the window, tables on the \
        terrace, and a private room for larger parties. Our kitchen serves seasonal dishes, and our wine list is long.";
    let openai = FakeOpenAiOptions::default()
        .rule("table for two", FakeReply::text(LONG_REPLY))
        .rule("seven", FakeReply::text("Seven it is."))
        .delays(Duration::from_millis(300), Duration::from_millis(60));
    let prices = parley::cost::PriceTable {
        currency: "USD".into(),
        twilio_per_minute: Some(0.0085),
        llm: [(
            "gpt-test".to_owned(),
            parley::cost::TokenPrices {
                input_per_million: 0.15,
                cached_input_per_million: None,
                output_per_million: 0.6,
            },
        )]
        .into(),
        ..parley::cost::PriceTable::default()
    };
    let mut rig = Rig::start(RigOptions { openai, prices, ..RigOptions::default() }).await;
    let mut call = rig.call(41).await;
    let call_sid = format!("CA{:032}", 41);

    // Turn 1: the caller interrupts the reply.
    say(&mut call, 1_000).await;
    listen_until(&mut call, "part of the reply", |log| media_count(log) >= 40).await;
    call.stream_audio(&speech(800)).await.expect("speech sent");
    call.wait_until("clear", WAIT, |log| {
        log.iter().any(|r| matches!(r, Received::Message { message: OutboundMessage::Clear { .. }, .. }))
    })
    .await
    .expect("clear");
    // The line goes quiet: the recogniser sends the words that make the barge-in real.
    call.stream_audio(&silence(600)).await.expect("silence sent");
    let interrupted = rig.next_report().await;
    assert!(interrupted.barge_in_onset.is_some());
    // Turn 2: heard to the end.
    let completed = rig.next_report().await;
    assert!(completed.first_audio_sent.is_some());

    let spans = finish_and_collect(&rig, call, &call_sid).await;
    let root = spans.iter().find(|s| s.span.name == "call").expect("call span");
    assert!(root.span.parent_span_id.is_empty(), "the call span is a root");
    assert_eq!(text(&root.span.attributes, "stream_sid"), Some(format!("MZ{:032}", 41).as_str()));
    assert!(text(&root.span.attributes, "call.outcome").is_some(), "{:?}", root.span.attributes);
    // The call's cost is on its span, by stage; stages without a price (speech here) count 0.
    let cost = |key: &str| number(&root.span.attributes, key).unwrap_or(f64::NAN);
    assert_eq!(text(&root.span.attributes, "parley.call.cost.currency"), Some("USD"));
    assert!(
        cost("parley.call.cost.llm") > 0.0 && cost("parley.call.cost.twilio") == 0.0085,
        "{:?}",
        root.span.attributes
    );
    let stages = ["stt", "llm", "tts", "twilio"].map(|stage| cost(&format!("parley.call.cost.{stage}")));
    assert!((cost("parley.call.cost") - stages.iter().sum::<f64>()).abs() < 1e-12);
    // The model's share is the token counts its `chat` spans report, at the configured prices.
    let tokens = |key: &str| -> f64 {
        spans.iter().filter(|s| s.span.name.starts_with("chat ")).filter_map(|s| number(&s.span.attributes, key)).sum()
    };
    let (input, output) = (tokens("gen_ai.usage.input_tokens"), tokens("gen_ai.usage.output_tokens"));
    assert!(input > 0.0 && output > 0.0);
    let expected = (input * 0.15 + output * 0.6) / 1e6;
    assert!((cost("parley.call.cost.llm") - expected).abs() < 1e-12, "{} ≠ {expected}", cost("parley.call.cost.llm"));
    assert_eq!(text(&root.resource, "service.name"), Some("parley-test"));
    assert_eq!(text(&root.resource, "service.instance.id"), Some("test-instance"));
    assert!(text(&root.resource, "service.version").is_some());

    // Only attributes that mean something: no build-machine source paths, thread ids or poll counters (on spans and
    // on the log events recorded in them), and no module name on spans.
    const NOISE: [&str; 7] =
        ["code.file.path", "code.line.number", "code.module.name", "thread.id", "thread.name", "busy_ns", "idle_ns"];
    for exported in &spans {
        let span = &exported.span;
        let keys = span.attributes.iter().chain(span.events.iter().flat_map(|e| &e.attributes)).map(|kv| &kv.key);
        for key in keys {
            assert!(!NOISE.contains(&key.as_str()), "span {} carries {key}", span.name);
        }
        assert!(text(&span.attributes, "target").is_none(), "span {} carries target", span.name);
    }

    let turns = children(&spans, &root.span);
    let turns: Vec<&Span> = turns.into_iter().filter(|s| s.name == "invoke_agent parley").collect();
    assert_eq!(turns.len(), 2, "{:#?}", spans.iter().map(|s| &s.span.name).collect::<Vec<_>>());
    assert_eq!(text(&turns[0].attributes, "gen_ai.agent.invocation.end_reason"), Some("interrupted"));
    assert_eq!(text(&turns[1].attributes, "gen_ai.agent.invocation.end_reason"), Some("completed"));
    assert_eq!(text(&turns[0].attributes, "gen_ai.conversation.id"), Some(call_sid.as_str()));
    let barge_in = turns[0].events.iter().find(|e| e.name == "barge_in").expect("a barge-in event");
    assert!(number(&barge_in.attributes, "voice.barge_in.reaction_ms").is_some());
    assert!(turns[1].events.iter().all(|e| e.name != "barge_in"));

    for turn in &turns {
        let stages = children(&spans, turn);
        let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        for expected in
            ["turn_detection", "speech_to_text deepgram", "chat gpt-test", "text_to_speech cartesia", "playout"]
        {
            assert!(names.contains(&expected), "{expected} missing under a turn: {names:?}");
        }
        for stage in &stages {
            assert!(stage.start_time_unix_nano >= turn.start_time_unix_nano, "{} starts before its turn", stage.name);
            assert!(stage.end_time_unix_nano <= turn.end_time_unix_nano, "{} ends after its turn", stage.name);
        }
        let chat = named(&stages, "chat ").expect("chat span");
        assert_eq!(text(&chat.attributes, "gen_ai.operation.name"), Some("chat"));
        assert_eq!(text(&chat.attributes, "gen_ai.request.model"), Some("gpt-test"));
        assert!(chat.events.iter().any(|e| e.name == "gen_ai.first_token"), "{:?}", chat.events);
        let tts = named(&stages, "text_to_speech").expect("tts span");
        assert!(number(&tts.attributes, "voice.tts.ttfb_ms").is_some());
    }
    let finished_chat = named(&children(&spans, turns[1]), "chat ").expect("chat span");
    assert!(text(&finished_chat.attributes, "gen_ai.response.id").is_some_and(|id| id.starts_with("req_fake_")));
    assert!(number(&finished_chat.attributes, "gen_ai.response.time_to_first_chunk").is_some());
    assert_eq!(text(&finished_chat.attributes, "voice.llm.route"), Some("fast"));
    // The fake reports usage as OpenAI does, cached prompt tokens included.
    assert!(number(&finished_chat.attributes, "gen_ai.usage.input_tokens").is_some_and(|n| n > 0.0));
    assert!(number(&finished_chat.attributes, "gen_ai.usage.cache_read.input_tokens").is_some());
}

async fn demo_bridge(db: &Path) -> (Arc<McpBridge>, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    let backend =
        DemoBackend::new(Store::open(db).expect("store").into(), Hooks { delay: Duration::ZERO, crash_once: None });
    let stop = CancellationToken::new();
    tokio::spawn(demo_backend::serve_http(listener, backend, stop.clone()));
    let server = McpServerConfig::new(
        "shop",
        McpTransportConfig::Http { url, bearer_token_env: None, headers_env: Default::default() },
    );
    let bridge = McpBridge::connect(McpConfig { servers: vec![server], ..McpConfig::default() }).await.expect("bridge");
    (Arc::new(bridge), stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_span_traceparent_reaches_the_backend() {
    setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("demo.db");
    let (tools, stop) = demo_bridge(&db).await;
    let openai = FakeOpenAiOptions::default()
        .reply(FakeReply::tool_call("call_1", "lookup_order", r#"{"order_id":"456"}"#))
        .after_tool(FakeReply::text("Here is what I found: {result}"));
    let mut rig = Rig::start(RigOptions { openai, tools, ..RigOptions::default() }).await;
    let mut call = rig.call(42).await;
    say(&mut call, 1_000).await;
    rig.next_report().await;

    let spans = finish_and_collect(&rig, call, &format!("CA{:032}", 42)).await;
    stop.cancel();
    let tool = spans.iter().map(|s| &s.span).find(|s| s.name == "execute_tool lookup_order").expect("tool span");
    assert_eq!(text(&tool.attributes, "gen_ai.tool.name"), Some("lookup_order"));
    assert_eq!(text(&tool.attributes, "gen_ai.tool.call.id"), Some("call_1"));
    assert_eq!(text(&tool.attributes, "mcp.server.name"), Some("shop"));
    assert_eq!(text(&tool.attributes, "voice.tool.outcome"), Some("ok"));
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (s.span.span_id.as_slice(), &s.span)).collect();
    let chat = by_id.get(tool.parent_span_id.as_slice()).expect("the tool's parent was exported");
    assert_eq!(chat.name, "chat gpt-test");
    let turn = by_id.get(chat.parent_span_id.as_slice()).expect("the chat span's parent was exported");
    assert_eq!(turn.name, "invoke_agent parley");

    let expected = format!("00-{}-{}-01", hex::encode(&tool.trace_id), hex::encode(&tool.span_id));
    let entries = demo_backend::read_journal(&db).expect("journal");
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0].meta["traceparent"], expected.as_str());
    assert_eq!(entries[0].http_traceparent.as_deref(), Some(expected.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_for_prometheus() {
    setup();
    let mut rig = Rig::start(RigOptions {
        openai: FakeOpenAiOptions::default().rule("table for two", FakeReply::text("Sure.")),
        deepgram: FakeDeepgramOptions::default(),
        ..RigOptions::default()
    })
    .await;
    let mut call = rig.call(43).await;
    say(&mut call, 1_000).await;
    rig.next_report().await;
    let url = format!("http://{}/metrics", rig.server.local_addr);
    let during = reqwest::get(&url).await.expect("GET /metrics").text().await.expect("body");
    assert!(during.lines().any(|l| l.starts_with("parley_calls_active") && !l.ends_with(" 0")), "{during}");
    let _ = finish_and_collect(&rig, call, &format!("CA{:032}", 43)).await;

    let response = reqwest::get(&url).await.expect("GET /metrics");
    assert!(response.status().is_success());
    let body = response.text().await.expect("body");
    for metric in [
        "parley_calls_total",
        "parley_turns_total",
        "parley_turn_first_audio_milliseconds_bucket",
        "parley_stage_duration_milliseconds_bucket{",
        "stage=\"llm_first_token\"",
        "parley_calls_active",
    ] {
        assert!(body.contains(metric), "{metric} missing from /metrics:\n{body}");
    }
}
