//! `loadgen`: N concurrent simulated Twilio calls, paced in real time, against a `parley serve` child process whose
//! providers are fakes in this process. Reports Parley's CPU and memory (read from /proc for the child alone) and the
//! callers' observed latency from the end of their speech to the first audio of the reply.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use fake_providers::cartesia::{FakeCartesia, FakeCartesiaOptions};
use fake_providers::deepgram::{FakeDeepgram, FakeDeepgramOptions};
use fake_providers::openai::{self, FakeOpenAiOptions, FakeReply};
use loadgen::percentile;
use parley::twilio::messages::OutboundMessage;
use sim_caller::{silence, speech, Received, SimCall, StartOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Concurrent simulated calls against parley serve with fake providers")]
struct Args {
    /// Concurrent calls.
    #[arg(long, default_value_t = 50)]
    calls: u32,
    /// Caller turns per call.
    #[arg(long, default_value_t = 3)]
    turns: u32,
    /// Seconds over which calls are started.
    #[arg(long, default_value_t = 10)]
    ramp_secs: u64,
    /// The parley binary (default: next to this one).
    #[arg(long)]
    parley: Option<std::path::PathBuf>,
    /// Print the result as one JSON object too.
    #[arg(long)]
    json: bool,
}

/// CPU time (user + system, in clock ticks) and resident memory (KiB) of a process, from /proc.
fn proc_usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks, rss))
}

const CLOCK_TICKS_PER_SEC: f64 = 100.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let deepgram = FakeDeepgram::start(FakeDeepgramOptions::default()).await?;
    let openai = openai::start(
        FakeOpenAiOptions::default()
            .fallback(FakeReply::text("Sure, that is booked."))
            .delays(Duration::from_millis(300), Duration::from_millis(15)),
    )
    .await?;
    let cartesia = FakeCartesia::start(FakeCartesiaOptions::default()).await?;

    let parley_bin = match &args.parley {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("parley"),
    };
    let archive = std::env::temp_dir().join(format!("parley-loadgen-{}", std::process::id()));
    let mut child = Command::new(&parley_bin)
        .arg("serve")
        .env("PARLEY__SERVER__LISTEN", "127.0.0.1:0")
        .env("PARLEY__SERVER__MAX_CONCURRENT_CALLS", (args.calls + 10).to_string())
        .env("PARLEY__TWILIO__VALIDATE_SIGNATURES", "false")
        .env("PARLEY__AGENT__KIND", "cascade")
        .env("PARLEY__CONVERSATION__GREETING", "")
        .env("PARLEY__STT__DEEPGRAM__BASE_URL", deepgram.base_url())
        .env("PARLEY__LLM__OPENAI__BASE_URL", openai.base_url())
        .env("PARLEY__TTS__CARTESIA__BASE_URL", cartesia.base_url())
        .env("PARLEY__TTS__CARTESIA__VOICE_ID", "load-voice")
        .env("DEEPGRAM_API_KEY", "load")
        .env("OPENAI_API_KEY", "load")
        .env("CARTESIA_API_KEY", "load")
        .env("RUST_LOG", "warn")
        // Every call is archived, as in production, into a folder of this run; the offline transcription is for
        // after the calls and would compete with them for the cores, so it is off here.
        .env("PARLEY__ARCHIVE__ROOT", &archive)
        .env("PARLEY__LOCAL__TRANSCRIBE__AFTER_CALL", "false")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", parley_bin.display()))?;
    let pid = child.id().context("parley pid")?;
    let stdout = child.stdout.take().context("parley stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next_line().await?.unwrap_or_default();
    let addr = first.strip_prefix("parley listening on ").context("parley did not report its address")?.to_owned();
    let url = format!("ws://{addr}/twilio/media");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, idle_rss) = proc_usage(pid).context("reading /proc")?;
    let started = Instant::now();
    let ramp = Duration::from_secs(args.ramp_secs);
    let mut callers = Vec::new();
    for n in 0..args.calls {
        let delay = ramp.mul_f64(f64::from(n) / f64::from(args.calls.max(1)));
        let url = url.clone();
        let turns = args.turns;
        callers.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            run_caller(&url, n, turns).await
        }));
    }
    // Sample Parley while every call is up: after the ramp, through the calls' middle.
    tokio::time::sleep(ramp + Duration::from_secs(2)).await;
    let (cpu_start, _) = proc_usage(pid).context("reading /proc")?;
    let sample_start = Instant::now();
    let mut peak_rss = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some((_, rss)) = proc_usage(pid) {
            peak_rss = peak_rss.max(rss);
        }
    }
    let (cpu_end, _) = proc_usage(pid).context("reading /proc")?;
    let cpu_percent = (cpu_end - cpu_start) as f64 / CLOCK_TICKS_PER_SEC / sample_start.elapsed().as_secs_f64() * 100.0;

    let mut latencies = Vec::new();
    let mut failed = 0;
    for caller in callers {
        match caller.await {
            Ok(Ok(mut observed)) => latencies.append(&mut observed),
            Ok(Err(err)) => {
                failed += 1;
                eprintln!("loadgen: a call failed: {err:#}");
            }
            Err(err) => {
                failed += 1;
                eprintln!("loadgen: a caller task failed: {err}");
            }
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let per_call_kib = peak_rss.saturating_sub(idle_rss) as f64 / f64::from(args.calls.max(1));
    println!(
        "calls: {} ({} failed), turns observed: {}, wall time {:.1} s",
        args.calls,
        failed,
        latencies.len(),
        started.elapsed().as_secs_f64()
    );
    println!("parley CPU while all calls were live: {cpu_percent:.1}% of one core");
    println!("parley memory: idle {idle_rss} KiB, peak {peak_rss} KiB, {per_call_kib:.0} KiB per call");
    println!(
        "caller-observed speech end -> first audio (ms): p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 95.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "calls": args.calls, "failed": failed, "turns": latencies.len(), "cpu_percent": cpu_percent,
                "idle_rss_kib": idle_rss, "peak_rss_kib": peak_rss, "per_call_kib": per_call_kib,
                "p50_ms": percentile(&latencies, 50.0), "p95_ms": percentile(&latencies, 95.0),
                "p99_ms": percentile(&latencies, 99.0),
            })
        );
    }
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&archive);
    if failed > 0 {
        bail!("{failed} calls failed");
    }
    Ok(())
}

