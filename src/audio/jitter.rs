//! The inbound frame queue: Twilio's media chunks in, evenly sized 20 ms frames out.
//!
//! Twilio numbers each chunk (`media.chunk`, from 1) and stamps it with stream-relative milliseconds. Over a real
//! network chunks can bunch up, arrive twice, arrive out of order or go missing. The queue releases in-order chunks at
//! once (no added latency in the normal case), holds a few chunks when one is missing, and when the hole does not fill
//! in time, plays silence in its place so the caller's audio keeps its timing. A jump in `media.timestamp` between
//! consecutive chunks is a gap too (silence the sender did not send). Gap filling is capped per gap and per call, so
//! a caller cannot make Parley invent minutes of audio out of a few small messages.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::frame::Framer;
use super::{mulaw_millis, FRAME_BYTES, MULAW_SILENCE, SAMPLE_RATE};

/// Longest hole the queue fills with silence; beyond it the stream is treated as restarted.
const MAX_GAP_FILL_MILLIS: u64 = 1_000;
/// A timestamp jump between consecutive chunks shorter than this is clock jitter, not a gap.
const MIN_TIMESTAMP_GAP_MILLIS: u64 = crate::audio::FRAME_MILLIS as u64;

/// A frame of silence, pushed in pieces to fill a gap without allocating it.
const SILENCE: [u8; FRAME_BYTES] = [MULAW_SILENCE; FRAME_BYTES];

/// Counters of what the queue had to repair, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JitterStats {
    pub chunks_in: u64,
    pub duplicates_dropped: u64,
    pub reordered: u64,
    pub chunks_lost: u64,
    pub silence_filled_ms: u64,
}

#[derive(Debug)]
struct HeldChunk {
    timestamp_ms: u64,
    payload: Bytes,
}

/// Reorders, de-duplicates and frames inbound μ-law chunks.
#[derive(Debug)]
pub struct InboundFrameQueue {
    max_held: usize,
    next_chunk: Option<u64>,
    next_timestamp_ms: Option<u64>,
    held: BTreeMap<u64, HeldChunk>,
    framer: Framer,
    ready: VecDeque<Bytes>,
    stats: JitterStats,
    /// Silence this call's gaps may still be filled with.
    gap_fill_left_ms: u64,
}

impl InboundFrameQueue {
    /// `max_held` is how many later chunks may wait for a missing one before it is given up (each is ~20 ms);
    /// `max_gap_fill_ms` is the most silence the call's gaps are filled with in total (beyond it gaps are closed up).
    pub fn new(max_held: usize, max_gap_fill_ms: u64) -> Self {
        InboundFrameQueue {
            max_held: max_held.max(1),
            next_chunk: None,
            next_timestamp_ms: None,
            held: BTreeMap::new(),
            framer: Framer::new(),
            ready: VecDeque::new(),
            stats: JitterStats::default(),
            gap_fill_left_ms: max_gap_fill_ms,
        }
    }

    /// Accepts one chunk as Twilio numbered and stamped it. The payload is borrowed (the stream's decode buffer): a
    /// chunk in sequence goes straight into the frames, only a chunk held for reordering is copied.
    pub fn push(&mut self, chunk: u64, timestamp_ms: u64, payload: &[u8]) {
        self.stats.chunks_in += 1;
        let next = *self.next_chunk.get_or_insert(chunk);
        if chunk < next || self.held.contains_key(&chunk) {
            self.stats.duplicates_dropped += 1;
            return;
        }
        if chunk > next {
            self.stats.reordered += 1;
            self.held.insert(chunk, HeldChunk { timestamp_ms, payload: Bytes::copy_from_slice(payload) });
            if self.held.len() > self.max_held {
                self.give_up_on_missing();
            }
            return;
        }
        // In sequence, but the timestamp jumped: the sender skipped time (the chunk numbers show nothing lost).
        let jump = self.next_timestamp_ms.map_or(0, |expected| timestamp_ms.saturating_sub(expected));
        if jump >= MIN_TIMESTAMP_GAP_MILLIS {
            self.fill_gap(jump);
        }
        self.release(chunk, timestamp_ms, payload);
        self.release_contiguous();
    }

