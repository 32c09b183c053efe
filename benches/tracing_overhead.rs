//! What tracing costs on the media path: the same per-frame work (parse a Twilio media message, decode its μ-law)
//! polled inside the call's span, and the per-turn span building, with tracing off (no OTel layer, span building
//! skipped) and on (the OpenTelemetry layer and SDK, exporting to an exporter that discards the spans).

use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use parley::audio::mulaw;
use parley::engine::latency::TurnLatency;
use parley::telemetry::otel;
use parley::telemetry::spans::{StageProviders, TurnEnd, TurnTrace};
use parley::twilio::messages::{parse_inbound, InboundMessage};
use tokio::time::{Duration, Instant};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt;

/// Takes the spans and drops them, so the benchmark measures Parley and the SDK, not a network.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        drop(batch);
        Ok(())
    }
}

fn frame_work(message: &str, out: &mut Vec<i16>) -> usize {
    match parse_inbound(std::hint::black_box(message), 65_536) {
        Ok(InboundMessage::Media(media)) => match media.media.decode_payload(65_536) {
            Ok(payload) => {
                mulaw::decode_into(&payload, out);
                out.len()
            }
            Err(_) => 0,
        },
        _ => 0,
    }
}

fn a_turn(parent: &opentelemetry::Context) {
    let t = Instant::now();
    let at = |ms: u64| Some(t + Duration::from_millis(ms));
    let latency = TurnLatency {
        turn_index: 1,
        speech_ended: at(0),
        stt_final: at(300),
        end_of_turn: at(310),
        llm_request_sent: at(311),
        llm_first_token: at(500),
        first_piece_ready: at(520),
        first_piece: at(520),
        first_tts_request: at(521),
        first_tts_audio: at(600),
        first_audio_sent: at(602),
        ..TurnLatency::default()
    };
    let trace = TurnTrace::start(parent, "CA00000000000000000000000000000001", 1, latency.speech_ended);
    let providers = StageProviders { stt: "deepgram", tts: "cartesia" };
    trace.finish(&latency, at(900), t + Duration::from_millis(2_000), TurnEnd::Completed, &providers);
}

fn tracing_cost(c: &mut Criterion) {
    let message = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto-fixtures/twilio/media.json"))
        .expect("media fixture");
    let mut out = Vec::with_capacity(160);

    // Off: no subscriber with an OTel layer; the span exists but records nothing, turn spans are not built.
    let span = tracing::info_span!("call", call_sid = "CA1");
    c.bench_function("frame in call span, tracing off", |b| {
        b.iter(|| span.in_scope(|| frame_work(&message, &mut out)))
    });
    let none = opentelemetry::Context::new();
    c.bench_function("turn spans, tracing off", |b| b.iter(|| a_turn(&none)));

    // On: Parley's tracing-opentelemetry layer and an SDK provider whose batch processor discards the spans.
    let provider = SdkTracerProvider::builder().with_batch_exporter(Discard).build();
    otel::activate(&provider);
    let subscriber = tracing_subscriber::registry().with(parley::telemetry::span_layer(&provider));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("call", call_sid = "CA1");
        c.bench_function("frame in call span, tracing on", |b| {
            b.iter(|| span.in_scope(|| frame_work(&message, &mut out)))
        });
        let parent = span.context();
        c.bench_function("turn spans, tracing on", |b| b.iter(|| a_turn(&parent)));
    });
    let _ = provider.shutdown();
}

criterion_group!(benches, tracing_cost);
criterion_main!(benches);
