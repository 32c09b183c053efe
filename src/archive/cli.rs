//! `parley archive list` and `parley archive show`: the archive, readable in a terminal.

use std::fmt::Write as _;
use std::path::Path;

use clap::Subcommand;

use super::store::civil_from_days;
use super::{list_calls, read_metadata, read_timeline, ArchiveConfig, ArchiveError, ArchiveStore, CallMetadata};
use super::{CallKey, CallStatus, StoreKind, TimelineEntry, TimelineEvent};

#[derive(Debug, Clone, Subcommand)]
pub enum ArchiveCommand {
    /// Recent calls: start, call SID, duration, turns, status.
    List {
        /// How many calls to show, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One call's conversation as a timeline: what the caller and the agent said, tools, barge-ins, latencies.
    Show {
        /// A call SID, or the path of a call's folder.
        call: String,
    },
    /// Serve the read-only call viewer over the archive (the token from `viewer.token_env` opens it).
    Serve {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
    },
}

/// Runs an archive subcommand against the configured archive (local folder or bucket), printing to stdout.
/// `serve` is carried out by the binary, which has the viewer; here it is refused.
pub fn run(config: &ArchiveConfig, command: &ArchiveCommand) -> Result<(), ArchiveError> {
    let no_local_archive = config.store == StoreKind::Local && !config.root.exists();
    match command {
        ArchiveCommand::Serve { .. } => {
            Err(ArchiveError::Elsewhere("`parley archive serve` runs in the parley binary"))
        }
        ArchiveCommand::List { .. } if no_local_archive => {
            println!("no archive at {}", config.root.display());
            Ok(())
        }
        ArchiveCommand::Show { call } if no_local_archive || Path::new(call).join(super::METADATA_FILE).is_file() => {
            show_folder(Path::new(call))
        }
        ArchiveCommand::List { limit } => {
            print!("{}", list(config.open_store()?.as_ref(), *limit)?);
            Ok(())
        }
        ArchiveCommand::Show { call } => {
            let store = config.open_store()?;
            let key = find_call(store.as_ref(), call)?;
            let metadata = super::meta::read(store.as_ref(), &key)?;
            let entries = super::timeline::read_from(store.as_ref(), &key)?;
            print!("{}", render_call(&metadata, &entries));
            println!("\n{}", recording_line(super::call_recording_form(store.as_ref(), &key)?));
            Ok(())
        }
    }
}

/// `parley archive show <folder>`: a call's folder on disk, wherever it is.
fn show_folder(dir: &Path) -> Result<(), ArchiveError> {
    if !dir.join(super::METADATA_FILE).is_file() {
        return Err(ArchiveError::NotFound(dir.display().to_string()));
    }
    print!("{}", render_call(&read_metadata(dir)?, &read_timeline(dir)?));
    println!("\n{}", recording_line(super::recording_in(dir).map(|(form, _)| form)));
    Ok(())
}

/// Which recording the call has: the μ-law one until the after-call worker has made the Opus one.
pub fn recording_line(form: Option<super::RecordingForm>) -> String {
    match form {
        Some(form @ super::RecordingForm::Mulaw) => {
            format!("recording: {} (G.711 μ-law as on the wire; the Opus copy is not made yet)", form.file_name())
        }
        Some(form @ super::RecordingForm::Opus) => format!("recording: {} (Ogg Opus)", form.file_name()),
        None => "recording: none".into(),
    }
}

/// The table `parley archive list` prints.
pub fn list(store: &dyn ArchiveStore, limit: usize) -> Result<String, ArchiveError> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20}  {:<36}  {:>9}  {:>5}  {:>12}  STATUS",
        "STARTED (UTC)", "CALL SID", "DURATION", "TURNS", "COST"
    );
    for (_, call) in list_calls(store)?.into_iter().take(limit) {
        let _ = writeln!(
            out,
            "{:<20}  {:<36}  {:>9}  {:>5}  {:>12}  {}",
            utc_time(call.started_at_ms),
            call.call_sid,
            call.duration_ms.map(duration).unwrap_or_else(|| "-".into()),
            call.turns,
            call.cost.as_ref().map(|cost| money(cost.total, &cost.currency)).unwrap_or_else(|| "-".into()),
            status(&call),
        );
    }
    Ok(out)
}

