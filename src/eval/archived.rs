//! An archived call measured the way `parley eval` measures a replay, from its recording and timeline alone: when
//! each caller line was spoken, when the agent's answer was heard, the stages Parley logged, the tool calls and the
//! `clear`s. The call viewer draws its waterfall from this.

use super::dialogue::SpanMs;
use super::replay::{cut_lines, speech_stretches, BARGE_IN_SLACK_MS};
use super::score::{percentile, tool_calls, turn_stages, LineScore, ScenarioScore};
use crate::archive::{CallMetadata, TimelineEntry, TimelineEvent};

/// The archived call's measurements; nothing is judged (`passed` is true, there are no checks).
pub fn archived_call_score(
    metadata: &CallMetadata,
    timeline: &[TimelineEntry],
    caller: &[i16],
    agent: &[i16],
) -> ScenarioScore {
    let agent_stretches = speech_stretches(agent);
    let agent_speech: Vec<SpanMs> =
        agent_stretches.iter().map(|&(start_ms, end_ms)| SpanMs { start_ms, end_ms }).collect();
    let clear_at_ms: Vec<u64> =
        timeline.iter().filter(|e| matches!(e.event, TimelineEvent::AgentAudioCleared)).map(|e| e.ms).collect();
    let cut = cut_lines(timeline, &speech_stretches(caller), &agent_stretches);
    let lines: Vec<LineScore> = cut
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let next_start = cut.get(index + 1).map_or(u64::MAX, |next| next.start_ms);
            let answer_after_ms = agent_speech
                .iter()
                .find(|span| span.start_ms >= line.end_ms && span.start_ms < next_start)
                .map(|span| span.start_ms - line.end_ms);
            let interrupting = line.interrupt_after_ms.is_some();
            let clear_after_ms = clear_at_ms
                .iter()
                .find(|&&at| interrupting && at + BARGE_IN_SLACK_MS >= line.start_ms && at <= line.end_ms + 1_000)
                .map(|at| at.saturating_sub(line.start_ms));
            let reply = timeline.iter().find_map(|e| match &e.event {
                TimelineEvent::AgentSaid { turn, text, .. } if *turn == line.turn => Some(text.clone()),
                _ => None,
            });
            LineScore {
                said: line.heard.clone(),
                noise: false,
                interrupting,
                started_ms: line.start_ms,
                speech_ended_ms: line.end_ms,
                answer_after_ms,
                clear_after_ms,
                turns: vec![line.turn],
                heard: line.heard.clone(),
                reply: reply.unwrap_or_default(),
            }
        })
        .collect();
    let mut first_audio_ms: Vec<u64> = lines.iter().filter_map(|l| l.answer_after_ms).collect();
    first_audio_ms.sort_unstable();
    let barge_in_ms: Vec<u64> = lines.iter().filter_map(|l| l.clear_after_ms).collect();
    let parley_barge_in_ms = timeline
        .iter()
        .filter_map(|e| match e.event {
            TimelineEvent::BargeIn { reaction_ms, .. } => Some(reaction_ms),
            _ => None,
        })
        .collect();
    let greeting_after_ms = agent_speech
        .first()
        .filter(|span| lines.first().is_none_or(|line| span.start_ms < line.started_ms))
        .map(|span| span.start_ms);
    ScenarioScore {
        as_recorded: true,
        name: format!("call {}", metadata.call_sid),
        passed: true,
        failures: Vec::new(),
        call_sid: metadata.call_sid.clone(),
        first_audio_p50_ms: percentile(&first_audio_ms, 50.0),
        first_audio_p95_ms: percentile(&first_audio_ms, 95.0),
        barge_in_max_ms: barge_in_ms.iter().copied().max(),
        false_interruptions: clear_at_ms.len().saturating_sub(barge_in_ms.len()) as u64,
        first_audio_ms,
        barge_in_ms,
        parley_barge_in_ms,
        task_success: true,
        checks: Vec::new(),
        stages: turn_stages(&lines, timeline),
        tool_calls: tool_calls(timeline),
        lines,
        agent_speech,
        clear_at_ms,
        greeting_after_ms,
    }
}
