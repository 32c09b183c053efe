//! The viewer's HTML, rendered on the server from the archive's records (pure: no I/O here).

use std::fmt::Write as _;

use quick_xml::escape::escape;

use crate::archive::cli::{cost_line, event_line, money, utc_time};
use crate::archive::{CallMetadata, CallStatus, TimelineEntry, TimelineEvent};
use crate::telemetry::redact::phone_number;
use crate::transcribe::CallTranscript;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}\
    td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\
    th{background:#f4f4f4}tr.barge-in td{background:#fde8e8}tr.tool td{background:#eef4fd}\
    .num{text-align:right;white-space:nowrap}.meta{color:#555}h2{margin-top:1.6em}";

/// One row of the calls list.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    /// The call's folder name: its address in the viewer.
    pub name: String,
    pub metadata: CallMetadata,
    /// The slowest answer of the call: end of speech → first audio, as Parley measured it.
    pub worst_first_audio_ms: Option<f64>,
    pub barge_ins: usize,
}

impl CallRow {
    pub fn new(name: String, metadata: CallMetadata, timeline: &[TimelineEntry]) -> CallRow {
        let worst_first_audio_ms = timeline
            .iter()
            .filter_map(|e| match &e.event {
                TimelineEvent::Latency { stages, .. } => {
                    stages.iter().find(|(stage, _)| stage == "speech_end_to_first_audio").map(|(_, ms)| *ms)
                }
                _ => None,
            })
            .reduce(f64::max);
        let barge_ins = timeline.iter().filter(|e| matches!(e.event, TimelineEvent::BargeIn { .. })).count();
        CallRow { name, metadata, worst_first_audio_ms, barge_ins }
    }
}

/// Everything the call page shows.
#[derive(Debug, Clone)]
pub struct CallPage {
    pub name: String,
    pub metadata: CallMetadata,
    pub timeline: Vec<TimelineEntry>,
    /// The per-turn waterfall (SVG), when the recording could be read.
    pub waterfall: Option<String>,
    pub transcript: Option<CallTranscript>,
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style>\
         </head><body>{body}</body></html>",
        escape(title)
    )
}

/// `/calls`: newest first.
pub fn calls_list(rows: &[CallRow], redact_numbers: bool) -> String {
    let mut body = String::from("<h1>Calls</h1>");
    if rows.is_empty() {
        body.push_str("<p>No calls in the archive yet.</p>");
        return page("Parley calls", &body);
    }
    body.push_str(
        "<table id=\"calls\"><thead><tr><th>started (UTC)</th><th>call</th><th>from</th><th>duration</th>\
         <th>turns</th><th>outcome</th><th>worst first audio</th><th>barge-ins</th><th>cost</th></tr></thead><tbody>",
    );
    for row in rows {
        let m = &row.metadata;
        let _ = write!(
            body,
            "<tr><td>{}</td><td><a href=\"/calls/{}\">{}</a></td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            utc_time(m.started_at_ms),
            escape(&row.name),
            escape(&m.call_sid),
            escape(number(m.from.as_deref(), redact_numbers)),
            m.duration_ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_else(|| "-".into()),
            m.turns,
            escape(outcome(m)),
            row.worst_first_audio_ms.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "-".into()),
            row.barge_ins,
            m.cost.as_ref().map(|c| escape(money(c.total, &c.currency)).into_owned()).unwrap_or_else(|| "-".into()),
        );
    }
    body.push_str("</tbody></table>");
    page("Parley calls", &body)
}

