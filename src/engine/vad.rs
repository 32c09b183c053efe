//! Voice activity detection with webrtc-vad on a small pool of dedicated threads.
//!
//! `webrtc_vad::Vad` wraps a C object and is `!Send`, so it cannot live in a call's async task. Each worker thread owns
//! the detectors of the calls assigned to it; a call sends its 20 ms μ-law frames to its worker and gets one
//! voiced/unvoiced verdict per frame back. A pool (rather than a thread per call) keeps a thousand calls on a few
//! threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, OnceLock};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;
use webrtc_vad::{SampleRate, Vad, VadMode};

use crate::audio::mulaw;

/// How eagerly frames are classified as speech: higher modes reject more noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VadAggressiveness {
    Quality,
    LowBitrate,
    #[default]
    Aggressive,
    VeryAggressive,
}

impl VadAggressiveness {
    fn mode(self) -> VadMode {
        match self {
            VadAggressiveness::Quality => VadMode::Quality,
            VadAggressiveness::LowBitrate => VadMode::LowBitrate,
            VadAggressiveness::Aggressive => VadMode::Aggressive,
            VadAggressiveness::VeryAggressive => VadMode::VeryAggressive,
        }
    }
}

/// Where a call's VAD runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VadSource {
    /// webrtc-vad behind an energy gate, on the process-wide worker threads (what calls use).
    #[default]
    Pool,
    /// The energy gate alone, in the engine's task: deterministic, for tests of the engine's decisions.
    Energy,
}

/// The energy gate alone: whether a 20 ms μ-law frame is loud enough to be speech.
pub fn energy_voiced(mulaw: &[u8]) -> bool {
    let mut pcm = [0i16; crate::audio::FRAME_BYTES];
    let n = mulaw.len().min(pcm.len());
    for (sample, byte) in pcm.iter_mut().zip(&mulaw[..n]) {
        *sample = crate::audio::mulaw::decode_sample(*byte);
    }
    mean_amplitude(&pcm[..n]) >= MIN_SPEECH_AMPLITUDE
}

/// The verdict on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VadVerdict {
    /// Index of the frame in the call's inbound audio (20 ms each).
    pub frame: u64,
    pub voiced: bool,
}

enum Job {
    Open { id: u64, mode: VadAggressiveness, verdicts: mpsc::UnboundedSender<VadVerdict> },
    Frame { id: u64, frame: u64, mulaw: Bytes },
    Close { id: u64 },
}

/// The process-wide pool of VAD threads.
pub struct VadPool {
    workers: Vec<std_mpsc::Sender<Job>>,
    next_worker: AtomicUsize,
    next_id: AtomicU64,
}

impl VadPool {
    /// The shared pool, one worker per available core, started on first use.
    pub fn global() -> &'static VadPool {
        static POOL: OnceLock<VadPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
            VadPool::new(threads)
        })
    }

    pub fn new(threads: usize) -> VadPool {
        let workers = (0..threads.max(1))
            .filter_map(|i| {
                let (tx, rx) = std_mpsc::channel();
                std::thread::Builder::new().name(format!("parley-vad-{i}")).spawn(move || worker(rx)).ok().map(|_| tx)
            })
            .collect();
        VadPool { workers, next_worker: AtomicUsize::new(0), next_id: AtomicU64::new(1) }
    }

    /// Opens a detector for one call; verdicts arrive on the returned stream's receiver.
    pub fn open(&self, mode: VadAggressiveness) -> Option<VadStream> {
        if self.workers.is_empty() {
            return None;
        }
        let index = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let worker = self.workers[index].clone();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, verdicts) = mpsc::unbounded_channel();
        worker.send(Job::Open { id, mode, verdicts: tx }).ok()?;
        Some(VadStream { worker, id, next_frame: 0, verdicts })
    }
}

/// One call's detector.
pub struct VadStream {
    worker: std_mpsc::Sender<Job>,
    id: u64,
    next_frame: u64,
    pub verdicts: mpsc::UnboundedReceiver<VadVerdict>,
}

impl VadStream {
    /// Classifies one 20 ms μ-law frame; returns the frame's index.
    pub fn push(&mut self, mulaw: Bytes) -> u64 {
        let frame = self.next_frame;
        self.next_frame += 1;
        let _ = self.worker.send(Job::Frame { id: self.id, frame, mulaw });
        frame
    }
}

