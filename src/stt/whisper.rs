//! Local speech-to-text: Whisper in-process, one utterance at a time.
//!
//! Whisper is not a streaming model, so the caller's audio is cut into utterances by the energy
//! [`Segmenter`](crate::local::segment::Segmenter): speech onset is reported at once as [`SttEvent::SpeechStarted`]
//! (barge-in needs it early), and each finished utterance is transcribed on a blocking thread and reported as one
//! final transcript with `speech_final` set, followed by [`SttEvent::UtteranceEnd`] (alone when it held no words).
//! [`SttInput::Finalize`] cuts the utterance in progress and always answers with a `from_finalize` transcript (empty
//! when nothing was heard), which the engine's VAD turn strategy waits for.
//!
//! Transcription takes hundreds of milliseconds, so it starts before the turn is known to be over: at each pause the
//! segmenter reports (`pause_report_ms` of silence) the utterance so far is transcribed, and its words go out as an
//! interim transcript (the engine's turn detector reads them). When the utterance then ends — by a finalize or by the
//! segmenter — with no speech since that pause, its final transcript is the one already made, not a second
//! inference; speech after the pause makes it stale (and a stale one not yet started is skipped).
//!
//! Transcripts leave in the order their utterances ended: a per-session task transcribes them one after another.

use std::sync::atomic::{AtomicU64, Ordering};
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
        let (input, inputs) = mpsc::channel(super::INPUT_CAPACITY);
        let (events_tx, events) = mpsc::channel(64);
        let (jobs_tx, jobs) = mpsc::unbounded_channel();
        let live_pause = Arc::new(AtomicU64::new(NO_PAUSE));
        tokio::spawn(transcriber(Arc::clone(&self.engine), jobs, events_tx.clone(), Arc::clone(&live_pause)));
        let listener =
            Listener { segmenter: Segmenter::new(self.segmenter.clone()), live_pause, pauses: 0, current_pause: None };
        tokio::spawn(listener.run(inputs, events_tx, jobs_tx));
        Ok(SttSession { input, events })
    }
}

/// No reported pause is current (the caller spoke after it).
const NO_PAUSE: u64 = 0;

/// Work for the transcriber, in order.
enum Job {
    /// The utterance so far, at the reported pause `pause`: transcribe it ahead, report its words as interim.
    Ahead { pause: u64, utterance: Utterance },
    /// A finished utterance; `ahead` names the pause whose transcript holds the same speech, if any.
    Final { utterance: Utterance, from_finalize: bool, ahead: Option<u64> },
}

/// Reads the engine's input, segments the audio and hands utterances to the transcriber.
struct Listener {
    segmenter: Segmenter,
    /// The last reported pause unless speech followed it, shared with the transcriber ([`NO_PAUSE`] after speech).
    live_pause: Arc<AtomicU64>,
    /// Pauses reported so far in this session (their numbers start at 1).
    pauses: u64,
    /// The pause the utterance in progress stands in, with no speech since: its transcript made ahead is this
    /// utterance's, if it ends now.
    current_pause: Option<u64>,
}

impl Listener {
    async fn run(
        mut self,
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
                    for event in self.segmenter.push(&pcm) {
                        match event {
                            SegmentEvent::Started { start_sample } => {
                                self.current_pause = None;
                                let timestamp = start_sample as f64 / SAMPLE_RATE as f64;
                                if events.send(SttEvent::SpeechStarted { timestamp }).await.is_err() {
                                    return;
                                }
                            }
                            SegmentEvent::Paused(utterance) => {
                                self.pauses += 1;
                                self.live_pause.store(self.pauses, Ordering::Release);
                                self.current_pause = Some(self.pauses);
                                let _ = jobs.send(Job::Ahead { pause: self.pauses, utterance });
                            }
                            SegmentEvent::Resumed => {
                                self.live_pause.store(NO_PAUSE, Ordering::Release);
                                self.current_pause = None;
                            }
                            SegmentEvent::Ended(utterance) => {
                                let _ = jobs.send(self.finished(utterance, false));
                            }
                        }
                    }
                }
                SttInput::Finalize => {
                    let utterance = self
                        .segmenter
                        .flush()
                        .unwrap_or(Utterance { start_sample: stream_samples, samples: Vec::new() });
                    let _ = jobs.send(self.finished(utterance, true));
                }
                SttInput::Close => break,
            }
        }
        if let Some(utterance) = self.segmenter.flush() {
            let _ = jobs.send(self.finished(utterance, false));
        }
        // Dropping `jobs` lets the transcriber finish the queue and report `Closed`.
    }

    /// The job for a finished utterance: it may reuse the transcript of the pause it ended in.
    fn finished(&mut self, utterance: Utterance, from_finalize: bool) -> Job {
        let ahead = self.current_pause.take().filter(|_| !utterance.samples.is_empty());
        Job::Final { utterance, from_finalize, ahead }
    }
}

/// Transcribes utterances in order and reports them.
async fn transcriber(
    engine: Arc<WhisperEngine>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    events: mpsc::Sender<SttEvent>,
    live_pause: Arc<AtomicU64>,
) {
    // The last transcript made ahead, with its pause.
    let mut ahead_text: Option<(u64, String)> = None;
    while let Some(job) = jobs.recv().await {
        let (utterance, from_finalize, ahead) = match job {
            Job::Ahead { pause, utterance } => {
                // A pause the caller has already spoken past (or that a later pause replaced) is not worth a run.
                if live_pause.load(Ordering::Acquire) != pause {
                    continue;
                }
                let (start, duration) = (utterance.start_secs(), utterance.duration_secs());
                match engine.transcribe_phone(utterance.samples).await {
                    Ok(text) => {
                        let still_live = live_pause.load(Ordering::Acquire) == pause;
                        if still_live && !text.is_empty() {
                            let interim = Transcript {
                                text: text.clone(),
                                is_final: false,
                                speech_final: false,
                                from_finalize: false,
                                start,
                                duration,
                            };
                            if events.send(SttEvent::Transcript(interim)).await.is_err() {
                                return;
                            }
                        }
                        ahead_text = Some((pause, text));
                    }
                    // The utterance's final transcription will try again, and report a lasting failure.
                    Err(error) => tracing::debug!(provider = PROVIDER, %error, "transcribing ahead failed"),
                }
                continue;
            }
            Job::Final { utterance, from_finalize, ahead } => (utterance, from_finalize, ahead),
        };
        let start = utterance.start_secs();
        let duration = utterance.duration_secs();
        let made_ahead = match (ahead, ahead_text.take()) {
            (Some(pause), Some((made_at, text))) if made_at == pause => Some(text),
            _ => None,
        };
        let text = match made_ahead {
            Some(text) => Ok(text),
            None if utterance.samples.is_empty() => Ok(String::new()),
            None => engine.transcribe_phone(utterance.samples).await,
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
