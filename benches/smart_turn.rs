//! The smart-turn end-of-turn model's cost per judgement, single-threaded: the features of an 8 s window, one
//! inference on them, and the phone audio's decoding and resampling that precede both on a worker. Needs the model
//! and ONNX Runtime (`scripts/setup`).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use parley::local::smart_turn::{phone_to_model_audio, FeatureExtractor, SmartTurnModel, FEATURES_LEN, SAMPLE_RATE};
use parley::local::SmartTurnSettings;

/// 8 s of a voice-like signal: a wandering fundamental with a few harmonics.
fn speechlike(seconds: usize, rate: usize) -> Vec<f32> {
    (0..seconds * rate)
        .map(|n| {
            let t = n as f32 / rate as f32;
            let f0 = 120.0 + 30.0 * (t * 1.7).sin();
            (1..6).map(|h| (std::f32::consts::TAU * f0 * h as f32 * t).sin() * 0.2 / h as f32).sum()
        })
        .collect()
}

fn smart_turn(c: &mut Criterion) {
    let audio = speechlike(8, SAMPLE_RATE);
    let mut extractor = FeatureExtractor::new();
    let mut features = vec![0.0f32; FEATURES_LEN];
    c.bench_function("smart_turn_features_8s", |b| {
        b.iter(|| extractor.extract(black_box(&audio), &mut features));
    });

    let mulaw: Vec<u8> =
        speechlike(8, 8000).iter().map(|&x| parley::audio::mulaw::encode_sample((x * 32767.0) as i16)).collect();
    c.bench_function("smart_turn_phone_audio_8s", |b| b.iter(|| phone_to_model_audio(black_box(&mulaw))));

    let settings = SmartTurnSettings::default();
    let mut model = match SmartTurnModel::load(&settings.model_path(), &settings.onnxruntime_path()) {
        Ok(model) => model,
        Err(err) => panic!("the smart-turn benchmark needs the model and ONNX Runtime: {err}"),
    };
    extractor.extract(&audio, &mut features);
    c.bench_function("smart_turn_inference_8s", |b| b.iter(|| model.complete_probability(black_box(&features))));
}

criterion_group!(benches, smart_turn);
criterion_main!(benches);
