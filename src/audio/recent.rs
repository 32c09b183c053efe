//! The caller's most recent audio, kept for a model that reads it (the `smart` turn strategy's turn model).

/// A fixed-size ring of μ-law bytes: pushing a frame overwrites the oldest, so per-frame work is a copy of the frame
/// and nothing is allocated after the first.
#[derive(Debug)]
pub struct RecentAudio {
    ring: Vec<u8>,
    /// Where the next byte goes.
    next: usize,
    /// Bytes held (up to the ring's size).
    held: usize,
}

impl RecentAudio {
    /// Keeps the last `bytes` bytes (8 kHz μ-law: 8 bytes a millisecond).
    pub fn new(bytes: usize) -> RecentAudio {
        RecentAudio { ring: vec![0; bytes.max(1)], next: 0, held: 0 }
    }

    pub fn push(&mut self, frame: &[u8]) {
        let size = self.ring.len();
        let frame = &frame[frame.len().saturating_sub(size)..];
        let first = frame.len().min(size - self.next);
        self.ring[self.next..self.next + first].copy_from_slice(&frame[..first]);
        self.ring[..frame.len() - first].copy_from_slice(&frame[first..]);
        self.next = (self.next + frame.len()) % size;
        self.held = (self.held + frame.len()).min(size);
    }

    /// What is held, oldest first.
    pub fn to_vec(&self) -> Vec<u8> {
        let size = self.ring.len();
        let start = (self.next + size - self.held) % size;
        let mut out = Vec::with_capacity(self.held);
        let first = self.held.min(size - start);
        out.extend_from_slice(&self.ring[start..start + first]);
        out.extend_from_slice(&self.ring[..self.held - first]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_in_order() {
        let mut recent = RecentAudio::new(5);
        assert!(recent.to_vec().is_empty());
        recent.push(&[1, 2, 3]);
        assert_eq!(recent.to_vec(), vec![1, 2, 3]);
        recent.push(&[4, 5, 6]);
        assert_eq!(recent.to_vec(), vec![2, 3, 4, 5, 6]);
        recent.push(&[7, 8, 9, 10, 11, 12]);
        assert_eq!(recent.to_vec(), vec![8, 9, 10, 11, 12]);
        recent.push(&[13]);
        assert_eq!(recent.to_vec(), vec![9, 10, 11, 12, 13]);
    }
}
