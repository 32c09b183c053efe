//! `parley transcribe <call>`, `parley transcribe --pending` and `parley transcribe --watch`: offline transcription
//! from the terminal (with a progress bar) or as a standing archive worker, on the configured archive store.

use std::path::Path;
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::queue::CLAIM_FOR;
use super::{
    untranscribed_calls, ArchiveReader, JobOutcome, LocalWhisper, OpenAiTranscriber, Queue, TranscribeBackendKind,
    TranscribeError, TranscriptionBackend, Worker,
};
use crate::archive::{ArchiveStore, CallKey, Ownership};
use crate::config::{read_secret, Config};
use crate::local::WhisperEngine;

#[derive(Debug, Clone, Args)]
pub struct TranscribeArgs {
    /// A call to transcribe now: its SID, its key (`2026/11/25/CA…`) or its folder in a local archive.
    #[arg(conflicts_with = "pending", required_unless_present_any = ["pending", "watch"])]
    pub call: Option<String>,
    /// Queue every archived call without a transcript and work through the queue.
    #[arg(long)]
    pub pending: bool,
    /// Keep working as calls are queued, until SIGTERM: a standing archive worker. Any number of workers (and
    /// `parley serve` instances) share the queue in the archive's store.
    #[arg(long)]
    pub watch: bool,
}

/// The queue in the configured archive store, worked by this process.
pub fn queue_from_config(config: &Config) -> Result<Queue, TranscribeError> {
    let store = config.archive.open_store()?;
    let worker = Ownership::for_this_process(CLAIM_FOR);
    Ok(Queue::new(store, worker.instance(), CLAIM_FOR))
}

/// A call named on the command line: a local call folder, else a SID or key in the store.
fn find_call(store: &dyn ArchiveStore, call: &str) -> Result<CallKey, TranscribeError> {
    let path = Path::new(call);
    if path.join(crate::archive::METADATA_FILE).is_file() {
        // The last four parts of a call folder are its key.
        let parts: Vec<_> = path.components().collect();
        let key = parts.len().checked_sub(4).map(|start| parts[start..].iter().collect::<std::path::PathBuf>());
        if let Some(key) = key.as_deref().and_then(CallKey::from_relative) {
            return Ok(key);
        }
    }
    Ok(crate::archive::cli::find_call(store, call)?)
}

/// The backend `[local.transcribe]` names (loads the Whisper model when that is the one).
pub async fn backend_from_config(config: &Config) -> Result<Arc<dyn TranscriptionBackend>, TranscribeError> {
    let settings = &config.local;
    Ok(match settings.transcribe.backend {
        TranscribeBackendKind::Whisper => {
            let whisper = settings.whisper.clone();
            let engine = tokio::task::spawn_blocking(move || WhisperEngine::load(&whisper))
                .await
                .map_err(|e| TranscribeError::Backend(format!("model loading thread failed: {e}")))??;
            Arc::new(LocalWhisper::new(Arc::new(engine), settings.whisper.segmenter.clone()))
        }
        TranscribeBackendKind::Openai => {
            let openai = settings.transcribe.openai.clone();
            let key = read_secret(&openai.api_key_env).map(|s| s.expose().to_owned());
            Arc::new(OpenAiTranscriber::new(openai, key)?)
        }
    })
}

/// Runs the command; returns how many calls failed.
pub async fn run(config: &Config, args: &TranscribeArgs) -> Result<usize, TranscribeError> {
    let queue = queue_from_config(config)?;
    let store = Arc::clone(queue.store());
    if args.pending {
        for key in untranscribed_calls(store.as_ref())? {
            queue.enqueue(&key)?;
        }
    } else if let Some(call) = &args.call {
        queue.enqueue(&find_call(store.as_ref(), call)?)?;
    }
    let reader = Arc::new(ArchiveReader::new(Arc::clone(&store)));
    let concurrency = config.local.transcribe.concurrency;
    if args.watch {
        let backend = backend_from_config(config).await?;
        tracing::info!(worker = queue.worker(), backend = %backend.describe(), "archive worker: watching the queue");
        let worker = Worker::new(queue, backend, reader, concurrency);
        let (outcomes, _) = tokio::sync::broadcast::channel(1);
        let wake = Arc::new(tokio::sync::Notify::new());
        tokio::select! {
            () = super::after_call::work(worker, wake, outcomes, super::after_call::POLL_EVERY) => {}
            () = crate::edge::wait_for_signal() => tracing::info!("archive worker stopping"),
        }
        return Ok(0);
    }
    let total = queue.pending()?.len();
    if total == 0 {
        println!("nothing to transcribe");
        return Ok(0);
    }
    let backend = backend_from_config(config).await?;
    println!("transcribing {total} call(s) with {}", backend.describe());
    let worker = Worker::new(queue, backend, reader, concurrency);
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} calls, {elapsed} {msg}") {
        bar.set_style(style);
    }
    let mut failed = 0;
    worker
        .drain(|outcome| {
            match outcome {
                JobOutcome::Done { call, overall_wer } => {
                    bar.println(format!("{call}: hot-path WER {:.1}%", overall_wer * 100.0));
                }
                JobOutcome::Failed { call, error, gave_up } => {
                    failed += 1;
                    let note = if *gave_up { " (giving up on it)" } else { " (will retry)" };
                    bar.println(format!("{call}: failed{note}: {error}"));
                }
            }
            bar.inc(1);
        })
        .await?;
    bar.finish_and_clear();
    Ok(failed)
}
