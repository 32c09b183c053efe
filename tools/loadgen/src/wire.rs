//! Twilio's side of the Media Stream wire format, cheaply: the load generator sends 50 media messages a second per
//! call and reads Parley's, so at a thousand calls full JSON (de)serialisation per message would make the load
//! generator, not Parley, the bottleneck. Media messages are formatted from payloads encoded once; received messages
//! are classified by looking for their `event` and the one field each needs, without parsing the rest.

use std::fmt::Write as _;

use base64::Engine as _;

/// μ-law bytes in one 20 ms frame of 8 kHz audio.
pub const FRAME_BYTES: usize = 160;

/// The caller's audio as base64 payloads of 20 ms frames, encoded once and shared by every call.
#[derive(Debug, Clone)]
pub struct Payloads {
    /// Successive frames of the speech signal (a cycle the callers loop through).
    speech: Vec<String>,
    /// One frame of digital silence.
    silence: String,
}

impl Payloads {
    /// Encodes `speech_ms` of `sim_caller::speech` (at least one frame) and a silent frame.
    pub fn new(speech_ms: u32) -> Payloads {
        let speech_audio = sim_caller::speech(speech_ms.max(20));
        let speech = speech_audio.chunks_exact(FRAME_BYTES).map(encode).collect();
        Payloads { speech, silence: encode(&sim_caller::silence(20)) }
    }

    /// The `n`th speech frame, looping.
    pub fn speech(&self, n: u64) -> &str {
        // `new` makes at least one frame.
        &self.speech[(n % self.speech.len() as u64) as usize]
    }

    /// A silent frame.
    pub fn silence(&self) -> &str {
        &self.silence
    }
}

fn encode(audio: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(audio)
}

