//! The Cartesia client driven against the fake Cartesia server: real sockets, contexts, cancels and faults.

use std::time::Duration;

use base64::Engine as _;
use fake_providers::cartesia::{ErrorShape, FakeCartesia, FakeCartesiaOptions, LATE_CHUNK_BYTE};
use parley::tts::cartesia::{Cartesia, CartesiaConfig};
use parley::tts::{TextToSpeech, TtsError, TtsEvent, TtsInput, TtsSession};

/// Only guards against hangs; nothing is asserted about timing.
const PATIENCE: Duration = Duration::from_secs(10);
const VOICE: &str = "a0e99841-438c-4a64-b679-ae501e7d6091";

async fn start(options: FakeCartesiaOptions) -> (FakeCartesia, TtsSession) {
    let fake = FakeCartesia::start(options).await.unwrap();
    let provider = Cartesia::new(CartesiaConfig {
        base_url: fake.base_url(),
        api_key: "test-key".to_owned(),
        voice_id: VOICE.to_owned(),
        ..CartesiaConfig::default()
    });
    let session = provider.open().await.expect("session opens");
    (fake, session)
}

async fn text(session: &TtsSession, context: &str, text: &str, last: bool) {
    let input = TtsInput::Text { context: context.to_owned(), text: text.to_owned(), last };
    session.input.send(input).await.expect("session accepts text");
}

async fn next_event(session: &mut TtsSession) -> TtsEvent {
    tokio::time::timeout(PATIENCE, session.events.recv())
        .await
        .expect("an event before the timeout")
        .expect("the session is still open")
}

/// Collects events up to and including the first one matching `last`.
async fn events_until(session: &mut TtsSession, last: impl Fn(&TtsEvent) -> bool) -> Vec<TtsEvent> {
    let mut events = Vec::new();
    loop {
        let event = next_event(session).await;
        let done = last(&event);
        events.push(event);
        if done {
            return events;
        }
    }
}

fn is_done(context: &'static str) -> impl Fn(&TtsEvent) -> bool {
    move |event| matches!(event, TtsEvent::Done { context: c } if c == context)
}

