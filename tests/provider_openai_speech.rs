//! The OpenAI speech client against the fake `/v1/audio/speech` server: real HTTP, 24 kHz PCM converted to μ-law.
//!
//! Timeouts here only keep a broken build from hanging; no assertion depends on how fast anything is.

use std::time::Duration;

use fake_providers::openai_speech::{self as fake, FakeOpenAiSpeech, FakeOpenAiSpeechOptions, FakeSpeechReply};
use parley::audio::mulaw;
use parley::tts::openai_speech::{OpenAiSpeech, OpenAiSpeechConfig};
use parley::tts::{TextToSpeech, TtsError, TtsEvent, TtsInput, TtsSession};

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start_fake(options: FakeOpenAiSpeechOptions) -> FakeOpenAiSpeech {
    match fake::start(options).await {
        Ok(server) => server,
        Err(error) => panic!("fake speech server did not start: {error}"),
    }
}

async fn session_for(server: &FakeOpenAiSpeech) -> TtsSession {
    let config =
        OpenAiSpeechConfig { base_url: server.base_url(), api_key: Some("sk-test".into()), ..Default::default() };
    let client = match OpenAiSpeech::new(config) {
        Ok(client) => client,
        Err(error) => panic!("client config rejected: {error}"),
    };
    match client.open().await {
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

/// Audio of `context` until its Done (or an error, returned instead).
async fn audio_until_done(session: &mut TtsSession, context: &str) -> Result<Vec<u8>, TtsError> {
    let mut audio = Vec::new();
    loop {
        match next_event(session).await {
            TtsEvent::Audio { context: c, mulaw } if c == context => audio.extend_from_slice(&mulaw),
            TtsEvent::Done { context: c } if c == context => return Ok(audio),
            TtsEvent::Error { context: Some(c), error } if c == context => return Err(error),
            other => panic!("unexpected event {other:?}"),
        }
    }
}

#[tokio::test]
async fn pieces_become_requests_and_8khz_mulaw_of_the_right_length() {
    let server = start_fake(FakeOpenAiSpeechOptions::default()).await;
    let mut session = session_for(&server).await;
    send(&session, text("turn-1", "Hello there. ", false)).await;
    send(&session, text("turn-1", "How can I help?", true)).await;
    let audio = match audio_until_done(&mut session, "turn-1").await {
        Ok(audio) => audio,
        Err(error) => panic!("synthesis failed: {error}"),
    };
    // Each request's 24 kHz samples become a third as many 8 kHz bytes.
    let expected = server.samples_for("Hello there.").div_ceil(3) + server.samples_for("How can I help?").div_ceil(3);
    assert_eq!(audio.len(), expected);
    // The 440 Hz tone survives the conversion: decoded RMS near 8000/√2.
    let pcm = mulaw::decode(&audio[200..audio.len() - 200]);
    let rms = (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    assert!((rms - 5657.0).abs() < 600.0, "rms {rms}");
    let requests = server.requests();
    let inputs: Vec<_> = requests.iter().filter_map(|r| r.input()).collect();
    assert_eq!(inputs, vec!["Hello there.", "How can I help?"]);
    assert_eq!(requests[0].authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(requests[0].body.get("response_format").and_then(|v| v.as_str()), Some("pcm"));
    send(&session, TtsInput::Close).await;
    assert!(matches!(next_event(&mut session).await, TtsEvent::Closed));
}

#[tokio::test]
async fn cancel_aborts_the_request_and_nothing_more_arrives_for_the_context() {
    let options = FakeOpenAiSpeechOptions::default().reply(FakeSpeechReply::StallAfter { chunks: 1 });
    let server = start_fake(options).await;
    let mut session = session_for(&server).await;
    send(&session, text("turn-1", "A long reply the caller interrupts.", true)).await;
    assert!(matches!(next_event(&mut session).await, TtsEvent::Audio { context, .. } if context == "turn-1"));
    send(&session, TtsInput::Cancel { context: "turn-1".into() }).await;
    assert!(server.wait_for_disconnects(1, PATIENCE).await, "the server never saw the request aborted");
    // The next reply is spoken normally, and the cancelled one reports nothing (no Done, no late audio).
    send(&session, text("turn-2", "Yes?", true)).await;
    match audio_until_done(&mut session, "turn-2").await {
        Ok(audio) => assert_eq!(audio.len(), server.samples_for("Yes?").div_ceil(3)),
        Err(error) => panic!("synthesis failed: {error}"),
    }
}

#[tokio::test]
async fn http_errors_end_the_context_with_the_providers_message() {
    let reply = FakeSpeechReply::Http { status: 401, message: "Incorrect API key provided.".into() };
    let server = start_fake(FakeOpenAiSpeechOptions::default().reply(reply)).await;
    let mut session = session_for(&server).await;
    send(&session, text("turn-1", "Hello.", true)).await;
    match audio_until_done(&mut session, "turn-1").await {
        Err(TtsError::Rejected { status: 401, detail, .. }) => {
            assert!(detail.contains("Incorrect API key"), "{detail}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // The session survives a failed context.
    send(&session, text("turn-2", "Hi.", true)).await;
    assert!(audio_until_done(&mut session, "turn-2").await.is_ok());
}
