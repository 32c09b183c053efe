//! The `sim-caller` program as `parley demo` runs it (this also makes `cargo test` build the binary the demo test
//! needs next to `parley`).

use std::process::Command;

#[test]
fn a_dialogue_that_cannot_reach_parley_fails_with_the_reason() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let output = Command::new(env!("CARGO_BIN_EXE_sim-caller"))
        .args(["--url", &format!("ws://127.0.0.1:{port}/twilio/media"), "--dialogue", "order-status"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connecting to Parley"), "{stderr}");
}

#[test]
fn a_report_needs_a_dialogue() {
    let output = Command::new(env!("CARGO_BIN_EXE_sim-caller")).args(["--report", "/tmp/x.json"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--dialogue"));
}
