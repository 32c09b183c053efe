//! Writing Parley's messages to Twilio as JSON text frames, into one buffer per socket.
//!
//! Every call sends fifty media messages a second. Serialising each into a new `String` (and its base64 into
//! another) cost three allocations a frame; the encoder writes the JSON, base64 included, straight into a buffer it
//! keeps, and hands out the written bytes as a `Bytes` that shares that buffer. The WebSocket copies a frame into its
//! own write buffer when it is sent, so by the next message the encoder holds the only reference again and reuses the
//! memory.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};

use super::messages::OutboundMessage;

/// Room for a 20 ms media message (about 300 bytes) with margin; larger messages grow the buffer once.
const INITIAL_CAPACITY: usize = 1024;

/// Why a message could not be written. Writing Parley's own plain structs into memory does not fail in practice; the
/// error exists so a failure is reported instead of sending Twilio a broken frame.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("could not write an outbound message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("could not write {0} bytes of outbound audio as base64")]
    Base64(usize),
}

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
        let written = match message {
            OutboundMessage::Media { stream_sid, media } => self.write_media(stream_sid, &media.payload),
            other => serde_json::to_writer((&mut self.buffer).writer(), other).map_err(EncodeError::from),
        };
        if let Err(err) = written {
            self.buffer.clear();
            return Err(err);
        }
        Ok(self.buffer.split().freeze())
    }

    /// A media message, written directly: the fixed parts as they are, the stream SID as a JSON string, and the
    /// base64 encoded in place (serde's path would run every base64 character through its escaping).
    fn write_media(&mut self, stream_sid: &str, mulaw: &[u8]) -> Result<(), EncodeError> {
        self.buffer.extend_from_slice(br#"{"event":"media","streamSid":"#);
        serde_json::to_writer((&mut self.buffer).writer(), stream_sid)?;
        self.buffer.extend_from_slice(br#","media":{"payload":""#);
        let start = self.buffer.len();
        let size = base64::encoded_len(mulaw.len(), true).ok_or(EncodeError::Base64(mulaw.len()))?;
        self.buffer.resize(start + size, 0);
        let encoded =
            STANDARD.encode_slice(mulaw, &mut self.buffer[start..]).map_err(|_| EncodeError::Base64(mulaw.len()))?;
        self.buffer.truncate(start + encoded);
        self.buffer.extend_from_slice(br#""}}"#);
        Ok(())
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
    fn media_of_any_length_is_written_as_serde_writes_it() {
        let mut encoder = OutboundEncoder::new();
        for len in [0usize, 1, 2, 3, 159, 160, 161, 320, 5_000] {
            let mulaw = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
            for sid in [STREAM, "MZ\"odd\"\n"] {
                let message = OutboundMessage::media(Arc::from(sid), mulaw.clone());
                let written = encoder.encode(&message).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(text(&written), message.to_json(), "{len} bytes, {sid:?}");
            }
        }
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
