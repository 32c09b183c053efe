//! Hot functions of the media path, per 20 ms frame: μ-law coding, parsing a Twilio media message, the inbound
//! queue, and the sentence chunker.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use parley::audio::jitter::InboundFrameQueue;
use parley::audio::mulaw;
use parley::engine::chunker::{ChunkerConfig, SentenceChunker};
use parley::twilio::messages::{
    decode_payload_into, parse_frame, parse_inbound, InboundFrame, InboundMessage, OutboundMessage,
};
use parley::twilio::outbound::OutboundEncoder;
use parley::twilio::stream_state::{Step, StreamRules, StreamState};

fn media_frames(c: &mut Criterion) {
    let frame: Vec<u8> = (0..160u32).map(|i| mulaw::encode_sample(((i as f32 / 3.0).sin() * 9000.0) as i16)).collect();
    let pcm = mulaw::decode(&frame);
    let message = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto-fixtures/twilio/media.json"))
        .expect("media fixture");

    c.bench_function("mulaw decode 20 ms", |b| {
        let mut out = Vec::with_capacity(160);
        b.iter(|| mulaw::decode_into(std::hint::black_box(&frame), &mut out))
    });
    c.bench_function("mulaw encode 20 ms", |b| b.iter(|| mulaw::encode(std::hint::black_box(&pcm))));
    c.bench_function("parse + decode twilio media message", |b| {
        b.iter(|| match parse_inbound(std::hint::black_box(&message), 65_536) {
            Ok(InboundMessage::Media(media)) => media.media.decode_payload(65_536).map(|p| p.len()).unwrap_or(0),
            _ => 0,
        })
    });
    c.bench_function("parse (in place) + decode (reused buffer) twilio media message", |b| {
        let mut audio = Vec::new();
        b.iter(|| match parse_frame(std::hint::black_box(&message), 65_536) {
            Ok(InboundFrame::Media(media)) => {
                decode_payload_into(&media.media.payload, 65_536, &mut audio).map(|()| audio.len()).unwrap_or(0)
            }
            _ => 0,
        })
    });
    let stream_sid: Arc<str> = Arc::from("MZ18ad3ab5a668481ce02b83e7395059f0");
    let frame_bytes = Bytes::from(frame.clone());
    c.bench_function("serialize outbound media message", |b| {
        b.iter(|| OutboundMessage::media(Arc::clone(&stream_sid), std::hint::black_box(frame_bytes.clone())).to_json())
    });
    c.bench_function("outbound media frame to a WebSocket text message", |b| {
        let mut encoder = OutboundEncoder::new();
        b.iter(|| {
            let message = OutboundMessage::media(Arc::clone(&stream_sid), std::hint::black_box(frame_bytes.clone()));
            encoder.encode(&message).map(axum::extract::ws::Utf8Bytes::try_from)
        })
    });
    c.bench_function("inbound queue push + pop, in order", |b| {
        let payload = frame.clone();
        b.iter_batched(
            || InboundFrameQueue::new(3, 10_000),
            |mut queue| {
                for chunk in 1..=50u64 {
                    queue.push(chunk, chunk * 20, &payload);
                    std::hint::black_box(queue.pop());
                }
            },
            BatchSize::SmallInput,
        )
    });
}

/// Frames per batch of the per-call benchmarks: one second of a call.
const CALL_FRAMES: u64 = 50;

/// One second of a call's media messages as Twilio sends them: chunks 1..=50, 20 ms apart, 160 bytes each.
fn call_messages(template: &str) -> Vec<String> {
    (1..=CALL_FRAMES)
        .map(|chunk| {
            template
                .replace("\"chunk\": \"1\"", &format!("\"chunk\": \"{chunk}\""))
                .replace("\"timestamp\": \"5\"", &format!("\"timestamp\": \"{}\"", (chunk - 1) * 20))
        })
        .collect()
}

/// The edge's whole inbound path per media message, as the session runs it: the stream state parses the message and
/// decodes its payload, the jitter queue frames it, and every ready frame is taken (and kept, as the agent keeps it).
/// Criterion reports the time of 50 messages.
fn inbound_path(c: &mut Criterion) {
    let read = |name: &str| {
        std::fs::read_to_string(format!("{}/proto-fixtures/twilio/{name}", env!("CARGO_MANIFEST_DIR"))).expect(name)
    };
    let start = read("start.json");
    let messages = call_messages(&read("media.json"));
    let rules =
        StreamRules { max_frame_bytes: 65_536, ahead_margin: Duration::from_millis(1_000), expected_call_sid: None };
    c.bench_function("inbound media path, 50 messages (parse + decode + queue + pop)", |b| {
        b.iter_batched(
            || {
                let mut state = StreamState::new(rules.clone());
                assert!(matches!(state.on_frame(&start, Duration::ZERO), Step::Start(_)));
                (state, InboundFrameQueue::new(3, 10_000), Vec::with_capacity(CALL_FRAMES as usize))
            },
            |(mut state, mut queue, mut kept)| {
                for (n, message) in messages.iter().enumerate() {
                    let now = Duration::from_millis(n as u64 * 20);
                    if let Step::Audio { chunk, timestamp_ms, payload } =
                        state.on_frame(std::hint::black_box(message), now)
                    {
                        queue.push(chunk, timestamp_ms, payload);
                    }
                    while let Some(frame) = queue.pop() {
                        kept.push(frame);
                    }
                }
                assert_eq!(kept.len(), CALL_FRAMES as usize);
                (state, queue, kept)
            },
            BatchSize::SmallInput,
        )
    });
}

fn chunker(c: &mut Criterion) {
    let tokens: Vec<String> =
        "Sure, let me check that for you. Order 456 shipped on Monday; it should arrive by Friday. \
        Is there anything else I can help you with today?"
            .split_inclusive(' ')
            .map(str::to_owned)
            .collect();
    c.bench_function("chunk a 3-sentence reply token by token", |b| {
        b.iter(|| {
            let now = tokio::time::Instant::now();
            let mut chunker = SentenceChunker::new(ChunkerConfig::default());
            let mut pieces = 0;
            for token in &tokens {
                pieces += chunker.push(token, now).len();
            }
            pieces + usize::from(chunker.finish(now).is_some())
        })
    });
}

criterion_group!(benches, media_frames, inbound_path, chunker);
criterion_main!(benches);
