//! `timeline.jsonl`: one JSON line per event of a call, stamped with milliseconds since the call started. Lines are
//! only ever appended, so a crash leaves every line before it intact; a torn last line is skipped when reading.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ArchiveError, TIMELINE_FILE};
use crate::call::tap::ConversationEvent;

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Milliseconds since the call started.
    pub ms: u64,
    #[serde(flatten)]
    pub event: TimelineEvent,
}

/// What happened: the call's events, one type with what the engine sends through the tap.
pub type TimelineEvent = ConversationEvent;

impl TimelineEntry {
    /// The entry as one line, newline included.
    pub(crate) fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// Parses timeline bytes; lines that do not parse (a line torn by a crash) are skipped.
pub(crate) fn parse(bytes: &[u8]) -> Vec<TimelineEntry> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect()
}

/// A call's timeline, from its folder.
pub fn read_timeline(dir: &Path) -> Result<Vec<TimelineEntry>, ArchiveError> {
    let path = dir.join(TIMELINE_FILE);
    let bytes = std::fs::read(&path).map_err(ArchiveError::io(&path))?;
    Ok(parse(&bytes))
}

/// A call's timeline, from any store.
pub fn read_from(store: &dyn super::ArchiveStore, key: &super::CallKey) -> Result<Vec<TimelineEntry>, ArchiveError> {
    Ok(parse(&store.get(key, TIMELINE_FILE)?))
}

/// What the hot-path STT heard the caller say in one turn.
#[derive(Debug, Clone, PartialEq)]
pub struct CallerTurn {
    pub turn: u64,
    /// When the turn's transcript was final, milliseconds since the call started.
    pub ms: u64,
    pub text: String,
}

/// The caller's turns as the hot path transcribed them, in order: what an offline transcript is compared with.
pub fn caller_turns(dir: &Path) -> Result<Vec<CallerTurn>, ArchiveError> {
    Ok(read_timeline(dir)?
        .into_iter()
        .filter_map(|entry| match entry.event {
            TimelineEvent::CallerTurn { turn, text } => Some(CallerTurn { turn, ms: entry.ms, text }),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_torn_lines_are_skipped() {
        let entries = vec![
            TimelineEntry {
                ms: 0,
                event: TimelineEvent::CallStarted { call_sid: "CA1".into(), stream_sid: "MZ1".into() },
            },
            TimelineEntry {
                ms: 1200,
                event: ConversationEvent::Latency { turn: 1, stages: vec![("stt".into(), 80.0)] },
            },
            TimelineEntry { ms: 1300, event: TimelineEvent::AgentAudioCleared },
        ];
        let mut bytes: Vec<u8> = entries.iter().flat_map(TimelineEntry::to_line).collect();
        assert!(String::from_utf8_lossy(&bytes).contains(r#"{"ms":1300,"type":"agent_audio_cleared"}"#));
        bytes.extend_from_slice(br#"{"ms":1400,"type":"caller_tu"#);
        assert_eq!(parse(&bytes), entries);
    }
}