    /// A chunk the edge dropped (it ran ahead of the clock): its number and its time are used up, so the chunks
    /// after it follow on without a hole to fill with silence. A dropped chunk out of order is left to the gap rules.
    pub fn skip(&mut self, chunk: u64, timestamp_ms: u64, samples: u64) {
        let next = *self.next_chunk.get_or_insert(chunk);
        if chunk != next || self.held.contains_key(&chunk) {
            return;
        }
        self.advance_past(chunk, timestamp_ms, usize::try_from(samples).unwrap_or(usize::MAX));
        self.release_contiguous();
    }

    /// Takes the next whole 20 ms frame, if one is ready.
    pub fn pop(&mut self) -> Option<Bytes> {
        self.ready.pop_front()
    }

    /// Releases everything still held (end of stream), padding the last partial frame with silence.
    pub fn drain(&mut self) {
        while !self.held.is_empty() {
            self.give_up_on_missing();
        }
        if let Some(frame) = self.framer.flush() {
            self.ready.push_back(frame);
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    fn release(&mut self, chunk: u64, timestamp_ms: u64, payload: &[u8]) {
        self.ready.extend(self.framer.push(payload));
        self.advance_past(chunk, timestamp_ms, payload.len());
    }

    /// The chunk and the `bytes` of μ-law it carried are used up: the next chunk and its time are expected after it.
    fn advance_past(&mut self, chunk: u64, timestamp_ms: u64, bytes: usize) {
        // Counters come from the caller: saturate rather than overflow on hostile values.
        self.next_chunk = Some(chunk.saturating_add(1));
        self.next_timestamp_ms = Some(timestamp_ms.saturating_add(mulaw_millis(bytes)));
    }

    fn release_contiguous(&mut self) {
        while let Some(next) = self.next_chunk {
            let Some(held) = self.held.remove(&next) else { break };
            self.release(next, held.timestamp_ms, &held.payload);
        }
    }

    /// The oldest missing chunk is not coming: fill its time with silence and move on to the first held chunk.
    fn give_up_on_missing(&mut self) {
        let Some((&first, _)) = self.held.iter().next() else { return };
        let Some(held) = self.held.remove(&first) else { return };
        let missing = first - self.next_chunk.unwrap_or(first);
        self.stats.chunks_lost += missing;
        let gap_ms = self.next_timestamp_ms.map(|expected| held.timestamp_ms.saturating_sub(expected)).unwrap_or(0);
        self.fill_gap(gap_ms);
        self.release(first, held.timestamp_ms, &held.payload);
        self.release_contiguous();
    }

    /// Plays silence for a gap, at most a second of it and only while the call's budget lasts.
    fn fill_gap(&mut self, gap_ms: u64) {
        let gap_ms = gap_ms.min(MAX_GAP_FILL_MILLIS).min(self.gap_fill_left_ms);
        if gap_ms == 0 {
            return;
        }
        self.gap_fill_left_ms -= gap_ms;
        let mut left = (gap_ms * u64::from(SAMPLE_RATE) / 1000) as usize;
        while left > 0 {
            let part = left.min(SILENCE.len());
            self.ready.extend(self.framer.push(&SILENCE[..part]));
            left -= part;
        }
        self.stats.silence_filled_ms += gap_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(value: u8) -> Bytes {
        Bytes::from(vec![value; FRAME_BYTES])
    }

    fn drain_values(queue: &mut InboundFrameQueue) -> Vec<u8> {
        std::iter::from_fn(|| queue.pop()).map(|f| f[0]).collect()
    }

    #[test]
    fn in_order_chunks_pass_straight_through() {
        let mut q = InboundFrameQueue::new(3, 10_000);
        q.push(1, 0, &chunk(1));
        assert_eq!(q.pop().map(|f| f[0]), Some(1), "no waiting in the normal case");
        q.push(2, 20, &chunk(2));
        q.push(3, 40, &chunk(3));
        assert_eq!(drain_values(&mut q), vec![2, 3]);
    }

    #[test]
    fn a_chunk_dropped_for_running_ahead_leaves_no_hole_to_fill() {
        let mut q = InboundFrameQueue::new(3, 10_000);
        q.push(1, 0, &chunk(1));
        q.skip(2, 20, 160);
        q.push(3, 40, &chunk(3));
        q.skip(4, 60, 160);
        q.skip(5, 80, 160);
        q.push(6, 100, &chunk(6));
        assert_eq!(drain_values(&mut q), vec![1, 3, 6], "only the audio kept, and no silence");
        assert_eq!(q.stats().silence_filled_ms, 0);
    }

    #[test]
    fn out_of_order_chunks_are_put_back_in_order() {
        let mut q = InboundFrameQueue::new(3, 10_000);
        q.push(1, 0, &chunk(1));
        q.push(3, 40, &chunk(3));
        q.push(2, 20, &chunk(2));
        q.push(4, 60, &chunk(4));
        assert_eq!(drain_values(&mut q), vec![1, 2, 3, 4]);
        assert_eq!(q.stats().reordered, 1);
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut q = InboundFrameQueue::new(3, 10_000);
        q.push(1, 0, &chunk(1));
        q.push(1, 0, &chunk(9));
        q.push(2, 20, &chunk(2));
        assert_eq!(drain_values(&mut q), vec![1, 2]);
        assert_eq!(q.stats().duplicates_dropped, 1);
    }

    #[test]
    fn a_lost_chunk_becomes_silence_of_the_right_length() {
        let mut q = InboundFrameQueue::new(2, 10_000);
        q.push(1, 0, &chunk(1));
        // chunk 2 (20..40 ms) is lost
        q.push(3, 40, &chunk(3));
        q.push(4, 60, &chunk(4));
        assert_eq!(drain_values(&mut q), vec![1], "held while the hole may still fill");
        q.push(5, 80, &chunk(5));
        assert_eq!(drain_values(&mut q), vec![MULAW_SILENCE, 3, 4, 5]);
        assert_eq!(q.stats().chunks_lost, 1);
        assert_eq!(q.stats().silence_filled_ms, 20);
    }

    #[test]
    fn odd_sized_payloads_are_reframed() {
        let mut q = InboundFrameQueue::new(3, 10_000);
        q.push(1, 0, &[1u8; 240]);
        q.push(2, 30, &[2u8; 80]);
        let frames: Vec<Bytes> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|f| f.len() == FRAME_BYTES));
        assert_eq!(frames[1][79], 1);
        assert_eq!(frames[1][80], 2);
    }

    #[test]
    fn drain_releases_held_chunks_and_the_partial_frame() {
        let mut q = InboundFrameQueue::new(5, 10_000);
        q.push(1, 0, &chunk(1));
        q.push(3, 40, &[3u8; 10]);
        q.drain();
        let frames: Vec<Bytes> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1][0], MULAW_SILENCE);
        assert_eq!(frames[2][0], 3);
        assert_eq!(frames[2][10], MULAW_SILENCE);
    }

    #[test]
    fn a_timestamp_jump_between_consecutive_chunks_is_filled_with_silence() {
        let mut q = InboundFrameQueue::new(3, 10_000);
        q.push(1, 0, &chunk(1));
        q.push(2, 60, &chunk(2)); // in sequence, 40 ms later than expected
        assert_eq!(drain_values(&mut q), vec![1, MULAW_SILENCE, MULAW_SILENCE, 2]);
        q.push(3, 85, &chunk(3)); // 5 ms of clock jitter: no gap
        assert_eq!(drain_values(&mut q), vec![3]);
        assert_eq!(q.stats().silence_filled_ms, 40);
    }

    #[test]
    fn gap_filling_is_capped_per_gap_and_per_call() {
        let mut q = InboundFrameQueue::new(3, 2_500);
        q.push(1, 0, &chunk(1));
        // Each message claims a minute passed since the last one.
        for n in 2..=10u64 {
            q.push(n, (n - 1) * 60_000, &chunk(n as u8));
        }
        let frames = drain_values(&mut q);
        assert_eq!(q.stats().silence_filled_ms, 2_500, "a second per gap, 2.5 s in all");
        assert_eq!(frames.len(), 10 + 2_500 / 20);
    }
}
