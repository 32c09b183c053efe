//! Scoring one replayed call: the caller's own measurements (latency, interruptions) joined with Parley's archive
//! of the call (what it heard, said and called), checked against the scenario's expectations and thresholds.

use serde::Serialize;

use super::dialogue::{DialogueReport, SpanMs};
use super::scenario::{ExpectedToolCall, Scenario};
use crate::archive::{TimelineEntry, TimelineEvent};

/// A `clear` this long after the end of an interrupting line still answers that line.
const CLEAR_GRACE_MS: u64 = 1_000;

/// How one scenario went.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioScore {
    pub name: String,
    /// An archived call measured as it happened, with nothing to judge it against (the call viewer's).
    #[serde(skip)]
    pub as_recorded: bool,
    pub passed: bool,
    /// Every threshold missed, in words.
    pub failures: Vec<String>,
    pub call_sid: String,
    /// End of the caller's speech → first audio of the answer, per answered line (caller-side).
    pub first_audio_ms: Vec<u64>,
    pub first_audio_p50_ms: Option<u64>,
    pub first_audio_p95_ms: Option<u64>,
    /// Speech onset → `clear`, per interruption the agent yielded to (caller-side).
    pub barge_in_ms: Vec<u64>,
    pub barge_in_max_ms: Option<u64>,
    /// Speech onset → `clear` as Parley measured it (from the archive).
    pub parley_barge_in_ms: Vec<f64>,
    /// `clear`s no interrupting line asked for.
    pub false_interruptions: u64,
    pub task_success: bool,
    pub checks: Vec<Check>,
    pub lines: Vec<LineScore>,
    pub tool_calls: Vec<ToolCallSeen>,
    /// Parley's per-stage latencies of each answered line (from the archive).
    pub stages: Vec<TurnStages>,
    pub agent_speech: Vec<SpanMs>,
    pub clear_at_ms: Vec<u64>,
    pub greeting_after_ms: Option<u64>,
}

/// One expectation and whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub passed: bool,
    pub detail: String,
}

/// One caller line and what answered it.
#[derive(Debug, Clone, Serialize)]
pub struct LineScore {
    pub said: String,
    pub noise: bool,
    pub interrupting: bool,
    pub started_ms: u64,
    pub speech_ended_ms: u64,
    pub answer_after_ms: Option<u64>,
    pub clear_after_ms: Option<u64>,
    /// Parley's turn numbers for this line (usually one).
    pub turns: Vec<u64>,
    /// What Parley heard and what the agent said in answer (what the caller heard of it).
    pub heard: String,
    pub reply: String,
}

/// A tool call from the archive.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCallSeen {
    pub at_ms: u64,
    pub turn: u64,
    pub name: String,
    pub arguments: serde_json::Value,
    pub is_error: Option<bool>,
    /// What the backend answered, when the call completed.
    pub result: Option<String>,
}

/// The stages of one answer, as Parley measured them.
#[derive(Debug, Clone, Serialize)]
pub struct TurnStages {
    pub line: usize,
    pub turn: u64,
    pub stages: Vec<(String, f64)>,
}

/// Scores a replayed call; `timeline` is the archived call, when Parley's archive could be read.
pub fn score(
    scenario: &Scenario,
    call_sid: &str,
    report: &DialogueReport,
    timeline: Option<&[TimelineEntry]>,
) -> ScenarioScore {
    let lines = line_scores(scenario, report, timeline.unwrap_or_default());
    let tool_calls = timeline.map(tool_calls).unwrap_or_default();
    let first_audio_ms: Vec<u64> = lines.iter().filter(|l| !l.noise).filter_map(|l| l.answer_after_ms).collect();
    let barge_in_ms: Vec<u64> =
        lines.iter().filter(|l| l.interrupting && !l.noise).filter_map(|l| l.clear_after_ms).collect();
    let parley_barge_in_ms = timeline
        .unwrap_or_default()
        .iter()
        .filter_map(|e| match &e.event {
            TimelineEvent::BargeIn { reaction_ms, .. } => Some(*reaction_ms),
            _ => None,
        })
        .collect();
    let false_interruptions = report.clear_at_ms.iter().filter(|&&at| !asked_for(report, scenario, at)).count() as u64;
    let checks = checks(scenario, report, &lines, &tool_calls, timeline.is_some());
    let task_success = checks.iter().all(|c| c.passed);
    let stages = timeline.map(|t| turn_stages(&lines, t)).unwrap_or_default();

    let mut sorted = first_audio_ms.clone();
    sorted.sort_unstable();
    let mut score = ScenarioScore {
        as_recorded: false,
        name: scenario.name.clone(),
        passed: false,
        failures: Vec::new(),
        call_sid: call_sid.to_owned(),
        first_audio_p50_ms: percentile(&sorted, 50.0),
        first_audio_p95_ms: percentile(&sorted, 95.0),
        first_audio_ms,
        barge_in_max_ms: barge_in_ms.iter().copied().max(),
        barge_in_ms,
        parley_barge_in_ms,
        false_interruptions,
        task_success,
        checks,
        lines,
        tool_calls,
        stages,
        agent_speech: report.agent_speech.clone(),
        clear_at_ms: report.clear_at_ms.clone(),
        greeting_after_ms: report.greeting_after_ms,
    };
    score.failures = threshold_failures(scenario, &score);
    score.passed = score.failures.is_empty();
    score
}

