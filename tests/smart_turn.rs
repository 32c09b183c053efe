//! The smart-turn end-of-turn model end to end: eSpeak NG speaks over the phone, the model judges whether the
//! sentence was finished. Needs `espeak-ng`, the model and ONNX Runtime (all three come with `scripts/setup`).

use std::path::PathBuf;
use std::sync::Arc;

use parley::local::smart_turn::{FeatureExtractor, SmartTurnModel, FEATURES_LEN};
use parley::local::{EspeakSettings, SmartTurnError, SmartTurnPool, SmartTurnSettings};
use parley::tts::espeak::synthesize_mulaw;

fn pool_of(threads: usize) -> Arc<SmartTurnPool> {
    match SmartTurnPool::start(&SmartTurnSettings { threads, ..SmartTurnSettings::default() }) {
        Ok(pool) => pool,
        Err(err) => panic!("these tests need the smart-turn model and ONNX Runtime: {err}"),
    }
}

/// The demo caller's voice, as the other local speech tests use.
fn caller_voice() -> EspeakSettings {
    EspeakSettings { voice: "en-us+m3".into(), speed: 140, ..EspeakSettings::default() }
}

async fn spoken(text: &str) -> Vec<u8> {
    synthesize_mulaw(&caller_voice(), text).await.expect("espeak-ng must be installed (scripts/setup)")
}

/// The same words, finished and cut off. The model listens to prosody, and eSpeak NG's is not a person's: it judges
/// several synthetic sentences wrongly (it finds "My order number is" complete at 0.92 and "I would like to check the
/// status of my order." incomplete at 0.31 — the reference implementation agrees to 1e-6). This pair it judges
/// clearly and the same way in every voice and with or without trailing silence that was tried.
///
/// Expected probabilities: Pipecat 1.14.0's feature extractor and ONNX Runtime 1.32 in Python, run once on the very
/// 16 kHz audio Parley's worker made from this μ-law (`phone_to_model_audio`). The tolerance is wide because the int8
/// model itself moves by about ±0.015 when its input features move by 1e-5.
#[tokio::test]
async fn a_finished_sentence_is_complete_and_the_same_words_cut_off_are_not() {
    let pool = pool_of(1);
    for (text, reference, complete) in
        [("I want to cancel my order.", COMPLETE_REFERENCE, true), ("I want to cancel my", CUT_OFF_REFERENCE, false)]
    {
        let judgement = pool.judge(spoken(text).await).await.expect("a worker answers").expect("the model judges");
        println!("{text:?}: {judgement:?}");
        assert_eq!(judgement.complete, complete, "{text:?}: {judgement:?}");
        assert_eq!(judgement.complete, judgement.complete_probability > 0.5);
        let p = judgement.complete_probability;
        assert!((p - reference).abs() < 0.1, "{text:?}: {p}, the reference implementation gave {reference}");
    }
}

const COMPLETE_REFERENCE: f32 = 0.966_036;
const CUT_OFF_REFERENCE: f32 = 0.012_469;

/// 3 s of three tones (one fading in): the signal of the features' reference vector.
fn three_tones() -> Vec<f32> {
    (0..48_000)
        .map(|n| {
            let t = n as f64 / 16_000.0;
            let x = 0.3 * (std::f64::consts::TAU * 440.0 * t).sin()
                + 0.2 * (std::f64::consts::TAU * 1250.0 * t).sin() * (t / 3.0)
                + 0.05 * (std::f64::consts::TAU * 3100.0 * t + 0.5).sin();
            x as f32
        })
        .collect()
}

/// Reference: Pipecat 1.14.0's analyzer path in Python (its extractor, then ONNX Runtime 1.32) gives 0.05751 for the
/// three tones; ONNX Runtime in Python on Parley's own features gives 0.04597, which Parley's model must reproduce
/// closely since it is the same runtime on the same input. The model is int8-quantized and ONNX Runtime picks its
/// integer kernels by CPU: on an AVX2-only CPU (an AMD EPYC of the first generation) the same runtime in Python gives
/// 0.33859 on the same features, and Parley gives that there. Either is the runtime's answer; the Pipecat reference
/// was measured on the kernels that give the first.
const RUNTIME_ANSWERS: [f32; 2] = [0.04597, 0.33859];

#[test]
fn the_model_reproduces_the_reference_on_a_test_signal() {
    let settings = SmartTurnSettings::default();
    let mut model = SmartTurnModel::load(&settings.model_path(), &settings.onnxruntime_path())
        .unwrap_or_else(|err| panic!("this test needs the smart-turn model and ONNX Runtime: {err}"));
    let mut features = vec![0.0; FEATURES_LEN];
    FeatureExtractor::new().extract(&three_tones(), &mut features);
    let p = model.complete_probability(&features).expect("the model runs");
    let answer = RUNTIME_ANSWERS.into_iter().find(|answer| (p - answer).abs() < 1e-3);
    assert!(answer.is_some(), "{p}, ONNX Runtime in Python gave one of {RUNTIME_ANSWERS:?} on these features");
    if answer == Some(RUNTIME_ANSWERS[0]) {
        assert!((p - 0.05751).abs() < 0.03, "{p}, the reference implementation gave 0.05751");
    }
    assert!(model.complete_probability(&features[1..]).is_err(), "a short input must be refused");
}

#[tokio::test]
async fn judgements_asked_at_once_all_come_back_and_agree() {
    let pool = pool_of(2);
    let audio = spoken("I want to cancel my order.").await;
    let receivers: Vec<_> = (0..4).map(|_| pool.judge(audio.clone())).collect();
    let mut probabilities = Vec::new();
    for receiver in receivers {
        let judgement = receiver.await.expect("a worker answers").expect("the model judges");
        probabilities.push(judgement.complete_probability);
    }
    assert!(probabilities.iter().all(|&p| p == probabilities[0]), "{probabilities:?}");
    // No audio at all is still a valid (silent) window.
    let silent = pool.judge(Vec::new()).await.expect("a worker answers").expect("the model judges");
    assert!((0.0..=1.0).contains(&silent.complete_probability));
}

#[tokio::test]
async fn a_stopped_pool_refuses_judgements() {
    let pool = pool_of(1);
    pool.shutdown();
    let result = pool.judge(vec![0xFF; 800]).await.expect("the pool answers");
    assert!(matches!(result, Err(SmartTurnError::Stopped)), "{result:?}");
}

#[test]
fn a_missing_model_says_how_to_install_it() {
    let settings = SmartTurnSettings {
        model: Some(PathBuf::from("/nonexistent/smart-turn.onnx")),
        ..SmartTurnSettings::default()
    };
    let err = SmartTurnPool::start(&settings).err().expect("no model, no pool");
    assert!(matches!(err, SmartTurnError::ModelMissing(_)), "{err}");
    assert!(err.to_string().contains("scripts/setup"), "{err}");
}
