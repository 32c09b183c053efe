//! Allocations per media frame on the edge's hot paths, counted by this test binary's allocator: a call's fifty
//! frames a second each way must not allocate once the call is under way (the whole point of the in-place parse,
//! the reused decode and encode buffers and the framer's blocks).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use parley::audio::jitter::InboundFrameQueue;
use parley::twilio::messages::{parse_inbound, InboundMessage, OutboundMessage};
use parley::twilio::outbound::OutboundEncoder;
use parley::twilio::stream_state::{Step, StreamRules, StreamState};

thread_local! {
    /// Allocations made by this thread (a constant initialiser: no destructor, so counting allocates nothing).
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting per thread so tests running beside each other do not disturb the counts.
struct Counting;

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations `work` made on this thread.
fn allocations(work: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    work();
    ALLOCATIONS.with(Cell::get) - before
}

const STREAM: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";
const FRAMES: u64 = 500;

fn fixture(name: &str) -> String {
    let path = format!("{}/proto-fixtures/twilio/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Media messages as Twilio sends them: chunk `n` at `(n - 1) * 20` ms.
fn media_messages(chunks: std::ops::RangeInclusive<u64>) -> Vec<String> {
    let template = fixture("media.json");
    chunks
        .map(|chunk| {
            template
                .replace("\"chunk\": \"1\"", &format!("\"chunk\": \"{chunk}\""))
                .replace("\"timestamp\": \"5\"", &format!("\"timestamp\": \"{}\"", (chunk - 1) * 20))
        })
        .collect()
}

/// Feeds messages through the stream state and the jitter queue as the session does; frames go to `kept`.
fn feed(
    state: &mut StreamState,
    queue: &mut InboundFrameQueue,
    messages: &[String],
    first: u64,
    kept: &mut Vec<Bytes>,
) {
    for (n, message) in messages.iter().enumerate() {
        let now = Duration::from_millis((first + n as u64) * 20);
        match state.on_frame(message, now) {
            Step::Audio { chunk, timestamp_ms, payload } => queue.push(chunk, timestamp_ms, payload),
            other => panic!("not audio: {other:?}"),
        }
        while let Some(frame) = queue.pop() {
            if kept.len() < kept.capacity() {
                kept.push(frame);
            }
        }
    }
}

#[test]
fn inbound_media_does_not_allocate_per_frame() {
    let rules = StreamRules { max_frame_bytes: 65_536, ahead_margin: Duration::from_secs(1), expected_call_sid: None };
    let mut state = StreamState::new(rules);
    assert!(matches!(state.on_frame(&fixture("start.json"), Duration::ZERO), Step::Start(_)));
    let mut queue = InboundFrameQueue::new(3, 10_000);
    let warm_up = media_messages(1..=100);
    let call = media_messages(101..=100 + FRAMES);
    feed(&mut state, &mut queue, &warm_up, 0, &mut Vec::new());

    // Frames the agent is done with at once: the framer's block is reused, nothing is allocated.
    let mut dropped = Vec::new();
    let used = allocations(|| feed(&mut state, &mut queue, &call[..250], 100, &mut dropped));
    println!("inbound, frames dropped at once: {used} allocations for 250 frames");
    assert_eq!(used, 0);

    // Frames the agent keeps: one block (and its shared header) per second of audio.
    let mut kept = Vec::with_capacity(250);
    let used = allocations(|| feed(&mut state, &mut queue, &call[250..], 350, &mut kept));
    println!("inbound, every frame kept: {used} allocations for 250 frames");
    assert_eq!(kept.len(), 250);
    assert!(used <= 2 * 250 / 50 + 2, "{used} allocations for 250 frames");

    // The old path, for the record: parse into owned strings, decode into a new buffer.
    let message = &call[0];
    let used = allocations(|| {
        for _ in 0..100 {
            if let Ok(InboundMessage::Media(media)) = parse_inbound(message, 65_536) {
                let _ = media.media.decode_payload(65_536);
            }
        }
    });
    println!("parse_inbound + decode_payload: {} allocations a message", used as f64 / 100.0);
}

#[test]
fn outbound_media_does_not_allocate_per_frame() {
    let stream_sid: Arc<str> = Arc::from(STREAM);
    let frame = Bytes::from(vec![0x55u8; 160]);
    let mut encoder = OutboundEncoder::new();
    let send = |encoder: &mut OutboundEncoder| {
        let message = OutboundMessage::media(Arc::clone(&stream_sid), frame.clone());
        let text = encoder.encode(&message).map(Utf8Bytes::try_from);
        assert!(matches!(text, Ok(Ok(_))));
    };
    send(&mut encoder);
    let used = allocations(|| (0..FRAMES).for_each(|_| send(&mut encoder)));
    println!("outbound media through the encoder: {used} allocations for {FRAMES} frames");
    assert_eq!(used, 0);

    // The old path, for the record: base64 into a new string, JSON into another.
    let used = allocations(|| {
        for _ in 0..100 {
            let text = Utf8Bytes::from(OutboundMessage::media(Arc::clone(&stream_sid), frame.clone()).to_json());
            assert!(!text.is_empty());
        }
    });
    println!("OutboundMessage::to_json into a text frame: {} allocations a message", used as f64 / 100.0);
}
