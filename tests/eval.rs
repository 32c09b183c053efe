//! `parley eval` against fake providers: the scenario's recorded caller lines go through a real Parley (fake
//! Deepgram, OpenAI-compatible and Cartesia servers on 127.0.0.1, the demo shop's MCP backend over Streamable HTTP),
//! the call is read back from the archive and scored; a scenario that misses a threshold fails the run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use demo_backend::{DemoBackend, Hooks, Store};
use fake_providers::cartesia::{FakeCartesia, FakeCartesiaOptions};
use fake_providers::deepgram::{FakeDeepgram, FakeDeepgramOptions, Script};
use fake_providers::openai::{self, FakeOpenAi, FakeOpenAiOptions, FakeReply};
use parley::cli::CliAssembly;
use parley::config::{Config, Secret, Secrets};
use parley::eval::{EvalArgs, EvalReport};
use tokio_util::sync::CancellationToken;

const KEY_ENV: &str = "PARLEY_EVAL_TEST_KEY";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fakes and the demo shop, alive for the test.
struct Providers {
    deepgram: FakeDeepgram,
    openai: FakeOpenAi,
    cartesia: FakeCartesia,
    mcp_url: String,
    stop_backend: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Providers {
    fn drop(&mut self) {
        self.stop_backend.cancel();
    }
}

async fn providers() -> Providers {
    let script = Script::from_file(repo().join("proto-fixtures/deepgram/script_order_status.json")).unwrap();
    // A cough is too short for a recogniser to hear words in.
    let deepgram = FakeDeepgram::start(FakeDeepgramOptions {
        script,
        min_utterance: Duration::from_millis(300),
        ..FakeDeepgramOptions::default()
    })
    .await
    .unwrap();
    let llm = FakeOpenAiOptions::default()
        .rule("order number", FakeReply::tool_call("call_1", "lookup_order", r#"{"order_id":"456"}"#))
        .rule("arrive", FakeReply::text("It should arrive on Friday."))
        .rule("goodbye", FakeReply::text("Goodbye, and thanks for calling."))
        .after_tool(FakeReply::text(
            "It has shipped: order four five six left our warehouse yesterday and is on its way to you now.",
        ));
    let openai = openai::start(llm).await.unwrap();
    let cartesia = FakeCartesia::start(FakeCartesiaOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("shop.db")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mcp_url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let stop_backend = CancellationToken::new();
    let backend = DemoBackend::new(store.into(), Hooks { delay: Duration::ZERO, crash_once: None });
    tokio::spawn(demo_backend::serve_http(listener, backend, stop_backend.clone()));
    Providers { deepgram, openai, cartesia, mcp_url, stop_backend, _dir: dir }
}

/// Parley's configuration for the fakes, as a file a team would write.
fn config_toml(p: &Providers) -> String {
    format!(
        r#"
[telemetry]
log = "warn"

[agent]
kind = "cascade"

[conversation]
greeting = "Thanks for calling the shop. How can I help?"

[stt]
provider = "deepgram"
[stt.deepgram]
base_url = "{deepgram}"
api_key_env = "{KEY_ENV}"

[llm]
provider = "openai"
[llm.openai]
base_url = "{openai}"
model = "gpt-test"
api_key_env = "{KEY_ENV}"

[tts]
provider = "cartesia"
[tts.cartesia]
base_url = "{cartesia}"
voice_id = "test-voice"
api_key_env = "{KEY_ENV}"

[[mcp.servers]]
name = "shop"
timeout_ms = 5000
[mcp.servers.transport]
type = "http"
url = "{mcp}"
"#,
        deepgram = p.deepgram.base_url(),
        openai = p.openai.base_url(),
        cartesia = p.cartesia.base_url(),
        mcp = p.mcp_url,
    )
}

fn load_config(dir: &Path, p: &Providers) -> (PathBuf, Config) {
    let path = dir.join("parley.toml");
    std::fs::write(&path, config_toml(p)).unwrap();
    let env = [(KEY_ENV.to_owned(), "test-key".to_owned())];
    (path.clone(), Config::load(Some(&path), env).unwrap())
}

fn args(scenarios: Vec<PathBuf>, out: &Path) -> EvalArgs {
    EvalArgs { scenarios, url: None, signed_url: None, archive: None, offline: false, out: out.to_owned() }
}

/// A one-line variant of the order-status scenario with other expectations and thresholds.
fn short_scenario(dir: &Path, name: &str, order_id: &str, p95_ms: u64) -> PathBuf {
    let audio = repo().join("tests/scenarios/order-status/order-456.wav");
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"
name = "{name}"
[[line]]
audio = "{audio}"
say = "Can you look up my order? My order number is four five six."
expect_words = ["shipped"]
[[expect.tool_call]]
name = "lookup_order"
arguments = {{ order_id = "{order_id}" }}
[thresholds]
first_audio_p95_ms = {p95_ms}
"#,
        audio = audio.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn show(report: &EvalReport) -> String {
    format!("{}\n{}", report.table(), serde_json::to_string_pretty(report).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_status_scenario_is_scored_and_passes_its_thresholds() {
    std::env::set_var(KEY_ENV, "test-key");
    let providers = providers().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = load_config(dir.path(), &providers);
    let out = dir.path().join("results");
    let scenario = repo().join("tests/scenarios/order-status.toml");

    let report =
        parley::eval::run(config, Secrets::default(), &args(vec![scenario], &out), &CliAssembly).await.unwrap();
    let s = &report.scenarios[0];
    assert!(report.passed, "{}", show(&report));

    // Three answered lines (the cough expects none), each measured from the caller's side.
    assert_eq!(s.first_audio_ms.len(), 3, "{}", show(&report));
    assert!(s.first_audio_p50_ms.is_some_and(|ms| ms > 0));
    // The interruption cut the agent off; the cough did not.
    assert_eq!(s.barge_in_ms.len(), 1, "{}", show(&report));
    assert_eq!(s.false_interruptions, 0);
    assert_eq!(s.clear_at_ms.len(), 1, "exactly one clear: {:?}", s.clear_at_ms);
    assert_eq!(s.parley_barge_in_ms.len(), 1);
    // Task: the order looked up through MCP with the caller's number, the answers said what they should.
    assert!(s.tool_calls.iter().any(|c| c.name == "lookup_order" && c.arguments["order_id"] == "456"));
    assert!(s.checks.len() >= 8 && s.checks.iter().all(|c| c.passed), "{:#?}", s.checks);
    assert!(s.lines[0].reply.contains("shipped"), "{:?}", s.lines[0].reply);
    assert!(s.stages.iter().any(|t| t.stages.iter().any(|(name, _)| name == "llm_first_token")));

    // The JSON report and the waterfall a person can open.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["passed"], true);
    assert_eq!(json["scenarios"][0]["name"], "order-status");
    let svg = std::fs::read_to_string(out.join("order-status.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("lookup_order") && svg.contains("LLM first token"));
}

/// `parley serve` in its own process, killed on drop.
struct Serving(tokio::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// Starts `parley serve` as a deployment would run it: behind a public URL, checking Twilio signatures, archiving
/// under `archive`. Returns its loopback address.
async fn serve(config: &Path, archive: &Path) -> (Serving, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env(KEY_ENV, "test-key")
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("PARLEY__SERVER__LISTEN", "127.0.0.1:0")
        .env("PARLEY__SERVER__PUBLIC_URL", PUBLIC_URL)
        .env("PARLEY__ARCHIVE__ROOT", archive)
        .env("PARLEY__LOCAL__TRANSCRIBE__AFTER_CALL", "false")
        .env_remove("PARLEY_CONFIG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let serving = Serving(child);
    while let Some(line) = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.unwrap().unwrap() {
        if let Some(addr) = line.strip_prefix("parley listening on ") {
            return (serving, addr.to_owned());
        }
    }
    panic!("parley serve exited before listening");
}

const AUTH_TOKEN: &str = "eval-test-auth-token";
const PUBLIC_URL: &str = "https://parley.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_that_misses_its_thresholds_fails_and_says_why() {
    let providers = providers().await;
    let dir = tempfile::tempdir().unwrap();
    let (config_path, config) = load_config(dir.path(), &providers);
    let archive = dir.path().join("archive");
    let (_parley, addr) = serve(&config_path, &archive).await;
    // The agent looks up 456; this scenario expects 999 and an answer within 1 ms.
    let scenario = short_scenario(dir.path(), "strict", "999", 1);
    let args = EvalArgs {
        url: Some(format!("ws://{addr}/twilio/media")),
        // Twilio signs the public URL; the ingress forwards to Parley's own address.
        signed_url: Some("wss://parley.example/twilio/media".into()),
        archive: Some(archive),
        ..args(vec![scenario], &dir.path().join("out"))
    };
    let secrets = Secrets { twilio_auth_token: Some(Secret::new(AUTH_TOKEN.into())) };

    let report = parley::eval::run(config.clone(), secrets.clone(), &args, &CliAssembly).await.unwrap();
    assert!(!report.passed);
    let failures = report.scenarios[0].failures.join("\n");
    assert!(failures.contains("over the 1 ms threshold"), "{}", show(&report));
    assert!(failures.contains(r#"lookup_order is called with {"order_id":"999"}"#), "{failures}");
    assert!(failures.contains(r#"called with {"order_id":"456"}"#), "what was called is said: {failures}");
    assert_eq!(failures.lines().count(), 2, "the answer and its words were right: {failures}");

    // Signed for another URL, the call is refused: the evaluator reports it cannot run rather than scoring nothing.
    let args = EvalArgs { signed_url: Some("wss://elsewhere.example/twilio/media".into()), ..args };
    let err = parley::eval::run(config, secrets, &args, &CliAssembly).await.unwrap_err().to_string();
    assert!(err.contains("403"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parley_eval_command_exits_non_zero_when_a_scenario_fails() {
    let providers = providers().await;
    let dir = tempfile::tempdir().unwrap();
    let (config_path, _) = load_config(dir.path(), &providers);
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir(&scenarios).unwrap();
    short_scenario(&scenarios, "a-passing", "456", 5_000);
    short_scenario(&scenarios, "b-failing", "999", 5_000);
    let out = dir.path().join("out");

    let run = |extra: Vec<PathBuf>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley"));
        command.arg("--config").arg(&config_path).arg("eval").arg("--out").arg(&out).args(extra);
        command.env(KEY_ENV, "test-key").env_remove("PARLEY_CONFIG").kill_on_drop(true).output()
    };
    let output = tokio::time::timeout(Duration::from_secs(120), run(vec![scenarios.clone()])).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "one scenario misses its expectation:\n{stdout}\n{stderr}");
    assert!(stdout.contains("a-passing") && stdout.contains("pass"), "{stdout}");
    assert!(stdout.contains("b-failing") && stdout.contains("FAIL"), "{stdout}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let passed: Vec<bool> =
        json["scenarios"].as_array().unwrap().iter().map(|s| s["passed"].as_bool().unwrap()).collect();
    assert_eq!(passed, vec![true, false]);
    assert!(out.join("a-passing.svg").is_file() && out.join("b-failing.svg").is_file());

    // Passing alone exits 0; a scenario that cannot be read is an error of its own (2), not a failed gate.
    let output = run(vec![scenarios.join("a-passing.toml")]).await.unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let output = run(vec![dir.path().join("missing.toml")]).await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));
}
