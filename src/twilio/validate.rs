//! Checks caller-supplied Media Stream fields against Twilio's formats before Parley uses them as names (archive
//! keys, log fields, span attributes) or hands them to an agent.

use super::messages::Start;
use super::twiml::MAX_PARAMETER_CHARS;

/// More `customParameters` than any TwiML Parley renders (three of its own plus `twilio.stream_parameters`).
pub const MAX_CUSTOM_PARAMETERS: usize = 64;

/// Why a `start` message was refused. The stream is closed and nothing is archived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("{field} is not a Twilio SID ({prefix} and 32 lowercase hex digits)")]
    BadSid { field: &'static str, prefix: &'static str },
    #[error("start.streamSid and the message's streamSid differ")]
    StreamSidMismatch,
    #[error("unknown track name in start.tracks")]
    BadTrack,
    #[error("too many custom parameters ({0})")]
    TooManyParameters(usize),
    #[error("a custom parameter is longer than Twilio allows or holds control characters")]
    BadParameter,
    #[error("the stream token was minted for another call")]
    TokenForAnotherCall,
}

/// `<prefix>` followed by 32 lowercase hex digits: every Twilio SID (`CA…` calls, `MZ…` streams, `AC…` accounts).
pub fn is_sid(prefix: &str, value: &str) -> bool {
    value.len() == prefix.len() + 32
        && value.starts_with(prefix)
        && value.as_bytes()[prefix.len()..].iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A Media Stream track name: `inbound` or `outbound` (and the `_track` forms DTMF messages use).
pub fn is_track(value: &str) -> bool {
    matches!(value, "inbound" | "outbound" | "inbound_track" | "outbound_track")
}

/// A DTMF key: one of `0-9`, `*`, `#`, `A-D`.
pub fn is_dtmf_digit(value: &str) -> bool {
    matches!(value.as_bytes(), [b'0'..=b'9' | b'*' | b'#' | b'A'..=b'D'])
}

/// Checks every caller-supplied field of `start`. The account SID may be absent (older fakes omit it).
pub fn check_start(start: &Start) -> Result<(), StartError> {
    let meta = &start.start;
    if !is_sid("CA", &meta.call_sid) {
        return Err(StartError::BadSid { field: "start.callSid", prefix: "CA" });
    }
    if !is_sid("MZ", &meta.stream_sid) {
        return Err(StartError::BadSid { field: "start.streamSid", prefix: "MZ" });
    }
    if start.stream_sid != meta.stream_sid {
        return Err(StartError::StreamSidMismatch);
    }
    if !meta.account_sid.is_empty() && !is_sid("AC", &meta.account_sid) {
        return Err(StartError::BadSid { field: "start.accountSid", prefix: "AC" });
    }
    if !meta.tracks.iter().all(|track| is_track(track)) {
        return Err(StartError::BadTrack);
    }
    if meta.custom_parameters.len() > MAX_CUSTOM_PARAMETERS {
        return Err(StartError::TooManyParameters(meta.custom_parameters.len()));
    }
    let fits = |name: &String, value: &String| {
        name.chars().count() + value.chars().count() < MAX_PARAMETER_CHARS
            && !name.is_empty()
            && !name.chars().chain(value.chars()).any(char::is_control)
    };
    if !meta.custom_parameters.iter().all(|(name, value)| fits(name, value)) {
        return Err(StartError::BadParameter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::messages::{MediaFormat, StartMetadata};

    fn start(call_sid: &str) -> Start {
        let stream_sid = "MZ0123456789abcdef0123456789abcdef".to_owned();
        Start {
            sequence_number: Some(1),
            start: StartMetadata {
                account_sid: "AC0123456789abcdef0123456789abcdef".into(),
                stream_sid: stream_sid.clone(),
                call_sid: call_sid.into(),
                tracks: vec!["inbound".into()],
                custom_parameters: [("from".to_owned(), "+15550001111".to_owned())].into(),
                media_format: MediaFormat { encoding: "audio/x-mulaw".into(), sample_rate: 8000, channels: 1 },
            },
            stream_sid,
        }
    }

    #[test]
    fn sids_follow_twilios_format() {
        assert!(is_sid("CA", "CA0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "CA",
            "CA0123456789ABCDEF0123456789abcdef",
            "CA0123456789abcdef0123456789abcde",
            "CA0123456789abcdef0123456789abcdef0",
            "MZ0123456789abcdef0123456789abcdef",
            "CA0123456789abcdef0123456789abc\r\n",
            "CAé123456789abcdef0123456789abcde",
        ] {
            assert!(!is_sid("CA", bad), "{bad:?}");
        }
    }

    #[test]
    fn a_valid_start_passes_and_each_hostile_field_is_refused() {
        assert_eq!(check_start(&start("CA0123456789abcdef0123456789abcdef")), Ok(()));
        assert!(matches!(check_start(&start("CA1\r\nINFO forged")), Err(StartError::BadSid { .. })));
        let mut s = start("CA0123456789abcdef0123456789abcdef");
        s.stream_sid = "MZ1".into();
        assert_eq!(check_start(&s), Err(StartError::StreamSidMismatch));
        let mut s = start("CA0123456789abcdef0123456789abcdef");
        s.start.tracks.push("\u{1b}[31m".into());
        assert_eq!(check_start(&s), Err(StartError::BadTrack));
        let mut s = start("CA0123456789abcdef0123456789abcdef");
        s.start.custom_parameters.insert("x".into(), "y".repeat(600));
        assert_eq!(check_start(&s), Err(StartError::BadParameter));
        let mut s = start("CA0123456789abcdef0123456789abcdef");
        s.start.custom_parameters.insert("x".into(), "a\nb".into());
        assert_eq!(check_start(&s), Err(StartError::BadParameter));
        let mut s = start("CA0123456789abcdef0123456789abcdef");
        s.start.custom_parameters = (0..100).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(check_start(&s), Err(StartError::TooManyParameters(100)));
    }

    #[test]
    fn dtmf_digits_and_tracks() {
        for ok in ["0", "9", "*", "#", "A", "D"] {
            assert!(is_dtmf_digit(ok), "{ok}");
        }
        for bad in ["", "10", "E", "a", "\n", "1\u{1b}"] {
            assert!(!is_dtmf_digit(bad), "{bad:?}");
        }
        assert!(is_track("inbound") && is_track("inbound_track") && !is_track("Inbound") && !is_track(""));
    }
}
