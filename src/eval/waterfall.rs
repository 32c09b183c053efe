//! The latency waterfall of one replayed call, as an SVG a person can open in a browser.
//!
//! The top panel is the whole call on one time axis: the caller's lines, the agent's audio as Twilio played it,
//! `clear`s and tool calls. Below, one row per answered line on a latency axis: the stages Parley measured between
//! the end of the caller's speech and the first audio of the answer, stacked in order, and the caller-side figure.

use std::fmt::Write;

use quick_xml::escape::escape;

use super::score::ScenarioScore;

const WIDTH: f64 = 1000.0;
const LABEL: f64 = 170.0;
const RIGHT: f64 = 30.0;
const ROW: f64 = 26.0;
const BAR: f64 = 16.0;

/// Parley's stages in the order they happen, with the colour each is drawn in.
const STAGES: [(&str, &str, &str); 7] = [
    ("speech_end_to_final", "speech-to-text final", "#7aa6d8"),
    ("eot_to_llm_request", "turn → LLM request", "#f2b134"),
    ("llm_first_token", "LLM first token", "#9b7ad8"),
    ("first_token_to_piece", "first phrase", "#c9a0e8"),
    ("piece_to_tts_request", "phrase → TTS", "#f2b134"),
    ("tts_first_audio", "TTS first audio", "#5bb98c"),
    ("tts_audio_to_twilio", "TTS → Twilio", "#f2b134"),
];

/// Renders the call's waterfall.
pub fn render(score: &ScenarioScore) -> String {
    let call_end = call_end_ms(score).max(1) as f64;
    let answered: Vec<_> = score.lines.iter().enumerate().filter(|(_, l)| l.answer_after_ms.is_some()).collect();
    let latency_end = nice_ceiling(
        answered
            .iter()
            .filter_map(|(_, l)| l.answer_after_ms)
            .map(|ms| ms as f64)
            .chain(score.stages.iter().map(|t| stage_sum(&t.stages)))
            .fold(100.0, f64::max),
    );
    let plot = WIDTH - LABEL - RIGHT;
    let call_x = |ms: f64| LABEL + ms / call_end * plot;
    let latency_x = |ms: f64| LABEL + ms / latency_end * plot;
    let timeline_top = 60.0;
    let waterfall_top = timeline_top + 3.0 * ROW + 70.0;
    let height = waterfall_top + (answered.len().max(1) as f64) * ROW + 80.0;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let title = match (score.as_recorded, score.passed) {
        (true, _) => format!("call {}, as recorded", score.call_sid),
        (false, true) => format!("{} — passed (call {})", score.name, score.call_sid),
        (false, false) => format!("{} — FAILED (call {})", score.name, score.call_sid),
    };
    text(&mut svg, 12.0, 22.0, &title, "font-size=\"16\" font-weight=\"bold\"");
    text(&mut svg, 12.0, 42.0, &summary(score), "fill=\"#444\"");

    // The call on one axis.
    axis(&mut svg, timeline_top + 3.0 * ROW + 4.0, call_end, call_x, "s", 1000.0);
    row_label(&mut svg, timeline_top, "caller");
    for line in &score.lines {
        let colour = if line.noise { "#b0b0b0" } else { "#3d7cc9" };
        let end = line.speech_ended_ms.max(line.started_ms + 20);
        bar(&mut svg, call_x(line.started_ms as f64), call_x(end as f64), timeline_top, colour, &line.said);
    }
    row_label(&mut svg, timeline_top + ROW, "agent");
    for span in &score.agent_speech {
        bar(
            &mut svg,
            call_x(span.start_ms as f64),
            call_x(span.end_ms.max(span.start_ms + 20) as f64),
            timeline_top + ROW,
            "#5bb98c",
            &format!("agent audio {}–{} ms", span.start_ms, span.end_ms),
        );
    }
    for &at in &score.clear_at_ms {
        let x = call_x(at as f64);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#d0393e" stroke-width="2"><title>clear at {at} ms</title></line>"##,
            timeline_top - 4.0,
            timeline_top + 2.0 * ROW
        );
    }
    row_label(&mut svg, timeline_top + 2.0 * ROW, "tools");
    for call in &score.tool_calls {
        let x = call_x(call.at_ms as f64);
        let y = timeline_top + 2.0 * ROW + BAR / 2.0;
        let _ = write!(
            svg,
            r##"<path d="M{x:.1},{:.1} l6,8 l-6,8 l-6,-8 z" fill="#e08a2c"><title>{} {} at {} ms</title></path>"##,
            y - 8.0,
            escape(&call.name),
            escape(call.arguments.to_string()),
            call.at_ms
        );
        text(&mut svg, x + 8.0, y + 4.0, &call.name, "fill=\"#444\"");
    }

    // The answers, on a latency axis.
    text(
        &mut svg,
        12.0,
        waterfall_top - 22.0,
        "End of the caller's speech → first audio of the answer (stages as Parley measured them; ◆ as the caller heard it)",
        "font-weight=\"bold\"",
    );
    for (row, (index, line)) in answered.iter().enumerate() {
        let y = waterfall_top + row as f64 * ROW;
        row_label(&mut svg, y, &short(&line.said, 24));
        let mut at = 0.0;
        // A line Parley split into turns was answered by its last one.
        if let Some(turn) = score.stages.iter().rfind(|t| t.line == *index) {
            for (name, label, colour) in STAGES {
                let Some((_, ms)) = turn.stages.iter().find(|(n, _)| n == name) else { continue };
                bar(&mut svg, latency_x(at), latency_x(at + ms), y, colour, &format!("{label}: {ms:.1} ms"));
                at += ms;
            }
        }
        if let Some(ms) = line.answer_after_ms {
            let x = latency_x(ms as f64);
            let _ = write!(
                svg,
                r##"<path d="M{x:.1},{:.1} l5,8 l-5,8 l-5,-8 z" fill="#222"><title>caller heard the answer {ms} ms after speaking</title></path>"##,
                y
            );
            text(&mut svg, x + 8.0, y + 12.0, &format!("{ms} ms"), "");
        }
    }
    let axis_y = waterfall_top + answered.len().max(1) as f64 * ROW + 4.0;
    axis(&mut svg, axis_y, latency_end, latency_x, "ms", 1.0);
    let mut legend_x = LABEL;
    for (_, label, colour) in STAGES.iter().filter(|(_, _, c)| *c != "#f2b134") {
        legend(&mut svg, legend_x, axis_y + 36.0, colour, label);
        legend_x += 150.0;
    }
    legend(&mut svg, legend_x, axis_y + 36.0, "#f2b134", "Parley hand-offs");
    svg.push_str("</svg>\n");
    svg
}

