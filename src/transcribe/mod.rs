//! Offline transcription of archived calls: a worker that transcribes each call's recording after the call, writes
//! `transcript.json` beside it, and scores the hot path's live transcript against it. The same worker first turns the
//! call's μ-law recording into `recording.opus` ([`crate::archive::compress`]): everything about a call that is not
//! needed live is done here, off the machines taking calls if the workers run elsewhere.
//!
//! Nothing here runs on a live call's path: calls are queued in the archive's store ([`queue`], shared by any number
//! of workers with expiring claims) and transcribed later (`parley transcribe --pending`, `--watch` for a standing
//! worker), a bounded number at a time, so a backlog costs time, never call quality. Both legs
//! are transcribed (caller left, agent right), each into timed segments. The caller leg is then compared with the
//! `caller_turn` events of the timeline ([`compare`]) to give the word error rate of the hot path per turn and per call.
//!
//! The engine is Whisper in-process ([`backend::LocalWhisper`]) or an OpenAI-compatible HTTP server
//! ([`openai::OpenAiTranscriber`]), chosen by `[local.transcribe] backend`.

pub mod after_call;
pub mod backend;
pub mod cli;
pub mod compare;
pub mod openai;
pub mod queue;
pub mod wer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

pub use after_call::AfterCall;
pub use backend::{LocalWhisper, TranscriptionBackend};
pub use compare::{compare, Comparison, TurnComparison};
pub use openai::{OpenAiTranscribeSettings, OpenAiTranscriber};
pub use queue::{Claim, Queue, QueuedJob};

use crate::archive::compress::Legs;
use crate::archive::{ArchiveError, ArchiveStore, CallKey, CallStatus};
use crate::local::WhisperError;

/// The transcript file written into each call's folder.
pub const TRANSCRIPT_FILE: &str = "transcript.json";

/// Why a call could not be transcribed.
#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    #[error("I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("archive: {0}")]
    Archive(#[from] ArchiveError),
    #[error("whisper: {0}")]
    Whisper(#[from] WhisperError),
    #[error("transcription backend: {0}")]
    Backend(String),
    #[error("{0} is not an archived call folder (no recording.wav or recording.opus)")]
    NotACall(PathBuf),
}

/// Which engine transcribes archived calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscribeBackendKind {
    /// Whisper in-process, with the `[local.whisper]` model.
    #[default]
    Whisper,
    /// An OpenAI-compatible `/v1/audio/transcriptions` server, `[local.transcribe.openai]`.
    Openai,
}

/// `[local.transcribe]`: the offline transcription worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscribeConfig {
    pub backend: TranscribeBackendKind,
    /// Transcribe each call in the background as soon as it ends (`parley serve`); off, calls wait for
    /// `parley transcribe --pending`.
    pub after_call: bool,
    /// Calls transcribed at once.
    pub concurrency: usize,
    pub openai: OpenAiTranscribeSettings,
}

impl Default for TranscribeConfig {
    fn default() -> Self {
        TranscribeConfig {
            backend: TranscribeBackendKind::Whisper,
            after_call: true,
            concurrency: 1,
            openai: Default::default(),
        }
    }
}

/// One timed stretch of speech, seconds from the call's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// A caller turn as the hot path transcribed it.
#[derive(Debug, Clone, PartialEq)]
pub struct HotTurn {
    pub turn: u64,
    /// When the turn was committed, milliseconds since the call started (if the timeline says).
    pub ms: Option<u64>,
    pub text: String,
}

/// The content of `transcript.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallTranscript {
    pub backend: String,
    pub transcribed_at_ms: u64,
    pub caller: Vec<Segment>,
    pub agent: Vec<Segment>,
    pub comparison: Comparison,
}

/// Where the worker reads a call from; the archive in production, fakes in tests.
pub trait CallReader: Send + Sync {
    /// The caller and agent legs, 8 kHz PCM.
    fn legs(&self, call: &CallKey) -> Result<(Vec<i16>, Vec<i16>), TranscribeError>;
    /// Makes the call's Opus recording from its μ-law one, when it still has one, and returns the legs it decoded
    /// (so they are not read twice); `None` when there was nothing to do. Readers without an archive do nothing.
    fn compress(&self, _call: &CallKey) -> Result<Option<Legs>, TranscribeError> {
        Ok(None)
    }
    /// The hot path's caller turns.
    fn hot_turns(&self, call: &CallKey) -> Result<Vec<HotTurn>, TranscribeError>;
}

