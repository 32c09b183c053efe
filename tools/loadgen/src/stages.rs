//! Parley's own share of a turn's latency, read from its Prometheus histograms after a run: the callers measure end
//! of speech → first audio from outside, which includes the fake providers and the machine they share with Parley;
//! `parley_added` is the part Parley itself held (its hand-offs between the providers' answers), so a tail can be
//! told apart from the providers' and the scheduler's.

use serde::Serialize;

/// The stage histogram Parley exports (`parley_stage_duration_milliseconds`, labelled by `stage`).
const STAGE_HISTOGRAM: &str = "parley_stage_duration_milliseconds_bucket";

/// The stages the report shows: Parley's whole share, then the two hand-offs that make most of its tail.
pub const REPORTED_STAGES: [(&str, &str); 3] = [
    ("parley_added", "Parley's own share"),
    ("piece_to_tts_request", "reply piece -> TTS request"),
    ("tts_audio_to_twilio", "TTS audio -> Twilio"),
];

/// Quantiles of one stage, each as the upper bound of the histogram bucket it falls in (ms; infinite past the
/// last bound).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StageQuantiles {
    pub count: u64,
    pub p50_le_ms: f64,
    pub p95_le_ms: f64,
    pub p99_le_ms: f64,
}

/// Reads one stage's quantiles from a Prometheus text exposition; `None` when the stage has no observations.
pub fn stage_quantiles(exposition: &str, stage: &str) -> Option<StageQuantiles> {
    let label = format!("stage=\"{stage}\"");
    let mut buckets: Vec<(f64, u64)> = exposition
        .lines()
        .filter(|line| line.starts_with(STAGE_HISTOGRAM) && line.contains(&label))
        .filter_map(bucket)
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = buckets.last()?.1;
    if count == 0 {
        return None;
    }
    let quantile = |q: f64| {
        let rank = (q * count as f64).ceil() as u64;
        buckets.iter().find(|(_, cumulative)| *cumulative >= rank).map_or(f64::INFINITY, |(le, _)| *le)
    };
    Some(StageQuantiles { count, p50_le_ms: quantile(0.50), p95_le_ms: quantile(0.95), p99_le_ms: quantile(0.99) })
}

/// One bucket line: its upper bound and cumulative count.
fn bucket(line: &str) -> Option<(f64, u64)> {
    let le_start = line.find("le=\"")? + 4;
    let le_len = line[le_start..].find('"')?;
    let le = match &line[le_start..le_start + le_len] {
        "+Inf" => f64::INFINITY,
        bound => bound.parse().ok()?,
    };
    let count = line.rsplit(' ').next()?.parse::<f64>().ok()?;
    Some((le, count as u64))
}

/// The report's line for one stage.
pub fn describe(name: &str, quantiles: &StageQuantiles) -> String {
    let bound = |ms: f64| if ms.is_finite() { format!("<= {ms}") } else { "beyond the last bucket".to_owned() };
    format!(
        "{name} (ms, bucket bounds, {} turns): p50 {}  p95 {}  p99 {}",
        quantiles.count,
        bound(quantiles.p50_le_ms),
        bound(quantiles.p95_le_ms),
        bound(quantiles.p99_le_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# TYPE parley_stage_duration_milliseconds histogram
parley_stage_duration_milliseconds_bucket{stage="parley_added",otel_scope_name="parley",le="1"} 60
parley_stage_duration_milliseconds_bucket{stage="parley_added",otel_scope_name="parley",le="2"} 80
parley_stage_duration_milliseconds_bucket{stage="parley_added",otel_scope_name="parley",le="20"} 97
parley_stage_duration_milliseconds_bucket{stage="parley_added",otel_scope_name="parley",le="50"} 99
parley_stage_duration_milliseconds_bucket{stage="parley_added",otel_scope_name="parley",le="+Inf"} 100
parley_stage_duration_milliseconds_sum{stage="parley_added",otel_scope_name="parley"} 250
parley_stage_duration_milliseconds_bucket{stage="tts_audio_to_twilio",otel_scope_name="parley",le="1"} 0
parley_stage_duration_milliseconds_bucket{stage="tts_audio_to_twilio",otel_scope_name="parley",le="+Inf"} 0
parley_turn_first_audio_milliseconds_bucket{otel_scope_name="parley",le="1"} 100
"#;

    #[test]
    fn quantiles_are_the_bounds_of_the_buckets_they_fall_in() {
        let added = stage_quantiles(EXPOSITION, "parley_added").expect("observations");
        assert_eq!(added, StageQuantiles { count: 100, p50_le_ms: 1.0, p95_le_ms: 20.0, p99_le_ms: 50.0 });
        assert_eq!(
            describe("Parley's own share", &added),
            "Parley's own share (ms, bucket bounds, 100 turns): p50 <= 1  p95 <= 20  p99 <= 50"
        );
    }

    #[test]
    fn a_stage_without_observations_or_missing_reports_nothing() {
        assert_eq!(stage_quantiles(EXPOSITION, "tts_audio_to_twilio"), None);
        assert_eq!(stage_quantiles(EXPOSITION, "piece_to_tts_request"), None);
        assert_eq!(stage_quantiles("not prometheus at all", "parley_added"), None);
    }

    #[test]
    fn a_tail_past_the_last_bound_says_so() {
        let exposition = "parley_stage_duration_milliseconds_bucket{stage=\"parley_added\",le=\"1\"} 1\n\
                          parley_stage_duration_milliseconds_bucket{stage=\"parley_added\",le=\"+Inf\"} 4\n";
        let added = stage_quantiles(exposition, "parley_added").expect("observations");
        assert_eq!(added.p50_le_ms, f64::INFINITY);
        assert!(describe("x", &added).contains("p99 beyond the last bucket"));
    }
}
