//! Media Stream WebSocket messages, both directions, as serde types.
//!
//! Twilio sends every message as a JSON text frame with an `event` discriminator. Counters (`sequenceNumber`,
//! `chunk`, `timestamp`) arrive as strings; Parley accepts strings or numbers and writes strings, as Twilio does.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an inbound frame could not be used. The call goes on; the frame is logged and skipped.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("frame is not valid JSON for event `{event}`: {detail}")]
    Malformed { event: String, detail: String },
    #[error("frame is not a JSON object with an `event`: {0}")]
    NotJson(String),
    #[error("unknown event `{0}`")]
    UnknownEvent(String),
    #[error("media payload is not valid base64: {0}")]
    BadPayload(String),
    #[error("media payload of {size} bytes exceeds the {limit}-byte limit")]
    PayloadTooLarge { size: usize, limit: usize },
}

/// A message Twilio sends to Parley.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum InboundMessage {
    Connected(Connected),
    Start(Start),
    Media(Media),
    Dtmf(Dtmf),
    Mark(MarkEcho),
    Stop(Stop),
}

/// First frame of every stream; carries no stream SID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connected {
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub version: String,
}

/// Second frame: who is calling and in what format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    #[serde(default, with = "counter_opt")]
    pub sequence_number: Option<u64>,
    pub start: StartMetadata,
    pub stream_sid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartMetadata {
    #[serde(default)]
    pub account_sid: String,
    pub stream_sid: String,
    pub call_sid: String,
    #[serde(default)]
    pub tracks: Vec<String>,
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
    pub media_format: MediaFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u32,
}

impl MediaFormat {
    /// The only format Twilio documents for Media Streams.
    pub fn is_mulaw_8k_mono(&self) -> bool {
        self.encoding == "audio/x-mulaw" && self.sample_rate == 8000 && self.channels == 1
    }
}

/// One chunk of the caller's audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Media {
    #[serde(default, with = "counter_opt")]
    pub sequence_number: Option<u64>,
    pub media: MediaChunk,
    pub stream_sid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaChunk {
    #[serde(default = "inbound_track")]
    pub track: String,
    #[serde(with = "counter")]
    pub chunk: u64,
    #[serde(with = "counter")]
    pub timestamp: u64,
    /// Base64 of raw μ-law bytes; see [`MediaChunk::decode_payload`].
    pub payload: String,
}

fn inbound_track() -> String {
    "inbound".to_owned()
}

impl MediaChunk {
    /// Decodes the payload, refusing anything over `limit` bytes before decoding it.
    pub fn decode_payload(&self, limit: usize) -> Result<Bytes, ProtocolError> {
        let mut audio = Vec::new();
        decode_payload_into(&self.payload, limit, &mut audio)?;
        Ok(Bytes::from(audio))
    }
}

/// Decodes a base64 media payload into `out`, replacing what it held and reusing its allocation, so a call decodes
/// every 20 ms frame into the same buffer. Anything over `limit` bytes is refused before decoding.
pub fn decode_payload_into(payload: &str, limit: usize, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    out.clear();
    let decoded_size = payload.len() / 4 * 3;
    if decoded_size > limit {
        return Err(ProtocolError::PayloadTooLarge { size: decoded_size, limit });
    }
    base64::engine::general_purpose::STANDARD.decode_vec(payload.as_bytes(), out).map_err(|e| {
        out.clear();
        ProtocolError::BadPayload(e.to_string())
    })
}

/// A `media` message read in place: its strings borrow the frame's text (they are copied only when the JSON escapes
/// a character in them), so the fifty messages a second of every call cost no allocation. The shape and the checks
/// are [`Media`]'s; [`parse_frame`] falls back to [`parse_inbound`] for anything this does not read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaRef<'a> {
    /// Must be `media`; checked by [`parse_frame`].
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, with = "counter_opt")]
    pub sequence_number: Option<u64>,
    #[serde(borrow)]
    pub media: MediaChunkRef<'a>,
    #[serde(borrow)]
    pub stream_sid: Cow<'a, str>,
}

