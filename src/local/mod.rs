//! Local speech engines that need no cloud account: Whisper speech-to-text in-process (CTranslate2 via `ct2rs`),
//! eSpeak NG text-to-speech as a child process, the smart-turn end-of-turn model in-process (ONNX Runtime), plus the audio plumbing they share (resampling, WAV, utterance
//! segmentation).
//!
//! The live providers built on them are [`crate::stt::whisper`] and [`crate::tts::espeak`]; the offline transcription
//! worker ([`crate::transcribe`]) reuses the Whisper engine and the segmenter.

pub mod config;
pub mod resample;
pub mod segment;
pub mod smart_turn;
pub mod wav;
pub mod whisper;

pub use config::{EspeakSettings, SmartTurnSettings, WhisperSettings};
pub use smart_turn::{SmartTurnError, SmartTurnPool, TurnJudgement};
pub use whisper::{WhisperEngine, WhisperError};
