//! The Whisper model, loaded once per process and shared by every call and the transcription worker.
//!
//! Inference is CPU-bound and takes hundreds of milliseconds per utterance, so it never runs on the async runtime:
//! [`WhisperEngine::transcribe_phone`] moves it to a blocking thread, and a semaphore bounds how many run at once so
//! a burst of utterances queues instead of oversubscribing the cores the live calls need. (`ct2rs::Whisper` is
//! `Send + Sync`: CTranslate2 serialises access to its model replica internally.)
//!
//! With Whisper's own 30 s window the model runs through `ct2rs::Whisper`. A shorter window (`window_ms`, the live
//! provider's) runs the CTranslate2 model directly on the same features ct2rs makes (`mel_spec`'s STFT and log-mel,
//! each frame clamped to 8 below its own maximum, zeros after the audio), cut to the audio plus 2 s: the encoder's
//! cost grows with the window, and it is most of an utterance's time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[cfg(feature = "whisper")]
use ct2rs::sys::{StorageView, Whisper as RawWhisper};
#[cfg(feature = "whisper")]
use ct2rs::tokenizers::hf::Tokenizer as WhisperTokenizer;
#[cfg(feature = "whisper")]
use ct2rs::{Config as Ct2Config, Tokenizer as _, Whisper, WhisperOptions};
use tokio::sync::Semaphore;

use super::config::WhisperSettings;
#[cfg(feature = "whisper")]
use super::config::{ComputeType, FULL_WINDOW_MS};
use super::resample::{phone_to_whisper, ResampleError};
#[cfg(feature = "whisper")]
use mel_spec::mel::{log_mel_spectrogram, mel, norm_mel};
#[cfg(feature = "whisper")]
use mel_spec::stft::Spectrogram;

/// Why the model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    #[error(
        "no Whisper model at {0}: run scripts/fetch-whisper-model, or set [local.whisper] model / PARLEY_WHISPER_MODEL"
    )]
    ModelMissing(PathBuf),
    #[error("could not load the Whisper model at {path}: {detail}")]
    Load { path: PathBuf, detail: String },
    #[error("Whisper inference failed: {0}")]
    Inference(String),
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

#[cfg(feature = "whisper")]
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Whisper>();
};

/// The model, loaded for the window it runs with.
#[cfg(feature = "whisper")]
enum Model {
    /// Whisper's own 30 s window, through ct2rs.
    Full(Whisper),
    /// A window fitted to the audio, at least `min_frames` feature frames.
    Fitted { model: RawWhisper, tokenizer: WhisperTokenizer, min_frames: usize },
}

/// Feature frames in Whisper's 30 s window.
#[cfg(feature = "whisper")]
const FULL_FRAMES: usize = 3000;
/// Whisper's features: 80 mel bins from a 400-point FFT every 160 samples (10 ms) of 16 kHz audio.
#[cfg(feature = "whisper")]
const MEL_BINS: usize = 80;
#[cfg(feature = "whisper")]
const N_FFT: usize = 400;
#[cfg(feature = "whisper")]
const HOP: usize = 160;
#[cfg(feature = "whisper")]
const MODEL_RATE: f64 = 16_000.0;
/// Silence after the audio in a fitted window, in feature frames (2 s): Whisper was trained on speech followed by
/// silence, and ends its transcript more reliably with some.
#[cfg(feature = "whisper")]
const FITTED_PADDING_FRAMES: usize = 200;
/// Tokens a fitted window may decode per second of audio (speech runs at 3–5, digits one token each), plus the prompt
/// and a margin: greedy decoding on a short window can fall into a loop ("4 5 6 4 5 6 …"), and this bounds its time.
#[cfg(feature = "whisper")]
const FITTED_TOKENS_PER_SECOND: usize = 8;
#[cfg(feature = "whisper")]
const FITTED_TOKEN_MARGIN: usize = 16;

/// A loaded model plus the limit on concurrent inferences.
pub struct WhisperEngine {
    #[cfg(feature = "whisper")]
    model: Model,
    model_dir: PathBuf,
    #[cfg_attr(not(feature = "whisper"), allow(dead_code))]
    language: Option<String>,
    #[cfg(feature = "whisper")]
    options: WhisperOptions,
    permits: Semaphore,
    /// Inferences run so far (the live provider reuses transcripts made ahead; tests and reports count them).
    inferences: AtomicU64,
}

impl std::fmt::Debug for WhisperEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperEngine").field("model_dir", &self.model_dir).finish_non_exhaustive()
    }
}

/// Why in-process Whisper is unavailable in a build without the `whisper` feature (CTranslate2 takes ~25 minutes
/// to compile on two cores, so it is opt-in).
#[cfg(not(feature = "whisper"))]
const NOT_BUILT: &str = "Parley was built without in-process Whisper; rebuild with `--features whisper`, or use the \
    OpenAI-compatible transcription backend";

