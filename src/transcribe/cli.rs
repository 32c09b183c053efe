//! `parley transcribe <call-dir>` and `parley transcribe --pending`: offline transcription from the terminal, with a
//! progress bar.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::{
    untranscribed_calls, ArchiveReader, JobOutcome, LocalWhisper, OpenAiTranscriber, Queue, TranscribeBackendKind,
    TranscribeError, TranscriptionBackend, Worker, QUEUE_DIR,
};
use crate::config::{read_secret, Config};
use crate::local::WhisperEngine;

#[derive(Debug, Clone, Args)]
pub struct TranscribeArgs {
    /// A call's archive folder to transcribe now.
    #[arg(conflicts_with = "pending", required_unless_present = "pending")]
    pub call_dir: Option<PathBuf>,
    /// Queue every archived call without a transcript and work through the queue.
    #[arg(long)]
    pub pending: bool,
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
    let root = &config.archive.root;
    let queue = Queue::open(&root.join(QUEUE_DIR))?;
    if args.pending {
        for dir in untranscribed_calls(root)? {
            queue.enqueue(&dir)?;
        }
    } else if let Some(dir) = &args.call_dir {
        queue.enqueue(dir)?;
    }
    let total = queue.pending()?.len();
    if total == 0 {
        println!("nothing to transcribe");
        return Ok(0);
    }
    let backend = backend_from_config(config).await?;
    println!("transcribing {total} call(s) with {}", backend.describe());
    let worker = Worker::new(queue, backend, Arc::new(ArchiveReader), config.local.transcribe.concurrency);
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} calls, {elapsed} {msg}") {
        bar.set_style(style);
    }
    let mut failed = 0;
    worker
        .drain(|outcome| {
            match outcome {
                JobOutcome::Done { call_dir, overall_wer } => {
                    bar.println(format!("{}: hot-path WER {:.1}%", call_dir.display(), overall_wer * 100.0));
                }
                JobOutcome::Failed { call_dir, error, gave_up } => {
                    failed += 1;
                    let note = if *gave_up { " (giving up on it)" } else { " (will retry)" };
                    bar.println(format!("{}: failed{note}: {error}", call_dir.display()));
                }
            }
            bar.inc(1);
        })
        .await?;
    bar.finish_and_clear();
    Ok(failed)
}