/// Percentile (0–100) of a sorted sample, nearest rank (shared with the load generator and the benchmarks).
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Whether a `clear` at `at_ms` answers a line meant to interrupt the agent.
fn asked_for(report: &DialogueReport, scenario: &Scenario, at_ms: u64) -> bool {
    report.lines.iter().zip(&scenario.lines).any(|(said, line)| {
        said.interrupting && !line.noise && cleared_during(said.started_ms, said.speech_ended_ms, at_ms)
    })
}

/// Whether a `clear` at `at_ms` came while a line was said (or just after it, within [`CLEAR_GRACE_MS`]).
fn cleared_during(started_ms: u64, ended_ms: u64, at_ms: u64) -> bool {
    at_ms + 50 >= started_ms && at_ms <= ended_ms + CLEAR_GRACE_MS
}

/// Each line with the turns Parley made of it: caller turns committed after the line began and before the next
/// speech line began.
fn line_scores(scenario: &Scenario, report: &DialogueReport, timeline: &[TimelineEntry]) -> Vec<LineScore> {
    let speech_starts: Vec<(usize, u64)> = report
        .lines
        .iter()
        .zip(&scenario.lines)
        .enumerate()
        .filter(|(_, (_, line))| !line.noise)
        .map(|(i, (said, _))| (i, said.started_ms))
        .collect();
    report
        .lines
        .iter()
        .zip(&scenario.lines)
        .enumerate()
        .map(|(i, (said, line))| {
            let (mut turns, mut heard, mut reply) = (Vec::new(), Vec::new(), Vec::new());
            if !line.noise {
                let until = speech_starts.iter().find(|(j, _)| *j > i).map_or(u64::MAX, |(_, at)| *at);
                for entry in timeline {
                    if let TimelineEvent::CallerTurn { turn, text } = &entry.event {
                        if entry.ms >= said.started_ms && entry.ms < until {
                            turns.push(*turn);
                            heard.push(text.clone());
                        }
                    }
                }
                for entry in timeline {
                    if let TimelineEvent::AgentSaid { turn, text, .. } = &entry.event {
                        if turns.contains(turn) {
                            reply.push(text.clone());
                        }
                    }
                }
            }
            LineScore {
                said: said.said.clone(),
                noise: line.noise,
                interrupting: said.interrupting,
                started_ms: said.started_ms,
                speech_ended_ms: said.speech_ended_ms,
                answer_after_ms: said.answer_after_ms,
                clear_after_ms: said.clear_after_ms,
                turns,
                heard: heard.join(" "),
                reply: reply.join(" "),
            }
        })
        .collect()
}

pub(crate) fn tool_calls(timeline: &[TimelineEntry]) -> Vec<ToolCallSeen> {
    timeline
        .iter()
        .filter_map(|entry| match &entry.event {
            TimelineEvent::ToolCall { turn, id, name, arguments } => {
                let answer = timeline.iter().find_map(|e| match &e.event {
                    TimelineEvent::ToolResult { id: result_id, is_error, content, .. } if result_id == id => {
                        Some((*is_error, content.clone()))
                    }
                    _ => None,
                });
                let (is_error, result) = answer.map_or((None, None), |(error, content)| (Some(error), Some(content)));
                Some(ToolCallSeen {
                    at_ms: entry.ms,
                    turn: *turn,
                    name: name.clone(),
                    arguments: serde_json::from_str(arguments)
                        .unwrap_or_else(|_| serde_json::Value::String(arguments.clone())),
                    is_error,
                    result,
                })
            }
            _ => None,
        })
        .collect()
}

