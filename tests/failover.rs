//! Failover under injected faults: each stage's ordered provider list moves on from a provider that is down or
//! failing to the next, and keeps the failed one at the back while it cools down. Real clients against fake
//! servers on 127.0.0.1; "down" is a port nothing listens on.

use std::sync::Arc;
use std::time::Duration;

use fake_providers::cartesia::{FakeCartesia, FakeCartesiaOptions};
use fake_providers::deepgram::{FakeDeepgram, FakeDeepgramOptions};
use fake_providers::openai::{self, FakeOpenAiOptions, FakeReply};
use futures_util::StreamExt;
use parley::llm::failover::FailoverLlm;
use parley::llm::openai::{OpenAiCompatible, OpenAiConfig};
use parley::llm::{ChatMessage, LanguageModel, LlmError, LlmEvent, LlmRequest};
use parley::stt::deepgram::{Deepgram, DeepgramConfig};
use parley::stt::deepgram_flux::{DeepgramFlux, FluxConfig};
use parley::stt::failover::FailoverStt;
use parley::stt::{SpeechToText, SttError, SttInput};
use parley::tts::cartesia::{Cartesia, CartesiaConfig};
use parley::tts::elevenlabs::{ElevenLabs, ElevenLabsConfig};
use parley::tts::failover::FailoverTts;
use parley::tts::{TextToSpeech, TtsError, TtsEvent, TtsInput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const COOLDOWN: Duration = Duration::from_secs(30);

/// A base URL on a port nothing listens on.
fn down(scheme: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("{scheme}://127.0.0.1:{port}")
}

fn chat(base_url: String) -> Arc<dyn LanguageModel> {
    let config =
        OpenAiConfig { base_url, api_key: Some("k".into()), model: "gpt-test".into(), ..OpenAiConfig::default() };
    Arc::new(OpenAiCompatible::new(config).unwrap())
}

fn request() -> LlmRequest {
    LlmRequest { messages: vec![ChatMessage::user("Hello")], tools: Vec::new() }
}

async fn text_of(model: &dyn LanguageModel) -> Result<String, LlmError> {
    let mut stream = model.stream(request()).await?;
    let mut text = String::new();
    while let Some(event) = stream.next().await {
        if let LlmEvent::TextDelta(piece) = event? {
            text.push_str(&piece);
        }
    }
    Ok(text)
}

#[tokio::test]
async fn a_failing_model_hands_over_to_the_next_and_stays_at_the_back() {
    let failing =
        openai::start(FakeOpenAiOptions::default().no_delays().fallback(FakeReply::http_500())).await.unwrap();
    let healthy =
        openai::start(FakeOpenAiOptions::default().no_delays().fallback(FakeReply::text("Hi there."))).await.unwrap();
    let failover = FailoverLlm::new(vec![chat(failing.base_url()), chat(healthy.base_url())], COOLDOWN);
    assert_eq!(text_of(&failover).await.unwrap(), "Hi there.");
    assert_eq!(text_of(&failover).await.unwrap(), "Hi there.");
    assert_eq!(failing.requests().len(), 1, "the failed model is skipped while it cools down");
    assert_eq!(healthy.requests().len(), 2);
}

#[tokio::test]
async fn rate_limits_and_unreachable_models_fail_over_and_all_down_reports_the_last_error() {
    let limited =
        openai::start(FakeOpenAiOptions::default().no_delays().fallback(FakeReply::rate_limited())).await.unwrap();
    let healthy =
        openai::start(FakeOpenAiOptions::default().no_delays().fallback(FakeReply::text("Yes."))).await.unwrap();
    let failover =
        FailoverLlm::new(vec![chat(down("http")), chat(limited.base_url()), chat(healthy.base_url())], COOLDOWN);
    assert_eq!(text_of(&failover).await.unwrap(), "Yes.");

    let all_down = FailoverLlm::new(vec![chat(down("http")), chat(limited.base_url())], COOLDOWN);
    match text_of(&all_down).await {
        Err(LlmError::Http { status: 429, .. }) => {}
        other => panic!("expected the last provider's 429, got {other:?}"),
    }
}

/// A model that accepts the request and then sends nothing counts as failed once its first-token limit passes,
/// like a 5xx: the next model gives the whole reply, and the silent one stays at the back while it cools down.
#[tokio::test]
async fn a_model_that_sends_no_first_token_hands_over_to_the_next() {
    let first_token = Duration::from_millis(300);
    let silent =
        openai::start(FakeOpenAiOptions::default().no_delays().fallback(FakeReply::text("Never said.").stall_after(1)))
            .await
            .unwrap();
    let healthy =
        openai::start(FakeOpenAiOptions::default().no_delays().fallback(FakeReply::text("Hi there."))).await.unwrap();
    let with_limit = |base_url: String| -> Arc<dyn LanguageModel> {
        let config = OpenAiConfig {
            base_url,
            first_token_timeout: first_token,
            idle_timeout: Duration::from_secs(60),
            ..OpenAiConfig::default()
        };
        Arc::new(OpenAiCompatible::new(config).unwrap())
    };
    let failover = FailoverLlm::new(vec![with_limit(silent.base_url()), with_limit(healthy.base_url())], COOLDOWN);
    let started = tokio::time::Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(20), text_of(&failover)).await.expect("no answer at all");
    assert_eq!(reply.unwrap(), "Hi there.");
    assert!(started.elapsed() >= first_token, "moved on after {:?}", started.elapsed());
    assert_eq!(text_of(&failover).await.unwrap(), "Hi there.");
    assert_eq!(silent.requests().len(), 1, "the silent model is skipped while it cools down");
    assert_eq!(healthy.requests().len(), 2);
}

