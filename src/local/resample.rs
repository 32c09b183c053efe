//! Sample-rate conversion between the phone's 8 kHz and the engines' rates (Whisper wants 16 kHz, eSpeak NG speaks
//! at 22.05 kHz).
//!
//! Uses rubato's synchronous FFT resampler: the ratios Parley needs are fixed rationals (2/1, 160/441), for which it
//! is exact and band-limited, unlike linear interpolation, which aliases badly on telephone audio and measurably
//! hurts Whisper's accuracy.

use rubato::{FftFixedInOut, Resampler};

/// Why a buffer could not be resampled.
#[derive(Debug, thiserror::Error)]
#[error("resampling {from} Hz to {to} Hz failed: {detail}")]
pub struct ResampleError {
    pub from: usize,
    pub to: usize,
    pub detail: String,
}

/// Input frames per FFT block: small enough for sentence-sized buffers, large enough to be efficient.
const CHUNK: usize = 1024;

/// Resamples a whole mono buffer from `from` Hz to `to` Hz; the output is time-aligned with the input (the filter's
/// delay is removed) and `len * to / from` samples long.
pub fn resample(input: &[f32], from: usize, to: usize) -> Result<Vec<f32>, ResampleError> {
    if from == to || input.is_empty() {
        return Ok(input.to_vec());
    }
    let fail = |detail: String| ResampleError { from, to, detail };
    let mut resampler = FftFixedInOut::<f32>::new(from, to, CHUNK, 1).map_err(|e| fail(e.to_string()))?;
    let delay = resampler.output_delay();
    let expected = (input.len() as u64 * to as u64 / from as u64) as usize;
    let mut out = Vec::with_capacity(expected + delay + resampler.output_frames_max());
    let mut position = 0;
    let mut block = Vec::with_capacity(resampler.input_frames_max());
    while out.len() < expected + delay {
        let needed = resampler.input_frames_next();
        block.clear();
        let end = (position + needed).min(input.len());
        if position < end {
            block.extend_from_slice(&input[position..end]);
        }
        block.resize(needed, 0.0);
        position += needed;
        let produced = resampler.process(&[&block[..]], None).map_err(|e| fail(e.to_string()))?;
        match produced.first() {
            Some(channel) if !channel.is_empty() => out.extend_from_slice(channel),
            _ => return Err(fail("the resampler produced no output".into())),
        }
    }
    out.drain(..delay.min(out.len()));
    out.truncate(expected);
    Ok(out)
}

/// PCM16 to floats in [-1, 1].
pub fn to_f32(pcm: &[i16]) -> Vec<f32> {
    pcm.iter().map(|&s| f32::from(s) / 32768.0).collect()
}

/// Floats to PCM16, clipping what a resampler's overshoot pushed past full scale.
pub fn to_i16(samples: &[f32]) -> Vec<i16> {
    samples.iter().map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16).collect()
}

/// The caller's 8 kHz PCM as the 16 kHz floats Whisper expects.
pub fn phone_to_whisper(pcm8k: &[i16]) -> Result<Vec<f32>, ResampleError> {
    resample(&to_f32(pcm8k), 8000, 16000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, rate: usize, len: usize) -> Vec<f32> {
        (0..len).map(|i| (i as f32 / rate as f32 * freq * std::f32::consts::TAU).sin() * 0.5).collect()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn upsampling_keeps_length_and_alignment() {
        let input = tone(440.0, 8000, 8000);
        let out = resample(&input, 8000, 16000).unwrap();
        assert_eq!(out.len(), 16000);
        // Every other output sample lines up with an input sample once the delay is removed.
        let error: f32 = (1000..7000).map(|i| (out[2 * i] - input[i]).abs()).fold(0.0, f32::max);
        assert!(error < 0.02, "max deviation {error}");
    }

    #[test]
    fn downsampling_removes_what_the_phone_cannot_carry() {
        // 6 kHz is above the 4 kHz Nyquist limit of 8 kHz audio: it must be filtered, not folded back to 2 kHz.
        let out = resample(&tone(6000.0, 22050, 22050), 22050, 8000).unwrap();
        assert_eq!(out.len(), 8000);
        assert!(rms(&out[500..7500]) < 0.01, "aliased energy {}", rms(&out[500..7500]));
        let kept = resample(&tone(1000.0, 22050, 22050), 22050, 8000).unwrap();
        assert!((rms(&kept[500..7500]) - 0.3536).abs() < 0.02);
    }
}
