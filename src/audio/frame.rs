//! Cutting a μ-law byte stream of arbitrary chunk sizes into whole 20 ms frames.

use bytes::{Bytes, BytesMut};

use super::{FRAME_BYTES, MULAW_SILENCE};

/// Frames whose storage is reserved at once: a second of audio, so one allocation serves fifty frames.
const BLOCK_BYTES: usize = 50 * FRAME_BYTES;

/// Accumulates μ-law bytes and yields whole 160-byte frames; keeps the remainder for the next push.
///
/// Frames are slices of a shared block (a second of audio) rather than one allocation each: a block is freed when
/// the last frame cut from it is dropped, and reused in place when every frame of it is gone by the time it fills.
#[derive(Debug, Default)]
pub struct Framer {
    pending: BytesMut,
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes and returns every whole frame now available, cut as the iterator is consumed (a frame not taken
    /// stays pending for the next push).
    pub fn push(&mut self, bytes: &[u8]) -> Frames<'_> {
        if self.pending.capacity() - self.pending.len() < bytes.len() {
            self.pending.reserve(bytes.len().max(BLOCK_BYTES));
        }
        self.pending.extend_from_slice(bytes);
        Frames { pending: &mut self.pending }
    }

    /// Returns the partial frame left over, padded with silence to a whole frame, if any.
    pub fn flush(&mut self) -> Option<Bytes> {
        if self.pending.is_empty() {
            return None;
        }
        self.pending.resize(FRAME_BYTES, MULAW_SILENCE);
        Some(self.pending.split().freeze())
    }

    /// Drops the partial frame (used when a reply is cancelled).
    pub fn reset(&mut self) {
        self.pending.clear();
    }

    /// Bytes waiting for a whole frame.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// The whole frames of a [`Framer::push`], each cut from the framer's storage without copying.
#[derive(Debug)]
pub struct Frames<'a> {
    pending: &'a mut BytesMut,
}

impl Iterator for Frames<'_> {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        (self.pending.len() >= FRAME_BYTES).then(|| self.pending.split_to(FRAME_BYTES).freeze())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let whole = self.pending.len() / FRAME_BYTES;
        (whole, Some(whole))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_chunks_become_whole_frames() {
        let mut framer = Framer::new();
        assert_eq!(framer.push(&[1u8; 100]).count(), 0);
        let frames: Vec<Bytes> = framer.push(&[2u8; 300]).collect();
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|f| f.len() == FRAME_BYTES));
        assert_eq!(&frames[0][..100], &[1u8; 100][..]);
        assert_eq!(frames[0][100], 2);
        assert_eq!(framer.pending_len(), 80);
        let last = framer.flush().expect("a partial frame");
        assert_eq!(last.len(), FRAME_BYTES);
        assert_eq!(&last[..80], &[2u8; 80][..]);
        assert!(last[80..].iter().all(|&b| b == MULAW_SILENCE));
        assert!(framer.flush().is_none());
    }

    #[test]
    fn frames_share_blocks_and_a_block_is_reused_once_its_frames_are_gone() {
        let mut framer = Framer::new();
        let first: Vec<Bytes> = framer.push(&[1u8; FRAME_BYTES]).collect();
        let second: Vec<Bytes> = framer.push(&[2u8; FRAME_BYTES]).collect();
        assert_eq!(second[0].as_ptr(), first[0].as_ptr().wrapping_add(FRAME_BYTES), "one block, no new allocation");
        let block_start = first[0].as_ptr();
        drop((first, second));
        for _ in 2..BLOCK_BYTES / FRAME_BYTES {
            assert_eq!(framer.push(&[3u8; FRAME_BYTES]).count(), 1);
        }
        // The block is full and every frame cut from it is gone: the next frame goes back to its start.
        let next: Vec<Bytes> = framer.push(&[4u8; FRAME_BYTES]).collect();
        assert_eq!(next[0].as_ptr(), block_start);
        assert_eq!(&next[0][..], &[4u8; FRAME_BYTES][..]);
    }

    #[test]
    fn a_frame_still_held_is_never_overwritten() {
        let mut framer = Framer::new();
        let kept: Vec<Bytes> = framer.push(&[1u8; BLOCK_BYTES]).collect();
        let more: Vec<Bytes> = framer.push(&[2u8; BLOCK_BYTES + 10]).collect();
        assert_eq!(more.len(), BLOCK_BYTES / FRAME_BYTES);
        assert!(kept.iter().all(|f| f.iter().all(|&b| b == 1)));
        assert!(more.iter().all(|f| f.iter().all(|&b| b == 2)));
        assert_eq!(framer.pending_len(), 10);
    }

    #[test]
    fn reset_drops_the_remainder() {
        let mut framer = Framer::new();
        assert_eq!(framer.push(&[7u8; 50]).count(), 0);
        framer.reset();
        assert!(framer.flush().is_none());
    }
}
