//! The call archive: every call Parley answers, kept as a stereo recording, a timeline of what the conversation did,
//! and a small metadata file, so that calls can be listened to, read back and transcribed offline afterwards.
//!
//! # Layout
//!
//! One folder per call, under the configured root (`archive.root`), by the UTC day the call started:
//!
//! ```text
//! <root>/<YYYY>/<MM>/<DD>/<CallSid>/
//!     recording.wav    while the call lives and until the after-call worker has run: the legs in their wire form,
//!                      G.711 μ-law, 8 kHz, stereo interleaved (WAVE format 7); left = caller, right = agent; both
//!                      legs time-aligned from the call start (μ-law silence where nobody speaks). Appended as the
//!                      audio becomes final; the header's sizes are patched when the call is sealed. See [`wav`].
//!     recording.opus   after the call, made from recording.wav by the after-call worker, which then deletes the
//!                      μ-law file (see [`compress`]): stereo Ogg Opus, the same two legs; input rate 8000 Hz (no
//!                      resampling), 20 ms packets, OpusHead pre-skip as the encoder reports it.
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
//! Files are written while the call goes on: every recorder tick (500 ms) the recording is flushed with the audio
//! older than the recorder's 0.3 s hold, and the timeline with the lines since the last tick, so a crash loses at most
//! about 0.8 s.
//! Recording costs no codec work during the call: the bytes that came off the wire are copied. A call whose metadata
//! still says "open" when Parley starts was cut short by a crash: start-up seals it (the μ-law recording is cut to
//! its whole frames and its header given its sizes — or, for a call recorded in Opus, the Ogg stream is finished —
//! the timeline gets a `call_ended` line and the metadata says `"ended_by": "recovered"`). Calls older than
//! `archive.retention_days` are deleted at start-up and once a day.
//!
//! # Several instances on one archive
//!
//! An open call's metadata names its owner: the instance recording it and a lease (`archive.lease_secs`) that the
//! recorder renews every third of it. Only a call whose lease has lapsed — its instance is gone — is sealed by anyone
//! else: at start-up (every call) and every lease period while serving (the calls of the last two days), so an
//! instance starting or restarting never touches a call live on another, and a call cut by a crash is sealed within
//! about two lease periods wherever Parley still runs. See [`lease`].
//!
//! A clean shutdown seals every call before Parley exits: the edge stops taking calls and drains them, then
//! [`Archive::wait_sealed`] waits (bounded) for the recorders to seal what was live.
//!
//! # Reading it back
//!
//! [`list_calls`] lists the archived calls, [`read_legs`] decodes a recording (either form, the μ-law one first)
//! into its two 8 kHz PCM legs,
//! [`read_timeline`] and [`caller_turns`] read the timeline (the hot-path transcript per turn), [`read_metadata`] the
//! metadata. `parley archive list` and `parley archive show` print them.

pub mod cli;
pub mod compress;
pub mod lease;
mod meta;
mod opus;
mod recorder;
mod recovery;
pub mod s3;
mod store;
mod timeline;
mod wav;
mod workers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::call::tap::{CallTap, TapFactory};
use crate::call::CallInfo;

pub use compress::compress_recording;
pub use lease::Ownership;
pub use meta::{CallMetadata, CallStatus, Owner};
pub use opus::LEG_SAMPLE_RATE;
pub use recovery::{seal_abandoned_calls, sweep_expired, RECOVERED};
pub use store::{ArchiveStore, CallKey, CallWriter, LocalStore};
pub use timeline::{caller_turns, read_timeline, CallerTurn, TimelineEntry, TimelineEvent};

/// File names inside a call's folder. A call has one recording: μ-law until the after-call worker makes the Opus.
pub const WAV_RECORDING_FILE: &str = "recording.wav";
pub const OPUS_RECORDING_FILE: &str = "recording.opus";
pub const TIMELINE_FILE: &str = "timeline.jsonl";
pub const METADATA_FILE: &str = "metadata.json";

/// Where the archive is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Folders under `archive.root` on the local filesystem.
    #[default]
    Local,
    /// An S3-compatible bucket, `[archive.s3]`.
    S3,
}

/// The `[archive]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Keep a record of every call.
    pub enabled: bool,
    /// Where: the local filesystem (`root`) or an S3-compatible bucket (`s3`).
    pub store: StoreKind,
    /// Folder the calls are kept under, with the local store (and the transcription queue's folder).
    pub root: PathBuf,
    /// Calls older than this many days are deleted; 0 keeps them forever.
    pub retention_days: u32,
    /// How long an instance's claim on a call it records lasts without renewal; once it lapses, any instance sharing
    /// the archive may seal the call. Must exceed the clocks' skew between instances.
    pub lease_secs: u64,
    /// The bucket, with `store = "s3"`.
    pub s3: s3::S3Config,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            enabled: true,
            store: StoreKind::Local,
            root: PathBuf::from("./parley-archive"),
            retention_days: 30,
            lease_secs: 15,
            s3: s3::S3Config::default(),
        }
    }
}