impl Drop for VadStream {
    fn drop(&mut self) {
        let _ = self.worker.send(Job::Close { id: self.id });
    }
}

/// Mean absolute sample value below which a frame is never speech (about -50 dBFS: a quiet line).
const MIN_SPEECH_AMPLITUDE: f64 = 100.0;

/// Mean absolute sample value (of 32767): the energy gate's measure of how loud a frame is.
pub(crate) fn mean_amplitude(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    pcm.iter().map(|&s| f64::from(s).abs()).sum::<f64>() / pcm.len() as f64
}

struct Detector {
    vad: Vad,
    verdicts: mpsc::UnboundedSender<VadVerdict>,
}

fn worker(jobs: std_mpsc::Receiver<Job>) {
    let mut detectors: HashMap<u64, Detector> = HashMap::new();
    let mut pcm = Vec::with_capacity(crate::audio::FRAME_BYTES);
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Open { id, mode, verdicts } => {
                let vad = Vad::new_with_rate_and_mode(SampleRate::Rate8kHz, mode.mode());
                detectors.insert(id, Detector { vad, verdicts });
            }
            Job::Frame { id, frame, mulaw } => {
                let Some(detector) = detectors.get_mut(&id) else { continue };
                mulaw::decode_into(&mulaw, &mut pcm);
                // webrtc-vad takes 10, 20 or 30 ms; anything else (never produced by the framer) counts as silence.
                // Its hangover keeps reporting speech for up to 100 ms after a sound stops; the energy gate ends
                // that at once when the line goes quiet, so a short noise cannot pass for sustained speech.
                let voiced = mean_amplitude(&pcm) >= MIN_SPEECH_AMPLITUDE
                    && detector.vad.is_voice_segment(&pcm).unwrap_or(false);
                if detector.verdicts.send(VadVerdict { frame, voiced }).is_err() {
                    detectors.remove(&id);
                }
            }
            Job::Close { id } => {
                detectors.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speechlike(millis: usize) -> Vec<u8> {
        // A voiced-speech stand-in: a 150 Hz fundamental with harmonics, amplitude-modulated like syllables.
        (0..millis * 8)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let envelope = 0.6 + 0.4 * (t * 4.0 * std::f32::consts::TAU).sin();
                let s: f32 = (1..=8).map(|h| (t * 150.0 * h as f32 * std::f32::consts::TAU).sin() / h as f32).sum();
                mulaw::encode_sample((s * envelope * 6000.0) as i16)
            })
            .collect()
    }

    #[tokio::test]
    async fn silence_is_unvoiced_and_speech_is_voiced() {
        let pool = VadPool::new(1);
        let mut stream = pool.open(VadAggressiveness::Aggressive).unwrap();
        for _ in 0..25 {
            stream.push(Bytes::from(vec![crate::audio::MULAW_SILENCE; 160]));
        }
        for frame in speechlike(1000).chunks(160) {
            stream.push(Bytes::copy_from_slice(frame));
        }
        let mut verdicts = Vec::new();
        while verdicts.len() < 75 {
            verdicts.push(stream.verdicts.recv().await.unwrap());
        }
        assert!(verdicts[..25].iter().all(|v| !v.voiced));
        let voiced = verdicts[25..].iter().filter(|v| v.voiced).count();
        assert!(voiced >= 40, "only {voiced} of 50 speech frames voiced");
        assert_eq!(verdicts.iter().map(|v| v.frame).collect::<Vec<_>>(), (0..75).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn hangover_ends_when_the_line_goes_quiet() {
        let pool = VadPool::new(1);
        let mut stream = pool.open(VadAggressiveness::Aggressive).unwrap();
        for frame in speechlike(400).chunks(160) {
            stream.push(Bytes::copy_from_slice(frame));
        }
        for _ in 0..10 {
            stream.push(Bytes::from(vec![crate::audio::MULAW_SILENCE; 160]));
        }
        let mut verdicts = Vec::new();
        while verdicts.len() < 30 {
            verdicts.push(stream.verdicts.recv().await.unwrap());
        }
        assert!(verdicts[20..].iter().all(|v| !v.voiced), "{verdicts:?}");
    }
}
