//! `parley export`: an archived call turned into a scenario that `parley eval` replays — yesterday's calls as a
//! deploy gate.
//!
//! The caller's lines are cut from the call's caller leg at the timeline's turn boundaries: the speech between one
//! caller turn and the next (found by its energy, with a little margin either side) becomes a WAV clip next to the
//! scenario file, labelled with what Parley heard. A line that cut the agent off is replayed that far into the agent's
//! answer (`interrupt_after_ms`, measured from the agent leg). Every tool call the agent made becomes an expectation:
//! the tool, its arguments, and what the backend answered then (`result_contains`), so a replay against a backend
//! whose answer changed fails on it. The thresholds come from the configuration's `[eval]` section.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;

use crate::archive::cli::find_call;
use crate::archive::LEG_SAMPLE_RATE;
use crate::archive::{read_call_legs, read_call_metadata, read_call_timeline, ArchiveError, CallMetadata};
use crate::archive::{read_legs, read_metadata, read_timeline, ArchiveStore, TimelineEntry, TimelineEvent};
use crate::config::{Config, EvalSettings};
use crate::local::wav;

/// Samples per 20 ms window of a leg.
const WINDOW: usize = (LEG_SAMPLE_RATE / 50) as usize;
/// Speech quieter than this (RMS of a window) is never speech, whatever the line's noise floor.
const MIN_SPEECH_RMS: f64 = 300.0;
/// Pauses shorter than this stay inside one stretch of speech.
const MAX_PAUSE_MS: u64 = 400;
/// Stretches shorter than this are clicks, not speech.
const MIN_SPEECH_MS: u64 = 100;
/// How far a barge-in may be stamped before the speech that caused it starts on the caller leg.
pub(crate) const BARGE_IN_SLACK_MS: u64 = 500;
/// Kept before and after a line's speech.
const MARGIN_MS: u64 = 150;

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Archived calls: call SIDs, folder names, keys (`2026/11/25/CA…`) or call folders.
    #[arg(required = true)]
    pub calls: Vec<String>,
    /// The folder the scenarios are written to (one `<call>.toml` and a `<call>/` folder of clips each).
    #[arg(long, default_value = "replays")]
    pub to: PathBuf,
}

/// Why a call could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("call {call}: {message}")]
    Unusable { call: String, message: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Exports every call of `args` from the configured archive (or their folders); returns the scenario files written.
pub fn run(config: &Config, args: &ExportArgs) -> Result<Vec<PathBuf>, ExportError> {
    let mut written = Vec::new();
    for call in &args.calls {
        let folder = Path::new(call);
        let (metadata, timeline, legs) = if folder.join("metadata.json").is_file() {
            (read_metadata(folder)?, read_timeline(folder)?, read_legs(folder)?)
        } else {
            let store = config.archive.open_store()?;
            read_call(store.as_ref(), call)?
        };
        let scenario = scenario_from_call(&metadata, &timeline, &legs.0, &legs.1, &config.eval)?;
        written.push(scenario.write(&args.to)?);
    }
    Ok(written)
}

type Legs = (Vec<i16>, Vec<i16>);

fn read_call(store: &dyn ArchiveStore, call: &str) -> Result<(CallMetadata, Vec<TimelineEntry>, Legs), ExportError> {
    let key = find_call(store, call)?;
    Ok((read_call_metadata(store, &key)?, read_call_timeline(store, &key)?, read_call_legs(store, &key)?))
}

/// A scenario made from a call: its file's text and its clips (file name, WAV bytes).
#[derive(Debug, Clone)]
pub struct ExportedScenario {
    pub name: String,
    pub toml: String,
    pub clips: Vec<(String, Vec<u8>)>,
}

impl ExportedScenario {
    /// Writes `<dir>/<name>.toml` and `<dir>/<name>/…wav`; returns the scenario file.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ExportError> {
        let clips = dir.join(&self.name);
        std::fs::create_dir_all(&clips).map_err(|source| ExportError::Write { path: clips.clone(), source })?;
        for (file, bytes) in &self.clips {
            let path = clips.join(file);
            std::fs::write(&path, bytes).map_err(|source| ExportError::Write { path, source })?;
        }
        let path = dir.join(format!("{}.toml", self.name));
        std::fs::write(&path, &self.toml).map_err(|source| ExportError::Write { path: path.clone(), source })?;
        Ok(path)
    }
}

/// One caller turn found in the recording.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CutLine {
    pub turn: u64,
    pub heard: String,
    /// The speech, in milliseconds of the call.
    pub start_ms: u64,
    pub end_ms: u64,
    pub interrupt_after_ms: Option<u64>,
}