/// Files a CTranslate2 Whisper folder must hold for ct2rs.
const REQUIRED_FILES: [&str; 3] = ["model.bin", "tokenizer.json", "preprocessor_config.json"];

impl WhisperEngine {
    /// Loads the model (blocking: reads ~75 MB for tiny.en).
    pub fn load(settings: &WhisperSettings) -> Result<WhisperEngine, WhisperError> {
        let dir = settings.model_dir();
        if REQUIRED_FILES.iter().any(|file| !dir.join(file).is_file()) {
            return Err(WhisperError::ModelMissing(dir));
        }
        Self::load_model(settings, dir)
    }

    #[cfg(not(feature = "whisper"))]
    fn load_model(_settings: &WhisperSettings, dir: PathBuf) -> Result<WhisperEngine, WhisperError> {
        Err(WhisperError::Load { path: dir, detail: NOT_BUILT.into() })
    }

    #[cfg(feature = "whisper")]
    fn load_model(settings: &WhisperSettings, dir: PathBuf) -> Result<WhisperEngine, WhisperError> {
        let config = Ct2Config {
            compute_type: match settings.compute_type {
                ComputeType::Default => ct2rs::ComputeType::DEFAULT,
                ComputeType::Auto => ct2rs::ComputeType::AUTO,
                ComputeType::Float32 => ct2rs::ComputeType::FLOAT32,
                ComputeType::Int8 => ct2rs::ComputeType::INT8,
            },
            num_threads_per_replica: settings.threads,
            ..Ct2Config::default()
        };
        let load_error = |e: anyhow::Error| WhisperError::Load { path: dir.clone(), detail: format!("{e:#}") };
        let model = if settings.window_ms >= FULL_WINDOW_MS {
            Model::Full(Whisper::new(&dir, config).map_err(load_error)?)
        } else {
            Model::Fitted {
                model: RawWhisper::new(&dir, config).map_err(load_error)?,
                tokenizer: WhisperTokenizer::new(&dir).map_err(load_error)?,
                min_frames: (settings.window_ms as usize / 10).clamp(1, FULL_FRAMES),
            }
        };
        let options = WhisperOptions { beam_size: settings.beam_size.max(1), ..WhisperOptions::default() };
        Ok(WhisperEngine {
            model,
            model_dir: dir,
            language: settings.language.clone().filter(|l| !l.is_empty()),
            options,
            permits: Semaphore::new(settings.max_concurrent.max(1)),
            inferences: AtomicU64::new(0),
        })
    }

    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    /// A short model name for reports: the folder's name.
    pub fn model_name(&self) -> String {
        self.model_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "whisper".into())
    }

    /// Transcribes 16 kHz mono floats in [-1, 1] on the calling thread (blocking).
    pub fn transcribe_blocking(&self, samples: &[f32]) -> Result<String, WhisperError> {
        if samples.is_empty() {
            return Ok(String::new());
        }
        self.inferences.fetch_add(1, Ordering::Relaxed);
        self.generate(samples)
    }

    /// How many inferences this model has run.
    pub fn inferences(&self) -> u64 {
        self.inferences.load(Ordering::Relaxed)
    }

    #[cfg(not(feature = "whisper"))]
    fn generate(&self, _samples: &[f32]) -> Result<String, WhisperError> {
        Err(WhisperError::Inference(NOT_BUILT.into()))
    }

    #[cfg(feature = "whisper")]
    fn generate(&self, samples: &[f32]) -> Result<String, WhisperError> {
        let inference = |e: anyhow::Error| WhisperError::Inference(format!("{e:#}"));
        let pieces = match &self.model {
            Model::Full(model) => {
                model.generate(samples, self.language.as_deref(), false, &self.options).map_err(inference)?
            }
            Model::Fitted { model, tokenizer, min_frames } => {
                self.generate_fitted(model, tokenizer, *min_frames, samples).map_err(inference)?
            }
        };
        Ok(clean(&pieces.join(" ")))
    }

    /// Transcribes with a window fitted to the audio: one window of the audio plus 2 s (at least `min_frames`) when
    /// it fits in 30 s, else 30 s windows in one batch.
    #[cfg(feature = "whisper")]
    fn generate_fitted(
        &self,
        model: &RawWhisper,
        tokenizer: &WhisperTokenizer,
        min_frames: usize,
        samples: &[f32],
    ) -> anyhow::Result<Vec<String>> {
        let full_samples = FULL_FRAMES * HOP;
        let chunks: Vec<&[f32]> = samples.chunks(full_samples).collect();
        let frames = match chunks.as_slice() {
            [one] => (one.len().div_ceil(HOP) + FITTED_PADDING_FRAMES).clamp(min_frames, FULL_FRAMES),
            _ => FULL_FRAMES,
        };
        // The filters ct2rs uses when the model's preprocessor configuration lists none (Whisper's: Slaney mel).
        let filters = mel(MODEL_RATE, N_FFT, MEL_BINS, None, None, false, true);
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
        let view = StorageView::new(&[chunks.len(), MEL_BINS, frames], &mut features, Default::default())?;
        let language = match self.language.as_deref() {
            Some(language) => format!("<|{language}|>"),
            None => model
                .detect_language(&view)?
                .into_iter()
                .next()
                .and_then(|found| found.into_iter().next())
                .map(|best| best.language)
                .ok_or_else(|| anyhow::anyhow!("failed to detect the language"))?,
        };
        let prompt = ["<|startoftranscript|>", language.as_str(), "<|transcribe|>", "<|notimestamps|>"].to_vec();
        let longest = chunks.iter().map(|chunk| chunk.len()).max().unwrap_or(0);
        let max_length = fitted_max_length(longest, prompt.len(), self.options.max_length);
        let options = WhisperOptions { max_length, ..self.options.clone() };
        model
            .generate(&view, &vec![prompt; chunks.len()], &options)?
            .into_iter()
            .map(|result| {
                let best = result.sequences.into_iter().next().ok_or_else(|| anyhow::anyhow!("no transcript"))?;
                tokenizer.decode(best)
            })
            .collect()
    }

    /// Transcribes 8 kHz phone PCM on a blocking thread, waiting for a free inference slot first.
    pub async fn transcribe_phone(self: &Arc<Self>, pcm8k: Vec<i16>) -> Result<String, WhisperError> {
        let _permit = self.permits.acquire().await.map_err(|e| WhisperError::Inference(e.to_string()))?;
        let engine = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let samples = phone_to_whisper(&pcm8k)?;
            engine.transcribe_blocking(&samples)
        })
        .await
        .map_err(|e| WhisperError::Inference(format!("inference thread failed: {e}")))?
    }
}