/// Reads calls from the archive's store.
#[derive(Clone)]
pub struct ArchiveReader {
    store: Arc<dyn ArchiveStore>,
}

impl ArchiveReader {
    pub fn new(store: Arc<dyn ArchiveStore>) -> ArchiveReader {
        ArchiveReader { store }
    }
}

impl CallReader for ArchiveReader {
    fn legs(&self, call: &CallKey) -> Result<(Vec<i16>, Vec<i16>), TranscribeError> {
        match crate::archive::read_call_legs(self.store.as_ref(), call) {
            Err(ArchiveError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(TranscribeError::NotACall(call.relative_path()))
            }
            other => Ok(other?),
        }
    }

    fn compress(&self, call: &CallKey) -> Result<Option<Legs>, TranscribeError> {
        Ok(crate::archive::compress_recording(self.store.as_ref(), call)?)
    }

    fn hot_turns(&self, call: &CallKey) -> Result<Vec<HotTurn>, TranscribeError> {
        Ok(crate::archive::read_call_timeline(self.store.as_ref(), call)?
            .into_iter()
            .filter_map(|entry| match entry.event {
                crate::archive::TimelineEvent::CallerTurn { turn, text } => {
                    Some(HotTurn { turn, ms: Some(entry.ms), text })
                }
                _ => None,
            })
            .collect())
    }
}

/// Sealed calls in the archive that have no transcript yet (a call still being recorded is left for a later run).
pub fn untranscribed_calls(store: &dyn ArchiveStore) -> Result<Vec<CallKey>, TranscribeError> {
    let mut found = Vec::new();
    for (key, metadata) in crate::archive::list_calls(store)? {
        if metadata.status == CallStatus::Sealed && store.get(&key, TRANSCRIPT_FILE).is_err() {
            found.push(key);
        }
    }
    found.sort();
    Ok(found)
}

/// How one job went, for progress reporting; `call` is the call's key in the archive.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    Done { call: String, overall_wer: f64 },
    Failed { call: String, error: String, gave_up: bool },
}

/// Runs blocking store work off the runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TranscribeError> + Send + 'static,
) -> Result<T, TranscribeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TranscribeError::Backend(format!("store thread failed: {e}")))?
}

/// Transcribes calls from the queue.
pub struct Worker {
    queue: Queue,
    backend: Arc<dyn TranscriptionBackend>,
    reader: Arc<dyn CallReader>,
    concurrency: usize,
}

