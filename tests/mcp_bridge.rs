//! The MCP tool bridge against real MCP servers: Parley's demo backend (over Streamable HTTP in-process, and as a
//! child process over stdio or HTTP) and an independently written server on the official Python SDK
//! (`tests/peers/mcp_peer.py`).
//!
//! How the servers are found:
//! - The demo backend's HTTP server runs in-process (the `demo-backend` crate is a dev-dependency with a library).
//! - The demo backend binary is taken from next to this test's executable (`<target>/debug/demo-backend`). Cargo does
//!   not build other packages' binaries for this test, so `cargo test --workspace` (which builds every member) or
//!   `cargo build -p demo-backend` must have run first; a missing binary fails the test with that hint.
//! - The Python peer needs `python3` with `mcp` 2.x (`python3 -m pip install "mcp>=2,<3"`, done by `scripts/setup`).
//!   Without it these tests print a loud SKIPPED message and pass, except under CI (`CI` set), where they fail.
//!
//! Nothing here asserts on elapsed time: waits are bounded polls for a state (journal row, reconnect), and
//! concurrency is shown by overlapping start/finish times recorded by the backend.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use demo_backend::{DemoBackend, Hooks, JournalEntry, Store};
use parley::engine::tools::{ToolCallContext, ToolExecutor, ToolOutcome};
use parley::llm::ToolCall;
use parley::mcp::{McpBridge, McpConfig, McpServerConfig, McpTransportConfig, ServerStatus};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

fn context() -> ToolCallContext {
    ToolCallContext {
        call_sid: "CA0123456789abcdef".into(),
        caller_number: Some("+15550100".into()),
        turn_index: 2,
        traceparent: Some(TRACEPARENT.into()),
    }
}

fn tool_call(name: &str, arguments: &str) -> ToolCall {
    ToolCall { id: "call_1".into(), name: name.into(), arguments: arguments.into() }
}

async fn call(bridge: &McpBridge, name: &str, arguments: Value) -> ToolOutcome {
    bridge.call(&tool_call(name, &arguments.to_string()), &context(), CancellationToken::new()).await
}

fn server(name: &str, transport: McpTransportConfig) -> McpServerConfig {
    McpServerConfig::new(name, transport)
}

fn http(url: &str) -> McpTransportConfig {
    McpTransportConfig::Http { url: url.into(), bearer_token_env: None, headers_env: Default::default() }
}

fn stdio(command: &Path, args: &[&str], env: &[(&str, &str)]) -> McpTransportConfig {
    McpTransportConfig::Stdio {
        command: command.to_string_lossy().into_owned(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        inherit_env: vec![],
        cwd: None,
    }
}

fn config(servers: Vec<McpServerConfig>) -> McpConfig {
    McpConfig { servers, reconnect_initial_ms: 100, reconnect_max_ms: 500, ..McpConfig::default() }
}

fn names(bridge: &McpBridge) -> Vec<String> {
    bridge.specs().into_iter().map(|s| s.name).collect()
}

/// Waits (bounded) until the bridge's report satisfies `ready`.
async fn wait_for(bridge: &McpBridge, what: &str, ready: impl Fn(&McpBridge) -> bool) {
    let mut changes = bridge.changes();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ready(bridge) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "gave up waiting for {what}; report:\n{}", bridge.report());
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), changes.changed()).await;
    }
}

