//! Settings of the engines that run on this machine, as they appear in the `[local]` section (which
//! [`crate::config::LocalConfig`] assembles, together with the offline transcription worker's settings).
//!
//! ```toml
//! [local.whisper]
//! model = "/var/lib/parley/whisper-tiny.en"   # default: $PARLEY_WHISPER_MODEL, else ~/.cache/parley/models/whisper-tiny.en
//! threads = 2
//!
//! [local.smart_turn]
//! model = "/var/lib/parley/smart-turn-v3.2-cpu.onnx"  # default: $PARLEY_SMART_TURN_MODEL, else ~/.cache/parley/models/…
//! threads = 1
//!
//! [local.espeak]
//! voice = "en-us"
//!
//! [local.transcribe]
//! backend = "whisper"                          # or "openai": an OpenAI-compatible /v1/audio/transcriptions server
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use super::segment::SegmenterConfig;

/// Where the Whisper model is and how it runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhisperSettings {
    /// Folder of a CTranslate2 Whisper model (`model.bin`, `tokenizer.json`, `preprocessor_config.json`).
    pub model: Option<PathBuf>,
    /// Spoken language (ISO 639-1). English-only (`.en`) models need `en`; `None` lets a multilingual model detect it.
    pub language: Option<String>,
    /// CPU threads per inference; 0 lets CTranslate2 choose.
    pub threads: usize,
    /// Transcriptions run at once across all calls: each one keeps `threads` cores busy.
    pub max_concurrent: usize,
    /// Beam search width of the offline transcript (1 is greedy: faster, slightly less accurate).
    pub beam_size: usize,
    /// Beam search width of the live speech-to-text provider, whose every millisecond a caller waits for: greedy (1)
    /// by default; the offline transcript after the call keeps `beam_size`.
    pub live_beam_size: usize,
    /// Whisper's encoder window, in ms: 30 000 is the model's own (audio padded to 30 s, what it was trained on and
    /// what the offline transcript uses). Shorter, the window is the audio plus 2 s of silence, never less than this:
    /// the encoder's cost grows with the window, so a short utterance is transcribed several times faster.
    pub window_ms: u64,
    /// The live provider's encoder window (see `window_ms`): 10 s by default, where Whisper tiny.en transcribes
    /// phone-quality caller lines as well as with the full window in a third of the time.
    pub live_window_ms: u64,
    /// Weight precision: `int8` is about twice as fast on CPU for a small loss; `default` keeps the model's own.
    pub compute_type: ComputeType,
    /// How the live provider cuts the caller's audio into utterances.
    pub segmenter: SegmenterConfig,
}

impl Default for WhisperSettings {
    fn default() -> Self {
        WhisperSettings {
            model: None,
            language: Some("en".into()),
            threads: 2,
            max_concurrent: 1,
            beam_size: 5,
            live_beam_size: 1,
            window_ms: FULL_WINDOW_MS,
            live_window_ms: 10_000,
            compute_type: ComputeType::Int8,
            segmenter: SegmenterConfig::default(),
        }
    }
}

/// Whisper's own window: 30 s.
pub const FULL_WINDOW_MS: u64 = 30_000;

/// Where `scripts/fetch-whisper-model` installs the model unless told otherwise.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PARLEY_WHISPER_MODEL") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/parley/models/whisper-tiny.en")
}

impl WhisperSettings {
    /// The model folder: the configured one, else the default install location.
    pub fn model_dir(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(default_model_dir)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeType {
    Default,
    Auto,
    Float32,
    #[default]
    Int8,
}

/// How eSpeak NG speaks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EspeakSettings {
    /// The program to run.
    pub binary: PathBuf,
    /// Voice name (`espeak-ng --voices` lists them).
    pub voice: String,
    /// Words per minute.
    pub speed: u32,
    /// Pitch, 0-99.
    pub pitch: u32,
}

impl Default for EspeakSettings {
    fn default() -> Self {
        EspeakSettings { binary: PathBuf::from("espeak-ng"), voice: "en-us".into(), speed: 160, pitch: 50 }
    }
}

/// Where the smart-turn end-of-turn model and ONNX Runtime are, and how they run: `[local.smart_turn]` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmartTurnSettings {
    /// The model file (`smart-turn-v3.2-cpu.onnx`); default `$PARLEY_SMART_TURN_MODEL`, else
    /// `~/.cache/parley/models/smart-turn-v3.2-cpu.onnx`, where `scripts/fetch-smart-turn-model` installs it.
    pub model: Option<PathBuf>,
    /// ONNX Runtime's shared library, loaded at run time; default `$PARLEY_ONNXRUNTIME_LIB`, else
    /// `~/.cache/parley/lib/libonnxruntime.so`, where `scripts/fetch-onnxruntime` installs it.
    pub onnxruntime: Option<PathBuf>,
    /// Worker threads, each with the model loaded and judging one turn at a time on one core.
    pub threads: usize,
    /// The probability above which a turn counts as complete (the model's own calibration point is 0.5).
    pub threshold: f32,
}

impl Default for SmartTurnSettings {
    fn default() -> Self {
        SmartTurnSettings { model: None, onnxruntime: None, threads: 1, threshold: 0.5 }
    }
}

impl SmartTurnSettings {
    /// The model file: the configured one, else the default install location.
    pub fn model_path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(default_smart_turn_model)
    }

    /// ONNX Runtime's library: the configured one, else the default install location.
    pub fn onnxruntime_path(&self) -> PathBuf {
        self.onnxruntime.clone().unwrap_or_else(super::smart_turn::default_library_path)
    }
}

/// Where `scripts/fetch-smart-turn-model` installs the model unless told otherwise.
pub fn default_smart_turn_model() -> PathBuf {
    if let Some(path) = std::env::var_os("PARLEY_SMART_TURN_MODEL") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/parley/models/smart-turn-v3.2-cpu.onnx")
}
