//! The Deepgram Flux client against the fake `/v2/listen` server: real WebSocket, fixture turn events.
//!
//! Timeouts here only keep a broken build from hanging; no assertion depends on how fast anything is.

use std::time::Duration;

use bytes::Bytes;
use fake_providers::deepgram_flux::{self as fake, FakeFlux, FakeFluxOptions};
use parley::stt::deepgram_flux::{DeepgramFlux, FluxConfig};
use parley::stt::{SpeechToText, SttError, SttEvent, SttInput, SttSession, TurnEvent};

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start_fake(fixture: &str) -> FakeFlux {
    match fake::start(FakeFluxOptions::replay(fixture)).await {
        Ok(server) => server,
        Err(error) => panic!("fake Flux server did not start: {error}"),
    }
}

fn config_for(server: &FakeFlux) -> FluxConfig {
    FluxConfig {
        base_url: server.base_url(),
        api_key: "dg-test".into(),
        eager_eot_threshold: Some(0.5),
        ..FluxConfig::default()
    }
}

async fn open(config: FluxConfig) -> Result<SttSession, SttError> {
    match tokio::time::timeout(PATIENCE, DeepgramFlux::new(config).open()).await {
        Ok(result) => result,
        Err(_) => panic!("open did not return"),
    }
}

/// Streams 4 s of μ-law silence in 20 ms frames, closes, and returns every event until the session ends.
async fn run_call(server: &FakeFlux) -> Vec<SttEvent> {
    let mut session = match open(config_for(server)).await {
        Ok(session) => session,
        Err(error) => panic!("open failed: {error}"),
    };
    for _ in 0..200 {
        if session.input.send(SttInput::Audio(Bytes::from_static(&[0xFF; 160]))).await.is_err() {
            panic!("the session stopped taking audio");
        }
    }
    let _ = session.input.send(SttInput::Close).await;
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, session.events.recv()).await {
            Ok(Some(SttEvent::Closed)) | Ok(None) => return events,
            Ok(Some(event)) => events.push(event),
            Err(_) => panic!("no event within {PATIENCE:?}; so far {events:?}"),
        }
    }
}

fn turns(events: &[SttEvent]) -> Vec<(TurnEvent, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            SttEvent::TurnInfo { event, transcript } => Some((*event, transcript.clone())),
            _ => None,
        })
        .collect()
}

fn final_transcripts(events: &[SttEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            SttEvent::Transcript(t) if t.is_final && t.speech_final => Some(t.text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn eager_end_of_turn_confirmed_by_end_of_turn() {
    let server = start_fake("eager_then_end.jsonl").await;
    let events = run_call(&server).await;
    assert_eq!(
        turns(&events),
        vec![
            (TurnEvent::StartOfTurn, "hello".into()),
            (TurnEvent::EagerEndOfTurn, "hello there".into()),
            (TurnEvent::EndOfTurn, "hello there".into()),
        ]
    );
    assert_eq!(final_transcripts(&events), vec!["hello there".to_owned()]);
    assert!(matches!(events.first(), Some(SttEvent::SpeechStarted { .. })));
    let connections = server.connections();
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].audio_bytes, 200 * 160);
    assert_eq!(connections[0].query.get("eager_eot_threshold").map(String::as_str), Some("0.5"));
    assert_eq!(connections[0].control, vec![r#"{"type":"CloseStream"}"#.to_owned()]);
}

#[tokio::test]
async fn eager_end_of_turn_then_resumed() {
    let server = start_fake("eager_then_resumed.jsonl").await;
    let events = run_call(&server).await;
    let kinds: Vec<TurnEvent> = turns(&events).into_iter().map(|(event, _)| event).collect();
    assert_eq!(
        kinds,
        vec![TurnEvent::StartOfTurn, TurnEvent::EagerEndOfTurn, TurnEvent::TurnResumed, TurnEvent::EndOfTurn]
    );
    // Only the real end of turn produces a final transcript, with the longer text.
    assert_eq!(final_transcripts(&events), vec!["my order is four five six".to_owned()]);
}

#[tokio::test]
async fn a_missing_key_is_rejected() {
    let server = start_fake("eager_then_end.jsonl").await;
    match open(FluxConfig { api_key: String::new(), ..config_for(&server) }).await {
        Err(SttError::Rejected { status, .. }) => assert_eq!(status, 401),
        Err(other) => panic!("expected a rejection, got {other}"),
        Ok(_) => panic!("expected the handshake to fail"),
    }
}