impl ArchiveConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1))
    }

    /// The configured store (the local folder is created when missing).
    pub fn open_store(&self) -> Result<Arc<dyn ArchiveStore>, ArchiveError> {
        Ok(match self.store {
            StoreKind::Local => Arc::new(LocalStore::new(&self.root)?),
            StoreKind::S3 => Arc::new(s3::S3Store::new(&self.s3)?),
        })
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
    #[error("{path} is not a μ-law recording Parley can read: {message}")]
    NotWav { path: PathBuf, message: String },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("no archived call matches `{0}`")]
    NotFound(String),
    /// A command this module declares but another part of Parley carries out.
    #[error("{0}")]
    Elsewhere(&'static str),
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
    /// `key` is the call's place in `store`.
    fn sealed(&self, store: &dyn ArchiveStore, key: &CallKey);
}

/// The archive: opens a recorder for each call (as the edge's [`TapFactory`]).
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ArchiveStore>,
    redact_numbers: bool,
    ownership: Ownership,
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
        let ownership = Ownership::for_this_process(ArchiveConfig::default().lease());
        Archive { store, redact_numbers, ownership, on_sealed: None, recorders: recorder_pool() }
    }

    /// Tells `hook` about every call sealed from now on, including calls a crash left open that [`Archive::start`]
    /// sealed (call this before it, through [`Archive::start_with`], to hear about those too).
    pub fn with_sealed_hook(mut self, hook: Arc<dyn SealedCalls>) -> Archive {
        self.on_sealed = Some(hook);
        self
    }

    /// The archive `serve` runs: the configured store, with abandoned calls (see [`lease`]) sealed and
    /// expired calls deleted now, abandoned calls sealed again every lease period and retention run again daily
    /// (needs a Tokio runtime).
    pub fn start(config: &ArchiveConfig, redact_numbers: bool) -> Result<Archive, ArchiveError> {
        Self::start_with(config, redact_numbers, None)
    }

    /// [`Archive::start`], telling `on_sealed` about each call it seals, now and later.
    pub fn start_with(
        config: &ArchiveConfig,
        redact_numbers: bool,
        on_sealed: Option<Arc<dyn SealedCalls>>,
    ) -> Result<Archive, ArchiveError> {
        let store = config.open_store()?;
        let ownership = Ownership::for_this_process(config.lease());
        tracing::info!(instance = ownership.instance(), "archive: recording calls as this instance");
        let every_call = store.list()?;
        seal_abandoned_logged(store.as_ref(), every_call, on_sealed.as_deref());
        let lease = ownership.lease();
        let (watched, hook) = (Arc::clone(&store), on_sealed.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(lease);
            every.tick().await;
            loop {
                every.tick().await;
                let (store, hook) = (Arc::clone(&watched), hook.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    let yesterday = (lease::millis_since_epoch(SystemTime::now()) / 86_400_000) as i64 - 1;
                    match store.list_since(yesterday) {
                        Ok(recent) => seal_abandoned_logged(store.as_ref(), recent, hook.as_deref()),
                        Err(err) => tracing::warn!(%err, "cannot list the archive's recent calls"),
                    }
                })
                .await;
            }
        });
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
        Ok(Archive { store, redact_numbers, ownership, on_sealed, recorders: recorder_pool() })
    }

    pub fn store(&self) -> &Arc<dyn ArchiveStore> {
        &self.store
    }

    /// This instance's name in the calls it records.
    pub fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// Calls handed to the recorders whose files are not sealed yet.
    pub fn unsealed(&self) -> usize {
        self.recorders.unsealed()
    }

    /// Waits until every call handed to the recorders is sealed, at most `within`, and returns how many are not.
    /// Shutdown calls this once the edge has drained, so exiting cleanly means every call's files are complete.
    pub async fn wait_sealed(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let unsealed = self.recorders.unsealed();
            if unsealed == 0 || tokio::time::Instant::now() >= deadline {
                return unsealed;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Seals the abandoned calls among `keys`, logging what it did and telling `hook` about each.
fn seal_abandoned_logged(store: &dyn ArchiveStore, keys: Vec<CallKey>, hook: Option<&dyn SealedCalls>) {
    match seal_abandoned_calls(store, keys, SystemTime::now()) {
        Ok(sealed) => {
            if !sealed.is_empty() {
                tracing::warn!(sealed = sealed.len(), "sealed calls whose instance stopped without sealing them");
            }
            for key in &sealed {
                if let Some(hook) = hook {
                    hook.sealed(store, key);
                }
            }
        }
        Err(err) => tracing::warn!(%err, "cannot look for abandoned calls"),
    }
}

/// One recorder thread per core: the threads only copy bytes, but a slow disk or store stalls a thread's calls only.
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
            ownership: self.ownership.clone(),
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

/// A call's metadata, from any store.
pub fn read_call_metadata(store: &dyn ArchiveStore, key: &CallKey) -> Result<CallMetadata, ArchiveError> {
    meta::read(store, key)
}

/// A call's timeline, from any store.
pub fn read_call_timeline(store: &dyn ArchiveStore, key: &CallKey) -> Result<Vec<TimelineEntry>, ArchiveError> {
    timeline::read_from(store, key)
}

/// The two forms a call's recording takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingForm {
    /// `recording.wav`: μ-law as on the wire, written during the call.
    Mulaw,
    /// `recording.opus`: Ogg Opus, made after the call.
    Opus,
}

impl RecordingForm {
    /// The forms in the order readers look for them: the μ-law file, when there is one, is the call's audio as it
    /// was heard (the Opus file is made from it and then replaces it).
    pub const PREFERRED: [RecordingForm; 2] = [RecordingForm::Mulaw, RecordingForm::Opus];

    pub fn file_name(self) -> &'static str {
        match self {
            RecordingForm::Mulaw => WAV_RECORDING_FILE,
            RecordingForm::Opus => OPUS_RECORDING_FILE,
        }
    }

    /// The two legs (caller, agent) as 8 kHz PCM, from the file's bytes; `path` names it in errors.
    pub fn decode_legs(self, bytes: &[u8], path: &Path) -> Result<(Vec<i16>, Vec<i16>), ArchiveError> {
        match self {
            RecordingForm::Mulaw => wav::decode_legs(bytes, path),
            RecordingForm::Opus => opus::decode_legs(bytes, path),
        }
    }

    /// What a browser can play, with its content type: the Opus file as it is, the μ-law file as 16-bit PCM WAV
    /// (browsers do not all play μ-law).
    pub fn playable(self, bytes: Vec<u8>, path: &Path) -> Result<(Vec<u8>, &'static str), ArchiveError> {
        match self {
            RecordingForm::Mulaw => Ok((wav::to_pcm16(&bytes, path)?, "audio/wav")),
            RecordingForm::Opus => Ok((bytes, "audio/ogg; codecs=opus")),
        }
    }
}

