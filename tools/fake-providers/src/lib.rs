//! Fake provider servers for Parley's tests and benchmarks.
//!
//! Each fake is a real server bound to 127.0.0.1 on an ephemeral port that speaks the provider's documented wire
//! protocol, replays messages from `proto-fixtures/`, and has configurable delays so latency can be measured.

pub mod anthropic;
pub mod cartesia;
pub mod deepgram;
pub mod deepgram_flux;
pub mod elevenlabs;
pub mod openai;
pub mod openai_speech;
pub mod twilio_rest;

/// Read buffer of the fakes' WebSocket servers: tungstenite's 128 KiB default is zero-filled before every read,
/// which would make the fakes, not Parley, the load generator's bottleneck.
pub(crate) const READ_BUFFER_BYTES: usize = 8 * 1024;
