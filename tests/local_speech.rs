//! The local engines end to end: eSpeak NG speaks, Whisper listens. Needs `espeak-ng` and the model that
//! `scripts/fetch-whisper-model` installs (both come with `scripts/setup`).
// Without the `whisper` feature, only the tests that need no Whisper model are built.
#![cfg_attr(not(feature = "whisper"), allow(unused_imports, dead_code))]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parley::audio::mulaw;
use parley::local::segment::SegmenterConfig;
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
    load(&WhisperSettings::default())
}

#[cfg(feature = "whisper")]
fn load(settings: &WhisperSettings) -> Arc<WhisperEngine> {
    match WhisperEngine::load(settings) {
        Ok(engine) => Arc::new(engine),
        Err(err) => panic!("these tests need the Whisper model: {err}"),
    }
}

/// The engine as the live provider loads it: greedy, with a window fitted to the audio.
#[cfg(feature = "whisper")]
fn live_engine() -> Arc<WhisperEngine> {
    greedy_engine(WhisperSettings::default().live_window_ms)
}

/// A greedy engine with the given window.
#[cfg(feature = "whisper")]
fn greedy_engine(window_ms: u64) -> Arc<WhisperEngine> {
    let defaults = WhisperSettings::default();
    load(&WhisperSettings { beam_size: defaults.live_beam_size, window_ms, ..defaults })
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

/// The live provider's fitted window (the audio + 2 s, at least 10 s) hears ordinary caller speech as well as the
/// full 30 s window, on short lines and on one longer than the window's minimum. Fitted to one frame less than the
/// full window, Parley's own path (its features, the model run directly) hears exactly what ct2rs's does.
#[cfg(feature = "whisper")]
#[tokio::test]
async fn a_window_fitted_to_the_audio_hears_what_the_full_window_hears() {
    let (full, fitted, nearly_full) = (greedy_engine(30_000), live_engine(), greedy_engine(29_990));
    let long = format!("{SENTENCE}. it was supposed to arrive last friday and i have been waiting at home all week");
    for text in ["where is my order", SENTENCE, long.as_str()] {
        let pcm = mulaw::decode(&spoken(text).await);
        let (heard_full, heard_fitted) =
            (full.transcribe_phone(pcm.clone()).await.unwrap(), fitted.transcribe_phone(pcm).await.unwrap());
        let (error_full, error_fitted) = (wer(text, &heard_full), wer(text, &heard_fitted));
        println!("{text:?}: full {heard_full:?} ({error_full:.2}), fitted {heard_fitted:?} ({error_fitted:.2})");
        assert!(error_fitted < 0.3 && error_fitted <= error_full + 0.1, "fitted {heard_fitted:?}, full {heard_full:?}");
        let heard_nearly_full = nearly_full.transcribe_phone(mulaw::decode(&spoken(text).await)).await.unwrap();
        assert_eq!(wer(&heard_full, &heard_nearly_full), 0.0, "{heard_nearly_full:?} against ct2rs's {heard_full:?}");
    }
    assert_eq!(fitted.inferences(), 3);
}

#[cfg(feature = "whisper")]
#[tokio::test]
async fn the_stt_provider_reports_an_utterance_streamed_in_real_time() {
    let engine = live_engine();
    let stt = WhisperStt::new(Arc::clone(&engine), Default::default());
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
    let mut interims = Vec::new();
    let transcript = loop {
        match session.events.recv().await.expect("session ended without a transcript") {
            SttEvent::SpeechStarted { timestamp } => {
                assert!(timestamp > 0.5, "speech began after a second of silence, reported at {timestamp}");
                started = true;
            }
            SttEvent::Transcript(transcript) if !transcript.is_final => interims.push(transcript.text),
            SttEvent::Transcript(transcript) => break transcript,
            SttEvent::Error(err) => panic!("{err}"),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(started, "no SpeechStarted before the transcript");
    assert!(transcript.is_final && transcript.speech_final && !transcript.from_finalize);
    let error = wer(SENTENCE, &transcript.text);
    println!("live provider heard {:?}: WER {:.1}%; interim {interims:?}", transcript.text, error * 100.0);
    assert!(error < 0.2, "WER {error} for {:?}", transcript.text);
    // The sentence's last words were transcribed at the pause after them (its interim), and the utterance's end
    // reused that transcript. (Earlier pauses inside the sentence, if the segmenter saw any, were transcribed too.)
    assert_eq!(interims.last(), Some(&transcript.text), "the final is the transcript made at the last pause");
    assert_eq!(engine.inferences(), interims.len() as u64, "no second inference for the final");
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

/// Streams `audio` into a new session in real time, then finalizes; returns the interim texts and the final.
#[cfg(feature = "whisper")]
async fn finalized_after(stt: &WhisperStt, audio: Vec<u8>) -> (Vec<String>, String) {
    let mut session = stt.open().await.unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut interims = Vec::new();
    for frame in audio.chunks(160) {
        tick.tick().await;
        session.input.send(SttInput::Audio(Bytes::copy_from_slice(frame))).await.unwrap();
        while let Ok(event) = session.events.try_recv() {
            if let SttEvent::Transcript(t) = event {
                assert!(!t.is_final, "no final before the finalize: {t:?}");
                interims.push(t.text);
            }
        }
    }
    session.input.send(SttInput::Finalize).await.unwrap();
    loop {
        match session.events.recv().await.expect("session ended without the finalize answer") {
            SttEvent::Transcript(t) if t.is_final => {
                assert!(t.from_finalize, "{t:?}");
                return (interims, t.text);
            }
            SttEvent::Transcript(t) => interims.push(t.text),
            SttEvent::Error(err) => panic!("{err}"),
            _ => {}
        }
    }
}

#[cfg(feature = "whisper")]
#[tokio::test]
async fn a_finalize_in_a_pause_reuses_the_transcript_made_at_the_pause_and_not_after_more_speech() {
    let silence = |ms: usize| vec![mulaw::encode_sample(0); ms * 8];
    let first = spoken("where is my order").await;
    let second = spoken("it was due on friday").await;

    // As with the `smart` turn strategy, only Parley's finalize ends an utterance here.
    let segmenter = SegmenterConfig { end_silence_ms: 3_000, ..SegmenterConfig::default() };
    // Speech, 600 ms of pause, finalize: one inference, made at 300 ms of the pause; the final is its text.
    let engine = live_engine();
    let stt = WhisperStt::new(Arc::clone(&engine), segmenter.clone());
    let (interims, text) = finalized_after(&stt, [silence(500), first.clone(), silence(600)].concat()).await;
    println!("paused: interim {interims:?}, final {text:?}");
    assert!(wer("where is my order", &text) < 0.3, "{text:?}");
    assert_eq!(engine.inferences(), 1, "the finalize reused the transcript made ahead");

    // Speech after the reported pause makes the transcript made at it stale: the finalize, sent as the speech ends
    // (no pause after it), transcribes the whole utterance again.
    let engine = live_engine();
    let stt = WhisperStt::new(Arc::clone(&engine), segmenter);
    let speech_end = second.iter().rposition(|&b| b != mulaw::encode_sample(0)).map_or(0, |i| i + 1);
    let audio = [silence(500), first, silence(600), second[..speech_end].to_vec()].concat();
    let (interims, text) = finalized_after(&stt, audio).await;
    println!("resumed: interim {interims:?}, final {text:?}");
    assert!(wer("where is my order it was due on friday", &text) < 0.3, "{text:?}");
    assert!(!interims.contains(&text), "the final was not made at a pause: {interims:?}");
    assert_eq!(engine.inferences(), 2, "the first pause's transcript, then the whole utterance");
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