fn summary(score: &ScenarioScore) -> String {
    let ms = |v: Option<u64>| v.map_or("–".into(), |v| format!("{v} ms"));
    if score.as_recorded {
        let reaction = score.parley_barge_in_ms.iter().copied().reduce(f64::max);
        return format!(
            "first audio heard p50 {} · p95 {} · barge-in (speech onset → clear, as Parley measured it) {} · \
             clears not asked for {}",
            ms(score.first_audio_p50_ms),
            ms(score.first_audio_p95_ms),
            reaction.map_or("–".into(), |ms| format!("{ms:.0} ms")),
            score.false_interruptions,
        );
    }
    format!(
        "first audio p50 {} · p95 {} · barge-in {} · false interruptions {} · task {}",
        ms(score.first_audio_p50_ms),
        ms(score.first_audio_p95_ms),
        ms(score.barge_in_max_ms),
        score.false_interruptions,
        if score.task_success { "succeeded" } else { "failed" }
    )
}

fn call_end_ms(score: &ScenarioScore) -> u64 {
    let lines = score.lines.iter().map(|l| l.speech_ended_ms + l.answer_after_ms.unwrap_or(0));
    let audio = score.agent_speech.iter().map(|s| s.end_ms);
    let tools = score.tool_calls.iter().map(|c| c.at_ms);
    lines.chain(audio).chain(tools).chain(score.clear_at_ms.iter().copied()).max().unwrap_or(0) + 200
}

fn stage_sum(stages: &[(String, f64)]) -> f64 {
    STAGES.iter().filter_map(|(name, _, _)| stages.iter().find(|(n, _)| n == name).map(|(_, ms)| *ms)).sum()
}

/// A round axis end: 1, 2 or 5 times a power of ten, at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|v| *v >= value).unwrap_or(value)
}