impl Worker {
    pub fn new(
        queue: Queue,
        backend: Arc<dyn TranscriptionBackend>,
        reader: Arc<dyn CallReader>,
        concurrency: usize,
    ) -> Worker {
        Worker { queue, backend, reader, concurrency: concurrency.max(1) }
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Works through every job queued now that no other worker holds, `concurrency` at a time, reporting each
    /// outcome to `progress`. Jobs other workers hold are left to them (or taken over once their claims expire, at a
    /// later drain).
    pub async fn drain(&self, mut progress: impl FnMut(&JobOutcome)) -> Result<Vec<JobOutcome>, TranscribeError> {
        let queue = self.queue.clone();
        let jobs = blocking(move || queue.pending()).await?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut running = futures_util::stream::iter(jobs).map(|job| self.run(job)).buffer_unordered(self.concurrency);
        while let Some(outcome) = running.next().await {
            if let Some(outcome) = outcome {
                progress(&outcome);
                outcomes.push(outcome);
            }
        }
        Ok(outcomes)
    }

    /// One job, if this worker can claim it: transcribed while the claim is renewed, the result written only while
    /// the claim still holds.
    async fn run(&self, job: QueuedJob) -> Option<JobOutcome> {
        let queue = self.queue.clone();
        let candidate = job.clone();
        let claim = match blocking(move || queue.claim(&candidate)).await {
            Ok(Some(claim)) => claim,
            Ok(None) => return None,
            Err(err) => {
                tracing::warn!(%err, job = %job.name, "cannot claim a transcription job");
                return None;
            }
        };
        let call = job.job.call.clone();
        // Stops renewing when the job ends, and when this future is dropped (the worker is stopping).
        let renewer = AbortOnDrop(tokio::spawn(keep_claimed(self.queue.clone(), claim.clone())));
        let result = match job.job.key() {
            Some(key) => self.transcribe_and_write(&key, &claim).await,
            None => Err(TranscribeError::Backend(format!("`{call}` is not a call's key"))),
        };
        drop(renewer);
        let queue = self.queue.clone();
        match result {
            Ok(Some(transcript)) => {
                if let Err(err) = blocking(move || queue.complete(&claim)).await {
                    tracing::warn!(%err, "transcribed, but could not remove the job (it will be redone)");
                }
                Some(JobOutcome::Done { call, overall_wer: transcript.comparison.overall_wer })
            }
            Ok(None) => {
                tracing::warn!(%call, "another worker took the job over; this result is dropped");
                None
            }
            Err(err) => {
                let error = err.to_string();
                tracing::warn!(%call, %error, "transcription failed");
                let failed = error.clone();
                let gave_up = blocking(move || queue.fail(&claim, &job, &failed)).await.unwrap_or(false);
                Some(JobOutcome::Failed { call, error, gave_up })
            }
        }
    }

    /// The transcript, written beside the call while this worker still holds the claim; `None` when it does not.
    async fn transcribe_and_write(
        &self,
        key: &CallKey,
        claim: &Claim,
    ) -> Result<Option<CallTranscript>, TranscribeError> {
        let transcript = transcribe_call(key, self.backend.as_ref(), Arc::clone(&self.reader)).await?;
        let (queue, claim, key, json) = (self.queue.clone(), claim.clone(), key.clone(), to_json(&transcript)?);
        blocking(move || {
            if !queue.holds(&claim)? {
                return Ok(None);
            }
            queue.store().put(&key, TRANSCRIPT_FILE, &json)?;
            Ok(Some(()))
        })
        .await
        .map(|written| written.map(|()| transcript))
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews a claim until aborted.
async fn keep_claimed(queue: Queue, claim: Claim) {
    let mut every = tokio::time::interval(queue.renew_every());
    every.tick().await;
    loop {
        every.tick().await;
        let (queue, claim) = (queue.clone(), claim.clone());
        if let Err(err) = blocking(move || queue.renew(&claim)).await {
            tracing::warn!(%err, "cannot renew the claim on a transcription job");
        }
    }
}

fn to_json(transcript: &CallTranscript) -> Result<Vec<u8>, TranscribeError> {
    serde_json::to_vec_pretty(transcript)
        .map_err(|source| TranscribeError::Json { path: PathBuf::from(TRANSCRIPT_FILE), source })
}

/// Transcribes one archived call (the transcript is not written; the worker writes it while it holds the job).
pub async fn transcribe_call(
    key: &CallKey,
    backend: &dyn TranscriptionBackend,
    reader: Arc<dyn CallReader>,
) -> Result<CallTranscript, TranscribeError> {
    let owned = key.clone();
    let blocking_reader = Arc::clone(&reader);
    // Encoding and decoding Opus is CPU work: off the runtime. The legs decoded from the μ-law recording to make the
    // Opus one are the ones transcribed (the call's audio as it was heard, not the lossy copy).
    let (caller_pcm, agent_pcm) = tokio::task::spawn_blocking(move || match blocking_reader.compress(&owned)? {
        Some(legs) => Ok(legs),
        None => blocking_reader.legs(&owned),
    })
    .await
    .map_err(|e| TranscribeError::Backend(format!("decoding thread failed: {e}")))??;
    let turns = reader.hot_turns(key)?;
    let caller = backend.transcribe_leg(caller_pcm).await?;
    let agent = backend.transcribe_leg(agent_pcm).await?;
    let comparison = compare(&turns, &caller);
    let transcript = CallTranscript {
        backend: backend.describe(),
        transcribed_at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        caller,
        agent,
        comparison,
    };
    Ok(transcript)
}
