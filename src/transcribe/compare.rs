//! Lines the offline transcript up with the hot path's transcript, turn by turn, and scores the hot path.
//!
//! Whisper's caller segments are the reference: it heard the whole recording with no latency budget. Each caller
//! turn in the timeline carries the time it was committed; a segment belongs to the first turn committed after the
//! segment ended (with [`COMMIT_SLACK_SECS`] of slack for rounding between the two clocks). Timelines without turn
//! times fall back to pairing segments and turns in order.

use serde::{Deserialize, Serialize};

use super::wer::wer;
use super::{HotTurn, Segment};

/// How much later than a turn's commit time a segment may end and still belong to it.
pub const COMMIT_SLACK_SECS: f64 = 1.0;

/// One caller turn, as the hot path heard it and as Whisper did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnComparison {
    pub turn: u64,
    pub hot_path: String,
    pub whisper: String,
    /// Word error rate of the hot path against Whisper.
    pub wer: f64,
}

/// The hot path scored against Whisper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub turns: Vec<TurnComparison>,
    /// Word error rate over the whole call (all caller turns against all of Whisper's caller speech).
    pub overall_wer: f64,
    /// Whisper caller speech that no turn covered (after the last turn, or speech the hot path never reported).
    pub unmatched_whisper: Vec<String>,
}

/// Compares the hot path's caller turns with Whisper's caller segments.
pub fn compare(turns: &[HotTurn], caller: &[Segment]) -> Comparison {
    let mut assigned: Vec<Vec<&str>> = vec![Vec::new(); turns.len()];
    let mut unmatched = Vec::new();
    let timed = !turns.is_empty() && turns.iter().all(|t| t.ms.is_some());
    for (index, segment) in caller.iter().enumerate() {
        let owner = if timed {
            turns.iter().position(|t| t.ms.is_some_and(|ms| ms as f64 / 1000.0 + COMMIT_SLACK_SECS >= segment.end))
        } else {
            (index < turns.len()).then_some(index)
        };
        match owner {
            Some(turn) => assigned[turn].push(&segment.text),
            None => unmatched.push(segment.text.clone()),
        }
    }
    let turns_compared: Vec<TurnComparison> = turns
        .iter()
        .zip(assigned)
        .map(|(turn, texts)| {
            let whisper = texts.join(" ");
            TurnComparison { turn: turn.turn, wer: wer(&whisper, &turn.text), hot_path: turn.text.clone(), whisper }
        })
        .collect();
    let all_whisper = caller.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ");
    let all_hot = turns.iter().map(|t| t.text.as_str()).collect::<Vec<_>>().join(" ");
    Comparison { turns: turns_compared, overall_wer: wer(&all_whisper, &all_hot), unmatched_whisper: unmatched }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(start: f64, end: f64, text: &str) -> Segment {
        Segment { start, end, text: text.into() }
    }

    fn turn(turn: u64, ms: Option<u64>, text: &str) -> HotTurn {
        HotTurn { turn, ms, text: text.into() }
    }

    #[test]
    fn segments_go_to_the_turn_committed_after_them() {
        let caller = [
            segment(0.5, 1.5, "hello"),
            segment(1.8, 2.6, "I need help"),
            segment(5.0, 6.0, "order four five six"),
            segment(9.0, 9.5, "thanks"),
        ];
        let turns = [turn(1, Some(3000), "hello I need help"), turn(2, Some(6400), "order for five six")];
        let comparison = compare(&turns, &caller);
        assert_eq!(comparison.turns[0].whisper, "hello I need help");
        assert_eq!(comparison.turns[0].wer, 0.0);
        assert_eq!(comparison.turns[1].whisper, "order four five six");
        assert_eq!(comparison.turns[1].wer, 0.25);
        assert_eq!(comparison.unmatched_whisper, vec!["thanks"]);
        // 2 errors (one substitution, one missing word) in 9 reference words.
        assert!((comparison.overall_wer - 2.0 / 9.0).abs() < 1e-9);
    }

    #[test]
    fn untimed_turns_pair_in_order() {
        let caller = [segment(0.0, 1.0, "yes"), segment(2.0, 3.0, "no")];
        let comparison = compare(&[turn(1, None, "yes"), turn(2, None, "know")], &caller);
        assert_eq!(comparison.turns[1].wer, 1.0);
        assert!(comparison.unmatched_whisper.is_empty());
    }
}
