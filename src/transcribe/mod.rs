//! Offline transcription of archived calls: a worker that transcribes each call's recording after the call, writes
//! `transcript.json` beside it, and scores the hot path's live transcript against it.
//!
//! Nothing here runs on a live call's path: calls are queued in a durable folder ([`queue`]) and transcribed later
//! (`parley transcribe --pending`), a bounded number at a time, so a backlog costs time, never call quality. Both legs
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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

pub use after_call::AfterCall;
pub use backend::{LocalWhisper, TranscriptionBackend};
pub use compare::{compare, Comparison, TurnComparison};
pub use openai::{OpenAiTranscribeSettings, OpenAiTranscriber};
pub use queue::{Queue, QueuedJob};

use crate::archive::{ArchiveError, RECORDING_FILE};
use crate::local::WhisperError;

/// The transcript file written into each call's folder.
pub const TRANSCRIPT_FILE: &str = "transcript.json";
/// The queue's folder under the archive root (hidden, so it is not mistaken for a year folder).
pub const QUEUE_DIR: &str = ".transcribe-queue";

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
    #[error("{0} is not an archived call folder (no {RECORDING_FILE})")]
    NotACall(PathBuf),
}

impl TranscribeError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TranscribeError {
        let path = path.into();
        move |source| TranscribeError::Io { path, source }
    }
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
    fn legs(&self, dir: &Path) -> Result<(Vec<i16>, Vec<i16>), TranscribeError>;
    /// The hot path's caller turns.
    fn hot_turns(&self, dir: &Path) -> Result<Vec<HotTurn>, TranscribeError>;
}

/// Reads calls from the archive's folders.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArchiveReader;

impl CallReader for ArchiveReader {
    fn legs(&self, dir: &Path) -> Result<(Vec<i16>, Vec<i16>), TranscribeError> {
        if !dir.join(RECORDING_FILE).is_file() {
            return Err(TranscribeError::NotACall(dir.to_owned()));
        }
        Ok(crate::archive::read_legs(dir)?)
    }

    fn hot_turns(&self, dir: &Path) -> Result<Vec<HotTurn>, TranscribeError> {
        Ok(crate::archive::caller_turns(dir)?
            .into_iter()
            .map(|t| HotTurn { turn: t.turn, ms: Some(t.ms), text: t.text })
            .collect())
    }
}

/// Call folders under an archive root (`<YYYY>/<MM>/<DD>/<CallSid>`) that have a recording and no transcript yet.
pub fn untranscribed_calls(root: &Path) -> Result<Vec<PathBuf>, TranscribeError> {
    let mut found = Vec::new();
    let mut level = vec![root.to_owned()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for dir in level {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(TranscribeError::Io { path: dir, source: e }),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if path.is_dir() && !hidden {
                    next.push(path);
                }
            }
        }
        level = next;
    }
    for dir in level {
        if dir.join(RECORDING_FILE).is_file() && !dir.join(TRANSCRIPT_FILE).exists() && !still_open(&dir) {
            found.push(dir);
        }
    }
    found.sort();
    Ok(found)
}

/// A call still being recorded is left for a later run.
fn still_open(dir: &Path) -> bool {
    crate::archive::read_metadata(dir).is_ok_and(|m| m.status == crate::archive::CallStatus::Open)
}

/// How one job went, for progress reporting.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    Done { call_dir: PathBuf, overall_wer: f64 },
    Failed { call_dir: PathBuf, error: String, gave_up: bool },
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

    /// Works through every job queued now, `concurrency` at a time, reporting each outcome to `progress`.
    pub async fn drain(&self, mut progress: impl FnMut(&JobOutcome)) -> Result<Vec<JobOutcome>, TranscribeError> {
        let jobs = self.queue.pending()?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut running = futures_util::stream::iter(jobs).map(|job| self.run(job)).buffer_unordered(self.concurrency);
        while let Some(outcome) = running.next().await {
            progress(&outcome);
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn run(&self, job: QueuedJob) -> JobOutcome {
        let call_dir = job.job.call_dir.clone();
        match transcribe_call(&call_dir, self.backend.as_ref(), Arc::clone(&self.reader)).await {
            Ok(transcript) => {
                if let Err(err) = self.queue.complete(&job) {
                    tracing::warn!(%err, "transcribed, but could not remove the job (it will be redone)");
                }
                JobOutcome::Done { call_dir, overall_wer: transcript.comparison.overall_wer }
            }
            Err(err) => {
                let error = err.to_string();
                tracing::warn!(call = %call_dir.display(), %error, "transcription failed");
                let gave_up = self.queue.fail(&job, &error).unwrap_or(false);
                JobOutcome::Failed { call_dir, error, gave_up }
            }
        }
    }
}

/// Transcribes one call folder and writes its `transcript.json`.
pub async fn transcribe_call(
    dir: &Path,
    backend: &dyn TranscriptionBackend,
    reader: Arc<dyn CallReader>,
) -> Result<CallTranscript, TranscribeError> {
    let owned = dir.to_owned();
    let blocking_reader = Arc::clone(&reader);
    // Decoding Opus is CPU work: off the runtime.
    let (caller_pcm, agent_pcm) = tokio::task::spawn_blocking(move || blocking_reader.legs(&owned))
        .await
        .map_err(|e| TranscribeError::Backend(format!("decoding thread failed: {e}")))??;
    let turns = reader.hot_turns(dir)?;
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
    queue::write_json(&dir.join(TRANSCRIPT_FILE), &transcript)?;
    Ok(transcript)
}
