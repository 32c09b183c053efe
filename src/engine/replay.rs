//! The caller's audio since the last finished turn, kept so that a speech-to-text session lost mid-turn can be
//! replaced without losing words: the new session is fed this audio first, then the live audio.
//!
//! The buffer is bounded. When it has had to drop audio that held speech, the turn cannot be recovered this way,
//! and the engine falls back to asking the caller to repeat.
//!
//! Between turns — nobody speaks and no result is awaited — nothing older than [`PREROLL_FRAMES`] can belong to a turn
//! yet to come, so only that much is kept: a call's audio frames share one-second blocks, and a buffer holding every
//! quiet second since the last turn kept those blocks alive through the agent's whole reply.

use std::collections::VecDeque;

use bytes::Bytes;

use super::vad::mulaw_level;

/// Mean absolute amplitude (of 32767) above which a dropped frame counts as speech.
const SPEECH_AMPLITUDE: f64 = 300.0;
/// Frames kept between turns: the second before a turn's speech, so a new session hears its onset with the quiet
/// before it.
pub const PREROLL_FRAMES: usize = 50;
/// Slots the buffer starts with; a long turn grows it (up to its capacity) once.
const INITIAL_SLOTS: usize = 64;

/// Caller audio since the last finished turn; see the module documentation.
#[derive(Debug)]
pub struct ReplayBuffer {
    frames: VecDeque<Bytes>,
    capacity: usize,
    lost_speech: bool,
}

impl ReplayBuffer {
    /// Holds up to `capacity` 20 ms frames.
    pub fn new(capacity: usize) -> ReplayBuffer {
        ReplayBuffer { frames: VecDeque::with_capacity(capacity.min(INITIAL_SLOTS)), capacity, lost_speech: false }
    }

    /// Keeps a frame of the caller's audio. `between_turns`: nobody speaks and no result is awaited, so the frames
    /// before the last [`PREROLL_FRAMES`] are let go (they cannot be part of a turn to replay).
    pub fn push(&mut self, frame: Bytes, between_turns: bool) {
        if self.capacity == 0 {
            self.lost_speech |= is_speech(&frame);
            return;
        }
        if between_turns {
            let keep = PREROLL_FRAMES.saturating_sub(1);
            if self.frames.len() > keep {
                self.frames.drain(..self.frames.len() - keep);
            }
        }
        if self.frames.len() == self.capacity {
            if let Some(dropped) = self.frames.pop_front() {
                self.lost_speech |= is_speech(&dropped);
            }
        }
        self.frames.push_back(frame);
    }

    /// A turn ended: what came before it is in the history and never needs replaying.
    pub fn turn_ended(&mut self) {
        self.frames.clear();
        self.lost_speech = false;
    }

    /// The audio to feed a new session, or `None` when speech of the current turn was already dropped.
    pub fn replayable(&self) -> Option<impl Iterator<Item = &Bytes>> {
        (!self.lost_speech).then(|| self.frames.iter())
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

fn is_speech(frame: &[u8]) -> bool {
    mulaw_level(frame) > SPEECH_AMPLITUDE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::mulaw;

    fn loud() -> Bytes {
        Bytes::from(mulaw::encode(&[8000i16, -8000].repeat(80)))
    }

    fn quiet() -> Bytes {
        Bytes::from(vec![0xFFu8; 160])
    }

    #[test]
    fn keeps_the_latest_frames_and_replays_them_in_order() {
        let mut buffer = ReplayBuffer::new(3);
        for frame in [quiet(), quiet(), loud(), quiet()] {
            buffer.push(frame, false);
        }
        let frames: Vec<&Bytes> = buffer.replayable().expect("only silence was dropped").collect();
        assert_eq!(frames, vec![&quiet(), &loud(), &quiet()]);
    }

    #[test]
    fn dropping_speech_makes_the_turn_unreplayable_until_it_ends() {
        let mut buffer = ReplayBuffer::new(2);
        for frame in [loud(), quiet(), quiet()] {
            buffer.push(frame, false);
        }
        assert!(buffer.replayable().is_none());
        buffer.turn_ended();
        assert!(buffer.is_empty());
        buffer.push(loud(), false);
        assert_eq!(buffer.replayable().map(Iterator::count), Some(1));
    }

    #[test]
    fn between_turns_only_the_preroll_is_kept_and_a_turn_keeps_all_of_itself() {
        let mut buffer = ReplayBuffer::new(750);
        for _ in 0..3 * PREROLL_FRAMES {
            buffer.push(quiet(), true);
        }
        assert_eq!(buffer.len(), PREROLL_FRAMES);
        // Frames let go between turns are not part of a turn: nothing was lost.
        buffer.push(loud(), true);
        assert_eq!(buffer.len(), PREROLL_FRAMES);
        for _ in 0..2 * PREROLL_FRAMES {
            buffer.push(loud(), false);
        }
        let frames: Vec<&Bytes> = buffer.replayable().expect("nothing of the turn was dropped").collect();
        assert_eq!(frames.len(), 3 * PREROLL_FRAMES);
        assert_eq!(frames[PREROLL_FRAMES - 1], &loud(), "the turn's first frame, after the second before it");
        assert_eq!(frames[PREROLL_FRAMES - 2], &quiet());
    }
}