/// The scenario for one call; see the module documentation.
pub fn scenario_from_call(
    metadata: &CallMetadata,
    timeline: &[TimelineEntry],
    caller: &[i16],
    agent: &[i16],
    thresholds: &EvalSettings,
) -> Result<ExportedScenario, ExportError> {
    let unusable = |message: &str| ExportError::Unusable { call: metadata.call_sid.clone(), message: message.into() };
    let lines = cut_lines(timeline, &speech_stretches(caller), &speech_stretches(agent));
    if lines.is_empty() {
        return Err(unusable("the caller said nothing the recording holds (no caller turn with speech)"));
    }
    let name = format!("replay-{}", metadata.call_sid);
    let mut clips = Vec::with_capacity(lines.len());
    let mut line_tables = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let file = format!("line-{}.wav", index + 1);
        let from = sample_at(line.start_ms.saturating_sub(MARGIN_MS)).min(caller.len());
        let to = sample_at(line.end_ms + MARGIN_MS).min(caller.len()).max(from);
        clips.push((file.clone(), wav::write(&caller[from..to], LEG_SAMPLE_RATE)));
        let mut table = toml::Table::new();
        table.insert("audio".into(), format!("{name}/{file}").into());
        table.insert("say".into(), line.heard.clone().into());
        if let Some(after) = line.interrupt_after_ms {
            table.insert("interrupt_after_ms".into(), toml::Value::Integer(after as i64));
        }
        line_tables.push(toml::Value::Table(table));
    }
    let first_turn_ms = timeline.iter().find(|e| matches!(e.event, TimelineEvent::CallerTurn { .. })).map(|e| e.ms);
    let greeted = timeline.iter().any(|e| {
        matches!(&e.event, TimelineEvent::AgentSaid { turn: 0, .. }) && first_turn_ms.is_none_or(|first| e.ms < first)
    });
    let mut scenario = toml::Table::new();
    scenario.insert("name".into(), name.clone().into());
    scenario.insert(
        "description".into(),
        format!("Replay of call {} ({} caller lines)", metadata.call_sid, lines.len()).into(),
    );
    scenario.insert("expect_greeting".into(), greeted.into());
    scenario.insert("line".into(), toml::Value::Array(line_tables));
    let tool_calls = expected_tool_calls(timeline);
    if !tool_calls.is_empty() {
        let mut expect = toml::Table::new();
        expect.insert("tool_call".into(), toml::Value::Array(tool_calls));
        scenario.insert("expect".into(), toml::Value::Table(expect));
    }
    scenario.insert("thresholds".into(), toml::Value::Table(threshold_table(thresholds)));
    let header = format!(
        "# Exported by `parley export` from archived call {} ({} ms). The clips are the caller's leg, cut at\n\
         # the timeline's turn boundaries; the expectations are what happened on the call. Edit freely.\n\n",
        metadata.call_sid,
        metadata.duration_ms.unwrap_or(0)
    );
    let body = toml::to_string(&scenario).map_err(|e| unusable(&format!("writing the scenario: {e}")))?;
    Ok(ExportedScenario { name, toml: header + &body, clips })
}

fn threshold_table(settings: &EvalSettings) -> toml::Table {
    let mut table = toml::Table::new();
    let limits = [
        ("first_audio_p50_ms", settings.first_audio_p50_ms),
        ("first_audio_p95_ms", settings.first_audio_p95_ms),
        ("barge_in_max_ms", settings.barge_in_max_ms),
    ];
    for (key, value) in limits {
        if let Some(ms) = value {
            table.insert(key.into(), toml::Value::Integer(ms as i64));
        }
    }
    table.insert("false_interruptions_max".into(), toml::Value::Integer(settings.false_interruptions_max as i64));
    table.insert("task_success".into(), true.into());
    table
}

/// Each tool call of the call, once: its name, its arguments and what the backend answered.
fn expected_tool_calls(timeline: &[TimelineEntry]) -> Vec<toml::Value> {
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for entry in timeline {
        let TimelineEvent::ToolCall { id, name, arguments, .. } = &entry.event else { continue };
        if seen.iter().any(|(n, a)| n == name && a == arguments) {
            continue;
        }
        seen.push((name.clone(), arguments.clone()));
        let mut table = toml::Table::new();
        table.insert("name".into(), name.clone().into());
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(arguments) {
            if let Ok(toml::Value::Table(args)) = toml::Value::try_from(&map) {
                table.insert("arguments".into(), toml::Value::Table(args));
            }
        }
        let answered = timeline.iter().find_map(|e| match &e.event {
            TimelineEvent::ToolResult { id: answered, content, is_error: false, .. } if answered == id => {
                Some(content.clone())
            }
            _ => None,
        });
        let contains = answered.map(|content| answer_markers(&content)).unwrap_or_default();
        if !contains.is_empty() {
            let values = contains.into_iter().map(toml::Value::String).collect();
            table.insert("result_contains".into(), toml::Value::Array(values));
        }
        out.push(toml::Value::Table(table));
    }
    out
}

