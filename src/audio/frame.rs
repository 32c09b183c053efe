//! Cutting a μ-law byte stream of arbitrary chunk sizes into whole 20 ms frames.

use bytes::{Bytes, BytesMut};

use super::{FRAME_BYTES, MULAW_SILENCE};

/// Accumulates μ-law bytes and yields whole 160-byte frames; keeps the remainder for the next push.
#[derive(Debug, Default)]
pub struct Framer {
    pending: BytesMut,
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes and returns every whole frame now available.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        self.pending.extend_from_slice(bytes);
        let whole = self.pending.len() / FRAME_BYTES;
        (0..whole).map(|_| self.pending.split_to(FRAME_BYTES).freeze()).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_chunks_become_whole_frames() {
        let mut framer = Framer::new();
        assert!(framer.push(&[1u8; 100]).is_empty());
        let frames = framer.push(&[2u8; 300]);
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
    fn reset_drops_the_remainder() {
        let mut framer = Framer::new();
        framer.push(&[7u8; 50]);
        framer.reset();
        assert!(framer.flush().is_none());
    }
}
