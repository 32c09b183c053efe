//! Recovery from false interruptions: a barge-in pauses the reply instead of ending it, and when no words follow
//! (a cough, a door, "mm-hmm") the reply resumes from where the caller stopped hearing it.
//!
//! On barge-in the agent's audio is cleared at once, as for any interruption, but the model, its tools and the
//! synthesis go on and the reply keeps its own copy of its audio ([`ReplyAudio`]). Words from the caller make the
//! interruption real (the reply ends, the history keeps what was heard); silence, or backchannels only, resume it:
//! the copy is played again from a pause in the agent's speech just before the point the caller last heard, so the
//! caller hears the interrupted word whole and nothing is synthesised twice. The reply enters the history once, as
//! heard in the end.
//!
//! Everything here is pure: the engine feeds it clock readings and events.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::time::Instant;

use crate::audio::playout::ClearReport;
use crate::audio::{mulaw, FRAME_BYTES};

/// `[conversation.turn.resume]`: when a paused reply resumes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResumeConfig {
    /// Pause replies on barge-in and resume them after a false interruption (off: every barge-in ends the reply).
    pub enabled: bool,
    /// Silence after the caller's last voiced frame, with no words heard, after which the reply resumes, once the
    /// speech-to-text has nothing pending.
    pub after_silence_ms: u64,
    /// Silence after which the reply resumes even if the speech-to-text may still return words.
    pub max_wait_ms: u64,
    /// How far back from the last heard point to look for a pause in the agent's speech to resume from.
    pub max_backup_ms: u64,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        ResumeConfig { enabled: true, after_silence_ms: 400, max_wait_ms: 2_000, max_backup_ms: 1_500 }
    }
}

/// A reply's own copy of the audio it handed to the playout, laid out exactly as the playout queued it: every chunk
/// is padded to whole 20 ms frames (a mark follows each chunk, and the playout pads the partial frame before it),
/// so an offset into the copy is an offset into the reply's stretch of the playout.
#[derive(Debug, Default)]
pub struct ReplyAudio {
    chunks: Vec<Bytes>,
    /// Padded length of everything held.
    len: u64,
}

impl ReplyAudio {
    /// Keeps a chunk (the bytes are shared, not copied).
    pub fn push(&mut self, chunk: Bytes) {
        self.len += padded_len(chunk.len()) as u64;
        self.chunks.push(chunk);
    }

    /// Bytes held, counting each chunk's frame padding.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The audio from `offset` (a multiple of a frame) to the end, chunk by chunk, to queue again with a mark after
    /// each.
    pub fn from_offset(&self, offset: u64) -> Vec<Bytes> {
        self.laid_out()
            .filter(|(start, chunk)| start + padded_len(chunk.len()) as u64 > offset)
            .filter_map(|(start, chunk)| {
                let skip = offset.saturating_sub(start) as usize;
                (skip < chunk.len()).then(|| chunk.slice(skip..))
            })
            .collect()
    }

    /// Each chunk with its offset in the reply's stretch of the playout.
    fn laid_out(&self) -> impl Iterator<Item = (u64, &Bytes)> {
        self.chunks.iter().scan(0u64, |next, chunk| {
            let start = *next;
            *next += padded_len(chunk.len()) as u64;
            Some((start, chunk))
        })
    }

    /// Where to resume after the caller last heard `heard` bytes of the reply: the end of the last pause in the
    /// agent's speech that began before it (the word it cut is heard again whole), looking back at most
    /// `max_backup_ms`. Without such a pause, from `max_backup_ms` back. Always on a frame boundary.
    pub fn resume_point(&self, heard: u64, max_backup_ms: u64) -> u64 {
        let heard = heard.min(self.len);
        let earliest = heard.saturating_sub(max_backup_ms * 8);
        let samples = self.samples(earliest, heard + GAP_WINDOWS as u64 * WINDOW_BYTES as u64);
        let gap = last_gap_before(&samples, (heard - earliest) as usize);
        let point = match gap {
            Some((gap_start, gap_end)) => {
                let (gap_start, gap_end) = (earliest + gap_start as u64, earliest + gap_end as u64);
                let end = gap_end.min(heard);
                let frame = FRAME_BYTES as u64;
                // The frame boundary inside the pause nearest its end, else the one just before it.
                let floor = end / frame * frame;
                if floor >= gap_start {
                    floor
                } else {
                    gap_start.div_ceil(frame) * frame
                }
            }
            None => earliest,
        };
        point.min(heard) / FRAME_BYTES as u64 * FRAME_BYTES as u64
    }

