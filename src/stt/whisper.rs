//! Local speech-to-text: Whisper in-process, one utterance at a time.
//!
//! Whisper is not a streaming model, so the caller's audio is cut into utterances by the energy
//! [`Segmenter`](crate::local::segment::Segmenter): speech onset is reported at once as [`SttEvent::SpeechStarted`]
//! (barge-in needs it early), and each finished utterance is transcribed on a blocking thread and reported as one
//! final transcript with `speech_final` set, followed by [`SttEvent::UtteranceEnd`] (alone when it held no words).
//! [`SttInput::Finalize`] cuts the utterance in progress and always answers with a `from_finalize` transcript (empty
//! when nothing was heard), which the engine's VAD turn strategy waits for.
//!
//! Transcripts leave in the order their utterances ended: a per-session task transcribes them one after another.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{SpeechToText, SttError, SttEvent, SttInput, SttSession, Transcript};
use crate::audio::mulaw;
use crate::local::segment::{SegmentEvent, Segmenter, SegmenterConfig, Utterance, SAMPLE_RATE};
use crate::local::WhisperEngine;

const PROVIDER: &str = "whisper";

/// The local Whisper provider; cheap to clone, the model is shared.
#[derive(Debug, Clone)]
pub struct WhisperStt {
    engine: Arc<WhisperEngine>,
    segmenter: SegmenterConfig,
}

impl WhisperStt {
    pub fn new(engine: Arc<WhisperEngine>, segmenter: SegmenterConfig) -> WhisperStt {
        WhisperStt { engine, segmenter }
    }
}

#[async_trait]
impl SpeechToText for WhisperStt {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn open(&self) -> Result<SttSession, SttError> {
        let (input, inputs) = mpsc::channel(256);
        let (events_tx, events) = mpsc::channel(64);
        let (jobs_tx, jobs) = mpsc::unbounded_channel();
        tokio::spawn(transcriber(Arc::clone(&self.engine), jobs, events_tx.clone()));
        tokio::spawn(listener(Segmenter::new(self.segmenter.clone()), inputs, events_tx, jobs_tx));
        Ok(SttSession { input, events })
    }
}

/// One utterance to transcribe.
struct Job {
    utterance: Utterance,
    from_finalize: bool,
}

/// Reads the engine's input, segments the audio and hands finished utterances to the transcriber.
async fn listener(
    mut segmenter: Segmenter,
    mut inputs: mpsc::Receiver<SttInput>,
    events: mpsc::Sender<SttEvent>,
    jobs: mpsc::UnboundedSender<Job>,
) {
    let mut pcm = Vec::new();
    // Where the stream is, so a finalize with nothing heard still carries a sensible time.
    let mut stream_samples = 0u64;
    while let Some(input) = inputs.recv().await {
        match input {
            SttInput::Audio(bytes) => {
                mulaw::decode_into(&bytes, &mut pcm);
                stream_samples += pcm.len() as u64;
                for event in segmenter.push(&pcm) {
                    match event {
                        SegmentEvent::Started { start_sample } => {
                            let timestamp = start_sample as f64 / SAMPLE_RATE as f64;
                            if events.send(SttEvent::SpeechStarted { timestamp }).await.is_err() {
                                return;
                            }
                        }
                        SegmentEvent::Ended(utterance) => {
                            let _ = jobs.send(Job { utterance, from_finalize: false });
                        }
                    }
                }
            }
            SttInput::Finalize => {
                let utterance =
                    segmenter.flush().unwrap_or(Utterance { start_sample: stream_samples, samples: Vec::new() });
                let _ = jobs.send(Job { utterance, from_finalize: true });
            }
            SttInput::Close => break,
        }
    }
    if let Some(utterance) = segmenter.flush() {
        let _ = jobs.send(Job { utterance, from_finalize: false });
    }
    // Dropping `jobs` lets the transcriber finish the queue and report `Closed`.
}

/// Transcribes utterances in order and reports them.
async fn transcriber(
    engine: Arc<WhisperEngine>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    events: mpsc::Sender<SttEvent>,
) {
    while let Some(Job { utterance, from_finalize }) = jobs.recv().await {
        let start = utterance.start_secs();
        let duration = utterance.duration_secs();
        let text = if utterance.samples.is_empty() {
            Ok(String::new())
        } else {
            engine.transcribe_phone(utterance.samples).await
        };
        let text = match text {
            Ok(text) => text,
            Err(error) => {
                let detail = error.to_string();
                tracing::warn!(provider = PROVIDER, %detail, "utterance could not be transcribed");
                let _ = events.send(SttEvent::Error(SttError::Provider { provider: PROVIDER, detail })).await;
                return;
            }
        };
        if text.is_empty() && !from_finalize {
            // Noise that Whisper heard no words in: not a turn, but the speech it started is answered (a reply paused
            // by a barge-in resumes on it instead of waiting out its longest wait).
            if events.send(SttEvent::UtteranceEnd { last_word_end: start }).await.is_err() {
                return;
            }
            continue;
        }
        let transcript = Transcript { text, is_final: true, speech_final: true, from_finalize, start, duration };
        if events.send(SttEvent::Transcript(transcript)).await.is_err() {
            return;
        }
        if events.send(SttEvent::UtteranceEnd { last_word_end: start + duration }).await.is_err() {
            return;
        }
    }
    let _ = events.send(SttEvent::Closed).await;
}