/// All audio of one context, in arrival order.
fn audio_of(events: &[TtsEvent], context: &str) -> Vec<u8> {
    events
        .iter()
        .filter_map(|event| match event {
            TtsEvent::Audio { context: c, mulaw } if c == context => Some(mulaw.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The audio the fake sent for a context, decoded from its own record.
fn audio_sent(fake: &FakeCartesia, context: &str) -> Vec<u8> {
    fake.connections()[0]
        .sent_for(context)
        .iter()
        .filter(|m| m["type"] == "chunk")
        .filter_map(|m| m["data"].as_str())
        .flat_map(|data| base64::engine::general_purpose::STANDARD.decode(data).unwrap())
        .collect()
}

#[tokio::test]
async fn streamed_text_becomes_mulaw_audio_then_done() {
    let (fake, mut session) = start(FakeCartesiaOptions::default()).await;
    text(&session, "turn-1", "Hello, ", false).await;
    text(&session, "turn-1", "world.", true).await;
    let events = events_until(&mut session, is_done("turn-1")).await;

    let audio = audio_of(&events, "turn-1");
    // 13 characters at 60 ms each, 8 bytes per ms.
    assert_eq!(audio.len(), 13 * 60 * 8);
    assert_eq!(audio, audio_sent(&fake, "turn-1"), "audio is forwarded exactly as decoded");
    assert!(events[..events.len() - 1]
        .iter()
        .all(|e| matches!(e, TtsEvent::Audio { context, .. } if context == "turn-1")));

    let record = &fake.connections()[0];
    assert_eq!(record.query_param("cartesia_version"), Some("2025-04-16"));
    assert_eq!(record.version_header.as_deref(), Some("2025-04-16"));
    assert_eq!(record.authorization.as_deref(), Some("Bearer test-key"));
    let requests = record.requests_for("turn-1");
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["continue"], true);
    assert_eq!(requests[1]["continue"], false);
    // Parley sends whole pieces: no server-side text buffer (Cartesia's default, when left out, is 3 s).
    assert!(requests.iter().all(|r| r["max_buffer_delay_ms"] == 0), "{requests:?}");
    assert_eq!(record.transcript_of("turn-1"), "Hello, world.");
    for request in &requests {
        assert_eq!(request["model_id"], "sonic-3");
        assert_eq!(request["voice"], serde_json::json!({"mode": "id", "id": VOICE}));
        assert_eq!(request["language"], "en");
        assert_eq!(
            request["output_format"],
            serde_json::json!({"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000})
        );
    }
    // Every field but transcript and continue is identical across a context's requests, as Cartesia requires.
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("transcript");
            o.remove("continue");
        }
        v
    };
    assert_eq!(strip(requests[0]), strip(requests[1]));
}

#[tokio::test]
async fn empty_last_text_closes_the_context() {
    let (fake, mut session) = start(FakeCartesiaOptions::default()).await;
    text(&session, "turn-1", "Sure thing.", false).await;
    text(&session, "turn-1", "", true).await;
    let events = events_until(&mut session, is_done("turn-1")).await;
    assert_eq!(audio_of(&events, "turn-1").len(), 11 * 60 * 8);
    let record = &fake.connections()[0];
    let requests = record.requests_for("turn-1");
    assert_eq!(requests[1]["transcript"], "");
    assert_eq!(requests[1]["continue"], false);
}

#[tokio::test]
async fn many_contexts_share_one_socket() {
    let (fake, mut session) = start(FakeCartesiaOptions::default()).await;
    text(&session, "a", "One.", true).await;
    text(&session, "b", "Two, three.", true).await;
    let mut events = Vec::new();
    let mut done = Vec::new();
    while done.len() < 2 {
        let event = next_event(&mut session).await;
        if let TtsEvent::Done { context } = &event {
            done.push(context.clone());
        }
        events.push(event);
    }
    done.sort();
    assert_eq!(done, ["a", "b"]);
    assert_eq!(audio_of(&events, "a").len(), 4 * 60 * 8);
    assert_eq!(audio_of(&events, "b").len(), 11 * 60 * 8);
    assert_eq!(fake.connections().len(), 1);
}

#[tokio::test]
async fn cancel_is_sent_and_late_audio_is_dropped() {
    let (fake, mut session) =
        start(FakeCartesiaOptions { late_chunk_after_cancel: true, ..FakeCartesiaOptions::default() }).await;
    // A long reply: 6 s of audio, still streaming when the barge-in comes.
    let long = "This reply is long enough to still be streaming when the caller interrupts it, surely.";
    text(&session, "turn-1", long, false).await;
    let first = next_event(&mut session).await;
    assert!(matches!(&first, TtsEvent::Audio { context, .. } if context == "turn-1"), "{first:?}");

    session.input.send(TtsInput::Cancel { context: "turn-1".to_owned() }).await.unwrap();
    // Text still arriving from the LLM for the cancelled reply must not reach Cartesia.
    text(&session, "turn-1", " More words.", true).await;
    text(&session, "turn-2", "Okay.", true).await;
    let events = events_until(&mut session, is_done("turn-2")).await;

    assert!(
        !events.iter().any(|e| matches!(e, TtsEvent::Done { context } if context == "turn-1")),
        "a cancelled context must not report done"
    );
    let leaked = events
        .iter()
        .any(|e| matches!(e, TtsEvent::Audio { mulaw, .. } if mulaw.iter().all(|&b| b == LATE_CHUNK_BYTE)));
    assert!(!leaked, "the late chunk reached the engine");
    assert_eq!(audio_of(&events, "turn-2").len(), 5 * 60 * 8);

    let record = &fake.connections()[0];
    assert_eq!(record.cancels(), ["turn-1"]);
    let cancel = record.received.iter().find(|m| m["cancel"] == true).unwrap();
    assert_eq!(cancel, &serde_json::json!({"context_id": "turn-1", "cancel": true}));
    assert_eq!(record.requests_for("turn-1").len(), 1, "text after cancel was forwarded");
    // The fake really did send the late chunk and done, so the client dropped them.
    let sent = record.sent_for("turn-1");
    assert!(sent.iter().any(|m| m["type"] == "done"));
    let late = base64::engine::general_purpose::STANDARD.encode([LATE_CHUNK_BYTE; 800]);
    assert!(sent.iter().any(|m| m["data"] == late.as_str()));
}

async fn error_for_context(shape: ErrorShape) {
    let (_fake, mut session) = start(FakeCartesiaOptions {
        fail_context: Some("bad".to_owned()),
        error_shape: shape,
        ..FakeCartesiaOptions::default()
    })
    .await;
    text(&session, "bad", "This will fail.", true).await;
    let event = next_event(&mut session).await;
    let TtsEvent::Error { context: Some(context), error: TtsError::Provider { provider, detail } } = event else {
        panic!("not a context error: {event:?}");
    };
    assert_eq!(context, "bad");
    assert_eq!(provider, "cartesia");
    assert!(detail.contains("Invalid model"), "{detail}");
    assert!(detail.contains("400"), "{detail}");

    // The session survives a context error.
    text(&session, "good", "Fine.", true).await;
    let events = events_until(&mut session, is_done("good")).await;
    assert_eq!(audio_of(&events, "good").len(), 5 * 60 * 8);
}

#[tokio::test]
async fn current_error_shape_maps_to_a_context_error() {
    error_for_context(ErrorShape::Current).await;
}

#[tokio::test]
async fn legacy_error_shape_maps_to_a_context_error() {
    error_for_context(ErrorShape::Legacy).await;
}

#[tokio::test]
async fn dropped_connection_is_a_session_error_then_closed() {
    let (_fake, mut session) =
        start(FakeCartesiaOptions { drop_after_messages: Some(2), ..FakeCartesiaOptions::default() }).await;
    text(&session, "turn-1", "A reply that the network cuts short.", true).await;
    let events = events_until(&mut session, |e| matches!(e, TtsEvent::Closed)).await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(matches!(&events[0], TtsEvent::Audio { .. }));
    assert!(matches!(&events[1], TtsEvent::Audio { .. }));
    assert!(
        matches!(&events[2], TtsEvent::Error { context: None, error: TtsError::Disconnected { .. } }),
        "{events:?}"
    );
    let after = tokio::time::timeout(PATIENCE, session.events.recv()).await.unwrap();
    assert!(after.is_none());
}

#[tokio::test]
async fn rejected_handshake_is_a_rejection_with_its_status() {
    let fake =
        FakeCartesia::start(FakeCartesiaOptions { reject_handshake: Some(401), ..FakeCartesiaOptions::default() })
            .await
            .unwrap();
    let provider = Cartesia::new(CartesiaConfig {
        base_url: fake.base_url(),
        api_key: "test-key".to_owned(),
        ..CartesiaConfig::default()
    });
    let error = match provider.open().await {
        Ok(_) => panic!("the handshake should have been refused"),
        Err(error) => error,
    };
    let TtsError::Rejected { provider: "cartesia", status: 401, .. } = &error else {
        panic!("not a rejection: {error:?}");
    };
    assert!(error.to_string().contains("HTTP 401"), "{error}");
    assert!(!error.to_string().contains("test-key"));
    assert_eq!(fake.connections()[0].rejected, Some(401));
}

#[tokio::test]
async fn close_ends_the_session() {
    let (fake, mut session) = start(FakeCartesiaOptions::default()).await;
    session.input.send(TtsInput::Close).await.unwrap();
    assert!(matches!(next_event(&mut session).await, TtsEvent::Closed));
    let ended = fake.wait_for(PATIENCE, |records| records.first().is_some_and(|r| r.ended)).await;
    assert!(ended, "the fake never saw the socket close");
}