/// A call from its SID (the newest call with it), folder name or key (`2026/11/25/CA…`).
pub fn find_call(store: &dyn ArchiveStore, call: &str) -> Result<CallKey, ArchiveError> {
    list_calls(store)?
        .into_iter()
        .find(|(key, metadata)| metadata.call_sid == call || key.name == call || key.to_string() == call)
        .map(|(key, _)| key)
        .ok_or_else(|| ArchiveError::NotFound(call.to_owned()))
}

/// The conversation `parley archive show` prints.
pub fn render_call(metadata: &CallMetadata, entries: &[TimelineEntry]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "call {} (stream {})", metadata.call_sid, metadata.stream_sid);
    let _ = writeln!(
        out,
        "from {} to {}, started {} UTC, {}, {} turn(s), {}",
        metadata.from.as_deref().unwrap_or("-"),
        metadata.to.as_deref().unwrap_or("-"),
        utc_time(metadata.started_at_ms),
        metadata.duration_ms.map(duration).unwrap_or_else(|| "still open".into()),
        metadata.turns,
        status(metadata),
    );
    if let Some(cost) = &metadata.cost {
        let _ = writeln!(out, "{}", cost_line(cost));
    }
    out.push('\n');
    for entry in entries {
        let at = format!("{:>8.2}s", entry.ms as f64 / 1000.0);
        let line = event_line(&entry.event);
        let _ = writeln!(out, "{at}  {line}");
    }
    out
}

/// A call's cost by stage, with what each stage used.
pub fn cost_line(cost: &crate::cost::CallCost) -> String {
    let usage = &cost.usage;
    let (input, cached, output) = usage
        .llm
        .iter()
        .fold((0, 0, 0), |(i, c, o), m| (i + m.input_tokens, c + m.cached_input_tokens, o + m.output_tokens));
    format!(
        "cost {}{}: speech-to-text {} ({:.0} s), model {} ({input} tokens in, {cached} cached, {output} out), \
         text-to-speech {} ({} characters), phone line {} ({:.0} s)",
        money(cost.total, &cost.currency),
        if cost.priced { "" } else { " (some stages have no price)" },
        money(cost.stt, &cost.currency),
        usage.stt_seconds,
        money(cost.llm, &cost.currency),
        money(cost.tts, &cost.currency),
        usage.tts_characters,
        money(cost.twilio, &cost.currency),
        usage.call_seconds,
    )
}

/// An amount with four decimals (calls cost fractions of a cent) and its currency.
pub fn money(amount: f64, currency: &str) -> String {
    format!("{amount:.4} {currency}").trim_end().to_owned()
}

/// One timeline event in words, as `parley archive show` and the call viewer print it.
pub fn event_line(event: &TimelineEvent) -> String {
    match event {
        TimelineEvent::CallStarted { .. } => "call started".to_owned(),
        TimelineEvent::CallerTurn { turn, text } => format!("caller  [{turn}] {text}"),
        TimelineEvent::AgentSaid { turn, text, interrupted } => {
            format!("agent   [{turn}] {text}{}", if *interrupted { "  (interrupted)" } else { "" })
        }
        TimelineEvent::ToolCall { turn, name, arguments, .. } => format!("tool    [{turn}] {name}({arguments})"),
        TimelineEvent::ToolResult { turn, content, is_error, .. } => {
            format!("result  [{turn}] {}{content}", if *is_error { "error: " } else { "" })
        }
        TimelineEvent::BargeIn { turn, reaction_ms } => {
            format!("barge-in [{turn}] the caller interrupted; agent stopped within {reaction_ms:.0} ms")
        }
        TimelineEvent::ReplyResumed { turn, paused_ms, backed_up_ms } => format!(
            "resumed [{turn}] no words followed: the agent went on after {paused_ms:.0} ms, from {backed_up_ms:.0} ms back"
        ),
        TimelineEvent::Latency { turn, stages } => {
            let stages: Vec<String> = stages.iter().map(|(stage, ms)| format!("{stage} {ms:.0} ms")).collect();
            format!("latency [{turn}] {}", stages.join(", "))
        }
        TimelineEvent::ProviderError { stage, provider, error } => format!("error   {stage} ({provider}): {error}"),
        TimelineEvent::Dtmf { digit } => format!("key     {digit}"),
        TimelineEvent::AgentAudioCleared => "agent audio cleared".to_owned(),
        TimelineEvent::CallCost { cost } => cost_line(cost),
        TimelineEvent::CallEnded { reason } => format!("call ended ({reason})"),
    }
}