#[tokio::test]
async fn speech_to_text_opens_on_the_fallback_when_the_primary_is_down() {
    let deepgram = FakeDeepgram::start(FakeDeepgramOptions::default()).await.unwrap();
    let stt = |base_url: String| -> Arc<dyn SpeechToText> {
        Arc::new(Deepgram::new(DeepgramConfig { base_url, api_key: "k".into(), ..DeepgramConfig::default() }))
    };
    let failover = FailoverStt::new(vec![stt(down("ws")), stt(deepgram.base_url())], COOLDOWN);
    let session = failover.open().await.expect("the fallback accepts the session");
    session.input.send(SttInput::Audio(bytes::Bytes::from(vec![0xFFu8; 160]))).await.unwrap();
    session.input.send(SttInput::Close).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while deepgram.connections().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(deepgram.connections().len(), 1);
}

#[tokio::test]
async fn text_to_speech_opens_on_the_fallback_and_speaks() {
    let cartesia = FakeCartesia::start(FakeCartesiaOptions::default()).await.unwrap();
    let tts = |base_url: String| -> Arc<dyn TextToSpeech> {
        Arc::new(Cartesia::new(CartesiaConfig {
            base_url,
            api_key: "k".into(),
            voice_id: "v".into(),
            ..CartesiaConfig::default()
        }))
    };
    let failover = FailoverTts::new(vec![tts(down("ws")), tts(cartesia.base_url())], COOLDOWN);
    let mut session = failover.open().await.expect("the fallback accepts the session");
    session.input.send(TtsInput::Text { context: "c1".into(), text: "Hello.".into(), last: true }).await.unwrap();
    let mut audio = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), session.events.recv()).await {
            Ok(Some(TtsEvent::Audio { mulaw, .. })) => audio += mulaw.len(),
            Ok(Some(TtsEvent::Done { .. })) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(audio > 0);
}

/// A server on 127.0.0.1 that answers every WebSocket upgrade with `401 Unauthorized`, as a provider does for a
/// wrong key. Returns its `ws://` root.
async fn refusing_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let body = "Invalid credentials.";
                let answer = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("ws://{addr}")
}

/// Every WebSocket provider reports a refused handshake the same way: `Rejected` with the HTTP status and the
/// server's reason, never a generic connection failure, so failover, logs and `parley check` read it alike.
#[tokio::test]
async fn a_401_on_the_handshake_is_the_same_rejection_from_every_websocket_provider() {
    let base_url = refusing_server().await;
    let key = || "wrong-key".to_owned();
    let stt: Vec<Arc<dyn SpeechToText>> = vec![
        Arc::new(Deepgram::new(DeepgramConfig { base_url: base_url.clone(), api_key: key(), ..Default::default() })),
        Arc::new(DeepgramFlux::new(FluxConfig { base_url: base_url.clone(), api_key: key(), ..Default::default() })),
    ];
    let tts: Vec<Arc<dyn TextToSpeech>> = vec![
        Arc::new(Cartesia::new(CartesiaConfig {
            base_url: base_url.clone(),
            api_key: key(),
            voice_id: "v".into(),
            ..Default::default()
        })),
        Arc::new(ElevenLabs::new(ElevenLabsConfig {
            base_url: base_url.clone(),
            api_key: key(),
            voice_id: "v".into(),
            ..Default::default()
        })),
    ];
    let mut reports = Vec::new();
    for provider in stt {
        match provider.open().await {
            Err(SttError::Rejected { provider: name, status, detail }) => reports.push((name, status, detail)),
            Err(other) => panic!("{}: not a rejection: {other}", provider.name()),
            Ok(_) => panic!("{}: the handshake should have been refused", provider.name()),
        }
    }
    for provider in tts {
        match provider.open().await {
            Err(TtsError::Rejected { provider: name, status, detail }) => reports.push((name, status, detail)),
            Err(other) => panic!("{}: not a rejection: {other}", provider.name()),
            Ok(_) => panic!("{}: the handshake should have been refused", provider.name()),
        }
    }
    let names: Vec<&str> = reports.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(names, ["deepgram", "deepgram-flux", "cartesia", "elevenlabs"]);
    for (name, status, detail) in &reports {
        assert_eq!((*status, detail.as_str()), (401, "Invalid credentials."), "{name}");
    }
}