/// Waits (bounded) until the journal of `db` satisfies `ready`, and returns it.
async fn wait_journal(db: &Path, what: &str, ready: impl Fn(&[JournalEntry]) -> bool) -> Vec<JournalEntry> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let journal = demo_backend::read_journal(db).expect("journal readable");
        if ready(&journal) {
            return journal;
        }
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting for {what}; journal: {journal:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The demo backend served over Streamable HTTP inside this test process.
struct InProcessDemo {
    url: String,
    db: PathBuf,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for InProcessDemo {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve_demo_on(listener: tokio::net::TcpListener, db: &Path, delay: Duration) -> CancellationToken {
    let store = Store::open(db).expect("store opens");
    let backend = DemoBackend::new(store.into(), Hooks { delay, crash_once: None });
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        if let Err(error) = demo_backend::serve_http(listener, backend, token).await {
            eprintln!("in-process demo backend stopped: {error}");
        }
    });
    stop
}

async fn demo_http(delay: Duration) -> InProcessDemo {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("demo.db");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = serve_demo_on(listener, &db, delay).await;
    InProcessDemo { url: format!("http://{addr}/mcp"), db, stop, _dir: dir }
}

/// The `demo-backend` binary next to this test executable.
fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let binary = dir.join(format!("demo-backend{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: build it first with `cargo build -p demo-backend` (`cargo test --workspace` builds it too)",
        binary.display()
    );
    binary
}

/// The demo backend binary serving Streamable HTTP, as a separate process that can be killed mid-call.
struct DemoProcess {
    child: tokio::process::Child,
    addr: SocketAddr,
}

async fn demo_process(db: &Path, addr: &str, delay_ms: u64) -> DemoProcess {
    let mut child = tokio::process::Command::new(demo_binary())
        .args(["--http", addr, "--db"])
        .arg(db)
        .env("DEMO_BACKEND_DELAY_MS", delay_ms.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("demo-backend starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("listening line in time").expect("stdout");
    let line = line.expect("a first line");
    let addr = line.strip_prefix("demo-backend listening on ").expect("listening line").parse().expect("address");
    DemoProcess { child, addr }
}

/// `python3` with the `mcp` SDK, or `None` (after a loud message) when it is not installed outside CI.
fn python_with_mcp() -> Option<PathBuf> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import sys, mcp.server.lowlevel, uvicorn; print(sys.executable)"])
        .output();
    match probe {
        Ok(output) if output.status.success() => {
            Some(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim().to_string()))
        }
        _ => {
            let message = "python3 with the MCP SDK is not available: run `python3 -m pip install \"mcp>=2,<3\"` \
                           (scripts/setup does)";
            assert!(std::env::var_os("CI").is_none(), "{message}");
            eprintln!("\n!!!!!!!!!! SKIPPED: {message} !!!!!!!!!!\n");
            None
        }
    }
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mcp_peer.py")
}

fn peer_journal(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

async fn wait_peer_journal(path: &Path, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let journal = peer_journal(path);
        if ready(&journal) {
            return journal;
        }
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting for {what}; peer journal: {journal:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Python peer serving Streamable HTTP as a child process.
struct PeerProcess {
    _child: tokio::process::Child,
    url: String,
}

async fn peer_http(python: &Path, journal: &Path) -> PeerProcess {
    let mut child = tokio::process::Command::new(python)
        .arg(peer_script())
        .arg("http")
        .env("PEER_JOURNAL", journal)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python peer starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("listening line in time").expect("stdout");
    let line = line.expect("a first line");
    let addr = line.strip_prefix("peer listening on ").expect("listening line").to_string();
    PeerProcess { _child: child, url: format!("http://{addr}/mcp") }
}

fn free_port_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

const DEMO_TOOLS: [&str; 5] =
    ["lookup_order", "cancel_order", "list_open_slots", "book_appointment", "cancel_appointment"];

// ---------------------------------------------------------------------------------------------------------------
// The demo backend
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_over_http_lists_calls_and_passes_meta() {
    let demo = demo_http(Duration::ZERO).await;
    let bridge = McpBridge::connect(config(vec![server("demo", http(&demo.url))])).await.unwrap();

    assert_eq!(names(&bridge), DEMO_TOOLS);
    assert!(bridge.is_destructive("cancel_order") && bridge.is_destructive("cancel_appointment"));
    assert!(!bridge.is_destructive("lookup_order") && !bridge.is_destructive("book_appointment"));
    let report = bridge.report();
    assert_eq!(report.server("demo").unwrap().status, ServerStatus::Up, "{report}");
    assert!(report.to_string().contains("demo-backend"), "{report}");

    let outcome = call(&bridge, "lookup_order", json!({"order_id": "456"})).await;
    assert!(!outcome.is_error, "{outcome:?}");
    assert!(outcome.content.contains("shipped, arriving Friday"), "{}", outcome.content);

    let journal = demo_backend::read_journal(&demo.db).unwrap();
    assert_eq!(journal.len(), 1, "{journal:#?}");
    let meta = &journal[0].meta;
    assert_eq!(meta["parley/callSid"], "CA0123456789abcdef");
    assert!(meta.get("parley/callerNumber").is_none(), "the caller's number is sent only when configured: {meta}");
    assert_eq!(meta["parley/turnIndex"], 2);
    assert_eq!(meta["traceparent"], TRACEPARENT);
    assert_eq!(journal[0].http_traceparent.as_deref(), Some(TRACEPARENT), "traceparent HTTP header");
    assert_eq!(journal[0].arguments, json!({"order_id": "456"}));
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_number_goes_to_the_backend_only_when_configured() {
    let demo = demo_http(Duration::ZERO).await;
    let config = McpConfig { send_caller_number: true, ..config(vec![server("demo", http(&demo.url))]) };
    let bridge = McpBridge::connect(config).await.unwrap();
    let outcome = call(&bridge, "lookup_order", json!({"order_id": "456"})).await;
    assert!(!outcome.is_error, "{outcome:?}");
    let journal = demo_backend::read_journal(&demo.db).unwrap();
    assert_eq!(journal[0].meta["parley/callerNumber"], "+15550100");
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_with_distinct_tool_names_keep_their_names() {
    let (orders, clinic) = (demo_http(Duration::ZERO).await, demo_http(Duration::ZERO).await);
    let mut shop = server("shop", http(&orders.url));
    shop.allow = vec!["lookup_order".into(), "cancel_order".into()];
    let mut appointments = server("clinic", http(&clinic.url));
    appointments.allow = vec!["book_appointment".into()];
    let bridge = McpBridge::connect(config(vec![shop, appointments])).await.unwrap();
    assert_eq!(names(&bridge), ["lookup_order", "cancel_order", "book_appointment"], "{}", bridge.report());
    assert_eq!(bridge.resolve("book_appointment"), Some(("clinic".into(), "book_appointment".into())));
    let outcome = call(&bridge, "lookup_order", json!({"order_id": "456"})).await;
    assert!(!outcome.is_error, "{outcome:?}");
    assert_eq!(demo_backend::read_journal(&orders.db).unwrap().len(), 1, "the call reached the shop's server");
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_names_prefix_only_the_later_server_and_a_configured_prefix_applies() {
    let (first, second, third) =
        (demo_http(Duration::ZERO).await, demo_http(Duration::ZERO).await, demo_http(Duration::ZERO).await);
    let only_lookup = |name: &str, url: &str| {
        let mut server = server(name, http(url));
        server.allow = vec!["lookup_order".into()];
        server
    };
    let mut prefixed = only_lookup("third", &third.url);
    prefixed.prefix = Some("t".into());
    let servers = vec![only_lookup("shop", &first.url), only_lookup("backup", &second.url), prefixed];
    let bridge = McpBridge::connect(config(servers)).await.unwrap();
    assert_eq!(names(&bridge), ["lookup_order", "backup__lookup_order", "t__lookup_order"], "{}", bridge.report());
    assert_eq!(bridge.resolve("backup__lookup_order"), Some(("backup".into(), "lookup_order".into())));
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_over_stdio_books_and_keeps_state_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let db_arg = db.to_string_lossy().into_owned();
    let demo = server("demo", stdio(&demo_binary(), &["--stdio", "--db", &db_arg], &[]));
    let bridge = McpBridge::connect(config(vec![demo.clone()])).await.unwrap();
    assert_eq!(names(&bridge), DEMO_TOOLS, "{}", bridge.report());

    let slots = call(&bridge, "list_open_slots", json!({})).await;
    assert!(slots.content.contains("S-101"), "{}", slots.content);
    let booked = call(&bridge, "book_appointment", json!({"slot_id": "S-101", "patient_name": "Ada Lovelace"})).await;
    assert!(!booked.is_error && booked.content.contains("Booked appointment A-1001"), "{booked:?}");
    let journal = demo_backend::read_journal(&db).unwrap();
    assert_eq!(journal.last().unwrap().meta["traceparent"], TRACEPARENT, "_meta over stdio");
    bridge.shutdown().await;

    let again = McpBridge::connect(config(vec![demo])).await.unwrap();
    let slots = call(&again, "list_open_slots", json!({})).await;
    assert!(!slots.content.contains("S-101"), "S-101 is still booked after a restart: {}", slots.content);
    let cancelled = call(&again, "cancel_appointment", json!({"appointment_id": "A-1001"})).await;
    assert!(!cancelled.is_error, "{cancelled:?}");
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_never_reach_the_backend() {
    let demo = demo_http(Duration::ZERO).await;
    let bridge = McpBridge::connect(config(vec![server("demo", http(&demo.url))])).await.unwrap();

    let wrong_type = call(&bridge, "lookup_order", json!({"order_id": 456})).await;
    assert!(wrong_type.is_error && wrong_type.content.contains("order_id"), "{wrong_type:?}");
    let missing = call(&bridge, "book_appointment", json!({"slot_id": "S-101"})).await;
    assert!(missing.is_error && missing.content.contains("patient_name"), "{missing:?}");
    let extra = call(&bridge, "lookup_order", json!({"order_id": "1", "note": "x"})).await;
    assert!(extra.is_error, "{extra:?}");
    let not_json = bridge.call(&tool_call("lookup_order", "{order_id: 4"), &context(), CancellationToken::new()).await;
    assert!(not_json.is_error && not_json.content.contains("not valid JSON"), "{not_json:?}");
    let unknown = call(&bridge, "delete_everything", json!({})).await;
    assert!(unknown.is_error && unknown.content.contains("lookup_order"), "{unknown:?}");

    assert!(demo_backend::read_journal(&demo.db).unwrap().is_empty(), "a bad call reached the backend");
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_errors_and_size_cap() {
    let demo = demo_http(Duration::ZERO).await;
    let mut cfg = config(vec![server("demo", http(&demo.url))]);
    cfg.result_max_chars = 60;
    let bridge = McpBridge::connect(cfg).await.unwrap();

    let missing = call(&bridge, "lookup_order", json!({"order_id": "999"})).await;
    assert_eq!(missing, ToolOutcome::error("There is no order 999."));
    let refused = call(&bridge, "cancel_order", json!({"order_id": "456"})).await;
    assert!(refused.is_error && refused.content.contains("can no longer be cancelled"), "{refused:?}");

    let long = call(&bridge, "list_open_slots", json!({})).await;
    assert!(!long.is_error);
    assert!(long.content.chars().count() <= 60, "{}", long.content);
    assert!(long.content.contains("[truncated: "), "{}", long.content);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_lists_filter_tools() {
    let demo = demo_http(Duration::ZERO).await;
    let mut only_orders = server("demo", http(&demo.url));
    only_orders.allow = vec!["*_order".into(), "list_open_slots".into()];
    only_orders.deny = vec!["cancel_*".into()];
    only_orders.confirm = vec!["list_open_slots".into()];
    let bridge = McpBridge::connect(config(vec![only_orders])).await.unwrap();
    assert_eq!(names(&bridge), ["lookup_order", "list_open_slots"]);
    assert!(bridge.is_destructive("list_open_slots"), "forced by `confirm`");
    let denied = call(&bridge, "cancel_order", json!({"order_id": "789"})).await;
    assert!(denied.is_error);
    assert!(demo_backend::read_journal(&demo.db).unwrap().is_empty());
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tool_times_out_and_is_cancelled_at_the_backend() {
    let demo = demo_http(Duration::from_secs(20)).await;
    let mut slow = server("demo", http(&demo.url));
    slow.tool_timeouts_ms.insert("lookup_order".into(), 300);
    let bridge = McpBridge::connect(config(vec![slow])).await.unwrap();
    assert_eq!(bridge.report().server("demo").unwrap().tools[0].timeout_ms, 300);

    let outcome = call(&bridge, "lookup_order", json!({"order_id": "456"})).await;
    assert!(outcome.is_error && outcome.content.contains("timed out"), "{outcome:?}");
    // The backend got notifications/cancelled and stopped the call.
    wait_journal(&demo.db, "the timed-out call cancelled", |j| {
        j.len() == 1 && j[0].outcome.as_deref() == Some("cancelled")
    })
    .await;
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_call_stops_it_at_the_backend_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let db_arg = db.to_string_lossy().into_owned();
    let demo =
        server("demo", stdio(&demo_binary(), &["--stdio", "--db", &db_arg], &[("DEMO_BACKEND_DELAY_MS", "20000")]));
    let bridge = McpBridge::connect(config(vec![demo])).await.unwrap();

    let cancel = CancellationToken::new();
    let running = {
        let bridge = bridge.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            bridge.call(&tool_call("lookup_order", r#"{"order_id":"456"}"#), &context(), cancel).await
        })
    };
    wait_journal(&db, "the call to start", |j| j.len() == 1).await;
    cancel.cancel();
    let outcome = running.await.unwrap();
    assert!(outcome.is_error && outcome.content.contains("cancelled"), "{outcome:?}");
    wait_journal(&db, "the backend to see the cancellation", |j| j[0].outcome.as_deref() == Some("cancelled")).await;

    // The connection is still good after a cancellation.
    assert_eq!(bridge.report().server("demo").unwrap().status, ServerStatus::Up);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_in_flight_cancels_it_at_the_backend() {
    let demo = demo_http(Duration::from_secs(20)).await;
    let bridge = McpBridge::connect(config(vec![server("demo", http(&demo.url))])).await.unwrap();
    let running = {
        let bridge = bridge.clone();
        tokio::spawn(async move { call(&bridge, "lookup_order", json!({"order_id": "456"})).await })
    };
    wait_journal(&demo.db, "the call to start", |j| j.len() == 1).await;
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    wait_journal(&demo.db, "the backend to see the cancellation", |j| j[0].outcome.as_deref() == Some("cancelled"))
        .await;
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_run_in_parallel() {
    let demo = demo_http(Duration::from_millis(700)).await;
    let bridge = McpBridge::connect(config(vec![server("demo", http(&demo.url))])).await.unwrap();

    let (a, b) = tokio::join!(
        call(&bridge, "lookup_order", json!({"order_id": "456"})),
        call(&bridge, "lookup_order", json!({"order_id": "789"})),
    );
    assert!(a.content.contains("Order 456") && b.content.contains("Order 789"), "{a:?} {b:?}");
    let journal = demo_backend::read_journal(&demo.db).unwrap();
    assert_eq!(journal.len(), 2);
    let (x, y) = (&journal[0], &journal[1]);
    let (x_end, y_end) = (x.finished_at_ms.unwrap(), y.finished_at_ms.unwrap());
    assert!(
        x.started_at_ms < y_end && y.started_at_ms < x_end,
        "the two calls did not overlap at the backend: {journal:#?}"
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_is_reported_and_picked_up_later() {
    let addr = free_port_addr();
    let url = format!("http://{addr}/mcp");
    let bridge = McpBridge::connect(config(vec![server("demo", http(&url))])).await.unwrap();

    let report = bridge.report();
    assert!(matches!(report.server("demo").unwrap().status, ServerStatus::Down { .. }), "{report}");
    assert!(report.to_string().contains("UNREACHABLE"), "{report}");
    assert_eq!(
        report.server("demo").unwrap().status,
        ServerStatus::Down { error: format!("connection refused at {url}") },
        "one plain sentence"
    );
    assert_eq!(bridge.tool_count(), 0);
    let outcome = call(&bridge, "lookup_order", json!({"order_id": "456"})).await;
    assert!(outcome.is_error);

    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind the port");
    let stop = serve_demo_on(listener, &dir.path().join("demo.db"), Duration::ZERO).await;
    wait_for(&bridge, "the server to come up", |b| b.tool_count() == DEMO_TOOLS.len()).await;
    let outcome = call(&bridge, "lookup_order", json!({"order_id": "456"})).await;
    assert!(!outcome.is_error, "{outcome:?}");
    bridge.shutdown().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_dying_mid_call_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let marker = dir.path().join("crash-once");
    let (db_arg, marker_arg) = (db.to_string_lossy().into_owned(), marker.to_string_lossy().into_owned());
    let demo = server(
        "demo",
        stdio(&demo_binary(), &["--stdio", "--db", &db_arg], &[("DEMO_BACKEND_CRASH_ONCE", marker_arg.as_str())]),
    );
    let bridge = McpBridge::connect(config(vec![demo])).await.unwrap();
    assert_eq!(bridge.tool_count(), DEMO_TOOLS.len());

    std::fs::write(&marker, b"crash").unwrap();
    let outcome = call(&bridge, "lookup_order", json!({"order_id": "456"})).await;
    assert!(outcome.is_error, "{outcome:?}");
    assert!(!marker.exists(), "the backend did not take the crash hook");

    wait_for(&bridge, "the server to be restarted", |b| b.tool_count() == DEMO_TOOLS.len() && b.report().all_up())
        .await;
    let outcome = call(&bridge, "lookup_order", json!({"order_id": "456"})).await;
    assert!(!outcome.is_error, "{outcome:?}");
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_server_dying_mid_call_is_reconnected_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let mut first = demo_process(&db, "127.0.0.1:0", 20_000).await;
    let addr = first.addr;
    let bridge = McpBridge::connect(config(vec![server("demo", http(&format!("http://{addr}/mcp")))])).await.unwrap();
    assert_eq!(bridge.tool_count(), DEMO_TOOLS.len());

    let running = {
        let bridge = bridge.clone();
        tokio::spawn(async move { call(&bridge, "lookup_order", json!({"order_id": "456"})).await })
    };
    wait_journal(&db, "the call to reach the backend", |j| j.len() == 1).await;
    first.child.kill().await.expect("kill the backend");
    let outcome = running.await.unwrap();
    assert!(outcome.is_error, "{outcome:?}");

    // Same address, same database, a new process that knows nothing of the old session.
    let _second = demo_process(&db, &addr.to_string(), 0).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let outcome = call(&bridge, "lookup_order", json!({"order_id": "456"})).await;
        if !outcome.is_error {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never recovered: {outcome:?}\n{}", bridge.report());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bridge.report().all_up(), "{}", bridge.report());
    bridge.shutdown().await;
}

// ---------------------------------------------------------------------------------------------------------------
// The Python SDK peer
// ---------------------------------------------------------------------------------------------------------------

/// What both transports of the peer must show: pagination, name mapping, dropped schema, results, `_meta`.
async fn check_python_peer(bridge: &McpBridge, prefix: &str) {
    let n = |name: &str| format!("{prefix}{name}");
    let offered = names(bridge);
    for expected in ["echo_meta", "orders_lookup_v2", "fail", "slow", "structured_only", "enable_extra"] {
        assert!(offered.contains(&n(expected)), "{expected} missing from {offered:?} (pagination?)");
    }
    assert!(!offered.iter().any(|name| name.contains("bad_schema")), "{offered:?}");
    let report = bridge.report();
    let peer = report.server("py").unwrap();
    assert_eq!(peer.dropped.len(), 1, "{report}");
    assert_eq!(peer.dropped[0].mcp_name, "bad_schema");
    assert!(report.to_string().contains("dropped bad_schema"), "{report}");

    assert_eq!(bridge.resolve(&n("orders_lookup_v2")), Some(("py".into(), "orders.lookup/v2".into())));
    let spec = bridge.specs().into_iter().find(|s| s.name == n("orders_lookup_v2")).unwrap();
    assert!(spec.parameters.get("$schema").is_none() && spec.parameters.get("definitions").is_none(), "{spec:?}");
    assert_eq!(spec.parameters["properties"]["order_id"]["type"], "string", "{spec:?}");

    let lookup = call(bridge, &n("orders_lookup_v2"), json!({"order_id": "7"})).await;
    assert_eq!(lookup, ToolOutcome::ok("python peer: order 7 is shipped"));
    let fail = call(bridge, &n("fail"), json!({})).await;
    assert_eq!(fail, ToolOutcome::error("the peer refused"));
    let structured = call(bridge, &n("structured_only"), json!({})).await;
    assert_eq!(structured, ToolOutcome::ok(r#"{"answer":42}"#));
    let echoed = call(bridge, &n("echo_meta"), json!({})).await;
    let meta: Value = serde_json::from_str(&echoed.content).unwrap();
    assert_eq!(meta["parley/callSid"], "CA0123456789abcdef");
    assert_eq!(meta["parley/turnIndex"], 2);
    assert_eq!(meta["traceparent"], TRACEPARENT);
    let bad = call(bridge, &n("slow"), json!({"seconds": "soon"})).await;
    assert!(bad.is_error && bad.content.contains("seconds"), "{bad:?}");
}

/// Cancels a slow call on the peer and checks the peer saw it.
async fn check_python_cancellation(bridge: &McpBridge, name: &str, journal: &Path) {
    let cancel = CancellationToken::new();
    let running = {
        let (bridge, cancel, name) = (bridge.clone(), cancel.clone(), name.to_string());
        tokio::spawn(async move { bridge.call(&tool_call(&name, r#"{"seconds": 60}"#), &context(), cancel).await })
    };
    wait_peer_journal(journal, "the slow call to start", |j| {
        j.iter().any(|e| e["event"] == "start" && e["tool"] == "slow")
    })
    .await;
    cancel.cancel();
    let outcome = running.await.unwrap();
    assert!(outcome.is_error && outcome.content.contains("cancelled"), "{outcome:?}");
    wait_peer_journal(journal, "the peer to see the cancellation", |j| {
        j.iter().any(|e| e["event"] == "cancelled" && e["tool"] == "slow")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_peer_over_stdio() {
    let Some(python) = python_with_mcp() else { return };
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("peer.jsonl");
    let script = peer_script().to_string_lossy().into_owned();
    let journal_arg = journal.to_string_lossy().into_owned();
    let peer = server("py", stdio(&python, &[&script, "stdio"], &[("PEER_JOURNAL", journal_arg.as_str())]));
    let bridge = McpBridge::connect(config(vec![peer])).await.unwrap();
    assert!(bridge.report().all_up(), "{}", bridge.report());

    check_python_peer(&bridge, "").await;
    check_python_cancellation(&bridge, "slow", &journal).await;

    // A tool added at runtime shows up after notifications/tools/list_changed.
    assert!(bridge.is_destructive("enable_extra"));
    assert!(!names(&bridge).contains(&"extra_tool".to_string()));
    let enabled = call(&bridge, "enable_extra", json!({})).await;
    assert!(!enabled.is_error, "{enabled:?}");
    wait_for(&bridge, "extra_tool after list_changed", |b| names(b).contains(&"extra_tool".to_string())).await;
    assert_eq!(call(&bridge, "extra_tool", json!({})).await, ToolOutcome::ok("extra done"));
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_peer_over_http_next_to_the_demo_backend() {
    let Some(python) = python_with_mcp() else { return };
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("peer.jsonl");
    let peer = peer_http(&python, &journal).await;
    let demo = demo_http(Duration::ZERO).await;
    let bridge =
        McpBridge::connect(config(vec![server("demo", http(&demo.url)), server("py", http(&peer.url))])).await.unwrap();
    assert!(bridge.report().all_up(), "{}", bridge.report());

    // Two servers whose tool names differ: no name is prefixed.
    assert!(names(&bridge).iter().all(|n| !n.contains("__")), "{:?}", names(&bridge));
    assert_eq!(bridge.resolve("lookup_order"), Some(("demo".into(), "lookup_order".into())));
    assert!(bridge.is_destructive("cancel_order"));
    check_python_peer(&bridge, "").await;
    check_python_cancellation(&bridge, "slow", &journal).await;
    let order = call(&bridge, "lookup_order", json!({"order_id": "789"})).await;
    assert!(order.content.contains("processing"), "{order:?}");
    bridge.shutdown().await;
}
