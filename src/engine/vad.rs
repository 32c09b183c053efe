//! Voice activity detection: webrtc-vad behind an energy gate, in the call's own task.
//!
//! A frame below the energy gate is never speech and costs a pass over its 160 bytes; a louder frame also goes
//! through webrtc-vad, about 2 µs on this project's two-core build machine — less than handing the frame to another
//! thread and its verdict back, which is how the detectors ran before (a channel send, a thread wake-up and a verdict
//! channel per frame). The verdict is the frame's own, at once: nothing is queued or reordered.

use serde::Deserialize;
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

/// What decides whether the caller speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VadSource {
    /// webrtc-vad behind the energy gate (what calls use).
    #[default]
    WebRtc,
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

/// One call's webrtc-vad detector.
pub struct VoiceDetector {
    vad: CallVad,
    /// The frame decoded to PCM, reused: no allocation per frame.
    pcm: Vec<i16>,
}

impl VoiceDetector {
    pub fn new(mode: VadAggressiveness) -> VoiceDetector {
        let vad = Vad::new_with_rate_and_mode(SampleRate::Rate8kHz, mode.mode());
        VoiceDetector { vad: CallVad(vad), pcm: Vec::with_capacity(crate::audio::FRAME_BYTES) }
    }

    /// Whether a 20 ms μ-law frame is speech, given the energy gate's verdict on it ([`energy_voiced`], which the
    /// call measures once for its own uses too). webrtc-vad's hangover keeps reporting speech for up to 100 ms after a
    /// sound stops; the gate ends that at once when the line goes quiet, so a short noise cannot pass for sustained
    /// speech. webrtc-vad takes 10, 20 or 30 ms; anything else (never produced by the framer) counts as silence.
    pub fn is_speech(&mut self, frame: &[u8], loud: bool) -> bool {
        if !loud {
            return false;
        }
        mulaw::decode_into(frame, &mut self.pcm);
        self.vad.0.is_voice_segment(&self.pcm).unwrap_or(false)
    }
}

/// webrtc-vad's detector, owned by one call's task.
struct CallVad(Vad);

// SAFETY: `Vad` is `!Send` only because it holds a raw pointer to libfvad's state: one heap allocation of plain data
// (filter and model state; no thread-locals, no callbacks, no shared globals). A `CallVad` has one owner, the call's
// engine, and is used through `&mut` only, so the state is never touched from two threads at once; moving it with
// its task between the runtime's threads is all `Send` permits.
unsafe impl Send for CallVad {}

/// Mean absolute sample value below which a frame is never speech (about -50 dBFS: a quiet line).
const MIN_SPEECH_AMPLITUDE: f64 = 100.0;

/// Mean absolute sample value (of 32767): the energy gate's measure of how loud a frame is.
pub(crate) fn mean_amplitude(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    pcm.iter().map(|&s| f64::from(s).abs()).sum::<f64>() / pcm.len() as f64
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

    fn classify(detector: &mut VoiceDetector, audio: &[u8]) -> Vec<bool> {
        audio.chunks(160).map(|frame| detector.is_speech(frame, energy_voiced(frame))).collect()
    }

    #[test]
    fn silence_is_unvoiced_and_speech_is_voiced() {
        let mut detector = VoiceDetector::new(VadAggressiveness::Aggressive);
        let mut audio = vec![crate::audio::MULAW_SILENCE; 25 * 160];
        audio.extend(speechlike(1000));
        let verdicts = classify(&mut detector, &audio);
        assert_eq!(verdicts.len(), 75);
        assert!(verdicts[..25].iter().all(|v| !v));
        let voiced = verdicts[25..].iter().filter(|v| **v).count();
        assert!(voiced >= 40, "only {voiced} of 50 speech frames voiced");
    }

    #[test]
    fn hangover_ends_when_the_line_goes_quiet() {
        let mut detector = VoiceDetector::new(VadAggressiveness::Aggressive);
        let mut audio = speechlike(400);
        audio.extend(vec![crate::audio::MULAW_SILENCE; 10 * 160]);
        let verdicts = classify(&mut detector, &audio);
        assert!(verdicts[..20].iter().any(|v| *v), "{verdicts:?}");
        assert!(verdicts[20..].iter().all(|v| !v), "{verdicts:?}");
    }

    #[test]
    fn a_loud_noise_webrtc_vad_rejects_is_not_speech() {
        // White-ish noise well over the energy gate: loud, but not voice.
        let mut seed = 0x2545_F491_u32;
        let noise: Vec<u8> = (0..50 * 160)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                mulaw::encode_sample(((seed % 4000) as i32 - 2000) as i16)
            })
            .collect();
        let mut detector = VoiceDetector::new(VadAggressiveness::VeryAggressive);
        let loud = noise.chunks(160).filter(|frame| energy_voiced(frame)).count();
        let voiced = classify(&mut detector, &noise).iter().filter(|v| **v).count();
        assert_eq!(loud, 50, "the noise passes the energy gate");
        assert!(voiced < loud, "webrtc-vad called all {loud} loud noise frames speech");
    }

    #[test]
    fn the_detector_moves_between_threads() {
        let mut detector = VoiceDetector::new(VadAggressiveness::Aggressive);
        let speech = speechlike(200);
        let here = classify(&mut detector, &speech);
        let mut fresh = VoiceDetector::new(VadAggressiveness::Aggressive);
        let there = std::thread::spawn(move || classify(&mut fresh, &speech)).join().unwrap();
        assert_eq!(here, there);
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