pub(crate) fn turn_stages(lines: &[LineScore], timeline: &[TimelineEntry]) -> Vec<TurnStages> {
    timeline
        .iter()
        .filter_map(|entry| match &entry.event {
            TimelineEvent::Latency { turn, stages } => {
                let line = lines.iter().position(|l| l.turns.contains(turn))?;
                Some(TurnStages { line, turn: *turn, stages: stages.clone() })
            }
            _ => None,
        })
        .collect()
}

/// The scenario's expectations, each checked.
fn checks(
    scenario: &Scenario,
    report: &DialogueReport,
    lines: &[LineScore],
    tool_calls: &[ToolCallSeen],
    archived: bool,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut check = |what: String, passed: bool, detail: String| checks.push(Check { what, passed, detail });
    const NO_ARCHIVE: &str = "not scored: Parley's archive of the call could not be read";
    for ((line, said), spec) in lines.iter().zip(&report.lines).zip(&scenario.lines) {
        let quoted = quote(&line.said);
        if line.noise {
            let cleared =
                report.clear_at_ms.iter().any(|&at| cleared_during(line.started_ms, line.speech_ended_ms, at));
            check(
                format!("{quoted} does not interrupt the agent"),
                !cleared,
                if cleared { "the agent's audio was cleared".into() } else { String::new() },
            );
            continue;
        }
        check(
            format!("{quoted} is answered"),
            line.answer_after_ms.is_some(),
            line.answer_after_ms.map_or("no answer within the caller's patience".into(), |ms| format!("after {ms} ms")),
        );
        if line.interrupting {
            let detail = match (said.agent_was_speaking, line.clear_after_ms) {
                (false, _) => "the agent was not speaking when the line began: the scenario did not test it".into(),
                (true, None) => "the agent kept talking".into(),
                (true, Some(ms)) => format!("cleared {ms} ms after the caller began"),
            };
            check(
                format!("{quoted} interrupts the agent"),
                said.agent_was_speaking && line.clear_after_ms.is_some(),
                detail,
            );
        }
        if spec.one_turn {
            let (passed, detail) = match line.turns.len() {
                _ if !archived => (false, NO_ARCHIVE.to_owned()),
                1 => (true, String::new()),
                0 => (false, "Parley made no caller turn of it".to_owned()),
                n => {
                    (false, format!("Parley ended the caller's turn at a pause: {n} turns, heard as {:?}", line.heard))
                }
            };
            check(format!("{quoted} is one caller turn, pause and all"), passed, detail);
        }
        for word in &spec.expect_words {
            let (passed, detail) = if !archived {
                (false, NO_ARCHIVE.to_owned())
            } else if contains_words(&line.reply, word) {
                (true, String::new())
            } else {
                (false, format!("the answer was {:?}", line.reply))
            };
            check(format!("the answer to {quoted} says {word:?}"), passed, detail);
        }
    }
    for expected in &scenario.expect.tool_call {
        let mut what =
            format!("{} is called with {}", expected.name, serde_json::Value::Object(expected.arguments.clone()));
        if !expected.result_contains.is_empty() {
            what.push_str(&format!(" and answers {:?}", expected.result_contains));
        }
        let (passed, detail) = if !archived {
            (false, NO_ARCHIVE.to_owned())
        } else {
            let made: Vec<String> = tool_calls
                .iter()
                .filter(|c| c.name == expected.name)
                .map(|c| match &c.result {
                    Some(result) if !expected.result_contains.is_empty() => format!("{} → {result:?}", c.arguments),
                    _ => c.arguments.to_string(),
                })
                .collect();
            let matched = tool_calls.iter().any(|c| tool_call_matches(expected, c));
            let detail = if matched {
                String::new()
            } else if made.is_empty() {
                format!("{} was not called", expected.name)
            } else {
                format!("called with {}", made.join(", "))
            };
            (matched, detail)
        };
        check(what, passed, detail);
    }
    for forbidden in &scenario.expect.no_tool {
        let called = tool_calls.iter().any(|c| &c.name == forbidden);
        let (passed, detail) = if !archived {
            (false, NO_ARCHIVE.to_owned())
        } else {
            (!called, if called { format!("{forbidden} was called") } else { String::new() })
        };
        check(format!("{forbidden} is not called"), passed, detail);
    }
    checks
}

