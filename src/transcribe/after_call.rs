//! Transcription as calls end: the archive tells [`AfterCall`] each call it seals, the call goes into the durable
//! queue at once, and a background task works through the queue one job at a time.
//!
//! The queue is written before anything else happens, so a call is never skipped: if Parley stops before the
//! transcript is written, the next start works through what is left. When no transcription backend can be built
//! (no model, a build without Whisper), calls are still queued and `parley transcribe --pending` finishes them later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{broadcast, Notify};

use super::{ArchiveReader, JobOutcome, Queue, TranscribeError, TranscriptionBackend, Worker};
use crate::archive::SealedCalls;

/// Queues sealed calls and wakes the worker; see the module documentation.
pub struct AfterCall {
    queue: Queue,
    wake: Arc<Notify>,
    outcomes: broadcast::Sender<Arc<JobOutcome>>,
}

impl std::fmt::Debug for AfterCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfterCall").field("queue", &self.queue.dir()).finish_non_exhaustive()
    }
}

impl AfterCall {
    /// Opens the queue at `queue_dir` and, when there is a backend, starts the worker on the current runtime; it
    /// first works through what an earlier run left queued.
    pub fn start(
        queue_dir: &Path,
        backend: Option<Arc<dyn TranscriptionBackend>>,
        concurrency: usize,
    ) -> Result<Arc<AfterCall>, TranscribeError> {
        let queue = Queue::open(queue_dir)?;
        let wake = Arc::new(Notify::new());
        let (outcomes, _) = broadcast::channel(64);
        if let Some(backend) = backend {
            let worker = Worker::new(queue.clone(), backend, Arc::new(ArchiveReader), concurrency);
            tokio::spawn(work(worker, Arc::clone(&wake), outcomes.clone()));
        }
        Ok(Arc::new(AfterCall { queue, wake, outcomes }))
    }

    /// Each finished job, as it finishes (for the demo and for tests; nothing needs to listen).
    pub fn outcomes(&self) -> broadcast::Receiver<Arc<JobOutcome>> {
        self.outcomes.subscribe()
    }
}

impl SealedCalls for AfterCall {
    fn sealed(&self, call_dir: &Path) {
        match self.queue.enqueue(call_dir) {
            Ok(_) => self.wake.notify_one(),
            Err(err) => tracing::warn!(%err, call = %call_dir.display(), "cannot queue the call for transcription"),
        }
    }
}

async fn work(worker: Worker, wake: Arc<Notify>, outcomes: broadcast::Sender<Arc<JobOutcome>>) {
    loop {
        let drained = worker
            .drain(|outcome| {
                match outcome {
                    JobOutcome::Done { call_dir, overall_wer } => tracing::info!(
                        call = %call_dir.display(),
                        hot_path_wer = format!("{:.1}%", overall_wer * 100.0),
                        "call transcribed"
                    ),
                    JobOutcome::Failed { call_dir, error, gave_up } => {
                        tracing::warn!(call = %call_dir.display(), %error, gave_up, "call not transcribed")
                    }
                }
                let _ = outcomes.send(Arc::new(outcome.clone()));
            })
            .await;
        if let Err(err) = drained {
            tracing::warn!(%err, "cannot read the transcription queue");
        }
        // A failed job stays queued for the next wake-up (the queue gives up on it after a few tries).
        wake.notified().await;
    }
}

/// The call folder a finished job was about.
pub fn outcome_dir(outcome: &JobOutcome) -> &PathBuf {
    match outcome {
        JobOutcome::Done { call_dir, .. } | JobOutcome::Failed { call_dir, .. } => call_dir,
    }
}
