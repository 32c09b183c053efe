//! `parley demo`: one whole phone call on this machine with no account.
//!
//! Parley starts with local engines — Whisper speech-to-text, eSpeak NG text-to-speech — the demo shop's MCP backend
//! (`demo-backend`, over stdio) and, unless a real model is configured, the scripted dialogue policy in place of an
//! LLM. The simulated caller (`sim-caller` with a dialogue script) phones it over a Twilio Media Stream: it asks
//! about an order, interrupts the answer once, and says goodbye. The call is archived and transcribed offline by
//! Whisper as soon as it ends; the demo then prints the conversation, each turn's latencies and the transcript, and
//! fails when any part of that did not happen.
//!
//! The companion programs are looked up next to the `parley` executable, where `cargo build` puts them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::archive::cli::render_call;
use crate::archive::{read_metadata, read_timeline, Archive, SealedCalls, TimelineEntry, TimelineEvent};
use crate::config::providers::{LlmProvider, SttProvider, TtsProvider};
use crate::config::{read_secret, AgentKind, Config, Secrets};
use crate::engine::turn::TurnStrategy;
use crate::mcp::{McpServerConfig, McpTransportConfig};
use crate::transcribe::after_call::outcome_call;
use crate::transcribe::{AfterCall, CallTranscript, JobOutcome, TRANSCRIPT_FILE};

/// The dialogue `sim-caller` runs when none is given.
const BUILT_IN_DIALOGUE: &str = "order-status";
/// The greeting when the scripted policy answers: it names the demo shop the backend serves.
const DEMO_GREETING: &str = "Thanks for calling the Parley demo shop. How can I help you?";
/// Generous bounds for a call of a few turns and its transcription on a slow machine.
const CALL_TIMEOUT: Duration = Duration::from_secs(180);
const TRANSCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The caller's script (TOML, see tools/sim-caller/dialogues/); the built-in order-status call by default.
    #[arg(long)]
    pub dialogue: Option<PathBuf>,
    /// Archive folder for the call (default: `archive.root` of the configuration).
    #[arg(long)]
    pub archive: Option<PathBuf>,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{name} is not next to parley in {dir}: build the companion programs (`cargo build --release -p parley -p sim-caller -p demo-backend --bins`, as scripts/demo does)")]
    MissingProgram { name: &'static str, dir: PathBuf },
    #[error("cannot locate the parley executable: {0}")]
    NoExecutable(std::io::Error),
    #[error("the simulated caller could not run: {0}")]
    Caller(std::io::Error),
    #[error("the simulated caller reported a failed call (exit status {0})")]
    CallerFailed(std::process::ExitStatus),
    #[error("the call did not finish within {0:?}")]
    CallTimeout(Duration),
    #[error("the call was not transcribed within {0:?}")]
    TranscriptTimeout(Duration),
    #[error("the offline transcription failed: {0}")]
    Transcription(String),
    #[error("reading the archived call: {0}")]
    Read(String),
    #[error("the demo call missed what it should show:\n  {}", .0.join("\n  "))]
    Incomplete(Vec<String>),
}

