//! Pipecat's smart-turn v3.2 end-of-turn model, in-process: it listens to the last 8 s of the caller's audio and
//! judges whether they have finished their turn or only paused — what words and silence timers alone cannot tell
//! ("My order number is…").
//!
//! The model (BSD-2-Clause, a Whisper-tiny encoder with a classifier head, int8 ONNX for CPU) comes from the
//! `pipecat-ai` wheel on PyPI and ONNX Runtime from the `onnxruntime` wheel; `scripts/setup` installs both. An
//! inference takes tens of milliseconds of CPU, so it runs on a [`SmartTurnPool`] of dedicated threads, never on the
//! async runtime's.

mod features;
mod model;
mod pool;
mod runtime;

use std::path::PathBuf;

pub use features::{FeatureExtractor, FEATURES_LEN, FRAMES, MEL_BINS, SAMPLE_RATE, WINDOW_SAMPLES};
pub use model::SmartTurnModel;
pub use pool::{phone_to_model_audio, SmartTurnPool, TurnJudgement};
pub use runtime::default_library_path;

/// Why the model could not judge a turn.
#[derive(Debug, thiserror::Error)]
pub enum SmartTurnError {
    #[error("the smart-turn model is not at {0} (run scripts/setup, or set [local.smart_turn] model)")]
    ModelMissing(PathBuf),
    #[error("the ONNX Runtime library is not at {0} (run scripts/setup, or set [local.smart_turn] onnxruntime)")]
    RuntimeMissing(PathBuf),
    #[error("ONNX Runtime failed {what}: {detail}")]
    Runtime { what: String, detail: String },
    #[error(transparent)]
    Resample(#[from] crate::local::resample::ResampleError),
    #[error("the smart-turn workers have stopped")]
    Stopped,
}
