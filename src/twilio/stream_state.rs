//! The inbound side of one Media Stream as a state machine, without I/O: which frame is used, skipped, or ends the
//! stream. The edge's session feeds it every text frame with the time since the socket opened and acts on the step.
//!
//! What it enforces: `start` comes once, is well-formed ([`super::validate::check_start`]) and names the call the
//! stream token was minted for; media comes only after it and only on the inbound track; DTMF digits are keys; and the
//! caller's audio never runs ahead of the wall clock by more than a margin, so a burst (minutes of audio sent at
//! once) costs Parley no more than the margin.

use std::time::Duration;

use super::messages::{decode_payload_into, parse_frame, InboundFrame, InboundMessage, MediaRef, ProtocolError, Start};
use super::validate::{check_start, is_dtmf_digit, StartError};
use crate::audio::SAMPLE_RATE;

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    AwaitingStart,
    Live,
    Stopped,
}

/// Why a frame was not used. The stream goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// An event Parley does not know (Twilio adds events over time).
    UnknownEvent,
    /// The frame could not be parsed or its payload decoded.
    Bad(ProtocolError),
    /// Media, DTMF or a mark before `start`.
    BeforeStart,
    /// A second `start`.
    SecondStart,
    /// Media on a track other than `inbound` (a bidirectional stream only carries the caller's).
    OtherTrack,
    /// A DTMF digit that is not a key.
    BadDigit,
    /// Anything after `stop`.
    AfterStop,
}

/// What the session does with one frame. Audio is borrowed from the stream's decode buffer, valid until the next
/// frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<'a> {
    /// `connected`: nothing to do.
    Connected,
    /// A valid `start`: the call begins.
    Start(Box<Start>),
    /// An invalid `start`: close the stream, archive nothing.
    Refuse(StartError),
    /// Caller audio to queue.
    Audio {
        chunk: u64,
        timestamp_ms: u64,
        payload: &'a [u8],
    },
    /// Caller audio beyond the margin ahead of the wall clock, dropped; `first` on the first drop of the call (log
    /// it once).
    AudioAhead {
        /// The dropped message's chunk number and time, so the jitter queue can count them as used (a dropped
        /// chunk is not a hole to fill with silence).
        chunk: u64,
        timestamp_ms: u64,
        dropped_samples: u64,
        first: bool,
    },
    Dtmf(String),
    Mark(String),
    Stop,
    Skipped(Skip),
}

/// Limits of one stream.
#[derive(Debug, Clone)]
pub struct StreamRules {
    pub max_frame_bytes: usize,
    /// How far caller audio may run ahead of the time since `start`.
    pub ahead_margin: Duration,
    /// The call the stream token names; `start` must name it too (`None` when tokens are off).
    pub expected_call_sid: Option<String>,
}

/// One stream's inbound state.
#[derive(Debug)]
pub struct StreamState {
    rules: StreamRules,
    phase: Phase,
    /// When `start` arrived, in the session's clock.
    started_at: Duration,
    accepted_samples: u64,
    dropped_samples: u64,
    /// The last media payload, decoded; one buffer for the whole stream.
    audio: Vec<u8>,
}