/// Runs the demo call; errors when the call, the archive or the transcript is not what the demo promises.
pub async fn run(mut config: Config, secrets: Secrets, args: &DemoArgs) -> Result<(), CliError> {
    let programs = Programs::find()?;
    if let Some(root) = &args.archive {
        config.archive.root = root.clone();
    }
    // The demo's call is kept on this machine, to be printed and listened to.
    config.archive.store = crate::archive::StoreKind::Local;
    let backend_db = tempfile_path("parley-demo-shop", "sqlite");
    let scripted = configure(&mut config, &programs.backend, &backend_db);
    println!(
        "parley demo: Whisper STT ({}), eSpeak NG TTS, {}, MCP backend {}",
        config.local.whisper.model_dir().display(),
        if scripted {
            "the scripted dialogue policy (no LLM configured)".to_owned()
        } else {
            format!("LLM {:?}", config.llm.provider)
        },
        programs.backend.display()
    );

    let parts = crate::assembly::assemble(&config, &secrets).await.into_parts()?;
    let backend = crate::transcribe::cli::backend_from_config(&config).await?;
    let after_call = AfterCall::start(crate::transcribe::cli::queue_from_config(&config)?, Some(backend), 1)?;
    let mut transcribed = after_call.outcomes();
    let hook = Arc::clone(&after_call) as Arc<dyn SealedCalls>;
    let archive = Archive::start_with(&config.archive, config.twilio.redact_numbers, Some(hook))?;
    let server = crate::edge::start(config.clone(), secrets, parts.agents, Some(Arc::new(archive))).await?;
    let url = format!("ws://{}/twilio/media", server.local_addr);
    println!("parley demo: answering on {url}; the simulated caller dials in\n");

    let report_file = tempfile_path("parley-demo-caller", "json");
    let call_sid = demo_call_sid();
    let called = place_call(&programs, &url, &call_sid, args.dialogue.as_deref(), &report_file).await;
    // Whatever happened, stop serving (the call is over or abandoned) and let the archive seal it.
    let _ = server.shutdown().await;
    if let Some(bridge) = parts.bridge {
        bridge.shutdown().await;
    }
    let _ = std::fs::remove_file(&backend_db);
    called?;

    let outcome = tokio::time::timeout(TRANSCRIPT_TIMEOUT, async {
        loop {
            let outcome = transcribed.recv().await.map_err(|e| DemoError::Transcription(e.to_string()))?;
            // Calls an earlier run left queued in the same archive are transcribed too: wait for this one's.
            if is_the_call(outcome_call(&outcome), &call_sid) {
                return Ok::<_, DemoError>(outcome);
            }
        }
    })
    .await
    .map_err(|_| DemoError::TranscriptTimeout(TRANSCRIPT_TIMEOUT))??;
    if let JobOutcome::Failed { error, .. } = outcome.as_ref() {
        return Err(DemoError::Transcription(error.clone()).into());
    }
    let call_dir = config.archive.root.join(outcome_call(&outcome));
    let caller_report = std::fs::read_to_string(&report_file).unwrap_or_default();
    let _ = std::fs::remove_file(&report_file);
    print_and_check(&call_dir, &caller_report)
}

/// The companion programs the demo runs.
struct Programs {
    caller: PathBuf,
    backend: PathBuf,
}

impl Programs {
    fn find() -> Result<Programs, DemoError> {
        Ok(Programs { caller: companion_program("sim-caller")?, backend: companion_program("demo-backend")? })
    }
}

/// A program of the workspace, next to the `parley` executable.
fn companion_program(name: &'static str) -> Result<PathBuf, DemoError> {
    let exe = std::env::current_exe().map_err(DemoError::NoExecutable)?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(DemoError::MissingProgram { name, dir })
    }
}

/// The demo's offline Parley (local engines, the scripted policy unless a model is configured, and the demo shop
/// backend unless `[[mcp.servers]]` names one) for other commands (`parley eval --offline`). Returns the demo shop's
/// database file, for the caller to remove.
pub fn configure_offline(config: &mut Config) -> Result<PathBuf, DemoError> {
    let backend_db = tempfile_path("parley-offline-shop", "sqlite");
    if config.mcp.servers.is_empty() {
        configure(config, &companion_program("demo-backend")?, &backend_db);
    } else {
        // The configured backend stays: a replay gates the deploy against the team's own backend.
        let servers = std::mem::take(&mut config.mcp.servers);
        configure(config, Path::new("demo-backend"), &backend_db);
        config.mcp.servers = servers;
    }
    Ok(backend_db)
}

/// How long a turn waits for local Whisper's answer to a finalize (a debug build on a busy machine takes seconds).
const WHISPER_FINALIZE_TIMEOUT_MS: u64 = 15_000;

