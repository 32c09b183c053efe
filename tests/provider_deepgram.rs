//! The Deepgram live client driven against the fake Deepgram server: real sockets, real audio, scripted answers.

use std::time::Duration;

use bytes::Bytes;
use fake_providers::deepgram::{silence_mulaw, speech_mulaw, FakeDeepgram, FakeDeepgramOptions, ReceivedFrame, Script};
use parley::stt::deepgram::{Deepgram, DeepgramConfig};
use parley::stt::{SpeechToText, SttError, SttEvent, SttInput, SttSession, Transcript};

/// Only guards against hangs; nothing is asserted about timing.
const PATIENCE: Duration = Duration::from_secs(10);

fn client(fake: &FakeDeepgram) -> Deepgram {
    Deepgram::new(DeepgramConfig {
        base_url: fake.base_url(),
        api_key: "test-key".to_owned(),
        ..DeepgramConfig::default()
    })
}

async fn open(fake: &FakeDeepgram) -> SttSession {
    client(fake).open().await.expect("session opens")
}

/// Sends audio the way the engine does: 20 ms (160-byte) frames.
async fn send_audio(session: &SttSession, audio: &[u8]) {
    for frame in audio.chunks(160) {
        session.input.send(SttInput::Audio(Bytes::copy_from_slice(frame))).await.expect("session accepts audio");
    }
}

async fn next_event(session: &mut SttSession) -> SttEvent {
    tokio::time::timeout(PATIENCE, session.events.recv())
        .await
        .expect("an event before the timeout")
        .expect("the session is still open")
}

