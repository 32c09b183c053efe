//! What the callers observed, over all calls: the figures the load generator reports.

use serde::Serialize;

use crate::lean::CallResult;
use crate::percentile;

/// The callers' side of a run.
#[derive(Debug, Clone, Serialize)]
pub struct CallerSummary {
    pub calls: usize,
    pub failed: usize,
    pub turns: u64,
    /// Turns whose reply started.
    pub replies: usize,
    pub missing_replies: u64,
    /// End of speech → first audio, ms.
    pub first_audio_p50_ms: f64,
    pub first_audio_p95_ms: f64,
    pub first_audio_p99_ms: f64,
    pub first_audio_max_ms: f64,
    /// Gaps over the late threshold inside replies.
    pub late_gaps: u64,
    /// Media frames received.
    pub frames_received: u64,
    /// Barge-ins answered with a `clear`, and the onset → `clear` times, ms.
    pub clears: usize,
    pub clear_p50_ms: f64,
    pub clear_p99_ms: f64,
    pub clear_max_ms: f64,
    pub missing_clears: u64,
    /// The first few failures, for the report.
    pub failures: Vec<String>,
}

/// Sums up every call's result.
pub fn summarise(results: &[CallResult]) -> CallerSummary {
    let mut first_audio: Vec<f64> = results.iter().flat_map(|r| r.first_audio_ms.iter().copied()).collect();
    let mut clears: Vec<f64> = results.iter().flat_map(|r| r.clear_ms.iter().copied()).collect();
    first_audio.sort_by(f64::total_cmp);
    clears.sort_by(f64::total_cmp);
    let failures: Vec<String> =
        results.iter().filter_map(|r| r.failed.as_ref().map(|why| format!("call {}: {why}", r.n))).take(10).collect();
    CallerSummary {
        calls: results.len(),
        failed: results.iter().filter(|r| r.failed.is_some()).count(),
        turns: results.iter().map(|r| u64::from(r.turns)).sum(),
        replies: first_audio.len(),
        missing_replies: results.iter().map(|r| u64::from(r.missing_replies)).sum(),
        first_audio_p50_ms: percentile(&first_audio, 50.0),
        first_audio_p95_ms: percentile(&first_audio, 95.0),
        first_audio_p99_ms: percentile(&first_audio, 99.0),
        first_audio_max_ms: first_audio.last().copied().unwrap_or(f64::NAN),
        late_gaps: results.iter().map(|r| u64::from(r.late_gaps)).sum(),
        frames_received: results.iter().map(|r| r.frames_received).sum(),
        clears: clears.len(),
        clear_p50_ms: percentile(&clears, 50.0),
        clear_p99_ms: percentile(&clears, 99.0),
        clear_max_ms: clears.last().copied().unwrap_or(f64::NAN),
        missing_clears: results.iter().map(|r| u64::from(r.missing_clears)).sum(),
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_summed_and_failures_counted() {
        let results = vec![
            CallResult {
                n: 0,
                turns: 3,
                first_audio_ms: vec![900.0, 1000.0],
                clear_ms: vec![250.0],
                missing_replies: 1,
                late_gaps: 2,
                frames_received: 100,
                ..CallResult::default()
            },
            CallResult { n: 1, failed: Some("connect timed out".into()), ..CallResult::default() },
        ];
        let summary = summarise(&results);
        assert_eq!((summary.calls, summary.failed, summary.turns, summary.replies), (2, 1, 3, 2));
        assert_eq!((summary.missing_replies, summary.late_gaps, summary.frames_received), (1, 2, 100));
        assert_eq!(summary.first_audio_max_ms, 1000.0);
        assert_eq!((summary.clears, summary.clear_p50_ms), (1, 250.0));
        assert_eq!(summary.failures, ["call 1: connect timed out"]);
    }
}
