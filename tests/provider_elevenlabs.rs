//! The ElevenLabs client against the fake `multi-stream-input` server: real WebSocket, documented message shapes.
//!
//! Timeouts here only keep a broken build from hanging; no assertion depends on how fast anything is.

use std::time::Duration;

use fake_providers::elevenlabs::{self as fake, FakeElevenLabs, FakeElevenLabsOptions};
use parley::tts::elevenlabs::{ElevenLabs, ElevenLabsConfig};
use parley::tts::{TextToSpeech, TtsError, TtsEvent, TtsInput, TtsSession};
use serde_json::json;

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start_fake(options: FakeElevenLabsOptions) -> FakeElevenLabs {
    match fake::start(options).await {
        Ok(server) => server,
        Err(error) => panic!("fake ElevenLabs server did not start: {error}"),
    }
}

fn config_for(server: &FakeElevenLabs) -> ElevenLabsConfig {
    ElevenLabsConfig {
        base_url: server.base_url(),
        api_key: "xi-test".into(),
        voice_id: "voice-1".into(),
        ..ElevenLabsConfig::default()
    }
}

async fn open(config: ElevenLabsConfig) -> Result<TtsSession, TtsError> {
    match tokio::time::timeout(PATIENCE, ElevenLabs::new(config).open()).await {
        Ok(result) => result,
        Err(_) => panic!("open did not return"),
    }
}

async fn session_for(server: &FakeElevenLabs) -> TtsSession {
    match open(config_for(server)).await {
        Ok(session) => session,
        Err(error) => panic!("open failed: {error}"),
    }
}

async fn send(session: &TtsSession, input: TtsInput) {
    if session.input.send(input).await.is_err() {
        panic!("the session stopped taking input");
    }
}

fn text(context: &str, text: &str, last: bool) -> TtsInput {
    TtsInput::Text { context: context.into(), text: text.into(), last }
}

async fn next_event(session: &mut TtsSession) -> TtsEvent {
    match tokio::time::timeout(PATIENCE, session.events.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the session ended without Closed"),
        Err(_) => panic!("no event within {PATIENCE:?}"),
    }
}

/// Audio bytes of `context` until its Done; panics on any event of another context.
async fn audio_until_done(session: &mut TtsSession, context: &str) -> usize {
    let mut bytes = 0;
    loop {
        match next_event(session).await {
            TtsEvent::Audio { context: c, mulaw } if c == context => bytes += mulaw.len(),
            TtsEvent::Done { context: c } if c == context => return bytes,
            other => panic!("unexpected event while waiting for {context}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn many_sequential_replies_share_one_socket_within_the_context_limit() {
    let server = start_fake(FakeElevenLabsOptions::default()).await;
    let mut session = session_for(&server).await;
    for turn in 0..8 {
        let context = format!("turn-{turn}");
        send(&session, text(&context, "Sure,", false)).await;
        send(&session, text(&context, "one moment.", true)).await;
        // "Sure, one moment." is 17 characters of 80 bytes each.
        assert_eq!(audio_until_done(&mut session, &context).await, 17 * 80);
    }
    assert!(server.close_codes().is_empty(), "{:?}", server.close_codes());
    let first = server.messages_for("turn-0");
    assert_eq!(first.first(), Some(&json!({"text": " ", "context_id": "turn-0"})));
    assert_eq!(first.get(1), Some(&json!({"text": "Sure, ", "context_id": "turn-0"})));
    assert!(first.contains(&json!({"context_id": "turn-0", "flush": true})));
    assert_eq!(first.last(), Some(&json!({"context_id": "turn-0", "close_context": true})));
    send(&session, TtsInput::Close).await;
    assert!(matches!(next_event(&mut session).await, TtsEvent::Closed));
}

#[tokio::test]
async fn late_audio_of_a_cancelled_reply_is_dropped() {
    let options = FakeElevenLabsOptions { pause_after_chunks: Some(1), ..FakeElevenLabsOptions::default() };
    let server = start_fake(options).await;
    let mut session = session_for(&server).await;
    send(&session, text("turn-1", "A long answer that the caller is going to interrupt.", true)).await;
    assert!(matches!(next_event(&mut session).await, TtsEvent::Audio { context, .. } if context == "turn-1"));
    // The fake holds turn-1's remaining audio until turn-2 opens, so all of it arrives after the cancel.
    send(&session, TtsInput::Cancel { context: "turn-1".into() }).await;
    send(&session, text("turn-2", "Yes?", true)).await;
    assert_eq!(audio_until_done(&mut session, "turn-2").await, 4 * 80);
    // turn-1 was already flushed and closed: nothing more names it (the server may have finished it already).
    let closes = server.messages_for("turn-1").iter().filter(|m| m.get("close_context") == Some(&json!(true))).count();
    assert_eq!(closes, 1, "only the end-of-reply close");
    assert!(server.close_codes().is_empty(), "{:?}", server.close_codes());
}

#[tokio::test]
async fn cancelling_a_reply_still_taking_text_closes_its_context() {
    let server = start_fake(FakeElevenLabsOptions::default()).await;
    let mut session = session_for(&server).await;
    send(&session, text("turn-1", "Let me see,", false)).await;
    send(&session, TtsInput::Cancel { context: "turn-1".into() }).await;
    send(&session, text("turn-2", "Yes?", true)).await;
    assert_eq!(audio_until_done(&mut session, "turn-2").await, 4 * 80);
    let turn_1 = server.messages_for("turn-1");
    assert_eq!(turn_1.last(), Some(&json!({"context_id": "turn-1", "close_context": true})), "{turn_1:?}");
    assert!(server.close_codes().is_empty(), "{:?}", server.close_codes());
}

#[tokio::test]
async fn more_than_five_open_replies_fail_locally_instead_of_losing_the_socket() {
    let server = start_fake(FakeElevenLabsOptions::default()).await;
    let mut session = session_for(&server).await;
    for turn in 0..6 {
        send(&session, text(&format!("turn-{turn}"), "Hello", false)).await;
    }
    match next_event(&mut session).await {
        TtsEvent::Error { context: Some(context), error: TtsError::Provider { .. } } => assert_eq!(context, "turn-5"),
        other => panic!("expected an error for the sixth reply, got {other:?}"),
    }
    // Finishing one frees a slot.
    send(&session, text("turn-0", "", true)).await;
    assert_eq!(audio_until_done(&mut session, "turn-0").await, 5 * 80);
    send(&session, text("turn-6", "Hi", true)).await;
    assert_eq!(audio_until_done(&mut session, "turn-6").await, 2 * 80);
    assert!(server.close_codes().is_empty(), "{:?}", server.close_codes());
}

#[tokio::test]
async fn a_missing_key_is_rejected_at_the_handshake() {
    let server = start_fake(FakeElevenLabsOptions::default()).await;
    match open(ElevenLabsConfig { api_key: String::new(), ..config_for(&server) }).await {
        Err(TtsError::Rejected { provider: "elevenlabs", status: 401, .. }) => {}
        Err(other) => panic!("expected a rejection, got {other}"),
        Ok(_) => panic!("expected the handshake to fail"),
    }
}