    /// The μ-law bytes of `[from, to)` as held (padding included), decoded.
    fn samples(&self, from: u64, to: u64) -> Vec<i16> {
        let to = to.min(self.len);
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        for (start, chunk) in self.laid_out() {
            let end = start + padded_len(chunk.len()) as u64;
            if start >= to {
                break;
            }
            let (first, last) = (from.max(start) - start, to.min(end).saturating_sub(start));
            for i in first..last {
                let byte = chunk.get(i as usize).copied().unwrap_or(crate::audio::MULAW_SILENCE);
                out.push(mulaw::decode_sample(byte));
            }
        }
        out
    }
}

fn padded_len(len: usize) -> usize {
    len.div_ceil(FRAME_BYTES) * FRAME_BYTES
}

/// 10 ms windows: fine enough to find the pauses between words.
const WINDOW_BYTES: usize = 80;
/// A pause between words: five quiet windows in a row (50 ms); shorter dips are stop consonants.
const GAP_WINDOWS: usize = 5;
/// Mean absolute amplitude under which a window is quiet (about -47 dBFS).
const QUIET_AMPLITUDE: f64 = 150.0;

/// The last run of quiet windows that starts before `before` (sample index), as sample indexes `[start, end)`.
fn last_gap_before(samples: &[i16], before: usize) -> Option<(usize, usize)> {
    let quiet: Vec<bool> =
        samples.chunks(WINDOW_BYTES).map(|w| super::vad::mean_amplitude(w) < QUIET_AMPLITUDE).collect();
    let mut best = None;
    let mut run_start = None;
    for (i, &q) in quiet.iter().chain(std::iter::once(&false)).enumerate() {
        match (q, run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(start)) => {
                run_start = None;
                let (s, e) = (start * WINDOW_BYTES, (i * WINDOW_BYTES).min(samples.len()));
                if i - start >= GAP_WINDOWS && s < before {
                    best = Some((s, e));
                }
            }
            _ => {}
        }
    }
    best
}

/// A reply paused by a barge-in, waiting to learn whether the interruption was real.
#[derive(Debug, Clone)]
pub struct Paused {
    /// When the audio was cleared.
    pub at: Instant,
    /// What the clear found (how much of the reply was heard).
    pub report: ClearReport,
    /// The caller's last voiced frame since the pause.
    pub last_voiced: Instant,
}

/// What to do with a paused reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseVerdict {
    /// Keep waiting, until the given time at most.
    Wait(Instant),
    /// Nothing but noise came: play the rest.
    Resume,
}

impl Paused {
    pub fn new(at: Instant, report: ClearReport) -> Paused {
        Paused { at, report, last_voiced: at }
    }

    /// Whether to resume now (the caller's speech is measured by [`Paused::last_voiced`]). `stt_pending`: the
    /// speech-to-text has heard speech it has not yet turned into a result.
    pub fn verdict(&self, now: Instant, stt_pending: bool, config: &ResumeConfig) -> PauseVerdict {
        let quiet_since = self.last_voiced.max(self.at);
        let settled = quiet_since + Duration::from_millis(config.after_silence_ms);
        let give_up = quiet_since + Duration::from_millis(config.max_wait_ms.max(config.after_silence_ms));
        if now >= give_up || (now >= settled && !stt_pending) {
            return PauseVerdict::Resume;
        }
        PauseVerdict::Wait(if now >= settled { give_up } else { settled })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: usize) -> Vec<u8> {
        (0..ms * 8).map(|i| mulaw::encode_sample(if i % 16 < 8 { 4000 } else { -4000 })).collect()
    }

