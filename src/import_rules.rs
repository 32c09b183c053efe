//! The layering rule, checked on the source: imports point down the call path. Nothing below the engine imports the
//! engine, the CLI or the evaluator; the engine imports neither the CLI nor the evaluator; and the two inversions
//! that were once upward stay inverted (the audio playout reports to a record, not to the call tap; the local
//! engines' settings do not include the transcription worker's).
//!
//! `scripts/check-imports` runs this test alone; `cargo test` runs it with the rest.

use std::path::{Path, PathBuf};

/// Modules below the engine: what they may not import.
const BELOW_THE_ENGINE: &[&str] = &[
    "archive",
    "audio",
    "call",
    "config",
    "cost",
    "deadline",
    "edge",
    "failover",
    "http_client",
    "llm",
    "local",
    "mcp",
    "settings",
    "stt",
    "telemetry",
    "text",
    "tool_executor",
    "transcribe",
    "tts",
    "turn_model",
    "twilio",
    "wake_gate",
    "websocket",
];

/// Each rule: files of module `from` must not name module `to`.
fn rules() -> Vec<(&'static str, &'static str)> {
    let mut rules = Vec::new();
    for from in BELOW_THE_ENGINE {
        for to in ["engine", "cli", "eval"] {
            rules.push((*from, to));
        }
    }
    rules.extend([("engine", "cli"), ("engine", "eval"), ("audio", "call"), ("local", "transcribe")]);
    rules
}

/// Known exceptions, each with its reason. `config` assembles the whole file's schema, and the `[conversation]`
/// section's type still lives in the engine (it holds the turn detector's settings).
const ALLOWED: &[(&str, &str)] = &[("src/config/mod.rs", "crate::engine::config::ConversationConfig")];

/// One import that breaks a rule.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    text: String,
}

/// The module a source file belongs to: `src/stt/deepgram.rs` → `stt`, `src/failover.rs` → `failover`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

/// The code of a line, without its comment (doc links are not imports).
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

/// Whether `code` names module `to` of this crate: a `crate::to` path, or `to` inside a `use crate::{…}` group.
fn names_module(code: &str, to: &str, in_crate_group: bool) -> bool {
    let path = format!("crate::{to}");
    let named = code.match_indices(&path).any(|(at, _)| {
        let rest = &code[at + path.len()..];
        !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_')
    });
    named
        || (in_crate_group
            && code
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .any(|word| word == to || word.starts_with(&format!("{to}::"))))
}

/// Every violation of the rules in the files under `src`.
fn violations(src: &Path) -> Vec<Violation> {
    let rules = rules();
    let mut found = Vec::new();
    for file in rust_files(src) {
        let Some(module) = module_of(src, &file) else { continue };
        let forbidden: Vec<&str> = rules.iter().filter(|(from, _)| *from == module).map(|(_, to)| *to).collect();
        if forbidden.is_empty() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let shown = file.strip_prefix(src.parent().unwrap_or(src)).unwrap_or(&file).display().to_string();
        let mut in_crate_group = false;
        for (index, line) in text.lines().enumerate() {
            let code = code_of(line);
            if code.contains("crate::{") {
                in_crate_group = true;
            }
            let group_here = in_crate_group;
            if in_crate_group && code.contains("};") {
                in_crate_group = false;
            }
            let breaks = forbidden.iter().any(|to| names_module(code, to, group_here));
            let allowed = ALLOWED.iter().any(|(file, text)| *file == shown && code.contains(text));
            if breaks && !allowed {
                found.push(Violation { file: shown.clone(), line: index + 1, text: line.trim().to_owned() });
            }
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn no_module_imports_upward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    let listed: Vec<String> = found.iter().map(|v| format!("{}:{}: {}", v.file, v.line, v.text)).collect();
    assert!(found.is_empty(), "imports pointing up the call path:\n{}", listed.join("\n"));
}

#[test]
fn the_check_finds_each_kind_of_upward_import() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let src = dir.path().join("src");
    let write = |path: &str, text: &str| {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(&src)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    };
    write("stt/failover.rs", "//! See [`crate::engine::failover`].\nuse crate::engine::failover::Failover;\n");
    write("telemetry/spans.rs", "use crate::{\n    engine::latency::TurnLatency,\n    llm::LlmError,\n};\n");
    write("audio/playout.rs", "fn f(tap: crate::call::tap::CallTap) {}\n");
    write("engine/cascade.rs", "use crate::cli::agents;\nuse crate::llm::LlmError;\n");
    write("llm/openai.rs", "use crate::engineering::Thing;\nuse crate::llm::sse;\n");
    write("cli/mod.rs", "use crate::engine::cascade;\nuse crate::eval::run;\n");
    let found: Vec<(String, usize)> = violations(&src).into_iter().map(|v| (v.file, v.line)).collect();
    assert_eq!(
        found,
        vec![
            ("src/audio/playout.rs".to_owned(), 1),
            ("src/engine/cascade.rs".to_owned(), 1),
            ("src/stt/failover.rs".to_owned(), 2),
            ("src/telemetry/spans.rs".to_owned(), 2),
        ]
    );
}