/// [`MediaChunk`], borrowed from the frame's text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MediaChunkRef<'a> {
    #[serde(borrow, default = "inbound_track_ref")]
    pub track: Cow<'a, str>,
    #[serde(with = "counter")]
    pub chunk: u64,
    #[serde(with = "counter")]
    pub timestamp: u64,
    /// Base64 of raw μ-law bytes; see [`decode_payload_into`].
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
}

fn inbound_track_ref() -> Cow<'static, str> {
    Cow::Borrowed("inbound")
}

impl<'a> From<&'a Media> for MediaRef<'a> {
    fn from(media: &'a Media) -> Self {
        MediaRef {
            event: Cow::Borrowed("media"),
            sequence_number: media.sequence_number,
            media: MediaChunkRef {
                track: Cow::Borrowed(&media.media.track),
                chunk: media.media.chunk,
                timestamp: media.media.timestamp,
                payload: Cow::Borrowed(&media.media.payload),
            },
            stream_sid: Cow::Borrowed(&media.stream_sid),
        }
    }
}

/// A key the caller pressed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dtmf {
    #[serde(default, with = "counter_opt")]
    pub sequence_number: Option<u64>,
    pub dtmf: DtmfDigit,
    pub stream_sid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtmfDigit {
    #[serde(default)]
    pub track: String,
    pub digit: String,
}

/// Twilio's echo of a mark Parley sent: playback reached it, or a `clear` flushed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MarkEcho {
    #[serde(default, with = "counter_opt")]
    pub sequence_number: Option<u64>,
    pub mark: MarkName,
    pub stream_sid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkName {
    pub name: String,
}

/// The stream ended: hang-up, stream stopped, or call redirected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stop {
    #[serde(default, with = "counter_opt")]
    pub sequence_number: Option<u64>,
    #[serde(default)]
    pub stop: Option<StopMetadata>,
    pub stream_sid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopMetadata {
    #[serde(default)]
    pub account_sid: String,
    #[serde(default)]
    pub call_sid: String,
}

/// A message Parley sends to Twilio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum OutboundMessage {
    Media {
        /// Shared by every frame of the call: cloning it per frame allocates nothing.
        #[serde(rename = "streamSid", with = "shared_str")]
        stream_sid: Arc<str>,
        media: OutboundMedia,
    },
    Mark {
        #[serde(rename = "streamSid")]
        stream_sid: String,
        mark: MarkName,
    },
    Clear {
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMedia {
    /// Raw μ-law 8 kHz mono, no header: the playout's frame itself, not a copy. Base64 on the wire, encoded only
    /// where the message is written (see [`super::outbound::OutboundEncoder`]).
    #[serde(with = "base64_payload")]
    pub payload: Bytes,
}

impl OutboundMessage {
    /// Audio for the caller, from raw μ-law bytes.
    pub fn media(stream_sid: Arc<str>, mulaw: Bytes) -> Self {
        OutboundMessage::Media { stream_sid, media: OutboundMedia { payload: mulaw } }
    }

    pub fn mark(stream_sid: &str, name: &str) -> Self {
        OutboundMessage::Mark { stream_sid: stream_sid.to_owned(), mark: MarkName { name: name.to_owned() } }
    }

    pub fn clear(stream_sid: &str) -> Self {
        OutboundMessage::Clear { stream_sid: stream_sid.to_owned() }
    }

    /// The JSON text frame Twilio expects, as a new string (the socket writes through
    /// [`super::outbound::OutboundEncoder`] instead, into a reused buffer).
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail; an empty object would be rejected by Twilio, never sent silently.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// The stream SID of outbound media, one `Arc<str>` per call.
mod shared_str {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(d).map(Arc::from)
    }
}

/// Outbound audio as base64 on the wire. Serialising streams the base64 into the JSON writer (no intermediate
/// string); reading it back (the simulated Twilio) refuses what is not base64.
mod base64_payload {
    use base64::display::Base64Display;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    pub fn serialize<S: Serializer>(value: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Base64Display::new(value, &STANDARD))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        STANDARD.decode(text.as_bytes()).map(Bytes::from).map_err(serde::de::Error::custom)
    }
}

