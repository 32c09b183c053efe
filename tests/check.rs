//! `parley check` against real configurations and real servers on 127.0.0.1: it builds what `parley serve` would,
//! names every missing key of every provider in use (fallbacks included), reports unreachable MCP servers and OTLP
//! collectors in one plain sentence, and writes nothing but its report to stdout.

use std::path::Path;
use std::process::{Command, Output};

use axum::http::StatusCode;
use axum::routing::any;

/// A variable the provider sections below name for keys that are present.
const SET_KEY: &str = "PARLEY_CHECK_TEST_KEY";

/// Settings every configuration here shares: no Twilio account (signatures off), a public URL, no archive work.
const BASE: &str = "[server]\npublic_url = \"https://voice.example.com\"\n[twilio]\nvalidate_signatures = false\n\
                    [archive]\nenabled = false\n";

/// Runs `parley <command>` with `config` and `env`, and no provider key from this machine's environment.
fn parley(command: &str, config: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("parley.toml");
    std::fs::write(&path, config).expect("config written");
    run(command, &path, env)
}

fn run(command: &str, path: &Path, env: &[(&str, &str)]) -> Output {
    let mut parley = Command::new(env!("CARGO_BIN_EXE_parley"));
    parley.arg(command).env("PARLEY_CONFIG", path).env_remove("RUST_LOG");
    for (name, _) in std::env::vars() {
        if name.starts_with("PARLEY__") || name.starts_with("OTEL_") {
            parley.env_remove(name);
        }
    }
    parley.envs(env.iter().copied()).output().expect("parley runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The cloud providers, and the extra setting each one needs.
const PROVIDERS: [(&str, &str); 7] = [
    ("stt.deepgram", ""),
    ("stt.deepgram_flux", ""),
    ("llm.openai", ""),
    ("llm.anthropic", ""),
    ("tts.cartesia", "voice_id = \"v\"\n"),
    ("tts.elevenlabs", "voice_id = \"v\"\n"),
    ("tts.openai_speech", ""),
];

/// The variable `section` reads its key from when its key is the one left unset.
fn unset_variable(section: &str) -> String {
    format!("UNSET_{}_KEY", section.replace('.', "_").to_ascii_uppercase())
}

/// A cascade using every cloud provider, as a stage's provider or as its fallback; every key is in `SET_KEY`
/// except the one of `unset`, if any.
fn every_provider(unset: Option<&str>) -> String {
    let mut config = format!(
        "{BASE}[agent]\nkind = \"cascade\"\n\
         [stt]\nprovider = \"deepgram\"\nfallback = [\"deepgram_flux\"]\n\
         [llm]\nprovider = \"openai\"\nfallback = [\"anthropic\"]\n\
         [tts]\nprovider = \"cartesia\"\nfallback = [\"elevenlabs\", \"openai_speech\"]\n"
    );
    for (section, extra) in PROVIDERS {
        let variable = if unset == Some(section) { unset_variable(section) } else { SET_KEY.to_owned() };
        config.push_str(&format!("[{section}]\napi_key_env = \"{variable}\"\n{extra}"));
    }
    config
}

#[test]
fn every_provider_in_use_is_checked_for_its_key_fallbacks_included() {
    // Every key present: `serve` would start.
    let present = parley("check", &every_provider(None), &[(SET_KEY, "k")]);
    assert!(present.status.success(), "{}\n{}", stdout(&present), String::from_utf8_lossy(&present.stderr));
    assert!(stdout(&present).contains("`parley serve` would start"), "{}", stdout(&present));
    for (section, _) in PROVIDERS {
        let variable = unset_variable(section);
        let missing = parley("check", &every_provider(Some(section)), &[(SET_KEY, "k")]);
        let report = stdout(&missing);
        assert!(!missing.status.success(), "{section}: check passed without {variable}:\n{report}");
        assert!(report.contains(&format!("error: {variable} is not set: [{section}] needs an API key")), "{report}");
        assert_eq!(report.matches("error: ").count(), 1, "only the missing key:\n{report}");
        assert!(report.contains("would not start"), "{report}");
    }
}

#[test]
fn fallbacks_keys_and_voices_are_all_named_at_once() {
    let config = format!(
        "{BASE}[agent]\nkind = \"cascade\"\n\
         [stt]\nprovider = \"deepgram\"\nfallback = [\"deepgram_flux\"]\n\
         [stt.deepgram]\napi_key_env = \"UNSET_A\"\n[stt.deepgram_flux]\napi_key_env = \"UNSET_B\"\n\
         [llm]\nprovider = \"anthropic\"\nfallback = [\"openai\"]\n\
         [llm.anthropic]\napi_key_env = \"UNSET_C\"\n[llm.openai]\napi_key_env = \"UNSET_D\"\n\
         [tts]\nprovider = \"elevenlabs\"\nfallback = [\"openai_speech\", \"cartesia\"]\n\
         [tts.elevenlabs]\napi_key_env = \"UNSET_E\"\n[tts.openai_speech]\napi_key_env = \"UNSET_F\"\n\
         [tts.cartesia]\napi_key_env = \"UNSET_G\"\nvoice_id = \"\"\n"
    );
    let output = parley("check", &config, &[]);
    let report = stdout(&output);
    assert!(!output.status.success());
    for name in ["UNSET_A", "UNSET_B", "UNSET_C", "UNSET_D", "UNSET_E", "UNSET_F", "UNSET_G"] {
        assert!(report.contains(&format!("error: {name} is not set")), "{name} not named:\n{report}");
    }
    assert!(report.contains("error: tts.elevenlabs.voice_id is not set"), "{report}");
    assert!(report.contains("error: tts.cartesia.voice_id is not set"), "{report}");
    assert!(report.contains("(used as tts.fallback)"), "the role of each provider is named:\n{report}");

    // `serve` refuses the same configuration, naming the same keys.
    let served = parley("serve", &config, &[]);
    assert!(!served.status.success());
    let stderr = String::from_utf8_lossy(&served.stderr);
    assert!(stderr.contains("UNSET_C is not set"), "{stderr}");
    assert!(!stdout(&served).contains("listening"), "{}", stdout(&served));
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn mcp_config(url: &str, extra: &str) -> String {
    format!(
        "{BASE}[mcp]\n{extra}[[mcp.servers]]\nname = \"shop\"\ntransport = {{ type = \"http\", url = \"{url}\" }}\n"
    )
}

/// Checks `config`, whose one MCP server is unreachable: exit 0 (serve would start), the server's line ends with
/// `sentence`, and stdout holds the report's lines only.
fn assert_unreachable_reported(config: &str, sentence: &str) {
    let output = parley("check", config, &[]);
    let report = stdout(&output);
    assert!(output.status.success(), "serve starts without an unreachable server:\n{report}");
    let line = report.lines().find(|l| l.starts_with("mcp server shop")).expect("the server's line");
    assert!(line.ends_with(&format!("UNREACHABLE: {sentence}")), "{line}");
    for line in report.lines() {
        let ours = line.starts_with("warning: ")
            || line.starts_with("mcp server ")
            || line.starts_with("configuration is valid");
        assert!(ours, "not part of the report: {line:?}\n{report}");
        for noise in ["rmcp", "Transport", "::", "Error", "INFO", "ERROR"] {
            assert!(!line.contains(noise), "{noise} on stdout: {line:?}");
        }
    }
    assert!(report.contains("1 MCP server(s) unreachable"), "{report}");
    assert!(!report.contains("listening"), "check listens on nothing:\n{report}");
}

#[test]
fn a_refused_mcp_connection_is_one_plain_sentence() {
    let url = format!("http://127.0.0.1:{}/mcp", closed_port());
    assert_unreachable_reported(&mcp_config(&url, ""), &format!("connection refused at {url}"));
}

/// Serves `app` on 127.0.0.1 on a thread of its own; returns the MCP URL.
fn serve(app: axum::Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("address sent");
            axum::serve(listener, app).await.expect("serves");
        });
    });
    format!("http://{}/mcp", rx.recv().expect("address"))
}

