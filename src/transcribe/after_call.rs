//! Transcription as calls end: the archive tells [`AfterCall`] each call it seals, the call goes into the durable
//! queue in the archive's store at once, and a background task works through the queue.
//!
//! The queue is written before anything else happens, so a call is never skipped: if Parley stops before the
//! transcript is written, any worker sharing the store finishes it (a job a dead worker held is taken over once its
//! claim expires; the worker looks again every [`POLL_EVERY`]). When no transcription backend can be built (no
//! model, a build without Whisper), calls are still queued and `parley transcribe --pending` (or a standing
//! `parley transcribe --watch` worker) finishes them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, Notify};

use super::{ArchiveReader, JobOutcome, Queue, TranscribeError, TranscriptionBackend, Worker};
use crate::archive::{ArchiveStore, CallKey, SealedCalls};

/// How often a worker looks at the queue without being woken: jobs of workers that died are taken over then.
pub const POLL_EVERY: Duration = Duration::from_secs(5);

/// Queues sealed calls and wakes the worker; see the module documentation.
pub struct AfterCall {
    queue: Queue,
    wake: Arc<Notify>,
    outcomes: broadcast::Sender<Arc<JobOutcome>>,
}

impl std::fmt::Debug for AfterCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfterCall").field("queue", &self.queue).finish_non_exhaustive()
    }
}

impl AfterCall {
    /// The queue in `queue`'s store and, when there is a backend, a worker on the current runtime that first works
    /// through what is already queued.
    pub fn start(
        queue: Queue,
        backend: Option<Arc<dyn TranscriptionBackend>>,
        concurrency: usize,
    ) -> Result<Arc<AfterCall>, TranscribeError> {
        let wake = Arc::new(Notify::new());
        let (outcomes, _) = broadcast::channel(64);
        if let Some(backend) = backend {
            let reader = Arc::new(ArchiveReader::new(Arc::clone(queue.store())));
            let worker = Worker::new(queue.clone(), backend, reader, concurrency);
            tokio::spawn(work(worker, Arc::clone(&wake), outcomes.clone(), POLL_EVERY));
        }
        Ok(Arc::new(AfterCall { queue, wake, outcomes }))
    }

    /// Each finished job, as it finishes (for the demo and for tests; nothing needs to listen).
    pub fn outcomes(&self) -> broadcast::Receiver<Arc<JobOutcome>> {
        self.outcomes.subscribe()
    }
}

impl SealedCalls for AfterCall {
    fn sealed(&self, _store: &dyn ArchiveStore, key: &CallKey) {
        match self.queue.enqueue(key) {
            Ok(_) => self.wake.notify_one(),
            Err(err) => tracing::warn!(%err, call = %key, "cannot queue the call for transcription"),
        }
    }
}

/// Works through the queue whenever woken, and every `poll` regardless.
pub async fn work(worker: Worker, wake: Arc<Notify>, outcomes: broadcast::Sender<Arc<JobOutcome>>, poll: Duration) {
    loop {
        let drained = worker
            .drain(|outcome| {
                match outcome {
                    JobOutcome::Done { call, overall_wer } => tracing::info!(
                        %call,
                        hot_path_wer = format!("{:.1}%", overall_wer * 100.0),
                        "call transcribed"
                    ),
                    JobOutcome::Failed { call, error, gave_up } => {
                        tracing::warn!(%call, %error, gave_up, "call not transcribed")
                    }
                }
                let _ = outcomes.send(Arc::new(outcome.clone()));
            })
            .await;
        if let Err(err) = drained {
            tracing::warn!(%err, "cannot read the transcription queue");
        }
        let queue = worker.queue().clone();
        if let Ok(Ok(depth)) = tokio::task::spawn_blocking(move || queue.depth()).await {
            crate::telemetry::metrics::global().transcribe_queue_depth(depth);
        }
        // A failed job stays queued for the next pass (the queue gives up on it after a few tries).
        let _ = tokio::time::timeout(poll, wake.notified()).await;
    }
}

/// The call a finished job was about (its key in the archive).
pub fn outcome_call(outcome: &JobOutcome) -> &str {
    match outcome {
        JobOutcome::Done { call, .. } | JobOutcome::Failed { call, .. } => call,
    }
}
