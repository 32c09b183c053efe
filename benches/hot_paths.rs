//! Hot functions of the media path, per 20 ms frame: μ-law coding, parsing a Twilio media message, the inbound
//! queue, and the sentence chunker.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use parley::audio::jitter::InboundFrameQueue;
use parley::audio::mulaw;
use parley::engine::chunker::{ChunkerConfig, SentenceChunker};
use parley::twilio::messages::{parse_inbound, InboundMessage, OutboundMessage};

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
    c.bench_function("serialize outbound media message", |b| {
        b.iter(|| OutboundMessage::media("MZ18ad3ab5a668481ce02b83e7395059f0", std::hint::black_box(&frame)).to_json())
    });
    c.bench_function("inbound queue push + pop, in order", |b| {
        let payload = Bytes::from(frame.clone());
        b.iter_batched(
            || InboundFrameQueue::new(3, 10_000),
            |mut queue| {
                for chunk in 1..=50u64 {
                    queue.push(chunk, chunk * 20, payload.clone());
                    std::hint::black_box(queue.pop());
                }
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

criterion_group!(benches, media_frames, chunker);
criterion_main!(benches);