/// What of a backend's answer a replay checks: a short text whole; of a JSON answer, its short text values.
fn answer_markers(content: &str) -> Vec<String> {
    const SHORT: usize = 160;
    match serde_json::from_str::<Value>(content) {
        Ok(Value::Object(map)) => map
            .values()
            .filter_map(Value::as_str)
            .filter(|text| !text.trim().is_empty() && text.len() <= 40)
            .take(6)
            .map(str::to_owned)
            .collect(),
        _ if content.trim().is_empty() => Vec::new(),
        _ => vec![content.trim().chars().take(SHORT).collect()],
    }
}

fn sample_at(ms: u64) -> usize {
    (ms * u64::from(LEG_SAMPLE_RATE) / 1000) as usize
}

/// Stretches of speech on a leg, as (start, end) in milliseconds.
pub(crate) fn speech_stretches(leg: &[i16]) -> Vec<(u64, u64)> {
    let levels: Vec<f64> = leg
        .chunks(WINDOW)
        .map(|w| (w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / w.len().max(1) as f64).sqrt())
        .collect();
    let mut sorted = levels.clone();
    sorted.sort_by(f64::total_cmp);
    let floor = sorted.get(sorted.len() / 10).copied().unwrap_or(0.0);
    let threshold = MIN_SPEECH_RMS.max(floor * 4.0);
    let mut stretches: Vec<(u64, u64)> = Vec::new();
    for (index, level) in levels.iter().enumerate() {
        if *level < threshold {
            continue;
        }
        let (start, end) = (index as u64 * 20, index as u64 * 20 + 20);
        match stretches.last_mut() {
            Some(last) if start.saturating_sub(last.1) <= MAX_PAUSE_MS => last.1 = end,
            _ => stretches.push((start, end)),
        }
    }
    stretches.retain(|(start, end)| end - start >= MIN_SPEECH_MS);
    stretches
}