fn not_found(err: &ArchiveError) -> bool {
    matches!(err, ArchiveError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// The error of a call folder with neither recording file (named after the Opus one, which every call ends with).
fn no_recording(call_dir: &Path) -> ArchiveError {
    ArchiveError::Io {
        path: call_dir.join(OPUS_RECORDING_FILE),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "the call has no recording"),
    }
}

/// A call's recording: which form it is in and its bytes, from any store (the μ-law form first).
pub fn read_call_recording(store: &dyn ArchiveStore, key: &CallKey) -> Result<(RecordingForm, Vec<u8>), ArchiveError> {
    for form in RecordingForm::PREFERRED {
        match store.get(key, form.file_name()) {
            Ok(bytes) => return Ok((form, bytes)),
            Err(err) if not_found(&err) => continue,
            Err(err) => return Err(err),
        }
    }
    Err(no_recording(&key.relative_path()))
}

/// Which recording file the call has now, without reading it; `None` when it has none.
pub fn call_recording_form(store: &dyn ArchiveStore, key: &CallKey) -> Result<Option<RecordingForm>, ArchiveError> {
    for form in RecordingForm::PREFERRED {
        if store.has(key, form.file_name())? {
            return Ok(Some(form));
        }
    }
    Ok(None)
}

/// A call's two legs (caller, agent) as 8 kHz PCM, from any store, whichever form the recording is in; each leg is as
/// long as the call. A recording still being written (or cut by a crash) reads as far as it is whole.
pub fn read_call_legs(store: &dyn ArchiveStore, key: &CallKey) -> Result<(Vec<i16>, Vec<i16>), ArchiveError> {
    let (form, bytes) = read_call_recording(store, key)?;
    form.decode_legs(&bytes, &key.relative_path().join(form.file_name()))
}

/// The recording file in a call's folder on disk, whichever form it is in.
pub fn recording_in(dir: &Path) -> Option<(RecordingForm, PathBuf)> {
    RecordingForm::PREFERRED.into_iter().map(|form| (form, dir.join(form.file_name()))).find(|(_, path)| path.is_file())
}

/// A recording's two legs (caller, agent) as 8 kHz PCM, from the call's folder; see [`read_call_legs`].
pub fn read_legs(dir: &Path) -> Result<(Vec<i16>, Vec<i16>), ArchiveError> {
    let Some((form, path)) = recording_in(dir) else { return Err(no_recording(dir)) };
    let bytes = std::fs::read(&path).map_err(ArchiveError::io(&path))?;
    form.decode_legs(&bytes, &path)
}

/// A call's metadata, from its folder.
pub fn read_metadata(dir: &Path) -> Result<CallMetadata, ArchiveError> {
    meta::read_file(&dir.join(METADATA_FILE))
}