/// The most tokens (prompt included) a fitted window of `samples` 16 kHz samples may decode, within Whisper's `cap`.
#[cfg(feature = "whisper")]
fn fitted_max_length(samples: usize, prompt: usize, cap: usize) -> usize {
    let seconds = samples.div_ceil(MODEL_RATE as usize);
    (prompt + FITTED_TOKEN_MARGIN + seconds * FITTED_TOKENS_PER_SECOND).min(cap)
}

/// Whisper's text with the leading space, the bracketed non-speech tags (`[BLANK_AUDIO]`, `(music)`) and any special
/// token (`<|notimestamps|>`, which the direct model's results can carry) removed: on telephone silence Whisper emits
/// such tags, and none of them are words the caller said.
#[cfg_attr(not(feature = "whisper"), allow(dead_code))]
fn clean(text: &str) -> String {
    let text = without_special_tokens(text);
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` without Whisper's special tokens (`<|…|>`).
#[cfg_attr(not(feature = "whisper"), allow(dead_code))]
fn without_special_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<|") {
        out.push_str(&rest[..start]);
        match rest[start..].find("|>") {
            Some(end) => rest = &rest[start + end + 2..],
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_drops_non_speech_tags() {
        assert_eq!(clean(" Hello there. [BLANK_AUDIO] (music)  yes"), "Hello there. yes");
        assert_eq!(clean(" [BLANK_AUDIO]"), "");
        assert_eq!(clean("<|notimestamps|> I want to cancel.<|endoftext|>"), "I want to cancel.");
        assert_eq!(clean("a <| b"), "a <| b");
    }

    #[cfg(feature = "whisper")]
    #[test]
    fn a_fitted_window_decodes_a_bounded_number_of_tokens() {
        // 2.5 s of audio (rounded up to 3), a 4-token prompt: 4 + 16 + 3 × 8.
        assert_eq!(fitted_max_length(40_000, 4, 448), 44);
        assert_eq!(fitted_max_length(0, 4, 448), 20);
        // Never past Whisper's own limit.
        assert_eq!(fitted_max_length(30 * 16_000, 4, 448), 260);
        assert_eq!(fitted_max_length(30 * 16_000, 4, 200), 200);
    }

    #[test]
    fn a_missing_model_says_how_to_fetch_it() {
        let settings = WhisperSettings { model: Some("/nonexistent/model".into()), ..WhisperSettings::default() };
        let err = WhisperEngine::load(&settings).unwrap_err();
        assert!(err.to_string().contains("scripts/fetch-whisper-model"), "{err}");
    }
}