/// The caller's lines: the speech before each caller turn (since the one before), and whether it cut the agent off.
/// `caller_speech` and `agent_speech` are the legs' [`speech_stretches`].
pub(crate) fn cut_lines(
    timeline: &[TimelineEntry],
    caller_speech: &[(u64, u64)],
    agent_speech: &[(u64, u64)],
) -> Vec<CutLine> {
    let barge_ins: Vec<u64> =
        timeline.iter().filter(|e| matches!(e.event, TimelineEvent::BargeIn { .. })).map(|e| e.ms).collect();
    let mut lines = Vec::new();
    let mut since = 0;
    for entry in timeline {
        let TimelineEvent::CallerTurn { turn, text } = &entry.event else { continue };
        let previous = since;
        since = entry.ms;
        let speech: Vec<&(u64, u64)> =
            caller_speech.iter().filter(|(start, _)| *start >= previous && *start < entry.ms).collect();
        let (Some(first), Some(last)) = (speech.first(), speech.last()) else { continue };
        let start_ms = first.0;
        // Did this line cut the agent off? A barge-in came while it was being said (the barge-in is stamped when the
        // agent stopped, a reaction time after the onset, and the leg's frames when they reached the recorder).
        let interrupted = barge_ins.iter().any(|&at| at + BARGE_IN_SLACK_MS >= start_ms && at <= last.1 + 200);
        let interrupt_after_ms = interrupted
            .then(|| agent_speech.iter().find(|(start, end)| *end > previous && *start <= start_ms))
            .flatten()
            .map(|(agent_start, _)| start_ms.saturating_sub((*agent_start).max(previous)));
        lines.push(CutLine { turn: *turn, heard: text.clone(), start_ms, end_ms: last.1, interrupt_after_ms });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::CallStatus;

    /// `ms` of loud tone at `from_ms` on a leg of `total_ms`.
    fn leg(total_ms: u64, loud: &[(u64, u64)]) -> Vec<i16> {
        let mut samples = vec![0i16; sample_at(total_ms)];
        for &(from, to) in loud {
            for (i, sample) in samples[sample_at(from)..sample_at(to)].iter_mut().enumerate() {
                *sample = if i % 16 < 8 { 6_000 } else { -6_000 };
            }
        }
        samples
    }

    fn metadata() -> CallMetadata {
        CallMetadata {
            call_sid: "CA9".into(),
            stream_sid: "MZ9".into(),
            from: None,
            to: None,
            started_at_ms: 0,
            ended_at_ms: Some(12_000),
            duration_ms: Some(12_000),
            status: CallStatus::Sealed,
            ended_by: Some("Stopped".into()),
            turns: 2,
            owner: None,
            cost: None,
        }
    }

    fn entry(ms: u64, event: TimelineEvent) -> TimelineEntry {
        TimelineEntry { ms, event }
    }

    #[test]
    fn lines_are_cut_at_turn_boundaries_and_the_interruption_is_measured_from_the_agents_answer() {
        // Greeting 0.2–1.8 s; the caller 2.0–3.5 s; the answer from 4.5 s, cut off by the caller at 5.7 s.
        let caller = leg(12_000, &[(2_000, 3_500), (5_700, 6_600)]);
        let agent = leg(12_000, &[(200, 1_800), (4_500, 5_900)]);
        let timeline = vec![
            entry(1_800, TimelineEvent::AgentSaid { turn: 0, text: "Hello.".into(), interrupted: false }),
            entry(4_200, TimelineEvent::CallerTurn { turn: 1, text: "Where is order 456?".into() }),
            entry(
                4_300,
                TimelineEvent::ToolCall {
                    turn: 1,
                    id: "c1".into(),
                    name: "lookup_order".into(),
                    arguments: r#"{"order_id":"456"}"#.into(),
                },
            ),
            entry(
                4_400,
                TimelineEvent::ToolResult {
                    turn: 1,
                    id: "c1".into(),
                    content: "Order 456: shipped, arriving Friday.".into(),
                    is_error: false,
                },
            ),
            entry(5_850, TimelineEvent::BargeIn { turn: 1, reaction_ms: 150.0 }),
            entry(7_300, TimelineEvent::CallerTurn { turn: 2, text: "When will it arrive?".into() }),
        ];
        let lines = cut_lines(&timeline, &speech_stretches(&caller), &speech_stretches(&agent));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!((lines[0].start_ms, lines[0].end_ms, lines[0].interrupt_after_ms), (2_000, 3_500, None));
        assert_eq!((lines[1].start_ms, lines[1].interrupt_after_ms), (5_700, Some(1_200)), "{lines:?}");

        let settings = EvalSettings { first_audio_p95_ms: Some(2_500), ..EvalSettings::default() };
        let exported = scenario_from_call(&metadata(), &timeline, &caller, &agent, &settings).unwrap();
        let parsed: toml::Table = toml::from_str(&exported.toml).unwrap();
        assert_eq!(parsed["expect_greeting"].as_bool(), Some(true));
        assert_eq!(parsed["line"][0]["audio"].as_str(), Some("replay-CA9/line-1.wav"));
        assert_eq!(parsed["line"][1]["interrupt_after_ms"].as_integer(), Some(1_200));
        let tool = &parsed["expect"]["tool_call"][0];
        assert_eq!(tool["name"].as_str(), Some("lookup_order"));
        assert_eq!(tool["arguments"]["order_id"].as_str(), Some("456"));
        assert_eq!(tool["result_contains"][0].as_str(), Some("Order 456: shipped, arriving Friday."));
        assert_eq!(parsed["thresholds"]["first_audio_p95_ms"].as_integer(), Some(2_500));
        // The clip holds the line with its margins, and the scenario loads as `parley eval` reads it.
        let clip = wav::read(&exported.clips[0].1).unwrap();
        assert_eq!(clip.samples.len(), sample_at(1_500 + 2 * MARGIN_MS));
        let dir = tempfile::tempdir().unwrap();
        let path = exported.write(dir.path()).unwrap();
        let scenario = crate::eval::Scenario::load(&path).unwrap();
        assert_eq!(scenario.lines.len(), 2);
        assert_eq!(scenario.expect.tool_call[0].result_contains, vec!["Order 456: shipped, arriving Friday."]);
    }

    #[test]
    fn a_call_without_caller_speech_cannot_be_exported() {
        let silent = leg(3_000, &[]);
        let timeline = vec![entry(1_000, TimelineEvent::CallerTurn { turn: 1, text: "keys".into() })];
        let error = scenario_from_call(&metadata(), &timeline, &silent, &silent, &EvalSettings::default());
        assert!(matches!(error, Err(ExportError::Unusable { .. })));
    }
}
