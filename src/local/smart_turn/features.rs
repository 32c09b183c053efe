//! The smart-turn model's input: Whisper-style log-mel features of the last 8 s of 16 kHz audio.
//!
//! The model was trained on features made exactly this way, so every step follows the reference extractor (Whisper's
//! feature extractor with an 8 s window): keep the last 8 s and pad shorter audio with silence *before* it, so the
//! end of the turn always sits at the end of the window; normalise the waveform to zero mean and unit variance; a
//! 400-point periodic-Hann STFT every 160 samples (reflect-padded, centred) as a power spectrum; 80 Slaney mel filters
//! from 0 to 8 kHz; log10 with a floor of 1e-10; the last frame dropped; everything clamped to 8 below the maximum
//! and mapped by (x + 4) / 4.
//!
//! [`FeatureExtractor`] precomputes the window, the filters (stored sparsely: each spans a few FFT bins) and the FFT
//! plan, and reuses its buffers, so extracting features allocates nothing after construction.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// The sample rate the model listens at.
pub const SAMPLE_RATE: usize = 16_000;
/// The audio the model sees: the last 8 s.
pub const WINDOW_SAMPLES: usize = 8 * SAMPLE_RATE;
/// Mel bins per frame.
pub const MEL_BINS: usize = 80;
/// Frames in the window (10 ms apart).
pub const FRAMES: usize = 800;
/// The model's input: `[MEL_BINS][FRAMES]`, mel-major.
pub const FEATURES_LEN: usize = MEL_BINS * FRAMES;

const N_FFT: usize = 400;
const HOP: usize = 160;
const FFT_BINS: usize = N_FFT / 2 + 1;
const MEL_FLOOR: f64 = 1e-10;
const VARIANCE_EPSILON: f64 = 1e-7;

/// One triangular mel filter: its weights over the FFT bins `first..first + weights.len()`.
struct MelFilter {
    first: usize,
    weights: Vec<f64>,
}

/// Turns 16 kHz audio into the model's features, reusing its buffers from one call to the next.
pub struct FeatureExtractor {
    window: Vec<f64>,
    filters: Vec<MelFilter>,
    fft: Arc<dyn RealToComplex<f64>>,
    /// The 8 s window, normalised in place.
    wave: Vec<f32>,
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    power: Vec<f64>,
}

impl Default for FeatureExtractor {
    fn default() -> Self {
        Self::new()
    }
}

impl FeatureExtractor {
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        let scratch = fft.make_scratch_vec();
        let spectrum = fft.make_output_vec();
        FeatureExtractor {
            window: periodic_hann(N_FFT),
            filters: slaney_mel_filters(),
            fft,
            wave: vec![0.0; WINDOW_SAMPLES],
            frame: vec![0.0; N_FFT],
            spectrum,
            scratch,
            power: vec![0.0; FFT_BINS],
        }
    }

    /// Writes the features of the last 8 s of `audio` (16 kHz, mono, in [-1, 1]) into `out` (`FEATURES_LEN` long,
    /// `[mel][frame]`). Shorter audio is preceded by silence.
    pub fn extract(&mut self, audio: &[f32], out: &mut [f32]) {
        debug_assert_eq!(out.len(), FEATURES_LEN);
        self.fill_window(audio);
        normalise(&mut self.wave);

        let mut max = f64::NEG_INFINITY;
        for t in 0..FRAMES {
            self.power_spectrum(t * HOP);
            for (m, filter) in self.filters.iter().enumerate() {
                let bins = &self.power[filter.first..filter.first + filter.weights.len()];
                let energy: f64 = bins.iter().zip(&filter.weights).map(|(p, w)| p * w).sum();
                let log = energy.max(MEL_FLOOR).log10();
                max = max.max(log);
                out[m * FRAMES + t] = log as f32;
            }
        }
        let floor = (max - 8.0) as f32;
        for value in out.iter_mut() {
            *value = (value.max(floor) + 4.0) / 4.0;
        }
    }

    /// The last `WINDOW_SAMPLES` of `audio`, silence first when there are fewer.
    fn fill_window(&mut self, audio: &[f32]) {
        let kept = &audio[audio.len().saturating_sub(WINDOW_SAMPLES)..];
        let pad = WINDOW_SAMPLES - kept.len();
        self.wave[..pad].fill(0.0);
        self.wave[pad..].copy_from_slice(kept);
    }

    /// The power spectrum of the frame centred on sample `centre` of the window, into `self.power`. The window is
    /// reflect-padded by half a frame on each side (the edge sample is not repeated).
    fn power_spectrum(&mut self, centre: usize) {
        let half = N_FFT / 2;
        let len = self.wave.len() as isize;
        for (i, (slot, w)) in self.frame.iter_mut().zip(&self.window).enumerate() {
            let mut index = centre as isize + i as isize - half as isize;
            if index < 0 {
                index = -index;
            } else if index >= len {
                index = 2 * (len - 1) - index;
            }
            *slot = f64::from(self.wave[index as usize]) * w;
        }
        // Lengths are fixed at construction, so the transform cannot fail.
        if self.fft.process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch).is_ok() {
            for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
                *p = c.norm_sqr();
            }
        }
    }
}

/// Zero mean, unit variance (with a small epsilon, so silence stays silence).
fn normalise(wave: &mut [f32]) {
    let n = wave.len() as f64;
    let mean = wave.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let variance = wave.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    let scale = 1.0 / (variance + VARIANCE_EPSILON).sqrt();
    for x in wave.iter_mut() {
        *x = ((f64::from(*x) - mean) * scale) as f32;
    }
}

fn periodic_hann(len: usize) -> Vec<f64> {
    (0..len).map(|n| 0.5 - 0.5 * (std::f64::consts::TAU * n as f64 / len as f64).cos()).collect()
}

fn hertz_to_mel(hz: f64) -> f64 {
    if hz < 1000.0 {
        3.0 * hz / 200.0
    } else {
        15.0 + (hz / 1000.0).ln() * 27.0 / 6.4f64.ln()
    }
}

fn mel_to_hertz(mel: f64) -> f64 {
    if mel < 15.0 {
        200.0 * mel / 3.0
    } else {
        1000.0 * ((mel - 15.0) * 6.4f64.ln() / 27.0).exp()
    }
}

/// Triangular filters evenly spaced on the Slaney mel scale from 0 Hz to Nyquist, each normalised to unit area.
fn slaney_mel_filters() -> Vec<MelFilter> {
    let top = hertz_to_mel(SAMPLE_RATE as f64 / 2.0);
    let edges: Vec<f64> = (0..MEL_BINS + 2).map(|i| mel_to_hertz(top * i as f64 / (MEL_BINS + 1) as f64)).collect();
    let bin_hz = (SAMPLE_RATE / 2) as f64 / (FFT_BINS - 1) as f64;
    (0..MEL_BINS)
        .map(|m| {
            let (low, centre, high) = (edges[m], edges[m + 1], edges[m + 2]);
            let area = 2.0 / (high - low);
            let weights: Vec<f64> = (0..FFT_BINS)
                .map(|k| {
                    let hz = k as f64 * bin_hz;
                    let up = (hz - low) / (centre - low);
                    let down = (high - hz) / (high - centre);
                    up.min(down).max(0.0) * area
                })
                .collect();
            let first = weights.iter().position(|&w| w > 0.0).unwrap_or(0);
            let last = weights.iter().rposition(|&w| w > 0.0).map_or(first, |i| i + 1);
            MelFilter { first, weights: weights[first..last].to_vec() }
        })
        .collect()
}

#[cfg(test)]
mod tests;
