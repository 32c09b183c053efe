//! Twilio's side of a call as pure protocol: Media Stream messages, request signatures and TwiML.
//!
//! Nothing here does I/O, so every piece is tested against the examples in `proto-fixtures/twilio/`.

pub mod messages;
pub mod outbound;
pub mod rest;
pub mod signature;
pub mod stream_state;
pub mod stream_token;
pub mod twiml;
pub mod validate;