/// Writes one inbound `media` message, as Twilio documents it, into `out` (cleared first): the counters change per
/// frame, the payload and stream SID are copied.
pub fn write_media(out: &mut String, stream_sid: &str, sequence: u64, chunk: u64, timestamp_ms: u64, payload: &str) {
    out.clear();
    out.push_str(r#"{"event":"media","sequenceNumber":""#);
    let _ = write!(out, "{sequence}");
    out.push_str(r#"","media":{"track":"inbound","chunk":""#);
    let _ = write!(out, "{chunk}");
    out.push_str(r#"","timestamp":""#);
    let _ = write!(out, "{timestamp_ms}");
    out.push_str(r#"","payload":""#);
    out.push_str(payload);
    out.push_str(r#""},"streamSid":""#);
    out.push_str(stream_sid);
    out.push_str(r#""}"#);
}

/// The `connected` message that opens every stream.
pub fn connected() -> String {
    serde_json::json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string()
}

/// The `start` message of a call.
pub fn start(stream_sid: &str, call_sid: &str) -> String {
    serde_json::json!({
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC00000000000000000000000000000001",
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": {"from": "+15550001111", "to": "+15550002222"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": stream_sid,
    })
    .to_string()
}

/// The `stop` message Twilio sends when the caller hangs up.
pub fn stop(stream_sid: &str, call_sid: &str, sequence: u64) -> String {
    serde_json::json!({
        "event": "stop",
        "sequenceNumber": sequence.to_string(),
        "stop": {"accountSid": "AC00000000000000000000000000000001", "callSid": call_sid},
        "streamSid": stream_sid,
    })
    .to_string()
}

/// Twilio's echo of a mark once playback reached it. `raw_name` is the name as it appeared (still JSON-escaped) in
/// Parley's mark message, so it is copied back verbatim.
pub fn mark_echo(stream_sid: &str, raw_name: &str, sequence: u64) -> String {
    let mut out = String::with_capacity(96 + raw_name.len());
    out.push_str(r#"{"event":"mark","sequenceNumber":""#);
    let _ = write!(out, "{sequence}");
    out.push_str(r#"","streamSid":""#);
    out.push_str(stream_sid);
    out.push_str(r#"","mark":{"name":""#);
    out.push_str(raw_name);
    out.push_str(r#""}}"#);
    out
}

/// What a message Parley sent is, as far as the load generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// Audio for the caller: this many μ-law bytes.
    Media { bytes: usize },
    /// Drop the buffered audio (barge-in).
    Clear,
    /// Echo this name (raw, still JSON-escaped) when playback reaches it.
    Mark { raw_name: &'a str },
    /// Anything else, including text that is not a Twilio message.
    Other,
}

/// Classifies one text frame from Parley by its `event`, reading only the field the event needs.
pub fn classify(text: &str) -> Outbound<'_> {
    match string_field(text, "event") {
        Some("media") => match string_field(text, "payload") {
            Some(payload) => Outbound::Media { bytes: base64_len(payload) },
            None => Outbound::Other,
        },
        Some("clear") => Outbound::Clear,
        Some("mark") => match string_field(text, "name") {
            Some(raw_name) => Outbound::Mark { raw_name },
            None => Outbound::Other,
        },
        _ => Outbound::Other,
    }
}

/// The raw (still escaped) string value of the first `"key": "…"` in `text`; `None` when the key is missing or its
/// value is not a string. Enough for Parley's flat messages, where the keys looked for occur once.
fn string_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = find_key(&text[from..], key) {
        let after_key = from + found + key.len() + 2;
        let mut i = skip_whitespace(bytes, after_key);
        if bytes.get(i) != Some(&b':') {
            // The key's text occurred as a value; look further.
            from = after_key;
            continue;
        }
        i = skip_whitespace(bytes, i + 1);
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let start = i + 1;
        let mut j = start;
        while j < bytes.len() {
            match bytes[j] {
                b'\\' => j += 2,
                b'"' => return text.get(start..j),
                _ => j += 1,
            }
        }
        return None;
    }
    None
}

/// Offset of `"key"` in `text`.
fn find_key(text: &str, key: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let key = key.as_bytes();
    let mut from = 0;
    while let Some(pos) = text[from..].find('"') {
        let at = from + pos;
        let end = at + 1 + key.len();
        if bytes.get(at + 1..end) == Some(key) && bytes.get(end) == Some(&b'"') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// Bytes a base64 payload decodes to, without decoding it.
fn base64_len(payload: &str) -> usize {
    let padding = payload.bytes().rev().take_while(|&b| b == b'=').count();
    (payload.len() / 4 * 3).saturating_sub(padding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley::twilio::messages::{parse_inbound, InboundMessage, OutboundMessage};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto-fixtures/twilio/");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}{name}")).expect("fixture")
    }

    #[test]
    fn a_formatted_media_message_is_twilios_media_message() {
        let payloads = Payloads::new(500);
        let mut out = String::from("left over from the last frame");
        write_media(&mut out, "MZ00000000000000000000000000000007", 42, 41, 820, payloads.speech(3));
        let Ok(InboundMessage::Media(media)) = parse_inbound(&out, 64 * 1024) else { panic!("not media: {out}") };
        assert_eq!(media.sequence_number, Some(42));
        assert_eq!(media.media.chunk, 41);
        assert_eq!(media.media.timestamp, 820);
        assert_eq!(media.media.track, "inbound");
        assert_eq!(media.stream_sid, "MZ00000000000000000000000000000007");
        let audio = media.media.decode_payload(1024).expect("payload decodes");
        assert_eq!(audio.as_ref(), &sim_caller::speech(500)[3 * FRAME_BYTES..4 * FRAME_BYTES]);
        // The same keys as the documented example.
        let ours: serde_json::Value = serde_json::from_str(&out).expect("json");
        let documented: serde_json::Value = serde_json::from_str(&fixture("media.json")).expect("json");
        let keys = |v: &serde_json::Value, at: &str| -> Vec<String> {
            let object = if at.is_empty() { v } else { &v[at] };
            object.as_object().expect("object").keys().cloned().collect()
        };
        assert_eq!(keys(&ours, ""), keys(&documented, ""));
        assert_eq!(keys(&ours, "media"), keys(&documented, "media"));
    }

    #[test]
    fn speech_frames_loop_and_silence_is_silent() {
        let payloads = Payloads::new(100);
        assert_eq!(payloads.speech(0), payloads.speech(5));
        assert_ne!(payloads.speech(0), payloads.speech(1));
        assert_eq!(base64_len(payloads.silence()), FRAME_BYTES);
        let silence = base64::engine::general_purpose::STANDARD.decode(payloads.silence()).expect("base64");
        assert!(silence.iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn the_start_stop_and_mark_echo_are_twilios_messages() {
        let sid = "MZ00000000000000000000000000000007";
        assert!(matches!(parse_inbound(&connected(), 4096), Ok(InboundMessage::Connected(_))));
        let Ok(InboundMessage::Start(start)) = parse_inbound(&start(sid, "CA1"), 4096) else { panic!("not start") };
        assert!(start.start.media_format.is_mulaw_8k_mono());
        assert!(matches!(parse_inbound(&stop(sid, "CA1", 9), 4096), Ok(InboundMessage::Stop(_))));
        let Ok(InboundMessage::Mark(echo)) = parse_inbound(&mark_echo(sid, r#"r1-\"2\""#, 5), 4096) else {
            panic!("not a mark")
        };
        assert_eq!(echo.mark.name, r#"r1-"2""#);
    }

    #[test]
    fn documented_outbound_messages_are_classified() {
        assert_eq!(classify(&fixture("outbound-media.json")), Outbound::Media { bytes: 4 });
        assert_eq!(classify(&fixture("outbound-clear.json")), Outbound::Clear);
        assert_eq!(classify(&fixture("outbound-mark.json")), Outbound::Mark { raw_name: "resp-42-end" });
        // Inbound events are not the agent's.
        assert_eq!(classify(&fixture("start.json")), Outbound::Other);
        assert_eq!(classify(&fixture("stop.json")), Outbound::Other);
    }

    #[test]
    fn parleys_own_messages_are_classified() {
        let sid = "MZ00000000000000000000000000000007";
        // Media exactly as Parley's socket writes it: one frame, and the five a message carries at most.
        let mut encoder = parley::twilio::outbound::OutboundEncoder::new();
        for frames in [1, 5] {
            let message = OutboundMessage::media(sid.into(), vec![0xFF; frames * FRAME_BYTES].into());
            let written = encoder.encode(&message).expect("encoded");
            let text = std::str::from_utf8(&written).expect("UTF-8");
            assert_eq!(classify(text), Outbound::Media { bytes: frames * FRAME_BYTES });
            assert_eq!(classify(&message.to_json()), Outbound::Media { bytes: frames * FRAME_BYTES });
        }
        assert_eq!(classify(&OutboundMessage::clear(sid).to_json()), Outbound::Clear);
        let mark = OutboundMessage::mark(sid, "c3-2").to_json();
        assert_eq!(classify(&mark), Outbound::Mark { raw_name: "c3-2" });
    }

    #[test]
    fn what_is_not_a_known_message_is_other() {
        for text in [
            "",
            "not json",
            r#"{"event":"#,
            r#"{"event":"media","media":{}}"#,
            r#"{"event":"mark","mark":{"name":3}}"#,
            r#"{"event":"dtmf"}"#,
            r#"{"name":"event","event":"sing"}"#,
            r#"{"event":"media","media":{"payload":"AAA"#,
        ] {
            assert_eq!(classify(text), Outbound::Other, "{text}");
        }
        // A key's text as a value does not hide the key.
        assert_eq!(classify(r#"{"note":"event","event":"clear"}"#), Outbound::Clear);
    }
}
