//! Voice activity detection with webrtc-vad on a small pool of dedicated threads.
//!
//! `webrtc_vad::Vad` wraps a C object and is `!Send`, so it cannot live in a call's async task. Each worker thread owns
//! the detectors of the calls assigned to it; a call sends its 20 ms μ-law frames to its worker and gets one
//! voiced/unvoiced verdict per frame back. A pool (rather than a thread per call) keeps a thousand calls on a few
//! threads. A frame below the energy gate is never speech, so the call decides it at once, in its own task, whenever
//! no earlier frame is still at the worker: on a quiet line (most of a call) no frame crosses a thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, OnceLock};

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

/// The energy gate alone: whether a μ-law frame is loud enough to be speech (its mean absolute sample value reaches
/// `MIN_SPEECH_AMPLITUDE`). No allocation: it runs on every frame of every call.
pub fn energy_voiced(mulaw: &[u8]) -> bool {
    mulaw_level(mulaw) >= MIN_SPEECH_AMPLITUDE
}

/// Mean absolute sample value (of 32767) of μ-law audio, decoded on the fly (0 for none).
pub(crate) fn mulaw_level(mulaw: &[u8]) -> f64 {
    if mulaw.is_empty() {
        return 0.0;
    }
    let total: u64 = mulaw.iter().map(|&byte| u64::from(mulaw::decode_sample(byte).unsigned_abs())).sum();
    total as f64 / mulaw.len() as f64
}

/// The verdict on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VadVerdict {
    /// Index of the frame in the call's inbound audio (20 ms each).
    pub frame: u64,
    pub voiced: bool,
}

enum Job {
    Open {
        id: u64,
        mode: VadAggressiveness,
        verdicts: mpsc::UnboundedSender<VadVerdict>,
        answered: Arc<AtomicU64>,
    },
    /// `loud`: the frame passed the energy gate (the call already measured it).
    Frame {
        id: u64,
        frame: u64,
        mulaw: Bytes,
        loud: bool,
    },
    Close {
        id: u64,
    },
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
        let answered = Arc::new(AtomicU64::new(0));
        worker.send(Job::Open { id, mode, verdicts: tx, answered: Arc::clone(&answered) }).ok()?;
        Some(VadStream { worker, id, next_frame: 0, queued_until: 0, answered, verdicts })
    }
}

/// One call's detector.
pub struct VadStream {
    worker: std_mpsc::Sender<Job>,
    id: u64,
    next_frame: u64,
    /// One past the last frame handed to the worker.
    queued_until: u64,
    /// One past the last frame the worker has answered (it stores this after sending the verdict).
    answered: Arc<AtomicU64>,
    pub verdicts: mpsc::UnboundedReceiver<VadVerdict>,
}