fn status(metadata: &CallMetadata) -> String {
    match (metadata.status, &metadata.ended_by) {
        (CallStatus::Open, _) => "open".into(),
        (CallStatus::Sealed, Some(reason)) => format!("sealed ({reason})"),
        (CallStatus::Sealed, None) => "sealed".into(),
    }
}

fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}.{}s", secs, (ms % 1000) / 100)
    }
}

/// A wall-clock time, UTC, to the second.
pub fn utc_time(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let time = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", time / 3600, time % 3600 / 60, time % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::tap::ConversationEvent;

    #[test]
    fn the_timeline_reads_as_a_conversation() {
        let metadata = CallMetadata {
            call_sid: "CA1".into(),
            stream_sid: "MZ1".into(),
            from: Some("+1******1111".into()),
            to: None,
            started_at_ms: 1_764_028_800_000,
            ended_at_ms: Some(1_764_028_812_300),
            duration_ms: Some(12_300),
            status: CallStatus::Sealed,
            ended_by: Some("Stopped".into()),
            turns: 1,
            owner: None,
            cost: Some(crate::cost::CallCost {
                currency: "USD".into(),
                llm: 0.0012,
                twilio: 0.0085,
                total: 0.0097,
                priced: true,
                ..crate::cost::CallCost::default()
            }),
        };
        let entry = |ms, event: ConversationEvent| TimelineEntry { ms, event };
        let entries = vec![
            entry(1_200, ConversationEvent::CallerTurn { turn: 1, text: "where is my order".into() }),
            entry(
                1_500,
                ConversationEvent::ToolCall {
                    turn: 1,
                    id: "c1".into(),
                    name: "find_order".into(),
                    arguments: "{}".into(),
                },
            ),
            entry(2_000, ConversationEvent::AgentSaid { turn: 1, text: "It ships".into(), interrupted: true }),
            entry(2_100, ConversationEvent::BargeIn { turn: 1, reaction_ms: 140.0 }),
            entry(
                2_100,
                ConversationEvent::Latency { turn: 1, stages: vec![("stt".into(), 80.0), ("llm".into(), 310.0)] },
            ),
        ];
        let text = render_call(&metadata, &entries);
        assert!(text.contains("cost 0.0097 USD: speech-to-text 0.0000 USD"), "{text}");
        assert!(text.contains("model 0.0012 USD") && text.contains("phone line 0.0085 USD"), "{text}");
        assert!(text.contains("started 2025-11-25 00:00:00 UTC, 12.3s, 1 turn(s), sealed (Stopped)"), "{text}");
        assert!(text.contains("    1.20s  caller  [1] where is my order"), "{text}");
        assert!(text.contains("tool    [1] find_order({})"), "{text}");
        assert!(text.contains("agent   [1] It ships  (interrupted)"), "{text}");
        assert!(text.contains("within 140 ms"), "{text}");
        assert!(text.contains("latency [1] stt 80 ms, llm 310 ms"), "{text}");
    }
}