/// One inbound frame as the stream reads it: a media message in place, or any other message parsed whole.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundFrame<'a> {
    Media(MediaRef<'a>),
    /// Any other event (a media message only in shapes the in-place reader does not take, e.g. a repeated key).
    Other(InboundMessage),
}

/// Parses one inbound text frame, reading `media` (almost every frame of a call) in place and everything else, and
/// every error, through [`parse_inbound`]: the errors are the same whichever path a frame takes.
pub fn parse_frame(text: &str, max_frame_bytes: usize) -> Result<InboundFrame<'_>, ProtocolError> {
    if text.len() > max_frame_bytes {
        return Err(ProtocolError::TooLarge { size: text.len(), limit: max_frame_bytes });
    }
    if let Ok(media) = serde_json::from_str::<MediaRef<'_>>(text) {
        if media.event == "media" {
            return Ok(InboundFrame::Media(media));
        }
    }
    parse_inbound(text, max_frame_bytes).map(InboundFrame::Other)
}

const KNOWN_EVENTS: [&str; 6] = ["connected", "start", "media", "dtmf", "mark", "stop"];

/// Parses one inbound text frame, telling malformed frames apart from events Parley does not know.
pub fn parse_inbound(text: &str, max_frame_bytes: usize) -> Result<InboundMessage, ProtocolError> {
    if text.len() > max_frame_bytes {
        return Err(ProtocolError::TooLarge { size: text.len(), limit: max_frame_bytes });
    }
    serde_json::from_str::<InboundMessage>(text).map_err(|err| classify_parse_failure(text, err))
}

fn classify_parse_failure(text: &str, err: serde_json::Error) -> ProtocolError {
    #[derive(Deserialize)]
    struct EventOnly {
        event: String,
    }
    match serde_json::from_str::<EventOnly>(text) {
        Ok(EventOnly { event }) if !KNOWN_EVENTS.contains(&event.as_str()) => ProtocolError::UnknownEvent(event),
        Ok(EventOnly { event }) => ProtocolError::Malformed { event, detail: err.to_string() },
        Err(_) => ProtocolError::NotJson(err.to_string()),
    }
}

/// Twilio's counters: strings on the wire, numbers accepted too.
mod counter {
    use super::*;

    /// Twilio sends counters as decimal strings; numbers are accepted too. A visitor rather than an untagged enum:
    /// this runs for every media frame, and an untagged enum buffers the value and builds an error per miss.
    struct Counter;

    impl serde::de::Visitor<'_> for Counter {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a counter, as a decimal string or a number")
        }

        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }

        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n).map_err(E::custom)
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<u64, E> {
            s.trim().parse().map_err(E::custom)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(Counter)
    }

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }
}