impl VadStream {
    /// Classifies one 20 ms μ-law frame, given the energy gate's verdict on it ([`energy_voiced`], which the call
    /// measures once for its own uses too). A frame below the gate, with no earlier frame still at the worker, is
    /// decided here and returned (verdicts stay in frame order); any other goes to the worker, whose verdict arrives on
    /// [`VadStream::verdicts`].
    pub fn push(&mut self, mulaw: Bytes, loud: bool) -> Option<VadVerdict> {
        let frame = self.next_frame;
        self.next_frame += 1;
        let settled = self.answered.load(Ordering::Acquire) >= self.queued_until;
        if settled && !loud {
            return Some(VadVerdict { frame, voiced: false });
        }
        self.queued_until = frame + 1;
        let _ = self.worker.send(Job::Frame { id: self.id, frame, mulaw, loud });
        None
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
    answered: Arc<AtomicU64>,
}

fn worker(jobs: std_mpsc::Receiver<Job>) {
    let mut detectors: HashMap<u64, Detector> = HashMap::new();
    let mut pcm = Vec::with_capacity(crate::audio::FRAME_BYTES);
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Open { id, mode, verdicts, answered } => {
                let vad = Vad::new_with_rate_and_mode(SampleRate::Rate8kHz, mode.mode());
                detectors.insert(id, Detector { vad, verdicts, answered });
            }
            Job::Frame { id, frame, mulaw, loud } => {
                let Some(detector) = detectors.get_mut(&id) else { continue };
                // webrtc-vad takes 10, 20 or 30 ms; anything else (never produced by the framer) counts as silence.
                // Its hangover keeps reporting speech for up to 100 ms after a sound stops; the energy gate ends
                // that at once when the line goes quiet, so a short noise cannot pass for sustained speech.
                let voiced = loud && {
                    mulaw::decode_into(&mulaw, &mut pcm);
                    detector.vad.is_voice_segment(&pcm).unwrap_or(false)
                };
                if detector.verdicts.send(VadVerdict { frame, voiced }).is_err() {
                    detectors.remove(&id);
                    continue;
                }
                detector.answered.store(frame + 1, Ordering::Release);
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

    /// Pushes frames and gathers every verdict, decided at once or by the worker, in the order they were given.
    async fn classify(stream: &mut VadStream, frames: &[Bytes]) -> (Vec<VadVerdict>, usize) {
        let mut verdicts = Vec::new();
        let mut at_once = 0;
        for frame in frames {
            if let Some(verdict) = stream.push(frame.clone(), energy_voiced(frame)) {
                // An immediate verdict is only given with nothing pending at the worker: gather those first.
                while verdicts.len() < verdict.frame as usize {
                    verdicts.push(stream.verdicts.recv().await.unwrap());
                }
                verdicts.push(verdict);
                at_once += 1;
            }
        }
        while verdicts.len() < frames.len() {
            verdicts.push(stream.verdicts.recv().await.unwrap());
        }
        (verdicts, at_once)
    }

    fn silent_frames(count: usize) -> Vec<Bytes> {
        (0..count).map(|_| Bytes::from(vec![crate::audio::MULAW_SILENCE; 160])).collect()
    }

    #[tokio::test]
    async fn silence_is_unvoiced_and_speech_is_voiced() {
        let pool = VadPool::new(1);
        let mut stream = pool.open(VadAggressiveness::Aggressive).unwrap();
        let mut frames = silent_frames(25);
        frames.extend(speechlike(1000).chunks(160).map(Bytes::copy_from_slice));
        let (verdicts, at_once) = classify(&mut stream, &frames).await;
        assert!(verdicts[..25].iter().all(|v| !v.voiced));
        assert_eq!(at_once, 25, "the quiet frames before any speech are decided without the worker");
        let voiced = verdicts[25..].iter().filter(|v| v.voiced).count();
        assert!(voiced >= 40, "only {voiced} of 50 speech frames voiced");
        assert_eq!(verdicts.iter().map(|v| v.frame).collect::<Vec<_>>(), (0..75).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn hangover_ends_when_the_line_goes_quiet() {
        let pool = VadPool::new(1);
        let mut stream = pool.open(VadAggressiveness::Aggressive).unwrap();
        let mut frames: Vec<Bytes> = speechlike(400).chunks(160).map(Bytes::copy_from_slice).collect();
        frames.extend(silent_frames(10));
        let (verdicts, _) = classify(&mut stream, &frames).await;
        assert!(verdicts[20..].iter().all(|v| !v.voiced), "{verdicts:?}");
        assert_eq!(verdicts.iter().map(|v| v.frame).collect::<Vec<_>>(), (0..30).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_quiet_frame_waits_behind_a_frame_still_at_the_worker() {
        let pool = VadPool::new(1);
        let mut stream = pool.open(VadAggressiveness::Aggressive).unwrap();
        let loud = Bytes::copy_from_slice(&speechlike(20));
        assert_eq!(stream.push(loud, true), None, "a loud frame goes to the worker");
        // Until its verdict is back, a quiet frame cannot overtake it.
        let quiet = Bytes::from(vec![crate::audio::MULAW_SILENCE; 160]);
        let decided_at_once = stream.push(quiet.clone(), false);
        let first = stream.verdicts.recv().await.unwrap();
        assert_eq!(first.frame, 0);
        match decided_at_once {
            // The worker had already answered frame 0 when frame 1 came: deciding at once kept the order.
            Some(verdict) => assert_eq!(verdict, VadVerdict { frame: 1, voiced: false }),
            None => assert_eq!(stream.verdicts.recv().await.unwrap(), VadVerdict { frame: 1, voiced: false }),
        }
        // With nothing pending, the next quiet frame is decided at once.
        assert_eq!(stream.push(quiet, false), Some(VadVerdict { frame: 2, voiced: false }));
    }

    #[test]
    fn the_energy_gate_matches_the_mean_amplitude() {
        let speech = speechlike(20);
        let pcm = mulaw::decode(&speech);
        assert!(mean_amplitude(&pcm) >= MIN_SPEECH_AMPLITUDE);
        assert!(energy_voiced(&speech));
        assert!(!energy_voiced(&[crate::audio::MULAW_SILENCE; 160]));
        assert!(!energy_voiced(&[]));
        // A faint tone just under the gate, and the same tone just over it.
        let faint: Vec<u8> = (0..160).map(|i| mulaw::encode_sample(if i % 2 == 0 { 90 } else { -90 })).collect();
        let loud: Vec<u8> = (0..160).map(|i| mulaw::encode_sample(if i % 2 == 0 { 120 } else { -120 })).collect();
        assert_eq!(mulaw_level(&faint), mean_amplitude(&mulaw::decode(&faint)));
        assert_eq!(mulaw_level(&speech), mean_amplitude(&pcm));
        assert!(!energy_voiced(&faint));
        assert!(energy_voiced(&loud));
    }
}
