//! What turns one leg of a recording into timed text: Whisper in-process, or an OpenAI-compatible server
//! ([`super::openai`]).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Segment, TranscribeError};
use crate::local::segment::{SegmentEvent, Segmenter, SegmenterConfig};
use crate::local::WhisperEngine;

/// A transcription engine for whole recordings.
#[async_trait]
pub trait TranscriptionBackend: Send + Sync {
    /// Engine and model, for the transcript's record.
    fn describe(&self) -> String;
    /// Transcribes one 8 kHz mono leg; segment times are seconds from the leg's start.
    async fn transcribe_leg(&self, pcm8k: Vec<i16>) -> Result<Vec<Segment>, TranscribeError>;
}

/// Cuts a whole leg into utterances (the same segmenter as the live provider, flushed at the end; a whole leg needs
/// no pause reports).
pub fn utterances(pcm8k: &[i16], config: &SegmenterConfig) -> Vec<crate::local::segment::Utterance> {
    let mut segmenter = Segmenter::new(SegmenterConfig { pause_report_ms: 0, ..config.clone() });
    let mut found: Vec<_> = segmenter
        .push(pcm8k)
        .into_iter()
        .filter_map(|event| match event {
            SegmentEvent::Ended(utterance) => Some(utterance),
            SegmentEvent::Started { .. } | SegmentEvent::Paused(_) | SegmentEvent::Resumed => None,
        })
        .collect();
    found.extend(segmenter.flush());
    found
}

/// Whisper in-process: each utterance found by the segmenter is transcribed on its own, timed by the segmenter.
pub struct LocalWhisper {
    engine: Arc<WhisperEngine>,
    segmenter: SegmenterConfig,
}

impl LocalWhisper {
    pub fn new(engine: Arc<WhisperEngine>, segmenter: SegmenterConfig) -> LocalWhisper {
        LocalWhisper { engine, segmenter }
    }
}

#[async_trait]
impl TranscriptionBackend for LocalWhisper {
    fn describe(&self) -> String {
        format!("whisper (local, {})", self.engine.model_name())
    }

    async fn transcribe_leg(&self, pcm8k: Vec<i16>) -> Result<Vec<Segment>, TranscribeError> {
        let mut segments = Vec::new();
        for utterance in utterances(&pcm8k, &self.segmenter) {
            let (start, end) = (utterance.start_secs(), utterance.start_secs() + utterance.duration_secs());
            let text = self.engine.transcribe_phone(utterance.samples).await?;
            if !text.is_empty() {
                segments.push(Segment { start, end, text });
            }
        }
        Ok(segments)
    }
}