    fn silence(ms: usize) -> Vec<u8> {
        vec![crate::audio::MULAW_SILENCE; ms * 8]
    }

    fn audio(parts: &[Vec<u8>]) -> ReplyAudio {
        let mut audio = ReplyAudio::default();
        for part in parts {
            audio.push(Bytes::from(part.clone()));
        }
        audio
    }

    #[test]
    fn chunks_are_counted_padded_to_whole_frames_as_the_playout_queues_them() {
        let audio = audio(&[vec![1; 100], vec![1; 160], vec![1; 161]]);
        assert_eq!(audio.len(), 160 + 160 + 320);
        let rest = audio.from_offset(320);
        assert_eq!(rest.iter().map(Bytes::len).collect::<Vec<_>>(), vec![161]);
        let rest = audio.from_offset(160);
        assert_eq!(rest.iter().map(Bytes::len).collect::<Vec<_>>(), vec![160, 161]);
        let rest = audio.from_offset(480);
        assert_eq!(rest.iter().map(Bytes::len).collect::<Vec<_>>(), vec![1], "the last frame of the third chunk");
    }

    #[test]
    fn resumes_from_the_pause_before_the_word_the_caller_was_cut_off_in() {
        // word (400 ms) · pause (100 ms) · word (600 ms): cut 300 ms into the second word.
        let audio = audio(&[[tone(400), silence(100), tone(600)].concat()]);
        let heard = (400 + 100 + 300) * 8;
        let point = audio.resume_point(heard, 1_500);
        assert_eq!(point % FRAME_BYTES as u64, 0);
        // Inside the pause (400–500 ms), so the cut word is heard again from its start.
        assert!((400 * 8..=500 * 8).contains(&point), "resumed at {} ms", point / 8);
    }

    #[test]
    fn a_cut_inside_a_pause_resumes_there() {
        let audio = audio(&[[tone(400), silence(200), tone(600)].concat()]);
        let point = audio.resume_point(500 * 8, 1_500);
        assert!((400 * 8..=500 * 8).contains(&point), "resumed at {} ms", point / 8);
    }

    #[test]
    fn without_a_pause_in_reach_it_backs_up_the_limit() {
        let audio = audio(&[tone(3_000)]);
        assert_eq!(audio.resume_point(2_500 * 8, 1_000), 1_500 * 8);
        assert_eq!(audio.resume_point(500 * 8, 1_000), 0, "never before the reply's start");
    }

    #[test]
    fn short_dips_are_not_word_boundaries() {
        // A 30 ms dip (a stop consonant) at 800 ms, a real pause at 300 ms.
        let audio = audio(&[[tone(300), silence(80), tone(420), silence(30), tone(700)].concat()]);
        let point = audio.resume_point(1_200 * 8, 1_500);
        assert!((300 * 8..=380 * 8).contains(&point), "resumed at {} ms", point / 8);
    }

    fn report() -> ClearReport {
        ClearReport { sent_bytes: 0, played_bytes: 0, heard_estimate_bytes: 0, dropped_bytes: 0 }
    }

    #[test]
    fn resumes_after_quiet_once_nothing_is_pending_or_when_the_wait_is_over() {
        let config = ResumeConfig::default();
        let t0 = Instant::now();
        let mut paused = Paused::new(t0, report());
        paused.last_voiced = t0 + Duration::from_millis(160);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(paused.verdict(ms(300), false, &config), PauseVerdict::Wait(ms(560)));
        assert_eq!(paused.verdict(ms(560), false, &config), PauseVerdict::Resume);
        assert_eq!(paused.verdict(ms(560), true, &config), PauseVerdict::Wait(ms(2_160)));
        assert_eq!(paused.verdict(ms(2_160), true, &config), PauseVerdict::Resume);
        // More speech moves the wait on.
        paused.last_voiced = ms(600);
        assert_eq!(paused.verdict(ms(700), false, &config), PauseVerdict::Wait(ms(1_000)));
    }
}
