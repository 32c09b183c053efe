//! The worker threads that run the smart-turn model.
//!
//! An inference keeps a core busy for tens of milliseconds, far too long for an async runtime's thread, so each
//! worker is a dedicated thread owning its own model and feature buffers. Jobs wait in one queue that every worker
//! takes from, so a judgement goes to whichever worker is free; the answer comes back on a tokio oneshot channel.

use std::path::PathBuf;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Instant;

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use crate::turn_model::TurnModel;

use super::features::{FeatureExtractor, FEATURES_LEN, SAMPLE_RATE, WINDOW_SAMPLES};
use super::model::SmartTurnModel;
use super::SmartTurnError;
use crate::audio::mulaw;
use crate::local::config::SmartTurnSettings;
use crate::local::resample;

/// The phone's sample rate.
const PHONE_RATE: usize = 8000;

/// The model's verdict (the engine's type: `inference` is the worker's whole time on the job — decoding, resampling,
/// features and inference — not counting the wait for a free worker).
pub use crate::turn_model::TurnJudgement;

struct Job {
    mulaw: Vec<u8>,
    reply: oneshot::Sender<Result<TurnJudgement, SmartTurnError>>,
}

/// A pool of threads, each with the smart-turn model loaded, shared by every call of the process.
pub struct SmartTurnPool {
    jobs: Mutex<Option<std_mpsc::Sender<Job>>>,
    threshold: f32,
}

impl SmartTurnPool {
    /// Starts `settings.threads` workers (at least one), each loading the model; fails if any cannot, e.g. because
    /// `scripts/setup` has not installed the model or ONNX Runtime.
    pub fn start(settings: &SmartTurnSettings) -> Result<Arc<SmartTurnPool>, SmartTurnError> {
        let model = settings.model_path();
        let library = settings.onnxruntime_path();
        let (jobs, queue) = std_mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..settings.threads.max(1) {
            let (loaded, load_result) = std_mpsc::sync_channel(1);
            let worker = Worker::new(model.clone(), library.clone(), settings.threshold, queue.clone());
            std::thread::Builder::new()
                .name(format!("smart-turn-{index}"))
                .spawn(move || worker.run(loaded))
                .map_err(|e| SmartTurnError::Runtime { what: "starting a worker".into(), detail: e.to_string() })?;
            load_result.recv().unwrap_or(Err(SmartTurnError::Stopped))?;
        }
        Ok(Arc::new(SmartTurnPool { jobs: Mutex::new(Some(jobs)), threshold: settings.threshold }))
    }

    /// Judges whether the caller's turn is complete. `mulaw_8k`: up to the last 8 s of the caller's audio as 8 kHz
    /// G.711 μ-law bytes (what the call receives); decoding and resampling to 16 kHz happen on the worker, so the
    /// caller's task only hands the bytes over. Longer audio is cut to its last 8 s.
    pub fn judge(&self, mulaw_8k: Vec<u8>) -> oneshot::Receiver<Result<TurnJudgement, SmartTurnError>> {
        let (reply, receiver) = oneshot::channel();
        let jobs = self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let job = Job { mulaw: mulaw_8k, reply };
        match jobs.as_ref() {
            Some(sender) => {
                if let Err(std_mpsc::SendError(job)) = sender.send(job) {
                    let _ = job.reply.send(Err(SmartTurnError::Stopped));
                }
            }
            None => {
                let _ = job.reply.send(Err(SmartTurnError::Stopped));
            }
        }
        receiver
    }

    /// The probability above which a turn counts as complete.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Stops the workers once they have finished the jobs already queued; later judgements fail with
    /// [`SmartTurnError::Stopped`].
    pub fn shutdown(&self) {
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    }
}

/// One worker thread's state.
struct Worker {
    model: PathBuf,
    library: PathBuf,
    threshold: f32,
    queue: Arc<Mutex<std_mpsc::Receiver<Job>>>,
}

impl Worker {
    fn new(model: PathBuf, library: PathBuf, threshold: f32, queue: Arc<Mutex<std_mpsc::Receiver<Job>>>) -> Self {
        Worker { model, library, threshold, queue }
    }

    /// Loads the model, reports how that went on `loaded`, then judges jobs until the pool is dropped.
    fn run(self, loaded: std_mpsc::SyncSender<Result<(), SmartTurnError>>) {
        let mut model = match SmartTurnModel::load(&self.model, &self.library) {
            Ok(model) => model,
            Err(err) => {
                let _ = loaded.send(Err(err));
                return;
            }
        };
        let _ = loaded.send(Ok(()));
        let mut extractor = FeatureExtractor::new();
        let mut features = vec![0.0f32; FEATURES_LEN];
        loop {
            // The lock is held only while waiting for the next job, never while judging one.
            let job = match self.queue.lock() {
                Ok(queue) => queue.recv(),
                Err(_) => return,
            };
            let Ok(job) = job else { return };
            if job.reply.is_closed() {
                continue;
            }
            let started = Instant::now();
            let result = phone_to_model_audio(&job.mulaw).and_then(|audio| {
                extractor.extract(&audio, &mut features);
                model.complete_probability(&features)
            });
            let judgement = result.map(|p| TurnJudgement {
                complete_probability: p,
                complete: p > self.threshold,
                inference: started.elapsed(),
            });
            let _ = job.reply.send(judgement);
        }
    }
}

/// The model's audio from the caller's: the last 8 s of 8 kHz μ-law as 16 kHz floats.
pub fn phone_to_model_audio(mulaw_8k: &[u8]) -> Result<Vec<f32>, SmartTurnError> {
    let kept = &mulaw_8k[mulaw_8k.len().saturating_sub(WINDOW_SAMPLES * PHONE_RATE / SAMPLE_RATE)..];
    let pcm: Vec<f32> = kept.iter().map(|&b| f32::from(mulaw::decode_sample(b)) / 32768.0).collect();
    Ok(resample::resample(&pcm, PHONE_RATE, SAMPLE_RATE)?)
}

/// The engine's view of the pool: judgements for the `smart` end-of-turn strategy.
impl TurnModel for SmartTurnPool {
    fn judge(&self, mulaw_8k: Vec<u8>) -> BoxFuture<'static, Result<TurnJudgement, String>> {
        let answer = SmartTurnPool::judge(self, mulaw_8k);
        Box::pin(async move {
            match answer.await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(SmartTurnError::Stopped.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_audio_becomes_16_khz_and_at_most_8_s() {
        let second = vec![mulaw::encode_sample(1000); PHONE_RATE];
        assert_eq!(phone_to_model_audio(&second).map(|a| a.len()).ok(), Some(SAMPLE_RATE));
        let twelve = second.repeat(12);
        assert_eq!(phone_to_model_audio(&twelve).map(|a| a.len()).ok(), Some(WINDOW_SAMPLES));
        assert_eq!(phone_to_model_audio(&[]).map(|a| a.len()).ok(), Some(0));
    }

    #[test]
    fn the_last_8_s_are_kept() {
        let mut audio = vec![mulaw::encode_sample(8000); PHONE_RATE * 4];
        audio.extend(vec![mulaw::encode_sample(0); PHONE_RATE * 8]);
        let model_audio = phone_to_model_audio(&audio).unwrap_or_default();
        assert!(model_audio.iter().all(|x| x.abs() < 0.01), "loud audio from before the window leaked in");
    }
}
