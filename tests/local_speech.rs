//! The local engines end to end: eSpeak NG speaks, Whisper listens. Needs `espeak-ng` and the model that
//! `scripts/fetch-whisper-model` installs (both come with `scripts/setup`).
// Without the `whisper` feature, only the tests that need no Whisper model are built.
#![cfg_attr(not(feature = "whisper"), allow(unused_imports, dead_code))]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parley::audio::mulaw;
use parley::local::{EspeakSettings, WhisperEngine, WhisperSettings};
use parley::stt::whisper::WhisperStt;
use parley::stt::{SpeechToText, SttEvent, SttInput};
use parley::transcribe::wer::wer;
use parley::tts::espeak::{synthesize_mulaw, Espeak};
use parley::tts::{TextToSpeech, TtsEvent, TtsInput};

/// Two sentences of the kind callers say. (Whisper tiny.en mishears some phrases of synthetic speech once it is cut
/// to the telephone band — "check the status" comes back as "can't understand" — so the test material is ordinary
/// caller speech, not a phrase chosen to be hard.)
const SENTENCE: &str = "i want to cancel my order. can you tell me where my package is";

/// The demo caller's voice: espeak-ng's third male variant, a little slower than its default.
fn caller_voice() -> EspeakSettings {
    EspeakSettings { voice: "en-us+m3".into(), speed: 140, ..EspeakSettings::default() }
}

#[cfg(feature = "whisper")]
fn engine() -> Arc<WhisperEngine> {
    let settings = WhisperSettings::default();
    match WhisperEngine::load(&settings) {
        Ok(engine) => Arc::new(engine),
        Err(err) => panic!("these tests need the Whisper model: {err}"),
    }
}

async fn spoken(text: &str) -> Vec<u8> {
    synthesize_mulaw(&caller_voice(), text).await.expect("espeak-ng must be installed (scripts/setup)")
}

#[cfg(feature = "whisper")]
#[tokio::test]
async fn whisper_understands_espeak_over_the_phone() {
    let engine = engine();
    let mut pcm = vec![0i16; 4000];
    pcm.extend(mulaw::decode(&spoken(SENTENCE).await));
    pcm.extend(vec![0i16; 4000]);
    let text = engine.transcribe_phone(pcm).await.unwrap();
    let error = wer(SENTENCE, &text);
    println!("whisper heard {text:?}: WER {:.1}%", error * 100.0);
    assert!(error < 0.2, "WER {error} for {text:?}");
}

#[cfg(feature = "whisper")]
#[tokio::test]
async fn the_stt_provider_reports_an_utterance_streamed_in_real_time() {
    let stt = WhisperStt::new(engine(), Default::default());
    let mut session = stt.open().await.unwrap();
    let mut audio = vec![mulaw::encode_sample(0); 8000];
    audio.extend(spoken(SENTENCE).await);
    // A second of silence after speech ends the utterance.
    audio.extend(vec![mulaw::encode_sample(0); 8000]);
    let input = session.input.clone();
    let feeder = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for frame in audio.chunks(160) {
            tick.tick().await;
            if input.send(SttInput::Audio(Bytes::copy_from_slice(frame))).await.is_err() {
                return;
            }
        }
    });
    let mut started = false;
    let transcript = loop {
        match session.events.recv().await.expect("session ended without a transcript") {
            SttEvent::SpeechStarted { timestamp } => {
                assert!(timestamp > 0.5, "speech began after a second of silence, reported at {timestamp}");
                started = true;
            }
            SttEvent::Transcript(transcript) => break transcript,
            SttEvent::Error(err) => panic!("{err}"),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(started, "no SpeechStarted before the transcript");
    assert!(transcript.is_final && transcript.speech_final && !transcript.from_finalize);
    let error = wer(SENTENCE, &transcript.text);
    println!("live provider heard {:?}: WER {:.1}%", transcript.text, error * 100.0);
    assert!(error < 0.2, "WER {error} for {:?}", transcript.text);
    feeder.await.unwrap();

    // Finalize with nothing pending still answers, so the engine's VAD turn strategy never waits forever.
    session.input.send(SttInput::Finalize).await.unwrap();
    loop {
        match session.events.recv().await.expect("session ended without the finalize answer") {
            SttEvent::Transcript(t) => {
                assert!(t.from_finalize && t.text.is_empty(), "{t:?}");
                break;
            }
            SttEvent::UtteranceEnd { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    session.input.send(SttInput::Close).await.unwrap();
    loop {
        match session.events.recv().await {
            Some(SttEvent::Closed) | None => break,
            Some(SttEvent::UtteranceEnd { .. }) => {}
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn espeak_speaks_a_reply_as_phone_audio() {
    let tts = Espeak::new(EspeakSettings::default());
    let mut session = tts.open().await.unwrap();
    let context = "reply-1".to_owned();
    for (text, last) in [("Hello there. ", false), ("Your order has shipped", false), (" and arrives Friday.", true)] {
        session.input.send(TtsInput::Text { context: context.clone(), text: text.into(), last }).await.unwrap();
    }
    let mut audio = Vec::new();
    loop {
        match session.events.recv().await.expect("session ended early") {
            TtsEvent::Audio { context: c, mulaw } => {
                assert_eq!(c, context);
                audio.extend_from_slice(&mulaw);
            }
            TtsEvent::Done { context: c } => {
                assert_eq!(c, context);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // 12 words at 160 words a minute: a few seconds of 8 kHz audio, neither empty nor runaway.
    let seconds = audio.len() as f64 / 8000.0;
    assert!((2.0..10.0).contains(&seconds), "{seconds} s of audio");
    // It is speech, not silence: the mean level is well above the line's noise floor.
    let pcm = mulaw::decode(&audio);
    let level = pcm.iter().map(|&s| f64::from(s).abs()).sum::<f64>() / pcm.len() as f64;
    assert!(level > 300.0, "mean level {level}");
}

#[tokio::test]
async fn cancel_stops_a_reply_and_the_next_one_plays() {
    let long: String = (1..=12).map(|i| format!("This is sentence number {i} of a long reply. ")).collect();
    let full_length = spoken(&long).await.len();
    let tts = Espeak::new(EspeakSettings::default());
    let mut session = tts.open().await.unwrap();
    session.input.send(TtsInput::Text { context: "long".into(), text: long, last: true }).await.unwrap();
    let mut long_audio = 0;
    // Wait for the reply to start playing, then barge in.
    while let Some(event) = session.events.recv().await {
        if let TtsEvent::Audio { mulaw, .. } = event {
            long_audio += mulaw.len();
            break;
        }
    }
    session.input.send(TtsInput::Cancel { context: "long".into() }).await.unwrap();
    session.input.send(TtsInput::Text { context: "next".into(), text: "Okay.".into(), last: true }).await.unwrap();
    let mut next_audio = 0;
    loop {
        match session.events.recv().await.expect("session ended early") {
            TtsEvent::Audio { context, mulaw } if context == "long" => long_audio += mulaw.len(),
            TtsEvent::Audio { mulaw, .. } => next_audio += mulaw.len(),
            TtsEvent::Done { context } => {
                assert_eq!(context, "next", "a cancelled reply must not complete");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(next_audio > 0);
    assert!(long_audio < full_length / 3, "{long_audio} of {full_length} bytes of the cancelled reply played");
    session.input.send(TtsInput::Close).await.unwrap();
    while let Some(event) = session.events.recv().await {
        assert!(matches!(event, TtsEvent::Closed), "{event:?}");
    }
}
