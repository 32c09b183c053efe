//! Whisper with its encoder window fitted to the audio, for the live provider.
//!
//! Whisper's encoder reads a 30 s window whatever the utterance's length, and it is most of an utterance's time;
//! CTranslate2's encoder accepts fewer frames. This runs the CTranslate2 model directly on the features ct2rs itself
//! makes (`mel_spec`'s STFT and log-mel, each frame clamped to 8 below its own maximum, zeros after the audio), cut to
//! the audio plus 2 s and never shorter than the configured window: a short utterance is transcribed several times
//! faster, with the words the full window gives.

use std::path::Path;

use ct2rs::sys::{StorageView, Whisper as RawWhisper};
use ct2rs::tokenizers::hf::Tokenizer as WhisperTokenizer;
use ct2rs::{Config, Tokenizer as _, WhisperOptions};
use mel_spec::mel::{log_mel_spectrogram, mel, norm_mel};
use mel_spec::stft::Spectrogram;

/// Feature frames in Whisper's 30 s window.
const FULL_FRAMES: usize = 3000;
/// Milliseconds of audio per feature frame.
const FRAME_MS: u64 = 10;
/// Whisper's features: 80 mel bins from a 400-point FFT every 160 samples (10 ms) of 16 kHz audio.
const MEL_BINS: usize = 80;
const N_FFT: usize = 400;
const HOP: usize = 160;
const MODEL_RATE: usize = 16_000;
/// Silence after the audio in a fitted window, in feature frames (2 s): Whisper was trained on speech followed by
/// silence, and ends its transcript more reliably with some.
const PADDING_FRAMES: usize = 200;
/// Tokens a fitted window may decode per second of audio (speech runs at 3–5, digits one token each), plus the prompt
/// and a margin: greedy decoding on a short window can fall into a loop ("4 5 6 4 5 6 …"), and this bounds its time.
const TOKENS_PER_SECOND: usize = 8;
const TOKEN_MARGIN: usize = 16;

/// The model with its tokenizer, run on windows of at least `min_frames` feature frames.
pub(super) struct FittedWhisper {
    model: RawWhisper,
    tokenizer: WhisperTokenizer,
    min_frames: usize,
}

impl FittedWhisper {
    /// Loads the model in `dir` for windows of at least `window_ms`.
    pub(super) fn load(dir: &Path, config: Config, window_ms: u64) -> anyhow::Result<FittedWhisper> {
        Ok(FittedWhisper {
            model: RawWhisper::new(dir, config)?,
            tokenizer: WhisperTokenizer::new(dir)?,
            min_frames: ((window_ms / FRAME_MS) as usize).clamp(1, FULL_FRAMES),
        })
    }

    /// Transcribes 16 kHz samples: one window of the audio plus 2 s (at least `min_frames`) when it fits in 30 s,
    /// else 30 s windows in one batch. `language`: an ISO 639-1 code, or `None` to detect it.
    pub(super) fn generate(
        &self,
        samples: &[f32],
        language: Option<&str>,
        options: &WhisperOptions,
    ) -> anyhow::Result<Vec<String>> {
        let chunks: Vec<&[f32]> = samples.chunks(FULL_FRAMES * HOP).collect();
        let frames = match chunks.as_slice() {
            [one] => (one.len().div_ceil(HOP) + PADDING_FRAMES).clamp(self.min_frames, FULL_FRAMES),
            _ => FULL_FRAMES,
        };
        let mut features = features(&chunks, frames);
        let view = StorageView::new(&[chunks.len(), MEL_BINS, frames], &mut features, Default::default())?;
        let language = match language {
            Some(language) => format!("<|{language}|>"),
            None => self
                .model
                .detect_language(&view)?
                .into_iter()
                .next()
                .and_then(|found| found.into_iter().next())
                .map(|best| best.language)
                .ok_or_else(|| anyhow::anyhow!("failed to detect the language"))?,
        };
        let prompt = ["<|startoftranscript|>", language.as_str(), "<|transcribe|>", "<|notimestamps|>"].to_vec();
        let longest = chunks.iter().map(|chunk| chunk.len()).max().unwrap_or(0);
        let options =
            WhisperOptions { max_length: max_length(longest, prompt.len(), options.max_length), ..options.clone() };
        self.model
            .generate(&view, &vec![prompt; chunks.len()], &options)?
            .into_iter()
            .map(|result| {
                let best = result.sequences.into_iter().next().ok_or_else(|| anyhow::anyhow!("no transcript"))?;
                self.tokenizer.decode(best)
            })
            .collect()
    }
}

/// The features of each chunk in a window of `frames` frames, `[chunk][mel][frame]`, as ct2rs makes them.
fn features(chunks: &[&[f32]], frames: usize) -> Vec<f32> {
    // The filters ct2rs uses when the model's preprocessor configuration lists none (Whisper's: Slaney mel).
    let filters = mel(MODEL_RATE as f64, N_FFT, MEL_BINS, None, None, false, true);
    let mut features = vec![0.0f32; chunks.len() * MEL_BINS * frames];
    for (chunk, out) in chunks.iter().zip(features.chunks_mut(MEL_BINS * frames)) {
        let mut stft = Spectrogram::new(N_FFT, HOP);
        for (frame, hop) in chunk.chunks(HOP).enumerate().take(frames) {
            let Some(fft) = stft.add(hop) else { continue };
            let log_mel = norm_mel(&log_mel_spectrogram(&fft, &filters));
            for (bin, value) in log_mel.iter().take(MEL_BINS).enumerate() {
                out[bin * frames + frame] = *value as f32;
            }
        }
    }
    features
}

/// The most tokens (prompt included) a window of `samples` 16 kHz samples may decode, within Whisper's `cap`.
fn max_length(samples: usize, prompt: usize, cap: usize) -> usize {
    let seconds = samples.div_ceil(MODEL_RATE);
    (prompt + TOKEN_MARGIN + seconds * TOKENS_PER_SECOND).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fitted_window_decodes_a_bounded_number_of_tokens() {
        // 2.5 s of audio (rounded up to 3), a 4-token prompt: 4 + 16 + 3 × 8.
        assert_eq!(max_length(40_000, 4, 448), 44);
        assert_eq!(max_length(0, 4, 448), 20);
        // Never past Whisper's own limit.
        assert_eq!(max_length(30 * 16_000, 4, 448), 260);
        assert_eq!(max_length(30 * 16_000, 4, 200), 200);
    }
}
