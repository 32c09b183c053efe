//! Writing Parley's messages to Twilio as JSON text frames, into one buffer per socket.
//!
//! Every call sends fifty media messages a second. Serialising each into a new `String` (and its base64 into
//! another) cost three allocations a frame; the encoder writes the JSON, base64 included, straight into a buffer it
//! keeps, and hands out the written bytes as a `Bytes` that shares that buffer. The WebSocket copies a frame into its
//! own write buffer when it is sent, so by the next message the encoder holds the only reference again and reuses the
//! memory.

use bytes::{BufMut, Bytes, BytesMut};

use super::messages::OutboundMessage;

/// Room for a 20 ms media message (about 300 bytes) with margin; larger messages grow the buffer once.
const INITIAL_CAPACITY: usize = 1024;

/// Why a message could not be written. Serialising Parley's own plain structs into memory does not fail in practice;
/// the error exists so a failure is reported instead of sending Twilio a broken frame.
#[derive(Debug, thiserror::Error)]
#[error("could not write an outbound message: {0}")]
pub struct EncodeError(#[from] serde_json::Error);

/// One socket's writer of outbound messages (see the module's documentation).
#[derive(Debug)]
pub struct OutboundEncoder {
    buffer: BytesMut,
}

impl Default for OutboundEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl OutboundEncoder {
    pub fn new() -> Self {
        OutboundEncoder { buffer: BytesMut::with_capacity(INITIAL_CAPACITY) }
    }

    /// The JSON text of `message` exactly as [`OutboundMessage::to_json`] writes it, as UTF-8 bytes for a text frame.
    pub fn encode(&mut self, message: &OutboundMessage) -> Result<Bytes, EncodeError> {
        self.buffer.clear();
        // Reclaims the buffer the last message was written to once nothing else holds it.
        self.buffer.reserve(INITIAL_CAPACITY);
        if let Err(err) = serde_json::to_writer((&mut self.buffer).writer(), message) {
            self.buffer.clear();
            return Err(err.into());
        }
        Ok(self.buffer.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const STREAM: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/proto-fixtures/twilio/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn text(bytes: &Bytes) -> &str {
        std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("not UTF-8: {e}"))
    }

    #[test]
    fn every_message_is_written_in_twilios_documented_shape() {
        let mut encoder = OutboundEncoder::new();
        for (message, file) in [
            (OutboundMessage::media(Arc::from(STREAM), Bytes::from_static(&[0xFF; 4])), "outbound-media.json"),
            (OutboundMessage::mark(STREAM, "resp-42-end"), "outbound-mark.json"),
            (OutboundMessage::clear(STREAM), "outbound-clear.json"),
        ] {
            let written = encoder.encode(&message).unwrap_or_else(|e| panic!("{file}: {e}"));
            let ours: serde_json::Value = serde_json::from_str(text(&written)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(ours, fixture(file), "{file}");
            assert_eq!(text(&written), message.to_json(), "{file}");
        }
    }

    #[test]
    fn a_media_frame_is_written_byte_for_byte() {
        let mut encoder = OutboundEncoder::new();
        let message = OutboundMessage::media(Arc::from(STREAM), Bytes::from_static(&[0xFF; 4]));
        let written = encoder.encode(&message).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            text(&written),
            r#"{"event":"media","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","media":{"payload":"/////w=="}}"#
        );
        // A whole 20 ms frame: 160 bytes are 216 characters of base64.
        let frame = OutboundMessage::media(Arc::from(STREAM), Bytes::from(vec![0x7Fu8; 160]));
        let written = encoder.encode(&frame).unwrap_or_else(|e| panic!("{e}"));
        let value: serde_json::Value = serde_json::from_str(text(&written)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value["media"]["payload"].as_str().map(str::len), Some(216));
        // And it reads back as the same message.
        let back: OutboundMessage = serde_json::from_str(text(&written)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, frame);
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let mut encoder = OutboundEncoder::new();
        let written =
            encoder.encode(&OutboundMessage::mark(STREAM, "a \"quoted\"\nname")).unwrap_or_else(|e| panic!("{e}"));
        let back: OutboundMessage = serde_json::from_str(text(&written)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, OutboundMessage::mark(STREAM, "a \"quoted\"\nname"));
    }

    #[test]
    fn the_buffer_is_reused_once_the_last_message_is_gone() {
        let mut encoder = OutboundEncoder::new();
        let message = OutboundMessage::media(Arc::from(STREAM), Bytes::from(vec![0xFFu8; 160]));
        let first = encoder.encode(&message).unwrap_or_else(|e| panic!("{e}"));
        let first_at = first.as_ptr();
        let first_text = first.clone();
        drop(first);
        drop(first_text);
        let second = encoder.encode(&message).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(second.as_ptr(), first_at, "the second message went to the first one's memory");
        // A message still held elsewhere is never overwritten.
        let third = encoder.encode(&message).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(third.as_ptr(), second.as_ptr());
        assert_eq!(second, third);
    }
}
