//! The Whisper model, loaded once per process and shared by every call and the transcription worker.
//!
//! Inference is CPU-bound and takes hundreds of milliseconds per utterance, so it never runs on the async runtime:
//! [`WhisperEngine::transcribe_phone`] moves it to a blocking thread, and a semaphore bounds how many run at once so
//! a burst of utterances queues instead of oversubscribing the cores the live calls need. (`ct2rs::Whisper` is
//! `Send + Sync`: CTranslate2 serialises access to its model replica internally.)
//!
//! With Whisper's own 30 s window the model runs through `ct2rs::Whisper`; a shorter window (`window_ms`, the live
//! provider's) runs through [`fitted`], on a window fitted to the audio.

#[cfg(feature = "whisper")]
mod fitted;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[cfg(feature = "whisper")]
use ct2rs::{Config as Ct2Config, Whisper, WhisperOptions};
use tokio::sync::Semaphore;

use super::config::WhisperSettings;
#[cfg(feature = "whisper")]
use super::config::{ComputeType, FULL_WINDOW_MS};
use super::resample::{phone_to_whisper, ResampleError};

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
    /// A window fitted to the audio.
    Fitted(fitted::FittedWhisper),
}

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
            Model::Fitted(fitted::FittedWhisper::load(&dir, config, settings.window_ms).map_err(load_error)?)
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
        let language = self.language.as_deref();
        let pieces = match &self.model {
            Model::Full(model) => model.generate(samples, language, false, &self.options),
            Model::Fitted(model) => model.generate(samples, language, &self.options),
        }
        .map_err(inference)?;
        Ok(clean(&pieces.join(" ")))
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

    #[test]
    fn a_missing_model_says_how_to_fetch_it() {
        let settings = WhisperSettings { model: Some("/nonexistent/model".into()), ..WhisperSettings::default() };
        let err = WhisperEngine::load(&settings).unwrap_err();
        assert!(err.to_string().contains("scripts/fetch-whisper-model"), "{err}");
    }
}