/// Collects events up to and including the first one matching `last`.
async fn events_until(session: &mut SttSession, last: impl Fn(&SttEvent) -> bool) -> Vec<SttEvent> {
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

fn is_utterance_end(event: &SttEvent) -> bool {
    matches!(event, SttEvent::UtteranceEnd { .. })
}

fn transcripts(events: &[SttEvent]) -> Vec<&Transcript> {
    events
        .iter()
        .filter_map(|event| match event {
            SttEvent::Transcript(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-6, "{actual} != {expected}");
}

#[tokio::test]
async fn transcripts_flow_with_speech_final_and_utterance_end() {
    let fake = FakeDeepgram::start(FakeDeepgramOptions::default()).await.unwrap();
    let mut session = open(&fake).await;

    // First turn: 1 s of speech, then enough silence for the 300 ms endpointing.
    let mut audio = speech_mulaw(1000);
    audio.extend(silence_mulaw(600));
    send_audio(&session, &audio).await;
    let events = events_until(&mut session, is_utterance_end).await;

    assert!(matches!(events[0], SttEvent::SpeechStarted { timestamp } if timestamp == 0.0), "{:?}", events[0]);
    let texts = transcripts(&events);
    assert_eq!(texts.len(), 3, "{events:?}");
    assert_eq!(texts[0].text, "book a");
    assert!(!texts[0].is_final);
    assert_eq!(texts[1].text, "Book a table");
    assert!(texts[1].is_final && !texts[1].speech_final);
    assert_eq!(texts[2].text, "for two.");
    assert!(texts[2].is_final && texts[2].speech_final && !texts[2].from_finalize);
    assert_close(texts[2].start, 0.7);
    let finals: Vec<&str> = texts.iter().filter(|t| t.is_final).map(|t| t.text.as_str()).collect();
    assert_eq!(finals.join(" "), Script::builtin().final_text(0));
    assert!(matches!(events.last(), Some(SttEvent::UtteranceEnd { last_word_end }) if *last_word_end == 1.2));

    // Second turn starts 1.6 s into the stream: the fake shifts the script's times to the audio clock.
    let mut audio = speech_mulaw(500);
    audio.extend(silence_mulaw(600));
    send_audio(&session, &audio).await;
    let events = events_until(&mut session, is_utterance_end).await;
    assert!(
        matches!(events[0], SttEvent::SpeechStarted { timestamp } if (timestamp - 1.6).abs() < 1e-6),
        "{:?}",
        events[0]
    );
    let last = transcripts(&events).into_iter().last().expect("a transcript").clone();
    assert_eq!(last.text, "At seven, please.");
    assert!(last.speech_final);
    assert_close(last.start, 1.6);
    assert!(
        matches!(events.last(), Some(SttEvent::UtteranceEnd { last_word_end }) if (*last_word_end - 2.2).abs() < 1e-6)
    );

    session.input.send(SttInput::Close).await.unwrap();
    assert!(matches!(next_event(&mut session).await, SttEvent::Closed));

    let record = &fake.connections()[0];
    let expected_query = [
        ("model", "nova-3"),
        ("encoding", "mulaw"),
        ("sample_rate", "8000"),
        ("channels", "1"),
        ("interim_results", "true"),
        ("utterance_end_ms", "1000"),
        ("vad_events", "true"),
        ("endpointing", "300"),
        ("smart_format", "true"),
        ("language", "en"),
    ];
    for (key, value) in expected_query {
        assert_eq!(record.query_param(key), Some(value), "query parameter {key}");
    }
    assert_eq!(record.authorization.as_deref(), Some("Token test-key"));
    // The audio arrived as binary frames, byte for byte what was sent (raw μ-law, no base64, no transcoding).
    let mut sent = speech_mulaw(1000);
    sent.extend(silence_mulaw(600));
    sent.extend(speech_mulaw(500));
    sent.extend(silence_mulaw(600));
    assert_eq!(record.audio(), sent);
    assert_eq!(record.binary_frames(), sent.len() / 160);
    assert_eq!(record.control_types().last().map(String::as_str), Some("CloseStream"));
    assert!(record.sent.last().is_some_and(|m| m.contains("\"Metadata\"")));
}

#[tokio::test]
async fn finalize_flushes_results_marked_from_finalize() {
    let fake = FakeDeepgram::start(FakeDeepgramOptions::default()).await.unwrap();
    let mut session = open(&fake).await;

    // Speech with no silence after it: only Finalize can end it.
    send_audio(&session, &speech_mulaw(800)).await;
    assert!(matches!(next_event(&mut session).await, SttEvent::SpeechStarted { .. }));
    session.input.send(SttInput::Finalize).await.unwrap();
    let events = events_until(&mut session, |e| matches!(e, SttEvent::Transcript(t) if t.text == "for two.")).await;
    let texts = transcripts(&events);
    assert_eq!(texts.len(), 2, "only finals are flushed: {events:?}");
    for transcript in &texts {
        assert!(transcript.is_final && transcript.from_finalize && !transcript.speech_final, "{transcript:?}");
    }
    assert_eq!(texts[0].text, "Book a table");

    // Dropping the input closes the session politely.
    let SttSession { input, mut events } = session;
    drop(input);
    let closed = tokio::time::timeout(PATIENCE, events.recv()).await.unwrap();
    assert!(matches!(closed, Some(SttEvent::Closed)), "{closed:?}");
    let mut types = fake.connections()[0].control_types();
    types.retain(|t| t != "KeepAlive");
    assert_eq!(types, ["Finalize", "CloseStream"]);
}

#[tokio::test]
async fn keepalive_is_sent_as_text_while_no_audio_flows() {
    let fake = FakeDeepgram::start(FakeDeepgramOptions::default()).await.unwrap();
    let provider = Deepgram::new(DeepgramConfig {
        base_url: fake.base_url(),
        api_key: "test-key".to_owned(),
        keepalive_interval: Duration::from_millis(50),
        ..DeepgramConfig::default()
    });
    let session = provider.open().await.unwrap();

    let got_two = fake
        .wait_for(PATIENCE, |records| {
            records.first().is_some_and(|r| r.control_types().iter().filter(|t| *t == "KeepAlive").count() >= 2)
        })
        .await;
    assert!(got_two, "no KeepAlive arrived: {:?}", fake.connections());
    let record = &fake.connections()[0];
    assert_eq!(record.binary_frames(), 0, "KeepAlive must never be a binary frame");
    for frame in &record.received {
        if let ReceivedFrame::Text(text) = frame {
            assert_eq!(text, r#"{"type":"KeepAlive"}"#);
        }
    }
    drop(session);
}

#[tokio::test]
async fn rejected_handshake_is_a_clear_error() {
    let fake =
        FakeDeepgram::start(FakeDeepgramOptions { reject_handshake: Some(401), ..FakeDeepgramOptions::default() })
            .await
            .unwrap();
    let error = match client(&fake).open().await {
        Ok(_) => panic!("the handshake should have been refused"),
        Err(error) => error,
    };
    let SttError::Rejected { provider, status, detail } = &error else {
        panic!("not a rejection: {error:?}");
    };
    assert_eq!(*provider, "deepgram");
    assert_eq!(*status, 401);
    assert!(detail.contains("FAKE_REJECTED"), "{detail}");
    assert!(error.to_string().contains("HTTP 401"), "{error}");
    assert!(!error.to_string().contains("test-key"));
    let records = fake.connections();
    assert_eq!(records[0].rejected, Some(401));
    assert_eq!(records[0].authorization.as_deref(), Some("Token test-key"));
}

#[tokio::test]
async fn unreachable_server_is_a_connect_error() {
    // Bind and release a port so nothing listens on it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let provider = Deepgram::new(DeepgramConfig {
        base_url: format!("ws://127.0.0.1:{port}"),
        api_key: "test-key".to_owned(),
        ..DeepgramConfig::default()
    });
    assert!(matches!(provider.open().await, Err(SttError::Connect { .. })));
}

#[tokio::test]
async fn dropped_connection_mid_stream_is_an_error_event() {
    // SpeechStarted and the interim get through, then the fake drops the TCP connection without a close frame.
    let fake =
        FakeDeepgram::start(FakeDeepgramOptions { drop_after_messages: Some(2), ..FakeDeepgramOptions::default() })
            .await
            .unwrap();
    let mut session = open(&fake).await;
    let mut audio = speech_mulaw(1000);
    audio.extend(silence_mulaw(600));
    send_audio(&session, &audio).await;

    let events = events_until(&mut session, |e| matches!(e, SttEvent::Error(_) | SttEvent::Closed)).await;
    assert!(matches!(events[0], SttEvent::SpeechStarted { .. }), "{events:?}");
    assert!(matches!(&events[1], SttEvent::Transcript(t) if t.text == "book a" && !t.is_final), "{events:?}");
    assert!(
        matches!(events.last(), Some(SttEvent::Error(SttError::Disconnected { provider: "deepgram", .. }))),
        "{events:?}"
    );
    assert_eq!(events.len(), 3, "{events:?}");
    // The session is over: its event channel ends.
    let after = tokio::time::timeout(PATIENCE, session.events.recv()).await.unwrap();
    assert!(after.is_none(), "{after:?}");
}

#[tokio::test]
async fn malformed_json_and_unknown_types_are_skipped() {
    let fake = FakeDeepgram::start(FakeDeepgramOptions {
        send_malformed_json: true,
        send_unknown_type: true,
        ..FakeDeepgramOptions::default()
    })
    .await
    .unwrap();
    let mut session = open(&fake).await;
    let mut audio = speech_mulaw(1000);
    audio.extend(silence_mulaw(600));
    send_audio(&session, &audio).await;

    let events = events_until(&mut session, is_utterance_end).await;
    let texts: Vec<&str> = transcripts(&events).iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, ["book a", "Book a table", "for two."]);
    assert!(events.iter().all(|e| !matches!(e, SttEvent::Error(_))), "{events:?}");
    // The garbage really was sent before the results.
    let sent = &fake.connections()[0].sent;
    assert!(sent.iter().any(|m| serde_json::from_str::<serde_json::Value>(m).is_err()));
    assert!(sent.iter().any(|m| m.contains("FutureMessage")));
    session.input.send(SttInput::Close).await.unwrap();
    assert!(matches!(next_event(&mut session).await, SttEvent::Closed));
}

#[tokio::test]
async fn server_error_message_ends_the_session() {
    let error = include_str!("../proto-fixtures/deepgram/error.json");
    let script = Script::from_json(&format!(r#"{{"utterances": [[{error}]]}}"#)).unwrap();
    let fake = FakeDeepgram::start(FakeDeepgramOptions { script, ..FakeDeepgramOptions::default() }).await.unwrap();
    let mut session = open(&fake).await;
    let mut audio = speech_mulaw(400);
    audio.extend(silence_mulaw(400));
    send_audio(&session, &audio).await;

    let events = events_until(&mut session, |e| matches!(e, SttEvent::Error(_) | SttEvent::Closed)).await;
    let Some(SttEvent::Error(SttError::Provider { detail, .. })) = events.last() else {
        panic!("no provider error: {events:?}");
    };
    assert!(detail.contains("SchemaError"), "{detail}");
}

#[tokio::test]
async fn inputs_queued_while_the_session_was_busy_all_go_out_in_order() {
    let fake = FakeDeepgram::start(FakeDeepgramOptions::default()).await.unwrap();
    let session = open(&fake).await;
    // Queued without yielding, as an engine under load queues them: far more than one socket write takes, with a
    // finalize in the middle and the close last.
    let frames: Vec<Vec<u8>> = (0..200u8).map(|n| vec![n; 160]).collect();
    for (n, frame) in frames.iter().enumerate() {
        session.input.try_send(SttInput::Audio(Bytes::copy_from_slice(frame))).expect("the input holds the backlog");
        if n == 99 {
            session.input.try_send(SttInput::Finalize).unwrap();
        }
    }
    session.input.try_send(SttInput::Close).unwrap();
    let ended = fake.wait_for(Duration::from_secs(5), |records| records.first().is_some_and(|r| r.ended)).await;
    assert!(ended, "the session never closed");
    let record = fake.connections().remove(0);
    assert_eq!(record.binary_frames(), 200, "every frame is its own message");
    assert_eq!(record.audio(), frames.concat(), "the audio arrives whole and in order");
    assert_eq!(record.control_types(), ["Finalize", "CloseStream"]);
    let finalize_at = record.received.iter().position(|frame| matches!(frame, ReceivedFrame::Text(_))).unwrap();
    assert_eq!(finalize_at, 100, "the finalize follows the audio queued before it");
}