/// One caller: `turns` times, speak, then keep the line open with silence until the reply has started and ended.
/// Returns the observed end-of-speech → first-audio times in ms.
async fn run_caller(url: &str, n: u32, turns: u32) -> anyhow::Result<Vec<f64>> {
    let mut call = SimCall::connect(url, None).await?;
    call.start(&StartOptions {
        call_sid: format!("CA{n:032}"),
        stream_sid: format!("MZ{n:032}"),
        ..StartOptions::default()
    })?;
    let mut observed = Vec::new();
    for _ in 0..turns {
        call.stream_audio(&speech(900)).await?;
        let speech_end = Instant::now();
        let deadline = speech_end + Duration::from_secs(15);
        let first_audio = loop {
            call.stream_audio(&silence(100)).await?;
            let found = call.received().into_iter().find_map(|r| match r {
                Received::Message { at, message: OutboundMessage::Media { .. } } if at > speech_end => Some(at),
                _ => None,
            });
            if let Some(at) = found {
                break at;
            }
            if Instant::now() > deadline {
                bail!("no reply within 15 s");
            }
        };
        observed.push(first_audio.duration_since(speech_end).as_secs_f64() * 1000.0);
        // Let the reply play out before the next turn (the fake voice speaks 60 ms per character).
        call.stream_audio(&silence(2_000)).await?;
    }
    call.send_stop()?;
    call.hang_up().await;
    Ok(observed)
}
