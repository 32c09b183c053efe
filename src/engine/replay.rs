//! The caller's audio since the last finished turn, kept so that a speech-to-text session lost mid-turn can be
//! replaced without losing words: the new session is fed this audio first, then the live audio.
//!
//! The buffer is bounded. When it has had to drop audio that held speech, the turn cannot be recovered this way,
//! and the engine falls back to asking the caller to repeat.

use std::collections::VecDeque;

use bytes::Bytes;

use super::vad::mulaw_level;

/// Mean absolute amplitude (of 32767) above which a dropped frame counts as speech.
const SPEECH_AMPLITUDE: f64 = 300.0;

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
        ReplayBuffer { frames: VecDeque::with_capacity(capacity.min(1024)), capacity, lost_speech: false }
    }

    pub fn push(&mut self, frame: Bytes) {
        if self.capacity == 0 {
            self.lost_speech |= is_speech(&frame);
            return;
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
            buffer.push(frame);
        }
        let frames: Vec<&Bytes> = buffer.replayable().expect("only silence was dropped").collect();
        assert_eq!(frames, vec![&quiet(), &loud(), &quiet()]);
    }

    #[test]
    fn dropping_speech_makes_the_turn_unreplayable_until_it_ends() {
        let mut buffer = ReplayBuffer::new(2);
        for frame in [loud(), quiet(), quiet()] {
            buffer.push(frame);
        }
        assert!(buffer.replayable().is_none());
        buffer.turn_ended();
        assert!(buffer.is_empty());
        buffer.push(loud());
        assert_eq!(buffer.replayable().map(Iterator::count), Some(1));
    }
}