fn text(svg: &mut String, x: f64, y: f64, content: &str, attributes: &str) {
    let _ = write!(svg, r#"<text x="{x:.1}" y="{y:.1}" {attributes}>{}</text>"#, escape(content));
}

fn row_label(svg: &mut String, y: f64, label: &str) {
    text(svg, 12.0, y + BAR - 3.0, label, "fill=\"#222\"");
}

fn bar(svg: &mut String, x1: f64, x2: f64, y: f64, colour: &str, title: &str) {
    let width = (x2 - x1).max(1.0);
    let _ = write!(
        svg,
        r#"<rect x="{x1:.1}" y="{y:.1}" width="{width:.1}" height="{BAR}" fill="{colour}"><title>{}</title></rect>"#,
        escape(title)
    );
}

fn legend(svg: &mut String, x: f64, y: f64, colour: &str, label: &str) {
    let _ = write!(svg, r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/>"#, y - 9.0);
    text(svg, x + 14.0, y, label, "fill=\"#444\"");
}

/// Ticks along an axis ending at `end` (in ms), labelled in `unit` (`per_unit` ms each).
fn axis(svg: &mut String, y: f64, end: f64, x: impl Fn(f64) -> f64, unit: &str, per_unit: f64) {
    let _ = write!(svg, r##"<line x1="{LABEL}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#888"/>"##, x(end));
    let step = nice_ceiling(end / 8.0);
    let mut tick = 0.0;
    while tick <= end + 0.5 {
        let tx = x(tick);
        let _ = write!(svg, r##"<line x1="{tx:.1}" y1="{y:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#888"/>"##, y + 4.0);
        let value = tick / per_unit;
        let label = if value.fract() == 0.0 { format!("{value:.0} {unit}") } else { format!("{value:.1} {unit}") };
        text(svg, tx - 10.0, y + 16.0, &label, "fill=\"#666\" font-size=\"10\"");
        tick += step;
    }
}

fn short(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(chars).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::dialogue::SpanMs;
    use crate::eval::score::{LineScore, ToolCallSeen, TurnStages};

    fn score() -> ScenarioScore {
        let line = |said: &str, started_ms, answer| LineScore {
            said: said.into(),
            noise: false,
            interrupting: false,
            started_ms,
            speech_ended_ms: started_ms + 1_500,
            answer_after_ms: answer,
            clear_after_ms: None,
            turns: vec![1],
            heard: String::new(),
            reply: String::new(),
        };
        ScenarioScore {
            as_recorded: false,
            name: "order <status> & more".into(),
            passed: true,
            failures: Vec::new(),
            call_sid: "CA1".into(),
            first_audio_ms: vec![640],
            first_audio_p50_ms: Some(640),
            first_audio_p95_ms: Some(640),
            barge_in_ms: Vec::new(),
            barge_in_max_ms: None,
            parley_barge_in_ms: Vec::new(),
            false_interruptions: 0,
            task_success: true,
            checks: Vec::new(),
            lines: vec![line("where is my order", 1_000, Some(640)), line("bye", 5_000, None)],
            tool_calls: vec![ToolCallSeen {
                at_ms: 2_700,
                turn: 1,
                name: "lookup_order".into(),
                arguments: serde_json::json!({"order_id": "456"}),
                is_error: Some(false),
                result: Some("shipped".into()),
            }],
            stages: vec![TurnStages {
                line: 0,
                turn: 1,
                stages: vec![
                    ("speech_end_to_final".into(), 300.0),
                    ("llm_first_token".into(), 200.0),
                    ("tts_first_audio".into(), 120.0),
                ],
            }],
            agent_speech: vec![SpanMs { start_ms: 3_140, end_ms: 4_000 }],
            clear_at_ms: vec![3_900],
            greeting_after_ms: Some(200),
        }
    }

    #[test]
    fn the_waterfall_is_well_formed_svg_with_every_part_of_the_call() {
        let svg = render(&score());
        let mut reader = quick_xml::Reader::from_str(&svg);
        let mut elements = 0;
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(quick_xml::events::Event::Start(_) | quick_xml::events::Event::Empty(_)) => elements += 1,
                Ok(_) => {}
                Err(err) => panic!("not well-formed at {}: {err}\n{svg}", reader.buffer_position()),
            }
        }
        assert!(elements > 20, "{elements}");
        assert!(svg.contains("order &lt;status&gt; &amp; more"), "names are escaped");
        for part in [
            "speech-to-text final: 300.0 ms",
            "LLM first token: 200.0 ms",
            "clear at 3900 ms",
            "lookup_order",
            "640 ms",
        ] {
            assert!(svg.contains(part), "{part} missing");
        }
        assert_eq!(svg.matches("caller heard the answer").count(), 1, "only answered lines get a row");
    }

    #[test]
    fn stages_are_stacked_in_order_on_the_latency_axis() {
        let svg = render(&score());
        let x_of = |title: &str| -> f64 {
            let at = svg.find(title).unwrap();
            let rect = svg[..at].rfind("<rect x=\"").unwrap();
            svg[rect + 9..].split('"').next().unwrap().parse().unwrap()
        };
        let stt = x_of("speech-to-text final");
        let llm = x_of("LLM first token");
        let tts = x_of("TTS first audio");
        assert!((stt - LABEL).abs() < 0.2, "the first stage starts at the end of speech");
        assert!(stt < llm && llm < tts);
        // 300 ms on a 1000 ms axis is 30% of the plot.
        assert!((llm - stt - 0.3 * (WIDTH - LABEL - RIGHT)).abs() < 0.5, "{stt} {llm}");
    }

    #[test]
    fn axis_ends_are_round() {
        assert_eq!(nice_ceiling(640.0), 1000.0);
        assert_eq!(nice_ceiling(1200.0), 2000.0);
        assert_eq!(nice_ceiling(4100.0), 5000.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }
}
