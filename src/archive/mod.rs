//! The call archive: every call Parley answers, kept as a stereo recording, a timeline of what the conversation did,
//! and a small metadata file, so that calls can be listened to, read back and transcribed offline afterwards.
//!
//! # Layout
//!
//! One folder per call, under the configured root (`archive.root`), by the UTC day the call started:
//!
//! ```text
//! <root>/<YYYY>/<MM>/<DD>/<CallSid>/
//!     recording.opus   stereo Ogg Opus; left = caller, right = agent; both legs time-aligned from the call start
//!                      (silence where nobody speaks); input rate 8000 Hz (the phone's rate, no resampling), 20 ms
//!                      packets, OpusHead pre-skip as the encoder reports it.
//!     timeline.jsonl   append-only JSON lines, one per event: {"ms": <since call start>, "type": "...", ...}.
//!                      Types: call_started, caller_turn, agent_said, tool_call, tool_result, barge_in, latency,
//!                      provider_error, dtmf, agent_audio_cleared, call_ended (see [`TimelineEvent`]).
//!     metadata.json    [`CallMetadata`]: SIDs, from/to (redacted when `twilio.redact_numbers`), start/end time,
//!                      duration, turn count, status "open" while the call lives and "sealed" once it is closed.
//! ```
//!
//! The agent leg holds the agent's audio where the caller actually heard it: a frame plays at the later of its send
//! time and the end of the previous agent frame, and a `clear` (barge-in) cuts whatever had not played yet.
//!
//! Files are written while the call goes on: Ogg pages are flushed at least twice a second and timeline lines as they
//! happen, so a crash loses at most about a second. A call whose metadata still says "open" when Parley starts was
//! cut short by a crash: start-up seals it (the Ogg stream is finished properly, the timeline gets a `call_ended`
//! line and the metadata says `"ended_by": "recovered"`). Calls older than `archive.retention_days` are deleted at
//! start-up and once a day.
//!
//! # Reading it back
//!
//! [`list_calls`] lists the archived calls, [`read_legs`] decodes a recording into its two 8 kHz PCM legs,
//! [`read_timeline`] and [`caller_turns`] read the timeline (the hot-path transcript per turn), [`read_metadata`] the
//! metadata. `parley archive list` and `parley archive show` print them.

pub mod cli;
mod meta;
mod opus;
mod recorder;
mod recovery;
mod store;
mod timeline;
mod workers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::call::tap::{CallTap, TapFactory};
use crate::call::CallInfo;

pub use meta::{CallMetadata, CallStatus};
pub use opus::{read_legs, LEG_SAMPLE_RATE};
pub use recovery::{seal_open_calls, sweep_expired, RECOVERED};
pub use store::{ArchiveStore, CallKey, LocalStore};
pub use timeline::{caller_turns, read_timeline, CallerTurn, TimelineEntry, TimelineEvent};

/// File names inside a call's folder.
pub const RECORDING_FILE: &str = "recording.opus";
pub const TIMELINE_FILE: &str = "timeline.jsonl";
pub const METADATA_FILE: &str = "metadata.json";

/// The `[archive]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Keep a record of every call.
    pub enabled: bool,
    /// Folder the calls are kept under.
    pub root: PathBuf,
    /// Calls older than this many days are deleted; 0 keeps them forever.
    pub retention_days: u32,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig { enabled: true, root: PathBuf::from("./parley-archive"), retention_days: 30 }
    }
}

/// Why something in the archive could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("Opus codec: {0}")]
    Opus(#[from] audiopus::Error),
    #[error("{path} is not a valid Ogg stream: {message}")]
    Ogg { path: PathBuf, message: String },
    #[error("{path} is not an Ogg Opus recording Parley can read: {message}")]
    NotOpus { path: PathBuf, message: String },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("no archived call matches `{0}`")]
    NotFound(String),
}

impl ArchiveError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ArchiveError {
        let path = path.into();
        move |source| ArchiveError::Io { path, source }
    }
}

/// Told about each call once its files are complete, so work that needs the whole call (offline transcription)
/// can start without polling the archive.
pub trait SealedCalls: Send + Sync {
    /// `call_dir` is the call's folder on local disk.
    fn sealed(&self, call_dir: &Path);
}

/// The archive: opens a recorder for each call (as the edge's [`TapFactory`]).
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ArchiveStore>,
    redact_numbers: bool,
    on_sealed: Option<Arc<dyn SealedCalls>>,
    recorders: Arc<workers::RecorderPool>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("redact_numbers", &self.redact_numbers).finish_non_exhaustive()
    }
}