/// Turns the loaded configuration into the demo's: local engines, the demo backend, a loopback listener, no
/// signatures (there is no Twilio account). Returns whether the scripted policy stands in for the LLM.
fn configure(config: &mut Config, backend: &Path, backend_db: &Path) -> bool {
    config.agent.kind = AgentKind::Cascade;
    config.stt.provider = SttProvider::Whisper;
    config.tts.provider = TtsProvider::Espeak;
    let turn = &mut config.conversation.turn;
    if turn.strategy == TurnStrategy::Stt {
        // Whisper's own end of speech is a fixed silence; the local turn model judges each pause instead (a
        // configured "vad" stays, for comparison).
        turn.strategy = TurnStrategy::Smart;
    }
    // Whisper answers every finalize, after transcribing on the CPU: wait for it rather than end the turn empty.
    turn.finalize_timeout_ms = turn.finalize_timeout_ms.max(WHISPER_FINALIZE_TIMEOUT_MS);
    let scripted = !llm_configured(config);
    if scripted {
        config.llm.provider = LlmProvider::Scripted;
        config.conversation.greeting = DEMO_GREETING.into();
    }
    config.twilio.validate_signatures = false;
    config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.archive.enabled = true;
    let transport = McpTransportConfig::Stdio {
        command: backend.display().to_string(),
        args: vec!["--stdio".into(), "--db".into(), backend_db.display().to_string()],
        env: Default::default(),
        inherit_env: Vec::new(),
        cwd: None,
    };
    config.mcp.servers = vec![McpServerConfig { timeout_ms: 5_000, ..McpServerConfig::new("demo-shop", transport) }];
    scripted
}

/// A real model is configured when its key is available (or, for an OpenAI-compatible server, its address is set:
/// local servers need no key).
fn llm_configured(config: &Config) -> bool {
    match config.llm.provider {
        LlmProvider::Openai => {
            read_secret(&config.llm.openai.api_key_env).is_some() || config.llm.openai.base_url.is_some()
        }
        LlmProvider::Anthropic => read_secret(&config.llm.anthropic.api_key_env).is_some(),
        LlmProvider::Scripted => false,
    }
}

/// Runs the simulated caller to the end of its dialogue; its progress goes to this terminal.
async fn place_call(
    programs: &Programs,
    url: &str,
    call_sid: &str,
    dialogue: Option<&Path>,
    report: &Path,
) -> Result<(), DemoError> {
    let dialogue = dialogue.map(|p| p.display().to_string()).unwrap_or_else(|| BUILT_IN_DIALOGUE.into());
    let mut child = tokio::process::Command::new(&programs.caller)
        .args(["--url", url, "--call-sid", call_sid, "--dialogue", &dialogue, "--report"])
        .arg(report)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(DemoError::Caller)?;
    let status = tokio::time::timeout(CALL_TIMEOUT, child.wait())
        .await
        .map_err(|_| DemoError::CallTimeout(CALL_TIMEOUT))?
        .map_err(DemoError::Caller)?;
    if !status.success() {
        return Err(DemoError::CallerFailed(status));
    }
    Ok(())
}

/// Prints the archived call, its latencies and transcript, and checks the demo showed what it promises: a tool
/// call through MCP, a barge-in, and a Whisper transcript of the caller.
fn print_and_check(call_dir: &Path, caller_report: &str) -> Result<(), CliError> {
    let read = |what: &str, e: &dyn std::fmt::Display| DemoError::Read(format!("{what}: {e}"));
    let metadata = read_metadata(call_dir)?;
    let entries = read_timeline(call_dir)?;
    let transcript: CallTranscript =
        serde_json::from_slice(&std::fs::read(call_dir.join(TRANSCRIPT_FILE)).map_err(|e| read("transcript", &e))?)
            .map_err(|e| read("transcript", &e))?;

    println!("\n── The call, from Parley's archive ({}) ──\n", call_dir.display());
    print!("{}", render_call(&metadata, &entries));
    println!("\n── What the caller heard (end of the caller's speech → first audio of the answer) ──\n");
    print!("{}", caller_latencies(caller_report));
    println!("\n── Offline Whisper transcript ({}) ──\n", transcript.backend);
    for segment in &transcript.caller {
        println!("{:>8.2}s  caller  {}", segment.start, segment.text);
    }
    for segment in &transcript.agent {
        println!("{:>8.2}s  agent   {}", segment.start, segment.text);
    }
    println!("\nhot-path transcript vs Whisper, per caller turn:");
    for turn in &transcript.comparison.turns {
        println!(
            "  [{}] WER {:>5.1}%  live {:?}  whisper {:?}",
            turn.turn,
            turn.wer * 100.0,
            turn.hot_path,
            turn.whisper
        );
    }
    println!("  overall WER {:.1}%", transcript.comparison.overall_wer * 100.0);

    let problems = demo_problems(&entries, &transcript);
    if !problems.is_empty() {
        return Err(DemoError::Incomplete(problems).into());
    }
    // The Opus file once the after-call worker has made it, the μ-law one until then.
    let recording = crate::archive::recording_in(call_dir)
        .map_or_else(|| call_dir.join(crate::archive::OPUS_RECORDING_FILE), |(_, path)| path);
    println!("\nparley demo: done — listen to {}", recording.display());
    Ok(())
}

