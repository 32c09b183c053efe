//! Each production provider holds a whole simulated call: a Twilio caller talks to Parley's cascade, which uses the
//! Anthropic, ElevenLabs and OpenAI speech clients against their fake servers on 127.0.0.1 (Deepgram Flux has its
//! own call in `tests/speculative.rs`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::init_logs;
use fake_providers::anthropic::{self, FakeAnthropicOptions};
use fake_providers::elevenlabs::{self, FakeElevenLabsOptions};
use fake_providers::openai_speech::{self, FakeOpenAiSpeechOptions};
use loadgen::{listen_until, media_count, say, Rig, RigOptions};
use parley::llm::anthropic::{Anthropic, AnthropicConfig};
use parley::tts::elevenlabs::{ElevenLabs, ElevenLabsConfig};
use parley::tts::openai_speech::{OpenAiSpeech, OpenAiSpeechConfig};

/// The fake Deepgram's first scripted utterance.
const FIRST_UTTERANCE: &str = "Book a table for two.";
const REPLY: &str = "Sure, for what time?";

#[tokio::test]
async fn a_call_with_anthropic_thinking_and_elevenlabs_speaking() {
    init_logs();
    let claude = anthropic::start(FakeAnthropicOptions {
        fallback: anthropic::FakeReply::text(REPLY),
        first_token_delay: Duration::from_millis(50),
        inter_token_delay: Duration::ZERO,
        ..FakeAnthropicOptions::default()
    })
    .await
    .unwrap();
    let voice = elevenlabs::start(FakeElevenLabsOptions::default()).await.unwrap();
    let llm = Anthropic::new(AnthropicConfig {
        base_url: claude.base_url(),
        api_key: "sk-ant-test".into(),
        ..AnthropicConfig::default()
    })
    .unwrap();
    let tts = ElevenLabs::new(ElevenLabsConfig {
        base_url: voice.base_url(),
        api_key: "xi-test".into(),
        voice_id: "voice-1".into(),
        ..ElevenLabsConfig::default()
    });
    let mut rig =
        Rig::start(RigOptions { llm: Some(Arc::new(llm)), tts: Some(Arc::new(tts)), ..RigOptions::default() }).await;
    let mut call = rig.call(1).await;
    say(&mut call, 1_000).await;
    let report = rig.next_report().await;
    assert!(report.first_audio_sent.is_some(), "{report:?}");

    let requests = claude.requests();
    assert_eq!(requests.len(), 1);
    let last_user = requests[0].body["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
    assert!(last_user.to_string().contains(FIRST_UTTERANCE), "{last_user}");
    // ElevenLabs was given the reply in the reply's own context and its audio reached the caller.
    let spoken: String = voice.messages_for("t1-r1").iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(spoken.split_whitespace().collect::<Vec<_>>().join(" "), REPLY);
    listen_until(&mut call, "the reply's audio", |log| media_count(log) * 160 >= REPLY.len() * 80 - 320).await;
    assert!(voice.close_codes().is_empty(), "{:?}", voice.close_codes());
    call.hang_up().await;
}

#[tokio::test]
async fn a_call_with_openai_speech_speaking() {
    init_logs();
    let speech = openai_speech::start(FakeOpenAiSpeechOptions::default()).await.unwrap();
    let tts = OpenAiSpeech::new(OpenAiSpeechConfig {
        base_url: speech.base_url(),
        api_key: Some("sk-test".into()),
        ..OpenAiSpeechConfig::default()
    })
    .unwrap();
    let openai =
        fake_providers::openai::FakeOpenAiOptions::default().fallback(fake_providers::openai::FakeReply::text(REPLY));
    let mut rig = Rig::start(RigOptions { openai, tts: Some(Arc::new(tts)), ..RigOptions::default() }).await;
    let mut call = rig.call(1).await;
    say(&mut call, 1_000).await;
    let report = rig.next_report().await;
    assert!(report.first_audio_sent.is_some(), "{report:?}");
    let inputs: Vec<String> = speech.requests().iter().filter_map(|r| r.input().map(str::to_owned)).collect();
    let squeeze = |text: &str| text.split_whitespace().collect::<String>();
    assert_eq!(squeeze(&inputs.concat()), squeeze(REPLY), "{inputs:?}");
    // 24 kHz PCM from the server, 8 kHz μ-law to the caller: a third of the samples, one byte each.
    let expected_bytes: usize = inputs.iter().map(|input| speech.samples_for(input) / 3).sum();
    listen_until(&mut call, "the reply's audio", |log| media_count(log) * 160 + 320 >= expected_bytes).await;
    call.hang_up().await;
}