fn quote(said: &str) -> String {
    let short: String = said.chars().take(40).collect();
    if short.len() < said.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

/// A tool call matches when the name is the same and every expected argument is there with an equal value (numbers
/// and their digits as strings count as equal: models write `456` and `"456"` alike).
pub fn tool_call_matches(expected: &ExpectedToolCall, seen: &ToolCallSeen) -> bool {
    let answered = |want: &String| seen.result.as_deref().is_some_and(|result| contains_words(result, want));
    expected.name == seen.name
        && expected.arguments.iter().all(|(key, want)| seen.arguments.get(key).is_some_and(|got| same_value(want, got)))
        && expected.result_contains.iter().all(answered)
}

fn same_value(want: &serde_json::Value, got: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (want, got) {
        (Value::Object(want), Value::Object(got)) => {
            want.iter().all(|(key, w)| got.get(key).is_some_and(|g| same_value(w, g)))
        }
        (Value::String(w), Value::Number(g)) | (Value::Number(g), Value::String(w)) => w.trim() == g.to_string(),
        (Value::String(w), Value::String(g)) => w.trim().eq_ignore_ascii_case(g.trim()),
        _ => want == got,
    }
}

/// Whether `text` says `phrase`, word for word, ignoring case and punctuation.
pub fn contains_words(text: &str, phrase: &str) -> bool {
    let words = |s: &str| -> String {
        let normalized: String =
            s.chars().map(|c| if c.is_alphanumeric() { c.to_ascii_lowercase() } else { ' ' }).collect();
        format!(" {} ", normalized.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let phrase = words(phrase);
    phrase.trim().is_empty() || words(text).contains(&phrase)
}

fn threshold_failures(scenario: &Scenario, score: &ScenarioScore) -> Vec<String> {
    let limits = &scenario.thresholds;
    let mut failures = Vec::new();
    let mut over = |what: &str, measured: Option<u64>, limit: Option<u64>| match (measured, limit) {
        (Some(measured), Some(limit)) if measured > limit => {
            failures.push(format!("{what} {measured} ms is over the {limit} ms threshold"))
        }
        (None, Some(limit)) => failures.push(format!("{what} was not measured (threshold {limit} ms)")),
        _ => {}
    };
    over("first audio p50", score.first_audio_p50_ms, limits.first_audio_p50_ms);
    over("first audio p95", score.first_audio_p95_ms, limits.first_audio_p95_ms);
    over("barge-in reaction", score.barge_in_max_ms, limits.barge_in_max_ms);
    if score.false_interruptions > limits.false_interruptions_max {
        failures.push(format!(
            "{} false interruption(s), {} allowed",
            score.false_interruptions, limits.false_interruptions_max
        ));
    }
    if limits.task_success {
        for check in score.checks.iter().filter(|c| !c.passed) {
            failures.push(format!("task: {} — {}", check.what, check.detail));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::dialogue::LineReport;

    fn scenario(text: &str) -> Scenario {
        let mut scenario: Scenario = toml::from_str(text).unwrap();
        scenario.name = "test".into();
        scenario
    }

    fn said(text: &str, started_ms: u64, ended_ms: u64, answer: Option<u64>) -> LineReport {
        LineReport {
            said: text.into(),
            started_ms,
            speech_ended_ms: ended_ms,
            interrupting: false,
            agent_was_speaking: false,
            clear_after_ms: None,
            answer_after_ms: answer,
            expects_answer: true,
        }
    }

    fn entry(ms: u64, event: TimelineEvent) -> TimelineEntry {
        TimelineEntry { ms, event }
    }

    const SCENARIO: &str = r#"
        [[line]]
        say = "where is order four five six"
        expect_words = ["shipped"]
        [[line]]
        say = "when will it arrive"
        interrupt_after_ms = 1000
        [[line]]
        say = "(cough)"
        noise = true
        interrupt_after_ms = 300
        [[expect.tool_call]]
        name = "lookup_order"
        arguments = { order_id = "456" }
        [thresholds]
        first_audio_p95_ms = 900
        barge_in_max_ms = 300
    "#;

    fn good_call() -> (DialogueReport, Vec<TimelineEntry>) {
        let mut interrupt = said("when will it arrive", 6_000, 7_000, Some(600));
        interrupt.interrupting = true;
        interrupt.agent_was_speaking = true;
        interrupt.clear_after_ms = Some(180);
        let mut cough = said("(cough)", 8_000, 8_100, None);
        cough.interrupting = true;
        cough.agent_was_speaking = true;
        cough.expects_answer = false;
        let report = DialogueReport {
            greeting_after_ms: Some(300),
            lines: vec![said("where is order four five six", 1_000, 3_000, Some(700)), interrupt, cough],
            clears: 1,
            agent_audio_ms: 5_000,
            agent_speech: vec![SpanMs { start_ms: 3_700, end_ms: 6_180 }],
            clear_at_ms: vec![6_180],
        };
        let timeline = vec![
            entry(3_300, TimelineEvent::CallerTurn { turn: 1, text: "where is order 456".into() }),
            entry(
                3_350,
                TimelineEvent::ToolCall {
                    turn: 1,
                    id: "t1".into(),
                    name: "lookup_order".into(),
                    arguments: r#"{"order_id": 456}"#.into(),
                },
            ),
            entry(
                3_400,
                TimelineEvent::ToolResult { turn: 1, id: "t1".into(), content: "shipped".into(), is_error: false },
            ),
            entry(
                6_180,
                TimelineEvent::AgentSaid { turn: 1, text: "Order 456 has shipped, it".into(), interrupted: true },
            ),
            entry(6_180, TimelineEvent::BargeIn { turn: 1, reaction_ms: 150.0 }),
            entry(7_300, TimelineEvent::CallerTurn { turn: 2, text: "when will it arrive".into() }),
            entry(7_400, TimelineEvent::Latency { turn: 2, stages: vec![("llm_first_token".into(), 200.0)] }),
        ];
        (report, timeline)
    }

    #[test]
    fn a_call_that_does_everything_passes() {
        let scenario = scenario(SCENARIO);
        let (report, timeline) = good_call();
        let score = score(&scenario, "CA1", &report, Some(&timeline));
        assert!(score.passed, "{:#?}", score.failures);
        assert_eq!(score.first_audio_ms, vec![700, 600]);
        assert_eq!(score.first_audio_p50_ms, Some(600));
        assert_eq!(score.first_audio_p95_ms, Some(700));
        assert_eq!(score.barge_in_max_ms, Some(180));
        assert_eq!(score.parley_barge_in_ms, vec![150.0]);
        assert_eq!(score.false_interruptions, 0);
        assert_eq!(score.lines[0].turns, vec![1]);
        assert_eq!(score.lines[1].turns, vec![2]);
        assert!(score.lines[2].turns.is_empty(), "noise makes no turn");
        assert_eq!(score.stages.len(), 1);
        assert_eq!(score.stages[0].line, 1);
    }

    #[test]
    fn each_miss_is_named() {
        let scenario = scenario(SCENARIO);
        let (mut report, mut timeline) = good_call();
        report.lines[0].answer_after_ms = Some(1_500);
        report.clear_at_ms.push(8_050); // the cough cut the agent off
        timeline.retain(|e| !matches!(e.event, TimelineEvent::ToolCall { .. }));
        if let TimelineEvent::AgentSaid { text, .. } = &mut timeline[2].event {
            *text = "Let me check.".into();
        }
        let score = score(&scenario, "CA1", &report, Some(&timeline));
        assert!(!score.passed);
        let failures = score.failures.join("\n");
        assert!(failures.contains("first audio p95 1500 ms is over the 900 ms threshold"), "{failures}");
        assert!(failures.contains("1 false interruption(s), 0 allowed"), "{failures}");
        assert!(failures.contains("lookup_order was not called"), "{failures}");
        assert!(failures.contains("says \"shipped\""), "{failures}");
        assert!(failures.contains("does not interrupt"), "{failures}");
        assert!(!score.task_success);
    }

    #[test]
    fn a_line_with_a_pause_inside_must_be_one_caller_turn() {
        let scenario = scenario(&SCENARIO.replacen("expect_words", "one_turn = true\n        expect_words", 1));
        let (report, mut timeline) = good_call();
        let score_of = |timeline: &[TimelineEntry]| score(&scenario, "CA1", &report, Some(timeline));
        assert!(score_of(&timeline).passed, "{:#?}", score_of(&timeline).failures);
        // The agent answered the first half: the line became two turns.
        timeline.insert(0, entry(2_000, TimelineEvent::CallerTurn { turn: 1, text: "where is order".into() }));
        if let TimelineEvent::CallerTurn { turn, .. } = &mut timeline[1].event {
            *turn = 2;
        }
        let score = score_of(&timeline);
        assert!(!score.passed);
        let failures = score.failures.join("\n");
        assert!(failures.contains("is one caller turn, pause and all"), "{failures}");
        assert!(failures.contains("2 turns"), "{failures}");
    }

    #[test]
    fn without_the_archive_task_checks_fail_rather_than_pass_unseen() {
        let scenario = scenario(SCENARIO);
        let (report, _) = good_call();
        let score = score(&scenario, "CA1", &report, None);
        assert!(!score.passed);
        assert!(score.checks.iter().any(|c| !c.passed && c.detail.contains("archive")));
        let mut relaxed = scenario.clone();
        relaxed.thresholds.task_success = false;
        assert!(super::score(&relaxed, "CA1", &report, None).passed, "latency-only gating works without the archive");
    }

    #[test]
    fn arguments_match_as_a_subset_with_numbers_and_strings_alike() {
        let expected = ExpectedToolCall {
            name: "lookup_order".into(),
            arguments: serde_json::from_str(r#"{"order_id": "456", "filter": {"open": true}}"#).unwrap(),
            result_contains: Vec::new(),
        };
        let seen = |args: &str| ToolCallSeen {
            at_ms: 0,
            turn: 1,
            name: "lookup_order".into(),
            arguments: serde_json::from_str(args).unwrap(),
            is_error: None,
            result: None,
        };
        assert!(tool_call_matches(&expected, &seen(r#"{"order_id": 456, "filter": {"open": true, "x": 1}, "y": 2}"#)));
        assert!(!tool_call_matches(&expected, &seen(r#"{"order_id": 457, "filter": {"open": true}}"#)));
        assert!(!tool_call_matches(&expected, &seen(r#"{"order_id": "456"}"#)));
        assert!(!tool_call_matches(&expected, &seen(r#"{"order_id": "456", "filter": {"open": false}}"#)));
    }

    #[test]
    fn a_replayed_answer_must_say_what_the_backend_said_then() {
        let expected = ExpectedToolCall {
            name: "lookup_order".into(),
            arguments: serde_json::from_str(r#"{"order_id": "456"}"#).unwrap(),
            result_contains: vec!["Order 456: shipped, arriving Friday.".into()],
        };
        let seen = |result: Option<&str>| ToolCallSeen {
            at_ms: 0,
            turn: 1,
            name: "lookup_order".into(),
            arguments: serde_json::json!({"order_id": "456"}),
            is_error: Some(false),
            result: result.map(str::to_owned),
        };
        assert!(tool_call_matches(&expected, &seen(Some("order 456: SHIPPED, arriving friday (2 mugs)"))));
        assert!(!tool_call_matches(&expected, &seen(Some("Order 456: cancelled."))));
        assert!(!tool_call_matches(&expected, &seen(None)));
    }

    #[test]
    fn words_match_whole_words_ignoring_case_and_punctuation() {
        assert!(contains_words("Your order has SHIPPED.", "shipped"));
        assert!(contains_words("It arrives on Friday, June 3.", "friday june"));
        assert!(!contains_words("It was unshipped", "shipped"));
        assert!(!contains_words("", "shipped"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile::<u64>(&[], 50.0), None);
        assert_eq!(percentile(&[5], 95.0), Some(5));
        let sample: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&sample, 50.0), Some(10));
        assert_eq!(percentile(&sample, 95.0), Some(19));
    }
}