/// `/calls/<name>`: the recording, the timeline, the waterfall and the transcripts.
pub fn call_page(call: &CallPage, redact_numbers: bool) -> String {
    let m = &call.metadata;
    let mut body = String::new();
    let _ = write!(body, "<p><a href=\"/calls\">all calls</a></p><h1>Call {}</h1>", escape(&m.call_sid));
    let _ = write!(
        body,
        "<p class=\"meta\">from {} to {}, started {} UTC, {}, {} turn(s), {}</p>",
        escape(number(m.from.as_deref(), redact_numbers)),
        escape(number(m.to.as_deref(), redact_numbers)),
        utc_time(m.started_at_ms),
        m.duration_ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_else(|| "still open".into()),
        m.turns,
        escape(outcome(m)),
    );
    if let Some(cost) = &m.cost {
        let _ = write!(body, "<p id=\"cost\">{}</p>", escape(cost_line(cost)));
    }
    let _ = write!(
        body,
        "<h2>Recording</h2><audio id=\"recording\" controls preload=\"metadata\" src=\"/calls/{}/recording\">\
         </audio><p class=\"meta\">Stereo: the caller on the left, the agent on the right, as the caller heard it.</p>",
        escape(&call.name)
    );
    body.push_str("<h2>Timeline</h2><table id=\"timeline\"><thead><tr><th>at</th><th>what</th></tr></thead><tbody>");
    for entry in &call.timeline {
        let _ = write!(
            body,
            "<tr class=\"{}\"><td class=\"num\">{:.2} s</td><td>{}</td></tr>",
            row_class(&entry.event),
            entry.ms as f64 / 1000.0,
            escape(event_line(&entry.event))
        );
    }
    body.push_str("</tbody></table>");
    body.push_str("<h2>Latency per turn</h2><div id=\"waterfall\">");
    match &call.waterfall {
        Some(svg) => body.push_str(svg),
        None => body.push_str("<p>The recording could not be read.</p>"),
    }
    body.push_str("</div><h2>Transcripts</h2>");
    match &call.transcript {
        Some(transcript) => transcripts(&mut body, transcript),
        None => body.push_str("<p id=\"transcripts\">No offline transcript yet.</p>"),
    }
    page(&format!("Call {}", m.call_sid), &body)
}

fn transcripts(body: &mut String, transcript: &CallTranscript) {
    let comparison = &transcript.comparison;
    let _ = write!(
        body,
        "<p class=\"meta\">Offline transcript by {}; word error rate of the live transcript against it: {:.1} %</p>\
         <table id=\"transcripts\"><thead><tr><th>turn</th><th>live (what the agent heard)</th>\
         <th>offline (Whisper)</th><th>WER</th></tr></thead><tbody>",
        escape(&transcript.backend),
        comparison.overall_wer * 100.0
    );
    for turn in &comparison.turns {
        let _ = write!(
            body,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.1} %</td></tr>",
            turn.turn,
            escape(&turn.hot_path),
            escape(&turn.whisper),
            turn.wer * 100.0
        );
    }
    body.push_str("</tbody></table>");
    if !transcript.agent.is_empty() {
        let said: Vec<&str> = transcript.agent.iter().map(|s| s.text.as_str()).collect();
        let _ = write!(body, "<p class=\"meta\">The agent, as Whisper heard it: {}</p>", escape(said.join(" ")));
    }
}

/// A timeline row's class, for highlighting barge-ins and tool calls.
fn row_class(event: &TimelineEvent) -> &'static str {
    match event {
        TimelineEvent::CallerTurn { .. } => "caller",
        TimelineEvent::AgentSaid { .. } => "agent",
        TimelineEvent::ToolCall { .. } | TimelineEvent::ToolResult { .. } => "tool",
        TimelineEvent::BargeIn { .. } | TimelineEvent::AgentAudioCleared => "barge-in",
        TimelineEvent::Latency { .. } | TimelineEvent::ReplyResumed { .. } => "latency",
        TimelineEvent::ProviderError { .. } => "error",
        TimelineEvent::CallStarted { .. }
        | TimelineEvent::Dtmf { .. }
        | TimelineEvent::CallCost { .. }
        | TimelineEvent::CallEnded { .. } => "",
    }
}

fn number(number: Option<&str>, redact: bool) -> String {
    number.map(|n| phone_number(n, redact)).unwrap_or_else(|| "-".into())
}