#[test]
fn an_mcp_server_answering_401_is_named_with_its_status() {
    let url = serve(axum::Router::new().route("/mcp", any(|| async { (StatusCode::UNAUTHORIZED, "no token") })));
    assert_unreachable_reported(&mcp_config(&url, ""), &format!("HTTP 401 from {url}"));
}

#[test]
fn an_mcp_server_that_never_answers_times_out_in_plain_words() {
    let url = serve(axum::Router::new().route(
        "/mcp",
        any(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            "too late"
        }),
    ));
    let config = mcp_config(&url, "connect_timeout_ms = 1000\n");
    assert_unreachable_reported(&config, &format!("no answer to initialize within 1 s from {url}"));
}

#[test]
fn an_unreachable_otlp_collector_is_a_warning_naming_the_url() {
    let base = format!("http://127.0.0.1:{}", closed_port());
    let config = format!("{BASE}[telemetry]\ntraces = true\nprotocol = \"http/protobuf\"\nendpoint = \"{base}\"\n");
    let output = parley("check", &config, &[]);
    let report = stdout(&output);
    assert!(output.status.success(), "serve starts without its collector:\n{report}");
    assert!(
        report.contains(&format!("warning: OTLP traces are not exported: connection refused at {base}/v1/traces")),
        "{report}"
    );

    let collector = serve(axum::Router::new().route("/v1/traces", any(|| async { StatusCode::UNAUTHORIZED })));
    let base = collector.trim_end_matches("/mcp");
    let config = format!("{BASE}[telemetry]\ntraces = true\nprotocol = \"http/protobuf\"\nendpoint = \"{base}\"\n");
    let report = stdout(&parley("check", &config, &[]));
    assert!(report.contains(&format!("HTTP 401 from {base}/v1/traces")), "{report}");
}
