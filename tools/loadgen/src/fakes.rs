//! The fake providers for a load run, in a process of their own (`loadgen fakes`) so that neither their CPU nor the
//! callers' mixes with Parley's, and each side can be measured alone. Recording is off: at a thousand calls the
//! fakes would otherwise keep every audio frame, and fake Deepgram reads each call's audio in 100 ms batches.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use fake_providers::cartesia::{FakeCartesia, FakeCartesiaOptions};
use fake_providers::deepgram::{FakeDeepgram, FakeDeepgramOptions};
use fake_providers::openai::{self, FakeOpenAiOptions, FakeReply};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where the fakes listen, printed by `loadgen fakes` as one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeUrls {
    pub deepgram: String,
    pub openai: String,
    pub cartesia: String,
}

/// Serves the fakes, prints their URLs on stdout, and runs until stdin closes (the load generator exited).
pub async fn serve(reply: &str) -> anyhow::Result<()> {
    let deepgram = FakeDeepgram::start(FakeDeepgramOptions {
        record: false,
        read_interval: Some(Duration::from_millis(100)),
        ..FakeDeepgramOptions::default()
    })
    .await?;
    let openai = openai::start(
        FakeOpenAiOptions::default()
            .fallback(FakeReply::text(reply))
            .delays(Duration::from_millis(300), Duration::from_millis(15)),
    )
    .await?;
    let cartesia = FakeCartesia::start(FakeCartesiaOptions { record: false, ..FakeCartesiaOptions::default() }).await?;
    let urls = FakeUrls { deepgram: deepgram.base_url(), openai: openai.base_url(), cartesia: cartesia.base_url() };
    println!("{}", serde_json::to_string(&urls)?);
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while stdin.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
    Ok(())
}

/// The fakes' process, started by the load generator.
pub struct FakesProcess {
    /// Killed when dropped; its stdin is the pipe whose closing also stops it.
    pub child: Child,
    pub pid: u32,
    pub urls: FakeUrls,
}

/// Starts `loadgen fakes` (this same executable) and reads its URLs.
pub async fn spawn(exe: &Path, reply: &str, threads: usize) -> anyhow::Result<FakesProcess> {
    let mut child = Command::new(exe)
        .arg("fakes")
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--reply")
        .arg(reply)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} fakes", exe.display()))?;
    let pid = child.id().context("the fakes' pid")?;
    let stdout = child.stdout.take().context("the fakes' stdout")?;
    let line = BufReader::new(stdout).lines().next_line().await?.context("the fakes printed nothing")?;
    let urls = serde_json::from_str(&line).with_context(|| format!("the fakes printed {line:?}"))?;
    Ok(FakesProcess { child, pid, urls })
}
