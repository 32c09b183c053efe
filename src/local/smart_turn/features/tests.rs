use super::*;

/// 3 s of three tones (one fading in): the signal of the reference vector below.
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

fn features(audio: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; FEATURES_LEN];
    FeatureExtractor::new().extract(audio, &mut out);
    out
}

fn at(features: &[f32], mel: usize, frame: usize) -> f32 {
    features[mel * FRAMES + frame]
}

/// Reference vector: the same three tones through Pipecat 1.14.0's own extractor
/// (`compute_whisper_log_mel_features` after its left-padding to 8 s, which agrees with transformers'
/// `WhisperFeatureExtractor(chunk_length=8)` to 1.2e-7), run once in Python with numpy. Over all 64 000 values Parley's
/// features differed from it by at most 1.4e-5 (the reference normalises in float32, Parley in f64).
#[test]
fn features_match_the_reference_extractor() {
    let f = features(&three_tones());
    let expected = [
        ((0, 0), -0.247_124_24),
        ((5, 500), 1.216_336_1),
        ((10, 650), 1.663_407_6),
        ((12, 790), 1.608_200_6),
        ((24, 650), -0.143_988_62),
        ((24, 790), -0.001_005_611),
        ((79, 799), 0.017_258_322),
    ];
    for ((mel, frame), value) in expected {
        let got = at(&f, mel, frame);
        assert!((got - value).abs() < 1e-4, "[{mel}][{frame}]: {got}, the reference has {value}");
    }
    let sum: f64 = f.iter().map(|&v| f64::from(v)).sum();
    assert!((sum - -8924.6148).abs() < 0.05, "sum {sum}, the reference's is -8924.6148");
}

#[test]
fn features_have_the_models_shape_and_range() {
    let f = features(&three_tones());
    assert_eq!(f.len(), MEL_BINS * FRAMES);
    assert!(f.iter().all(|v| v.is_finite()));
    let max = f.iter().copied().fold(f32::MIN, f32::max);
    let min = f.iter().copied().fold(f32::MAX, f32::min);
    // The log is clamped to 8 below its maximum, and (x + 4) / 4 maps 8 decades onto 2.
    assert!((max - min - 2.0).abs() < 1e-4, "range {min}..{max}");
}

#[test]
fn short_audio_is_preceded_by_silence_so_the_turn_ends_at_the_end_of_the_window() {
    let f = features(&three_tones());
    let floor = f.iter().copied().fold(f32::MAX, f32::min);
    // 3 s of tones after 5 s of padding: the first 5 s are the floor, the last 3 s are not.
    assert!((0..MEL_BINS).all(|m| (0..490).all(|t| at(&f, m, t) == floor)));
    assert!((600..FRAMES).all(|t| at(&f, 10, t) > floor + 1.0));
}

#[test]
fn only_the_last_eight_seconds_count() {
    let tones = three_tones();
    let mut long = vec![0.0f32; WINDOW_SAMPLES - tones.len()];
    long.extend(&tones);
    let mut longer: Vec<f32> = (0..40_000).map(|n| (n as f32 * 0.1).sin() * 0.9).collect();
    longer.extend(&long);
    assert_eq!(features(&longer), features(&long));
    assert_eq!(features(&long), features(&tones));
}

#[test]
fn the_waveform_is_normalised_so_loudness_does_not_matter() {
    let tones = three_tones();
    let quiet: Vec<f32> = tones.iter().map(|x| x * 0.05).collect();
    let (a, b) = (features(&tones), features(&quiet));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(worst < 1e-3, "features changed by {worst} with the volume");
}

#[test]
fn silence_and_no_audio_are_flat() {
    for audio in [vec![], vec![0.0f32; 16_000]] {
        let f = features(&audio);
        assert!(f.iter().all(|&v| v == f[0]), "silence gave varying features");
        assert!(f[0].is_finite());
    }
}

#[test]
fn the_extractor_can_be_reused() {
    let mut extractor = FeatureExtractor::new();
    let (mut first, mut second) = (vec![0.0; FEATURES_LEN], vec![0.0; FEATURES_LEN]);
    extractor.extract(&three_tones(), &mut first);
    extractor.extract(&[0.5; 100], &mut second);
    extractor.extract(&three_tones(), &mut second);
    assert_eq!(first, second);
}

#[test]
fn mel_filters_cover_the_band_with_unit_area() {
    let filters = slaney_mel_filters();
    assert_eq!(filters.len(), MEL_BINS);
    let bin_hz = 8000.0 / (FFT_BINS - 1) as f64;
    for pair in filters.windows(2) {
        assert!(pair[0].first <= pair[1].first, "filters out of order");
    }
    for (m, filter) in filters.iter().enumerate() {
        assert!(!filter.weights.is_empty(), "filter {m} is empty");
        assert!(filter.first + filter.weights.len() <= FFT_BINS);
        assert!(filter.weights.iter().all(|&w| w >= 0.0));
        // Slaney normalisation: each triangle's area (in Hz) is 1; only the wide high filters are sampled finely
        // enough by the 40 Hz FFT bins to show it.
        let area: f64 = filter.weights.iter().sum::<f64>() * bin_hz;
        assert!(m < 60 || (area - 1.0).abs() < 0.15, "filter {m} has area {area}");
    }
}