/// How often retention runs while Parley serves.
const SWEEP_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

impl Archive {
    /// An archive over any store; nothing is recovered or swept.
    pub fn new(store: Arc<dyn ArchiveStore>, redact_numbers: bool) -> Archive {
        Archive { store, redact_numbers, on_sealed: None, recorders: recorder_pool() }
    }

    /// Tells `hook` about every call sealed from now on, including calls a crash left open that [`Archive::start`]
    /// sealed (call this before it, through [`Archive::start_with`], to hear about those too).
    pub fn with_sealed_hook(mut self, hook: Arc<dyn SealedCalls>) -> Archive {
        self.on_sealed = Some(hook);
        self
    }

    /// The archive `serve` runs: the local store at `config.root`, with calls a crash left open sealed and expired
    /// calls deleted now, and retention run again daily (needs a Tokio runtime).
    pub fn start(config: &ArchiveConfig, redact_numbers: bool) -> Result<Archive, ArchiveError> {
        Self::start_with(config, redact_numbers, None)
    }

    /// [`Archive::start`], telling `on_sealed` about each call it seals, now and later.
    pub fn start_with(
        config: &ArchiveConfig,
        redact_numbers: bool,
        on_sealed: Option<Arc<dyn SealedCalls>>,
    ) -> Result<Archive, ArchiveError> {
        let store: Arc<dyn ArchiveStore> = Arc::new(LocalStore::new(&config.root)?);
        let sealed = seal_open_calls(store.as_ref())?;
        if !sealed.is_empty() {
            tracing::warn!(sealed = sealed.len(), root = %config.root.display(), "sealed calls a previous run left open");
        }
        if let Some(hook) = &on_sealed {
            for key in &sealed {
                if let Some(dir) = store.local_dir(key) {
                    hook.sealed(&dir);
                }
            }
        }
        if config.retention_days > 0 {
            let days = config.retention_days;
            sweep_logged(store.as_ref(), days);
            let sweeper = Arc::clone(&store);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SWEEP_EVERY);
                every.tick().await;
                loop {
                    every.tick().await;
                    let store = Arc::clone(&sweeper);
                    let _ = tokio::task::spawn_blocking(move || sweep_logged(store.as_ref(), days)).await;
                }
            });
        }
        Ok(Archive { store, redact_numbers, on_sealed, recorders: recorder_pool() })
    }

    pub fn store(&self) -> &Arc<dyn ArchiveStore> {
        &self.store
    }
}

/// One recorder thread per core: encoding the calls' audio is the archive's whole CPU cost.
fn recorder_pool() -> Arc<workers::RecorderPool> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    Arc::new(workers::RecorderPool::start(cores))
}

fn sweep_logged(store: &dyn ArchiveStore, days: u32) {
    match sweep_expired(store, days, SystemTime::now()) {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, days, "deleted archived calls past retention"),
        Err(err) => tracing::warn!(%err, "archive retention sweep failed"),
    }
}

impl TapFactory for Archive {
    fn open(&self, call: &CallInfo) -> CallTap {
        let (tap, events) = CallTap::channel();
        self.recorders.record(recorder::RecordingJob {
            store: Arc::clone(&self.store),
            call: call.clone(),
            redact_numbers: self.redact_numbers,
            on_sealed: self.on_sealed.clone(),
            started: tokio::time::Instant::now(),
            started_wall: SystemTime::now(),
            events,
        });
        tap
    }
}

/// Every archived call's metadata, newest first (calls whose metadata cannot be read are skipped with a warning).
pub fn list_calls(store: &dyn ArchiveStore) -> Result<Vec<(CallKey, CallMetadata)>, ArchiveError> {
    let mut calls = Vec::new();
    for key in store.list()? {
        match meta::read(store, &key) {
            Ok(metadata) => calls.push((key, metadata)),
            Err(err) => tracing::warn!(%err, call = %key, "skipping an archived call"),
        }
    }
    calls.sort_by(|a, b| b.1.started_at_ms.cmp(&a.1.started_at_ms).then_with(|| b.0.cmp(&a.0)));
    Ok(calls)
}

/// A call's metadata, from its folder.
pub fn read_metadata(dir: &Path) -> Result<CallMetadata, ArchiveError> {
    meta::read_file(&dir.join(METADATA_FILE))
}