fn outcome(metadata: &CallMetadata) -> String {
    match (metadata.status, &metadata.ended_by) {
        (CallStatus::Open, _) => "open".into(),
        (CallStatus::Sealed, Some(reason)) => reason.clone(),
        (CallStatus::Sealed, None) => "sealed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> CallMetadata {
        CallMetadata {
            call_sid: "CA<1>".into(),
            stream_sid: "MZ1".into(),
            from: Some("+15550001111".into()),
            to: None,
            started_at_ms: 1_764_028_800_000,
            ended_at_ms: Some(1_764_028_812_300),
            duration_ms: Some(12_300),
            status: CallStatus::Sealed,
            ended_by: Some("Stopped".into()),
            turns: 1,
            owner: None,
            cost: None,
        }
    }

    #[test]
    fn the_list_escapes_what_it_shows_and_redacts_numbers_when_asked() {
        let timeline = vec![
            TimelineEntry { ms: 900, event: TimelineEvent::BargeIn { turn: 1, reaction_ms: 120.0 } },
            TimelineEntry {
                ms: 1_000,
                event: TimelineEvent::Latency { turn: 1, stages: vec![("speech_end_to_first_audio".into(), 812.4)] },
            },
        ];
        let row = CallRow::new("CA1".into(), metadata(), &timeline);
        assert_eq!((row.worst_first_audio_ms, row.barge_ins), (Some(812.4), 1));
        let html = calls_list(&[row], true);
        assert!(html.contains("CA&lt;1&gt;") && !html.contains("CA<1>"), "{html}");
        assert!(html.contains("+1******1111") && !html.contains("+15550001111"), "{html}");
        assert!(html.contains("812 ms"), "{html}");
        assert!(calls_list(&[CallRow::new("CA1".into(), metadata(), &[])], false).contains("+15550001111"));
    }

    #[test]
    fn the_offline_transcript_stands_beside_the_live_one_with_its_word_error_rate() {
        use crate::transcribe::{Comparison, Segment, TurnComparison};
        let transcript = CallTranscript {
            backend: "whisper tiny.en".into(),
            transcribed_at_ms: 0,
            caller: vec![Segment { start: 0.5, end: 1.5, text: "Book a table for two.".into() }],
            agent: vec![Segment { start: 2.0, end: 3.0, text: "Sure.".into() }],
            comparison: Comparison {
                turns: vec![TurnComparison {
                    turn: 1,
                    hot_path: "Book a table for 2".into(),
                    whisper: "Book a table for two.".into(),
                    wer: 0.2,
                }],
                overall_wer: 0.2,
                unmatched_whisper: Vec::new(),
            },
        };
        let call = CallPage {
            name: "CA1".into(),
            metadata: metadata(),
            timeline: Vec::new(),
            waterfall: None,
            transcript: Some(transcript),
        };
        let html = call_page(&call, false);
        assert!(html.contains("<table id=\"transcripts\">"), "{html}");
        assert!(
            html.contains("<td>Book a table for 2</td><td>Book a table for two.</td><td class=\"num\">20.0 %</td>"),
            "{html}"
        );
        assert!(html.contains("against it: 20.0 %"), "{html}");
    }

    #[test]
    fn the_call_page_has_the_player_the_timeline_and_the_waterfall() {
        let call = CallPage {
            name: "CA1".into(),
            metadata: metadata(),
            timeline: vec![TimelineEntry { ms: 900, event: TimelineEvent::BargeIn { turn: 1, reaction_ms: 120.0 } }],
            waterfall: Some("<svg id=\"w\"></svg>".into()),
            transcript: None,
        };
        let html = call_page(&call, false);
        assert!(html.contains("<audio id=\"recording\"") && html.contains("src=\"/calls/CA1/recording\""));
        assert!(html.contains("<tr class=\"barge-in\">"), "{html}");
        assert!(html.contains("<svg id=\"w\"></svg>"));
        assert!(html.contains("No offline transcript yet."));
    }
}