/// What the demo call should have shown but did not.
fn demo_problems(entries: &[TimelineEntry], transcript: &CallTranscript) -> Vec<String> {
    let mut problems = Vec::new();
    let count = |f: fn(&TimelineEvent) -> bool| entries.iter().filter(|e| f(&e.event)).count();
    if count(|e| matches!(e, TimelineEvent::CallerTurn { .. })) < 2 {
        problems.push("fewer than two caller turns were heard".into());
    }
    if count(|e| matches!(e, TimelineEvent::ToolCall { .. })) == 0 {
        problems.push("no tool was called through MCP".into());
    }
    if count(|e| matches!(e, TimelineEvent::ToolResult { is_error: false, .. })) == 0 {
        problems.push("no tool call succeeded".into());
    }
    if count(|e| matches!(e, TimelineEvent::BargeIn { .. })) == 0 {
        problems.push("the caller's interruption was not detected as a barge-in".into());
    }
    if transcript.caller.iter().all(|s| s.text.trim().is_empty()) {
        problems.push("Whisper heard nothing on the caller's leg".into());
    }
    if transcript.agent.iter().all(|s| s.text.trim().is_empty()) {
        problems.push("Whisper heard nothing on the agent's leg".into());
    }
    problems
}

/// The caller's own measurements (sim-caller's JSON report) as lines.
fn caller_latencies(report: &str) -> String {
    let Ok(report) = serde_json::from_str::<serde_json::Value>(report) else {
        return "  (the caller left no report)\n".into();
    };
    let mut out = String::new();
    if let Some(ms) = report["greeting_after_ms"].as_u64() {
        out.push_str(&format!("  greeting began {ms} ms after the call connected\n"));
    }
    for line in report["lines"].as_array().into_iter().flatten() {
        let said = line["said"].as_str().unwrap_or("");
        let answer = line["answer_after_ms"].as_u64().map_or("no answer".into(), |ms| format!("{ms} ms"));
        out.push_str(&format!("  {answer:>9}  after {said:?}"));
        if let Some(ms) = line["clear_after_ms"].as_u64() {
            out.push_str(&format!("  (interrupted the agent: audio cleared {ms} ms after the caller began)"));
        }
        out.push('\n');
    }
    out
}

/// A path in the temporary folder unique to this process.
/// A CallSid for the demo's call, unique as Twilio's are: the archive folder may hold calls of earlier runs (and
/// their queued transcriptions), and the demo shows its own.
fn demo_call_sid() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("CA{:032x}", nanos ^ (u128::from(std::process::id()) << 96))
}

/// Whether the archived call `call` (its key, `2026/11/29/CA…` or `…/CA…-2` for a CallSid seen twice) is `call_sid`'s.
fn is_the_call(call: &str, call_sid: &str) -> bool {
    let name = Path::new(call).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name == call_sid || name.strip_prefix(call_sid).is_some_and(|rest| rest.starts_with('-'))
}

fn tempfile_path(stem: &str, extension: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{stem}-{}.{extension}", std::process::id()))
}

impl From<DemoError> for CliError {
    fn from(err: DemoError) -> Self {
        CliError::Demo(Box::new(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_finds_its_own_call_among_earlier_ones() {
        let sid = demo_call_sid();
        assert!(sid.starts_with("CA") && sid.len() == 34, "{sid}");
        assert!(is_the_call(&format!("2026/11/29/{sid}"), &sid));
        assert!(is_the_call(&format!("2026/11/29/{sid}-2"), &sid), "a CallSid seen twice gets a suffix");
        assert!(!is_the_call(&format!("2026/11/29/{sid}0"), &sid));
        assert!(!is_the_call("2026/11/29/CA00000000000000000000000000000001", &sid));
    }
}
