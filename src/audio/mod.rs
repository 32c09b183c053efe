//! Telephone audio: the G.711 μ-law codec and the frame queues on both sides of a Twilio stream.

pub mod frame;
pub mod jitter;
pub mod mulaw;
pub mod playout;
pub mod recent;

/// Samples per second of Twilio's Media Streams audio.
pub const SAMPLE_RATE: u32 = 8_000;
/// Length of one frame, the unit Twilio sends and Parley plays.
pub const FRAME_MILLIS: u32 = 20;
/// Bytes of μ-law in one 20 ms frame (one byte per sample).
pub const FRAME_BYTES: usize = (SAMPLE_RATE * FRAME_MILLIS / 1000) as usize;
/// The μ-law byte for silence (a zero sample).
pub const MULAW_SILENCE: u8 = 0xFF;

/// Milliseconds of audio in `bytes` of 8 kHz μ-law.
pub fn mulaw_millis(bytes: usize) -> u64 {
    bytes as u64 * 1000 / u64::from(SAMPLE_RATE)
}
