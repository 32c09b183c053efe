//! The `demo-backend` binary's command line: the HTTP listening line, and MCP over stdio with state on disk.
//!
//! Besides checking the binary, this test makes `cargo test --workspace` build it, which Parley's own bridge tests
//! rely on (they spawn `<target>/debug/demo-backend`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_demo-backend");

#[test]
fn http_mode_prints_its_address_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BINARY)
        .args(["--http", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("demo.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let addr = line.trim().strip_prefix("demo-backend listening on ").expect("listening line");
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{line}");
}

#[test]
fn stdio_mode_speaks_mcp_and_journals_calls() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let mut child = Command::new(BINARY)
        .args(["--stdio", "--db"])
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut send = |message: Value| writeln!(stdin, "{message}").unwrap();
    let mut receive = || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    };
    send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}));
    assert_eq!(receive()["result"]["serverInfo"]["name"], "demo-backend");
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}));
    let tools = receive();
    let names: Vec<&str> =
        tools["result"]["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["lookup_order", "cancel_order", "list_open_slots", "book_appointment", "cancel_appointment"]);
    send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "cancel_order", "arguments": {"order_id": "789"}, "_meta": {"parley/callSid": "CA9"}}}));
    let cancelled = receive();
    assert_eq!(cancelled["result"]["isError"], false, "{cancelled}");
    drop(stdin);
    let _ = child.wait();

    let journal = demo_backend::read_journal(&db).unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].meta["parley/callSid"], "CA9");
    let store = demo_backend::Store::open(&db).unwrap();
    assert_eq!(store.order("789").unwrap().unwrap().status, "cancelled", "state survives the process");
}
