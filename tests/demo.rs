//! `parley demo` end to end: the real binary places a whole offline call (Whisper, eSpeak NG, the demo MCP backend,
//! the scripted dialogue policy, the simulated caller), archives it and transcribes it. Needs the `whisper` feature,
//! `espeak-ng` and the Whisper model (scripts/setup installs both).
#![cfg(feature = "whisper")]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use parley::archive::{read_timeline, TimelineEvent};
use parley::transcribe::{CallTranscript, TRANSCRIPT_FILE};

fn call_dirs(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.join("metadata.json").is_file() {
                found.push(path);
            } else if path.is_dir() && !entry.file_name().to_string_lossy().starts_with('.') {
                stack.push(path);
            }
        }
    }
    found
}

/// One whole offline call at a time: each runs Whisper and the turn model on the CPU, and calls that share two cores
/// with each other answer late enough to change what the turn-taking tests measure.
static ONE_CALL_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_call_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_CALL_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `parley` binary with no real model configured, whatever the machine's environment holds.
fn offline_parley() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
    command.env_remove("OPENAI_API_KEY").env_remove("ANTHROPIC_API_KEY").env_remove("PARLEY_CONFIG");
    command
}

/// `parley eval --offline` of one scenario, with one more environment variable when given: its exit code, its report
/// (every run must write one) and what it printed.
fn eval_offline(scenario: &Path, env: Option<(&str, &OsStr)>) -> (Option<i32>, serde_json::Value, String) {
    let out = tempfile::tempdir().unwrap();
    let mut command = offline_parley();
    if let Some((name, value)) = env {
        command.env(name, value);
    }
    let output = command.args(["eval", "--offline", "--out"]).arg(out.path()).arg(scenario).output().unwrap();
    let printed = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let report =
        std::fs::read(out.path().join("report.json")).unwrap_or_else(|e| panic!("no report ({e}):\n{printed}"));
    let report = serde_json::from_slice(&report).unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{printed}"));
    (output.status.code(), report, printed)
}

#[test]
fn the_demo_places_a_whole_offline_call_and_leaves_it_transcribed() {
    let _alone = one_call_at_a_time();
    let archive = tempfile::tempdir().unwrap();
    let output = offline_parley().args(["demo", "--archive"]).arg(archive.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("scripted dialogue policy"), "the stand-in for the LLM is named:\n{stdout}");

    let calls = call_dirs(archive.path());
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    // The after-call worker made the Opus recording from the μ-law one and deleted that.
    assert!(call.join("recording.opus").metadata().unwrap().len() > 10_000);
    assert!(!call.join("recording.wav").exists());
    assert!(stdout.contains(&format!("listen to {}", call.join("recording.opus").display())), "{stdout}");

    let timeline = read_timeline(call).unwrap();
    let lookup = timeline.iter().find_map(|e| match &e.event {
        TimelineEvent::ToolCall { name, arguments, .. } => Some((name.clone(), arguments.clone())),
        _ => None,
    });
    let (name, arguments) = lookup.expect("the order was looked up through MCP");
    assert_eq!(name, "lookup_order");
    assert!(arguments.to_string().contains("456"), "{arguments}");
    assert!(
        timeline.iter().any(|e| matches!(&e.event, TimelineEvent::ToolResult { content, is_error: false, .. }
            if content.contains("shipped"))),
        "the backend's answer is in the timeline"
    );
    let barge_ins = timeline.iter().filter(|e| matches!(e.event, TimelineEvent::BargeIn { .. })).count();
    assert_eq!(barge_ins, 1, "the caller interrupts exactly once");
    let interrupted = timeline.iter().any(|e| matches!(e.event, TimelineEvent::AgentSaid { interrupted: true, .. }));
    assert!(interrupted, "the cut-off answer is marked as interrupted");

    // Whisper's transcript of the caller's leg holds what the caller said (keywords, never exact text).
    let transcript: CallTranscript =
        serde_json::from_slice(&std::fs::read(call.join(TRANSCRIPT_FILE)).unwrap()).unwrap();
    let caller = transcript.caller.iter().map(|s| s.text.to_lowercase()).collect::<Vec<_>>().join(" ");
    for keyword in ["order", "arrive", "goodbye"] {
        assert!(caller.contains(keyword), "{keyword:?} not in {caller:?}");
    }
    assert!(transcript.comparison.turns.len() >= 3, "{:?}", transcript.comparison);
    assert!(stdout.contains("hot-path transcript vs Whisper"), "{stdout}");

    replaying_the_call_gates_on_what_happened(call);
}

