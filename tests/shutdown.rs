//! SIGTERM on the real binary: stop taking calls, let live ones finish, exit cleanly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use parley::archive::{list_calls, CallStatus, LocalStore};
use sim_caller::{tone, SimCall, StartOptions};

struct Parley {
    child: Child,
    addr: String,
    /// The archive folder of a run that names none: never the repository's own `./parley-archive`.
    _archive: tempfile::TempDir,
}

impl Drop for Parley {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Starts `parley serve` on an ephemeral port and reads the bound address from its first line.
fn spawn_parley(grace_secs: u64) -> Parley {
    spawn_parley_with(grace_secs, &[])
}

fn spawn_parley_with(grace_secs: u64, env: &[(&str, &std::ffi::OsStr)]) -> Parley {
    let archive = tempfile::tempdir().expect("an archive folder");
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("serve")
        .env("PARLEY__ARCHIVE__ROOT", archive.path())
        .envs(env.iter().copied())
        .env("PARLEY__SERVER__LISTEN", "127.0.0.1:0")
        .env("PARLEY__SERVER__PUBLIC_URL", PUBLIC_URL)
        .env("PARLEY__SERVER__SHUTDOWN_GRACE_SECS", grace_secs.to_string())
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("parley starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("a first line");
    let addr =
        line.trim().strip_prefix("parley listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_owned();
    Parley { child, addr, _archive: archive }
}

fn sigterm(parley: &Parley) {
    let status = Command::new("kill").args(["-TERM", &parley.child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
}

async fn wait_exit(parley: &mut Parley, within: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = parley.child.try_wait().expect("wait") {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "parley did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(parley: &Parley) -> SimCall {
    let options = StartOptions::default();
    let mut call = connect_call(&parley.addr, &options.call_sid).await.expect("connects");
    call.start(&options).expect("start");
    call
}

#[tokio::test]
async fn sigterm_drains_live_calls_before_exiting() {
    let mut parley = spawn_parley(30);
    let mut call = connect(&parley).await;
    // Twilio's webhook for a second call is answered before the drain; its stream arrives during it.
    let (late_url, late_signature) = stream_request(&parley.addr, "CA00000000000000000000000000000002").await;
    call.stream_audio(&tone(440.0, 200, 8_000)).await.unwrap();
    sigterm(&parley);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = format!("http://{}", parley.addr);
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["status"], "draining");
    match SimCall::connect(&late_url, Some(&late_signature)).await {
        Err(sim_caller::SimError::Connect(tokio_tungstenite::tungstenite::Error::Http(r))) => {
            assert_eq!(r.status(), 503)
        }
        other => panic!("new call during drain not refused: {:?}", other.err()),
    }
    // The live call still works while draining.
    call.stream_audio(&tone(440.0, 1_000, 8_000)).await.unwrap();
    call.wait_until("echo while draining", Duration::from_secs(10), |log| log.len() > 50).await.unwrap();
    assert!(parley.child.try_wait().unwrap().is_none(), "parley waits for the live call");
    call.send_stop().unwrap();
    let status = wait_exit(&mut parley, Duration::from_secs(10)).await;
    assert!(status.success(), "clean exit after the last call: {status}");
}

#[tokio::test]
async fn sigterm_closes_calls_that_outlast_the_grace_period() {
    let mut parley = spawn_parley(1);
    let call = connect(&parley).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    sigterm(&parley);
    assert_eq!(call.wait_closed(Duration::from_secs(10)).await.unwrap(), Some(1001));
    let status = wait_exit(&mut parley, Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn check_reports_what_is_missing() {
    let output = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("check")
        .env_remove("TWILIO_AUTH_TOKEN")
        .env_remove("TWILIO_AUTH_TOKEN_FILE")
        .env("PARLEY_CONFIG", concat!(env!("CARGO_MANIFEST_DIR"), "/parley.example.toml"))
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("error: TWILIO_AUTH_TOKEN is not set"), "{stdout}");
    let output = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("check")
        .env("TWILIO_AUTH_TOKEN", "x")
        .env("PARLEY_CONFIG", concat!(env!("CARGO_MANIFEST_DIR"), "/parley.example.toml"))
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten_address = \"0.0.0.0:1\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_parley")).arg("check").env("PARLEY_CONFIG", &path).output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("listen_address"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Calls in flight when SIGTERM comes — some hang up during the drain, the others outlast the grace period and are
/// closed — are all sealed in the archive when Parley exits 0. Repeated, since the seal used to race the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_exit_leaves_every_drained_call_sealed() {
    const RUNS: usize = 20;
    const CALLS: usize = 3;
    let mut unsealed = 0;
    for run in 0..RUNS {
        let root = tempfile::tempdir().unwrap();
        let mut parley = spawn_parley_with(
            1,
            &[
                ("PARLEY__ARCHIVE__ROOT", root.path().as_os_str()),
                ("PARLEY__LOCAL__TRANSCRIBE__AFTER_CALL", std::ffi::OsStr::new("false")),
            ],
        );
        let mut calls = Vec::new();
        for _ in 0..CALLS {
            let mut call = connect(&parley).await;
            call.stream_audio(&tone(440.0, 100, 8_000)).await.unwrap();
            calls.push(call);
        }
        sigterm(&parley);
        // The first call hangs up during the drain; the others are closed when the grace period ends.
        calls[0].stream_audio(&tone(440.0, 200, 8_000)).await.unwrap();
        calls[0].send_stop().unwrap();
        let status = wait_exit(&mut parley, Duration::from_secs(30)).await;
        assert!(status.success(), "run {run}: {status}");
        let store = LocalStore::new(root.path()).unwrap();
        let archived = list_calls(&store).unwrap();
        assert_eq!(archived.len(), CALLS, "run {run}");
        unsealed += archived.iter().filter(|(_, m)| m.status != CallStatus::Sealed).count();
        drop(calls);
    }
    assert_eq!(unsealed, 0, "calls left unsealed by a clean exit over {RUNS} runs");
}