impl StreamState {
    pub fn new(rules: StreamRules) -> Self {
        StreamState {
            rules,
            phase: Phase::AwaitingStart,
            started_at: Duration::ZERO,
            accepted_samples: 0,
            dropped_samples: 0,
            audio: Vec::new(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Caller audio accepted so far, in 8 kHz samples.
    pub fn accepted_samples(&self) -> u64 {
        self.accepted_samples
    }

    /// Caller audio dropped for running ahead of the clock, in samples.
    pub fn dropped_samples(&self) -> u64 {
        self.dropped_samples
    }

    /// The most audio that may have been accepted at `now`, in samples.
    pub fn audio_allowance(&self, now: Duration) -> u64 {
        let ahead = now.saturating_sub(self.started_at) + self.rules.ahead_margin;
        (ahead.as_millis() as u64).saturating_mul(u64::from(SAMPLE_RATE) / 1000)
    }

    /// Decides what to do with one text frame received at `now` (time since the socket opened).
    pub fn on_frame(&mut self, text: &str, now: Duration) -> Step<'_> {
        if self.phase == Phase::Stopped {
            return Step::Skipped(Skip::AfterStop);
        }
        let message = match parse_frame(text, self.rules.max_frame_bytes) {
            Ok(InboundFrame::Media(media)) => return self.on_media(&media, now),
            Ok(InboundFrame::Other(message)) => message,
            Err(ProtocolError::UnknownEvent(_)) => return Step::Skipped(Skip::UnknownEvent),
            Err(err) => return Step::Skipped(Skip::Bad(err)),
        };
        let live = self.phase == Phase::Live;
        match message {
            InboundMessage::Connected(_) => Step::Connected,
            InboundMessage::Start(_) if live => Step::Skipped(Skip::SecondStart),
            InboundMessage::Start(start) => self.on_start(start, now),
            InboundMessage::Stop(_) => {
                self.phase = Phase::Stopped;
                Step::Stop
            }
            _ if !live => Step::Skipped(Skip::BeforeStart),
            InboundMessage::Media(media) => self.on_media(&MediaRef::from(&media), now),
            InboundMessage::Dtmf(dtmf) if is_dtmf_digit(&dtmf.dtmf.digit) => Step::Dtmf(dtmf.dtmf.digit),
            InboundMessage::Dtmf(_) => Step::Skipped(Skip::BadDigit),
            InboundMessage::Mark(echo) => Step::Mark(echo.mark.name),
        }
    }

    /// Caller audio: decoded into the stream's buffer, and kept only within the allowance.
    fn on_media(&mut self, media: &MediaRef<'_>, now: Duration) -> Step<'_> {
        match self.phase {
            Phase::Live => {}
            Phase::AwaitingStart => return Step::Skipped(Skip::BeforeStart),
            Phase::Stopped => return Step::Skipped(Skip::AfterStop),
        }
        let chunk = &media.media;
        if chunk.track != "inbound" {
            return Step::Skipped(Skip::OtherTrack);
        }
        if let Err(err) = decode_payload_into(&chunk.payload, self.rules.max_frame_bytes, &mut self.audio) {
            return Step::Skipped(Skip::Bad(err));
        }
        let samples = self.audio.len() as u64;
        if self.accepted_samples + samples > self.audio_allowance(now) {
            let first = self.dropped_samples == 0;
            self.dropped_samples += samples;
            return Step::AudioAhead {
                chunk: chunk.chunk,
                timestamp_ms: chunk.timestamp,
                dropped_samples: samples,
                first,
            };
        }
        self.accepted_samples += samples;
        Step::Audio { chunk: chunk.chunk, timestamp_ms: chunk.timestamp, payload: &self.audio }
    }

    fn on_start(&mut self, start: Start, now: Duration) -> Step<'static> {
        if let Err(err) = check_start(&start) {
            self.phase = Phase::Stopped;
            return Step::Refuse(err);
        }
        if self.rules.expected_call_sid.as_deref().is_some_and(|expected| expected != start.start.call_sid) {
            self.phase = Phase::Stopped;
            return Step::Refuse(StartError::TokenForAnotherCall);
        }
        self.phase = Phase::Live;
        self.started_at = now;
        Step::Start(Box::new(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: &str = "CA0123456789abcdef0123456789abcdef";
    const STREAM: &str = "MZ0123456789abcdef0123456789abcdef";

    fn rules(expected: Option<&str>) -> StreamRules {
        StreamRules {
            max_frame_bytes: 64 * 1024,
            ahead_margin: Duration::from_millis(1_000),
            expected_call_sid: expected.map(str::to_owned),
        }
    }

    fn start(call_sid: &str) -> String {
        serde_json::json!({"event": "start", "streamSid": STREAM, "start": {
            "streamSid": STREAM, "callSid": call_sid, "accountSid": "AC0123456789abcdef0123456789abcdef",
            "tracks": ["inbound"], "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        .to_string()
    }

    fn media(bytes: usize) -> String {
        use base64::Engine;
        let payload = base64::engine::general_purpose::STANDARD.encode(vec![0xFFu8; bytes]);
        serde_json::json!({"event": "media", "streamSid": STREAM,
            "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload}})
        .to_string()
    }

    #[test]
    fn audio_beyond_the_margin_is_dropped_and_flagged_once() {
        let mut state = StreamState::new(rules(None));
        assert!(matches!(state.on_frame(&start(CALL), Duration::from_secs(1)), Step::Start(_)));
        // One second of margin: 50 frames fit at once, the 51st does not.
        for _ in 0..50 {
            assert!(matches!(state.on_frame(&media(160), Duration::from_secs(1)), Step::Audio { .. }));
        }
        assert_eq!(
            state.on_frame(&media(160), Duration::from_secs(1)),
            Step::AudioAhead { chunk: 1, timestamp_ms: 0, dropped_samples: 160, first: true }
        );
        assert_eq!(
            state.on_frame(&media(160), Duration::from_secs(1)),
            Step::AudioAhead { chunk: 1, timestamp_ms: 0, dropped_samples: 160, first: false }
        );
        // 20 ms later, one more frame fits.
        assert!(matches!(state.on_frame(&media(160), Duration::from_millis(1_020)), Step::Audio { .. }));
        assert_eq!((state.accepted_samples(), state.dropped_samples()), (51 * 160, 320));
    }

    #[test]
    fn start_must_name_the_tokens_call_and_media_must_follow_it() {
        let mut state = StreamState::new(rules(Some(CALL)));
        assert_eq!(state.on_frame(&media(160), Duration::ZERO), Step::Skipped(Skip::BeforeStart));
        let other = "CAffffffffffffffffffffffffffffffff";
        assert_eq!(state.on_frame(&start(other), Duration::ZERO), Step::Refuse(StartError::TokenForAnotherCall));
        assert_eq!(state.phase(), Phase::Stopped);
        assert_eq!(state.on_frame(&media(160), Duration::ZERO), Step::Skipped(Skip::AfterStop));

        let mut state = StreamState::new(rules(Some(CALL)));
        assert!(matches!(state.on_frame(&start(CALL), Duration::ZERO), Step::Start(_)));
        assert_eq!(state.on_frame(&start(CALL), Duration::ZERO), Step::Skipped(Skip::SecondStart));
        let dtmf = |digit: &str| {
            serde_json::json!({"event": "dtmf", "streamSid": STREAM, "dtmf": {"track": "inbound_track", "digit": digit}})
                .to_string()
        };
        assert_eq!(state.on_frame(&dtmf("5"), Duration::ZERO), Step::Dtmf("5".into()));
        assert_eq!(state.on_frame(&dtmf("5\r\nforged"), Duration::ZERO), Step::Skipped(Skip::BadDigit));
    }

    #[test]
    fn audio_is_decoded_into_one_buffer_and_malformed_media_is_skipped() {
        let mut state = StreamState::new(rules(None));
        assert!(matches!(state.on_frame(&start(CALL), Duration::ZERO), Step::Start(_)));
        let Step::Audio { chunk: 1, timestamp_ms: 0, payload } = state.on_frame(&media(160), Duration::ZERO) else {
            panic!("no audio")
        };
        assert_eq!(payload, &[0xFF; 160][..]);
        let at = payload.as_ptr();
        let Step::Audio { payload, .. } = state.on_frame(&media(160), Duration::ZERO) else { panic!("no audio") };
        assert_eq!(payload.as_ptr(), at, "the second frame was decoded into the first one's buffer");
        let frame = |media: serde_json::Value| {
            serde_json::json!({"event": "media", "streamSid": STREAM, "media": media}).to_string()
        };
        let bad_payload = |step: Step<'_>| matches!(step, Step::Skipped(Skip::Bad(ProtocolError::BadPayload(_))));
        let malformed = |step: Step<'_>| matches!(step, Step::Skipped(Skip::Bad(ProtocolError::Malformed { ref event, .. })) if event == "media");
        for payload in ["!!not base64!!", "/w=", "/////", "/w==/w=="] {
            let text =
                frame(serde_json::json!({"track": "inbound", "chunk": "2", "timestamp": "20", "payload": payload}));
            assert!(bad_payload(state.on_frame(&text, Duration::ZERO)), "{payload}");
        }
        for media in [
            serde_json::json!({"track": "inbound", "timestamp": "20", "payload": "/w=="}),
            serde_json::json!({"track": "inbound", "chunk": "2", "payload": "/w=="}),
            serde_json::json!({"track": "inbound", "chunk": "2", "timestamp": "20"}),
            serde_json::json!({"track": "inbound", "chunk": "2", "timestamp": "20", "payload": ["/w=="]}),
            serde_json::json!("/w=="),
        ] {
            assert!(malformed(state.on_frame(&frame(media.clone()), Duration::ZERO)), "{media}");
        }
        let too_large = frame(serde_json::json!({"chunk": "2", "timestamp": "20", "payload": "A".repeat(100_000)}));
        assert!(matches!(state.on_frame(&too_large, Duration::ZERO), Step::Skipped(Skip::Bad(_))));
        let outbound =
            frame(serde_json::json!({"track": "outbound", "chunk": "2", "timestamp": "20", "payload": "/w=="}));
        assert_eq!(state.on_frame(&outbound, Duration::ZERO), Step::Skipped(Skip::OtherTrack));
        assert_eq!(state.accepted_samples(), 320, "only the two good frames counted");
    }

    #[test]
    fn a_crlf_call_sid_is_refused() {
        let mut state = StreamState::new(rules(None));
        let step = state.on_frame(&start("CA0123456789abcdef0123456789ab\r\nX"), Duration::ZERO);
        assert!(matches!(step, Step::Refuse(StartError::BadSid { field: "start.callSid", .. })), "{step:?}");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::twilio::validate::{is_dtmf_digit, is_sid};

        /// One thing that can happen on a stream: a frame (well-formed or not) or time passing.
        #[derive(Debug, Clone)]
        enum Event {
            Frame(String),
            Wait(u64),
        }

        fn call_sid() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(CALL.to_owned()),
                Just("CAffffffffffffffffffffffffffffffff".to_owned()),
                "CA[0-9a-f]{0,40}",
                "CA[ -~\r\n\u{1b}]{0,40}",
            ]
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                call_sid().prop_map(|sid| Event::Frame(start(&sid))),
                (0usize..3_000).prop_map(|n| Event::Frame(media(n))),
                "[ -~\r\n]{0,3}".prop_map(|digit| Event::Frame(
                    serde_json::json!({"event": "dtmf", "streamSid": STREAM,
                        "dtmf": {"track": "inbound_track", "digit": digit}})
                    .to_string()
                )),
                Just(Event::Frame(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned())),
                Just(Event::Frame(format!(r#"{{"event":"stop","streamSid":"{STREAM}"}}"#))),
                ".{0,200}".prop_map(Event::Frame),
                (0u64..500).prop_map(Event::Wait),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn the_stream_never_breaks_its_rules(events in proptest::collection::vec(event(), 1..120)) {
                let mut state = StreamState::new(rules(Some(CALL)));
                let mut now = Duration::ZERO;
                let mut started = false;
                let mut ended = false;
                for event in events {
                    let text = match event {
                        Event::Wait(ms) => { now += Duration::from_millis(ms); continue; }
                        Event::Frame(text) => text,
                    };
                    let step = state.on_frame(&text, now);
                    if ended {
                        prop_assert_eq!(step, Step::Skipped(Skip::AfterStop));
                        continue;
                    }
                    match &step {
                        Step::Start(start) => {
                            prop_assert!(!started, "a second start was accepted");
                            prop_assert!(is_sid("CA", &start.start.call_sid));
                            prop_assert_eq!(start.start.call_sid.as_str(), CALL);
                            started = true;
                        }
                        Step::Audio { .. } | Step::AudioAhead { .. } | Step::Dtmf(_) | Step::Mark(_) => {
                            prop_assert!(started, "{:?} before start", step);
                        }
                        Step::Refuse(_) | Step::Stop => ended = true,
                        Step::Connected | Step::Skipped(_) => {}
                    }
                    if let Step::Dtmf(digit) = &step {
                        prop_assert!(is_dtmf_digit(digit));
                    }
                    prop_assert!(
                        state.accepted_samples() <= if started { state.audio_allowance(now) } else { 0 },
                        "{} samples accepted, {} allowed", state.accepted_samples(), state.audio_allowance(now)
                    );
                }
            }
        }
    }
}