/// The demo's archived call, exported (`parley export`) and replayed (`parley eval --offline`): it passes against the
/// same backend, and fails on the tool expectation against a backend whose answer for the order changed.
fn replaying_the_call_gates_on_what_happened(call: &Path) {
    let replays = tempfile::tempdir().unwrap();
    let export = offline_parley().arg("export").arg(call).arg("--to").arg(replays.path()).output().unwrap();
    let listed = String::from_utf8_lossy(&export.stdout).into_owned();
    assert!(export.status.success(), "export failed:\n{listed}\n{}", String::from_utf8_lossy(&export.stderr));
    let scenario = PathBuf::from(listed.lines().next().unwrap_or_default().trim());
    let text = std::fs::read_to_string(&scenario).unwrap();
    assert!(text.contains("interrupt_after_ms"), "the barge-in is replayed at its offset:\n{text}");
    assert!(text.contains("lookup_order") && text.contains("shipped"), "the tool call and its answer:\n{text}");

    let (code, report, printed) = eval_offline(&scenario, None);
    assert_eq!(code, Some(0), "the replay fails against the same backend:\n{printed}");
    assert_eq!(report["scenarios"][0]["passed"], true, "{printed}");

    // The shop's order system moved the order on: the backend now answers differently.
    let shop = tempfile::tempdir().unwrap();
    let db = shop.path().join("shop.db");
    let store = demo_backend::Store::open(&db).unwrap();
    assert!(store.update_order("456", "delayed", Some("next Wednesday")).unwrap());
    drop(store);
    let backend = Path::new(env!("CARGO_BIN_EXE_parley")).with_file_name("demo-backend");
    let config = shop.path().join("parley.toml");
    let backend_toml = format!(
        "[[mcp.servers]]\nname = \"demo-shop\"\ntimeout_ms = 5000\n[mcp.servers.transport]\ntype = \"stdio\"\n\
         command = {:?}\nargs = [\"--stdio\", \"--db\", {:?}]\n",
        backend.display().to_string(),
        db.display().to_string()
    );
    std::fs::write(&config, backend_toml).unwrap();
    let (code, report, printed) = eval_offline(&scenario, Some(("PARLEY_CONFIG", config.as_os_str())));
    assert_eq!(code, Some(1), "the replay passes although the backend's answer changed:\n{printed}");
    let checks = report["scenarios"][0]["checks"].as_array().cloned().unwrap_or_default();
    let failed: Vec<&serde_json::Value> = checks.iter().filter(|c| c["passed"] == false).collect();
    assert!(
        failed.iter().any(|c| c["what"].as_str().unwrap_or("").contains("lookup_order")
            && c["detail"].as_str().unwrap_or("").contains("delayed")),
        "the tool expectation fails, showing the new answer: {failed:?}\n{printed}"
    );
}

/// `parley eval --offline`: the order-status scenario's recorded caller lines through the offline Parley (Whisper,
/// eSpeak NG, the demo shop backend over stdio, the scripted policy), scored against its scenario file.
#[test]
fn the_offline_scenario_passes_its_gate() {
    let _alone = one_call_at_a_time();
    let out = tempfile::tempdir().unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/offline/order-status.toml");
    let output = offline_parley().args(["eval", "--offline", "--out"]).arg(out.path()).arg(&scenario).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "eval failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    let scenario = &report["scenarios"][0];
    assert_eq!(scenario["first_audio_ms"].as_array().unwrap().len(), 3, "{stdout}");
    assert_eq!(scenario["barge_in_ms"].as_array().unwrap().len(), 1, "{stdout}");
    assert_eq!(scenario["false_interruptions"], 0);
    assert!(scenario["tool_calls"][0]["arguments"].to_string().contains("456"), "{stdout}");
    assert!(out.path().join("offline-order-status.svg").is_file());
}

/// The caller pauses 800 ms before the order number ("my order number is, um … four five six"). With the offline
/// default, the `smart` turn strategy, the local turn model hears an unfinished sentence and Parley waits for the
/// number: one caller turn, the order looked up. With a 500 ms silence timeout (`vad`) Parley ends the caller's turn
/// at the pause: the agent answers the first half while the caller says the number, which comes as a second turn
/// (the agent may still look the order up from it, but the line was cut in two and the agent talked over the caller).
#[test]
fn a_pause_before_the_number_is_waited_for_by_the_turn_model_and_cut_by_a_silence_timeout() {
    let _alone = one_call_at_a_time();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/offline/pause-in-number.toml");
    let (code, report, printed) = eval_offline(&scenario, None);
    let smart = &report["scenarios"][0];
    assert_eq!(code, Some(0), "the smart strategy failed the scenario:\n{printed}");
    assert_eq!(smart["lines"][0]["turns"].as_array().map(Vec::len), Some(1), "{printed}");
    assert!(smart["tool_calls"][0]["arguments"].to_string().contains("456"), "{printed}");
    let vad = Some(("PARLEY__CONVERSATION__TURN__STRATEGY", OsStr::new("vad")));
    let (code, report, printed) = eval_offline(&scenario, vad);
    let vad = &report["scenarios"][0];
    assert_eq!(code, Some(1), "a 500 ms silence timeout should answer before the number:\n{printed}");
    let turns = vad["lines"][0]["turns"].as_array().map_or(0, Vec::len);
    assert!(turns >= 2, "the 500 ms silence timeout should end the turn at the pause: {turns} turn(s)\n{printed}");
}