mod counter_opt {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::counter")] u64);
        Option::<Wrapped>::deserialize(d).map(|w| w.map(|Wrapped(n)| n))
    }

    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(n) => s.serialize_str(&n.to_string()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    fn fixture(name: &str) -> String {
        let path = format!("{}/proto-fixtures/twilio/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn connected_fixture() {
        let msg = parse_inbound(&fixture("connected.json"), LIMIT).unwrap();
        assert_eq!(msg, InboundMessage::Connected(Connected { protocol: "Call".into(), version: "1.0.0".into() }));
    }

    #[test]
    fn start_fixture() {
        let InboundMessage::Start(start) = parse_inbound(&fixture("start.json"), LIMIT).unwrap() else {
            panic!("not a start")
        };
        assert_eq!(start.sequence_number, Some(1));
        assert!(start.stream_sid.starts_with("MZ"));
        assert!(start.start.call_sid.starts_with("CA"));
        assert_eq!(start.start.tracks, vec!["inbound"]);
        assert_eq!(start.start.custom_parameters.get("tenant").map(String::as_str), Some("acme"));
        assert!(start.start.media_format.is_mulaw_8k_mono());
    }

    #[test]
    fn media_fixture_decodes_payload() {
        let InboundMessage::Media(media) = parse_inbound(&fixture("media.json"), LIMIT).unwrap() else {
            panic!("not media")
        };
        assert_eq!(media.sequence_number, Some(3));
        assert_eq!(media.media.chunk, 1);
        assert_eq!(media.media.timestamp, 5);
        assert_eq!(media.media.track, "inbound");
        let audio = media.media.decode_payload(LIMIT).unwrap();
        assert_eq!(audio.len(), 160);
    }

    #[test]
    fn dtmf_mark_stop_fixtures() {
        let InboundMessage::Dtmf(dtmf) = parse_inbound(&fixture("dtmf.json"), LIMIT).unwrap() else { panic!() };
        assert_eq!(dtmf.dtmf.digit, "1");
        assert_eq!(dtmf.dtmf.track, "inbound_track");
        let InboundMessage::Mark(mark) = parse_inbound(&fixture("mark.json"), LIMIT).unwrap() else { panic!() };
        assert_eq!(mark.mark.name, "resp-42-end");
        let InboundMessage::Stop(stop) = parse_inbound(&fixture("stop.json"), LIMIT).unwrap() else { panic!() };
        assert!(stop.stop.unwrap().call_sid.starts_with("CA"));
    }

    #[test]
    fn outbound_messages_match_documented_shapes() {
        for (msg, file) in [
            (
                OutboundMessage::media(Arc::from("MZ18ad3ab5a668481ce02b83e7395059f0"), Bytes::from_static(&[0xFF; 4])),
                "outbound-media.json",
            ),
            (OutboundMessage::mark("MZ18ad3ab5a668481ce02b83e7395059f0", "resp-42-end"), "outbound-mark.json"),
            (OutboundMessage::clear("MZ18ad3ab5a668481ce02b83e7395059f0"), "outbound-clear.json"),
        ] {
            let ours: serde_json::Value = serde_json::from_str(&msg.to_json()).unwrap();
            let documented: serde_json::Value = serde_json::from_str(&fixture(file)).unwrap();
            assert_eq!(ours, documented, "{file}");
        }
    }

    #[test]
    fn numbers_are_accepted_for_counters() {
        let text = r#"{"event":"media","sequenceNumber":7,"media":{"track":"inbound","chunk":2,"timestamp":20,"payload":""},"streamSid":"MZ1"}"#;
        let InboundMessage::Media(m) = parse_inbound(text, LIMIT).unwrap() else { panic!() };
        assert_eq!((m.sequence_number, m.media.chunk, m.media.timestamp), (Some(7), 2, 20));
        for bad in [r#"-1"#, r#"1.5"#, r#""""#, r#"" 3x""#, "true"] {
            let text = format!(
                r#"{{"event":"media","media":{{"chunk":{bad},"timestamp":"1","payload":""}},"streamSid":"MZ1"}}"#
            );
            assert!(matches!(parse_inbound(&text, LIMIT), Err(ProtocolError::Malformed { .. })), "{bad}");
        }
    }

    #[test]
    fn bad_frames_are_classified() {
        assert!(matches!(parse_inbound("{not json", LIMIT), Err(ProtocolError::NotJson(_))));
        assert_eq!(
            parse_inbound(r#"{"event":"transcription","streamSid":"MZ1"}"#, LIMIT),
            Err(ProtocolError::UnknownEvent("transcription".into()))
        );
        assert!(matches!(
            parse_inbound(r#"{"event":"media","streamSid":"MZ1"}"#, LIMIT),
            Err(ProtocolError::Malformed { event, .. }) if event == "media"
        ));
        assert!(matches!(
            parse_inbound(
                r#"{"event":"media","media":{"chunk":"x","timestamp":"1","payload":""},"streamSid":"MZ1"}"#,
                LIMIT
            ),
            Err(ProtocolError::Malformed { .. })
        ));
        assert!(matches!(parse_inbound(&"x".repeat(100), 10), Err(ProtocolError::TooLarge { size: 100, limit: 10 })));
    }

    #[test]
    fn bad_payloads_are_refused() {
        let chunk =
            |payload: &str| MediaChunk { track: "inbound".into(), chunk: 1, timestamp: 0, payload: payload.into() };
        assert!(matches!(chunk("!!not base64!!").decode_payload(LIMIT), Err(ProtocolError::BadPayload(_))));
        assert!(matches!(
            chunk(&"A".repeat(4000)).decode_payload(1000),
            Err(ProtocolError::PayloadTooLarge { size: 3000, limit: 1000 })
        ));
    }

    /// What `parse_frame` made of a frame, in `parse_inbound`'s terms, to compare the two paths.
    fn via_frame(text: &str, limit: usize) -> Result<InboundMessage, ProtocolError> {
        parse_frame(text, limit).map(|frame| match frame {
            InboundFrame::Media(media) => InboundMessage::Media(Media {
                sequence_number: media.sequence_number,
                media: MediaChunk {
                    track: media.media.track.into_owned(),
                    chunk: media.media.chunk,
                    timestamp: media.media.timestamp,
                    payload: media.media.payload.into_owned(),
                },
                stream_sid: media.stream_sid.into_owned(),
            }),
            InboundFrame::Other(message) => message,
        })
    }

    #[test]
    fn media_is_read_in_place_and_every_other_event_whole() {
        let text = fixture("media.json");
        let InboundFrame::Media(media) = parse_frame(&text, LIMIT).unwrap() else { panic!("media went the slow way") };
        assert!(matches!(media.media.payload, Cow::Borrowed(_)), "the payload was copied");
        assert!(matches!(media.stream_sid, Cow::Borrowed(_)));
        assert_eq!((media.sequence_number, media.media.chunk, media.media.timestamp), (Some(3), 1, 5));
        assert_eq!(media.media.track, "inbound");
        let mut audio = Vec::new();
        decode_payload_into(&media.media.payload, LIMIT, &mut audio).unwrap();
        assert_eq!(audio, vec![0xFF; 160]);
        for file in ["connected.json", "start.json", "dtmf.json", "mark.json", "stop.json"] {
            let text = fixture(file);
            assert_eq!(
                parse_frame(&text, LIMIT),
                Ok(InboundFrame::Other(parse_inbound(&text, LIMIT).unwrap())),
                "{file}"
            );
        }
    }

    #[test]
    fn media_in_other_documented_shapes_reads_the_same() {
        for text in [
            // Keys in another order, the track left out, counters as numbers, no sequence number.
            r#"{"streamSid":"MZ1","media":{"payload":"/w==","timestamp":5,"chunk":1},"event":"media"}"#,
            // Escaped characters: the strings are unescaped (and so copied).
            r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"\/w=="},"streamSid":"MZ1"}"#,
            // Unknown fields are ignored, as everywhere.
            r#"{"event":"media","extra":{"a":[1,2]},"media":{"chunk":"1","timestamp":"5","payload":"/w==","x":null},"streamSid":"MZ1"}"#,
        ] {
            let InboundFrame::Media(media) = parse_frame(text, LIMIT).unwrap() else { panic!("{text}") };
            assert_eq!((media.media.track.as_ref(), media.media.chunk, media.media.timestamp), ("inbound", 1, 5));
            let mut audio = Vec::new();
            decode_payload_into(&media.media.payload, LIMIT, &mut audio).unwrap();
            assert_eq!(audio, vec![0xFF], "{text}");
            assert_eq!(via_frame(text, LIMIT), parse_inbound(text, LIMIT), "{text}");
        }
    }

    #[test]
    fn malformed_media_gets_the_same_errors_on_the_fast_path() {
        for text in [
            r#"{"event":"media","streamSid":"MZ1"}"#,
            r#"{"event":"media","media":{"timestamp":"1","payload":""},"streamSid":"MZ1"}"#,
            r#"{"event":"media","media":{"chunk":"1","payload":""},"streamSid":"MZ1"}"#,
            r#"{"event":"media","media":{"chunk":"1","timestamp":"1"},"streamSid":"MZ1"}"#,
            r#"{"event":"media","media":{"chunk":"1","timestamp":"1","payload":""}}"#,
            r#"{"event":"media","media":{"chunk":"x","timestamp":"1","payload":""},"streamSid":"MZ1"}"#,
            r#"{"event":"media","media":{"chunk":"1","timestamp":"1","payload":7},"streamSid":"MZ1"}"#,
            r#"{"event":"media","media":"payload","streamSid":"MZ1"}"#,
        ] {
            let err = parse_frame(text, LIMIT).expect_err(text);
            assert!(matches!(&err, ProtocolError::Malformed { event, .. } if event == "media"), "{text}: {err:?}");
            assert_eq!(Err(err), parse_inbound(text, LIMIT), "{text}");
        }
        // A repeated key is refused as before: not read as a media message, and `event` cannot be told.
        let repeated =
            r#"{"event":"media","event":"media","media":{"chunk":"1","timestamp":"1","payload":""},"streamSid":"MZ1"}"#;
        assert!(matches!(parse_frame(repeated, LIMIT), Err(ProtocolError::NotJson(_))));
        assert_eq!(parse_frame(repeated, LIMIT).map(|_| ()), parse_inbound(repeated, LIMIT).map(|_| ()));
        assert!(matches!(parse_frame("{not json", LIMIT), Err(ProtocolError::NotJson(_))));
        assert!(matches!(parse_frame(&"x".repeat(100), 10), Err(ProtocolError::TooLarge { size: 100, limit: 10 })));
        assert_eq!(
            parse_frame(
                r#"{"event":"transcription","media":{"chunk":"1","timestamp":"1","payload":""},"streamSid":"MZ1"}"#,
                LIMIT
            ),
            Err(ProtocolError::UnknownEvent("transcription".into()))
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let mut audio = vec![1, 2, 3];
        for bad in ["!!not base64!!", "/w=", "/w", "/////", "/w==/w==x", "//8=\n", " /w=="] {
            assert!(
                matches!(decode_payload_into(bad, LIMIT, &mut audio), Err(ProtocolError::BadPayload(_))),
                "{bad:?}"
            );
            assert!(audio.is_empty(), "{bad:?} left audio behind");
        }
        assert_eq!(
            decode_payload_into(&"A".repeat(4000), 1000, &mut audio),
            Err(ProtocolError::PayloadTooLarge { size: 3000, limit: 1000 })
        );
        decode_payload_into("", LIMIT, &mut audio).unwrap();
        assert!(audio.is_empty());
        decode_payload_into("AQID", LIMIT, &mut audio).unwrap();
        assert_eq!(audio, vec![1, 2, 3]);
    }

    #[test]
    fn the_decode_buffer_is_reused() {
        let mut audio = Vec::new();
        let payload = base64::engine::general_purpose::STANDARD.encode([0x55u8; 160]);
        decode_payload_into(&payload, LIMIT, &mut audio).unwrap();
        let (at, capacity) = (audio.as_ptr(), audio.capacity());
        for _ in 0..10 {
            decode_payload_into(&payload, LIMIT, &mut audio).unwrap();
        }
        assert_eq!((audio.as_ptr(), audio.capacity()), (at, capacity));
        assert_eq!(audio, vec![0x55; 160]);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn text() -> impl Strategy<Value = String> {
            ".{0,40}"
        }

        fn counter_opt() -> impl Strategy<Value = Option<u64>> {
            proptest::option::of(any::<u64>())
        }

        fn inbound() -> impl Strategy<Value = InboundMessage> {
            prop_oneof![
                (text(), text())
                    .prop_map(|(protocol, version)| InboundMessage::Connected(Connected { protocol, version })),
                (counter_opt(), text(), text(), any::<u64>(), any::<u64>(), "[A-Za-z0-9+/]{0,64}").prop_map(
                    |(sequence_number, stream_sid, track, chunk, timestamp, payload)| {
                        InboundMessage::Media(Media {
                            sequence_number,
                            media: MediaChunk { track, chunk, timestamp, payload },
                            stream_sid,
                        })
                    }
                ),
                (counter_opt(), text(), text(), text()).prop_map(|(sequence_number, stream_sid, track, digit)| {
                    InboundMessage::Dtmf(Dtmf { sequence_number, dtmf: DtmfDigit { track, digit }, stream_sid })
                }),
                (counter_opt(), text(), text()).prop_map(|(sequence_number, stream_sid, name)| {
                    InboundMessage::Mark(MarkEcho { sequence_number, mark: MarkName { name }, stream_sid })
                }),
                (counter_opt(), text(), proptest::collection::btree_map(text(), text(), 0..4), text()).prop_map(
                    |(sequence_number, stream_sid, custom_parameters, call_sid)| {
                        InboundMessage::Start(Start {
                            sequence_number,
                            start: StartMetadata {
                                account_sid: String::new(),
                                stream_sid: stream_sid.clone(),
                                call_sid,
                                tracks: vec!["inbound".into()],
                                custom_parameters,
                                media_format: MediaFormat {
                                    encoding: "audio/x-mulaw".into(),
                                    sample_rate: 8000,
                                    channels: 1,
                                },
                            },
                            stream_sid,
                        })
                    }
                ),
                (counter_opt(), text()).prop_map(|(sequence_number, stream_sid)| {
                    InboundMessage::Stop(Stop { sequence_number, stop: None, stream_sid })
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn every_message_survives_a_round_trip(message in inbound()) {
                let text = serde_json::to_string(&message).unwrap();
                prop_assert_eq!(parse_inbound(&text, usize::MAX), Ok(message));
            }

            #[test]
            fn any_text_parses_or_fails_cleanly(text in ".{0,300}") {
                match parse_inbound(&text, LIMIT) {
                    Ok(message) => {
                        let again = serde_json::to_string(&message).unwrap();
                        prop_assert_eq!(parse_inbound(&again, usize::MAX), Ok(message));
                    }
                    Err(ProtocolError::TooLarge { .. }) => prop_assert!(text.len() > LIMIT),
                    Err(_) => {}
                }
            }

            #[test]
            fn mutated_frames_never_panic(index in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
                let mut frame = fixture("media.json").into_bytes();
                let at = index % frame.len();
                frame[at] = byte;
                frame.truncate(cut.max(at + 1));
                let text = String::from_utf8_lossy(&frame);
                if let Ok(InboundMessage::Media(media)) = parse_inbound(&text, LIMIT) {
                    let _ = media.media.decode_payload(LIMIT);
                }
            }

            #[test]
            fn both_paths_read_every_frame_alike(text in ".{0,300}") {
                prop_assert_eq!(via_frame(&text, LIMIT), parse_inbound(&text, LIMIT));
            }

            #[test]
            fn both_paths_read_every_message_alike(message in inbound()) {
                let text = serde_json::to_string(&message).unwrap();
                prop_assert_eq!(via_frame(&text, usize::MAX), Ok(message));
            }

            #[test]
            fn mutated_media_reads_alike_and_never_panics(index in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
                let mut frame = fixture("media.json").into_bytes();
                let at = index % frame.len();
                frame[at] = byte;
                frame.truncate(cut.max(at + 1));
                let text = String::from_utf8_lossy(&frame);
                prop_assert_eq!(via_frame(&text, LIMIT), parse_inbound(&text, LIMIT));
                if let Ok(InboundFrame::Media(media)) = parse_frame(&text, LIMIT) {
                    let mut audio = Vec::new();
                    let _ = decode_payload_into(&media.media.payload, LIMIT, &mut audio);
                }
            }

            #[test]
            fn counters_read_as_strings_or_numbers(n in any::<u64>()) {
                for chunk in [format!("\"{n}\""), n.to_string()] {
                    let text = format!(
                        r#"{{"event":"media","media":{{"chunk":{chunk},"timestamp":"0","payload":""}},"streamSid":"MZ1"}}"#
                    );
                    let Ok(InboundMessage::Media(media)) = parse_inbound(&text, LIMIT) else {
                        return Err(TestCaseError::fail(format!("{text} did not parse")));
                    };
                    prop_assert_eq!(media.media.chunk, n);
                }
            }
        }
    }
}
