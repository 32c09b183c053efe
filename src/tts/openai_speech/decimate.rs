//! 24 kHz 16-bit PCM → 8 kHz μ-law, the conversion OpenAI's `response_format: "pcm"` needs before Twilio can play it.
//!
//! The ratio is exactly 3:1, so a polyphase resampler is unnecessary: a windowed-sinc low-pass FIR keeps only what
//! fits below the new Nyquist frequency (4 kHz), and every third filtered sample is kept. Dropping samples without
//! the filter would fold everything between 4 and 12 kHz back into the telephone band as audible aliasing (sibilants
//! turning into hiss and whistles). The filter runs incrementally: HTTP chunks end anywhere, even between the two
//! bytes of a sample, so the converter keeps the odd byte, the filter history and the decimation phase.

use crate::audio::mulaw;

/// Number of filter taps: odd (symmetric, integer group delay of 2 ms) and long enough for a steep Blackman
/// transition between the telephone band (≤ 3.4 kHz) and the 4 kHz Nyquist limit.
const TAPS: usize = 95;
/// Cut-off frequency in Hz, between the top of the telephone band and the new Nyquist frequency.
const CUTOFF_HZ: f64 = 3_700.0;
const INPUT_RATE_HZ: f64 = 24_000.0;
/// Input samples per output sample.
const FACTOR: usize = 3;

/// Incremental converter for one audio stream.
#[derive(Debug, Clone)]
pub struct Pcm24kToMulaw8k {
    taps: Vec<f32>,
    /// The last `TAPS - 1` input samples (zeros before the stream began), followed by the new ones being filtered.
    window: Vec<f32>,
    /// Input samples to skip before the next kept output (0 = the next sample produces one).
    phase: usize,
    /// First byte of a sample whose second byte has not arrived yet.
    odd_byte: Option<u8>,
}

impl Default for Pcm24kToMulaw8k {
    fn default() -> Self {
        Self::new()
    }
}

impl Pcm24kToMulaw8k {
    /// A converter at the start of a stream.
    pub fn new() -> Self {
        Pcm24kToMulaw8k { taps: low_pass_taps(), window: vec![0.0; TAPS - 1], phase: 0, odd_byte: None }
    }

    /// Converts the next piece of s16le 24 kHz audio; returns the μ-law 8 kHz bytes it completes. Over a whole
    /// stream of `n` samples the output has `ceil(n / 3)` bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut input = bytes;
        if let Some(first) = self.odd_byte.take() {
            match input.split_first() {
                Some((second, rest)) => {
                    self.window.push(f32::from(i16::from_le_bytes([first, *second])));
                    input = rest;
                }
                None => {
                    self.odd_byte = Some(first);
                    return Vec::new();
                }
            }
        }
        let mut pairs = input.chunks_exact(2);
        self.window.extend(pairs.by_ref().map(|pair| f32::from(i16::from_le_bytes([pair[0], pair[1]]))));
        self.odd_byte = pairs.remainder().first().copied();
        self.filter()
    }

    /// Filters and decimates the new samples of the window, keeping the history for the next push.
    fn filter(&mut self) -> Vec<u8> {
        let new_samples = self.window.len() - (TAPS - 1);
        let mut out = Vec::with_capacity(new_samples / FACTOR + 1);
        let mut position = self.phase;
        while position < new_samples {
            let span = &self.window[position..position + TAPS];
            let value: f32 = span.iter().zip(&self.taps).map(|(x, h)| x * h).sum();
            let sample = value.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16;
            out.push(mulaw::encode_sample(sample));
            position += FACTOR;
        }
        self.phase = position - new_samples;
        self.window.drain(..new_samples);
        out
    }
}

/// Windowed-sinc (Blackman) low-pass taps with unity gain at DC.
fn low_pass_taps() -> Vec<f32> {
    let cutoff = CUTOFF_HZ / INPUT_RATE_HZ; // cycles per input sample
    let middle = (TAPS - 1) as f64 / 2.0;
    let raw: Vec<f64> = (0..TAPS)
        .map(|n| {
            let t = n as f64 - middle;
            let sinc = if t == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * t).sin() / (std::f64::consts::PI * t)
            };
            let phase = 2.0 * std::f64::consts::PI * n as f64 / (TAPS - 1) as f64;
            let window = 0.42 - 0.5 * phase.cos() + 0.08 * (2.0 * phase).cos();
            sinc * window
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|tap| (tap / sum) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, samples: usize, amplitude: f64) -> Vec<u8> {
        (0..samples)
            .flat_map(|n| {
                let value = amplitude * (2.0 * std::f64::consts::PI * hz * n as f64 / INPUT_RATE_HZ).sin();
                (value as i16).to_le_bytes()
            })
            .collect()
    }

    /// RMS of the decoded output, skipping the filter's start-up.
    fn rms(mulaw_bytes: &[u8]) -> f64 {
        let pcm = mulaw::decode(mulaw_bytes);
        let steady = &pcm[TAPS..];
        (steady.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / steady.len() as f64).sqrt()
    }

    #[test]
    fn output_length_is_a_third_of_the_input() {
        let mut converter = Pcm24kToMulaw8k::new();
        assert_eq!(converter.push(&tone(440.0, 2880, 8000.0)).len(), 960);
        let mut converter = Pcm24kToMulaw8k::new();
        assert_eq!(converter.push(&tone(440.0, 7, 8000.0)).len(), 3);
    }

    #[test]
    fn arbitrary_chunk_boundaries_give_the_same_audio() {
        let input = tone(440.0, 4800, 12000.0);
        let whole = Pcm24kToMulaw8k::new().push(&input);
        let mut converter = Pcm24kToMulaw8k::new();
        let mut pieces = Vec::new();
        for chunk in input.chunks(37) {
            pieces.extend(converter.push(chunk));
        }
        assert_eq!(pieces, whole);
    }

    #[test]
    fn telephone_band_passes_and_aliasing_frequencies_are_removed() {
        let amplitude = 10_000.0;
        let pass = rms(&Pcm24kToMulaw8k::new().push(&tone(1_000.0, 24_000, amplitude)));
        let expected = amplitude / 2f64.sqrt();
        assert!((pass - expected).abs() < expected * 0.1, "1 kHz rms {pass}, expected about {expected}");
        // 10 kHz would fold back to 2 kHz if samples were simply dropped.
        let stop = rms(&Pcm24kToMulaw8k::new().push(&tone(10_000.0, 24_000, amplitude)));
        assert!(stop < expected * 0.01, "10 kHz leaked through with rms {stop}");
    }

    #[test]
    fn taps_have_unity_gain() {
        let sum: f32 = low_pass_taps().iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    }
}
