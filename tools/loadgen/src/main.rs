//! `loadgen`: N concurrent simulated Twilio calls, paced in real time, against a `parley serve` child process whose
//! providers are fakes in a second child process (`loadgen fakes`). Parley's CPU, memory, descriptors and threads
//! are read from /proc for Parley's process alone; the load generator's own side (this process and the fakes') is
//! read and reported separately. The callers report what they observed: end of speech → first audio, gaps in the
//! agent's audio, barge-in → `clear`, missing replies and failed calls. `--soak` holds the calls for minutes, hangs
//! up, waits idle, and checks that Parley gave back what the calls took and sealed every call.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use loadgen::lean::{self, Progress, Script};
use loadgen::procstat::{self, ProcSample};
use loadgen::sealed::{self, SealCheck};
use loadgen::stages;
use loadgen::summary::{summarise, CallerSummary};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// What the fake model answers every turn: 38 characters, about 2.3 s of the fake voice (60 ms a character), long
/// enough for a caller to talk over it.
const DEFAULT_REPLY: &str = "Sure, that is booked for two at seven.";

#[derive(Debug, Parser)]
#[command(about = "Concurrent simulated calls against parley serve with fake providers")]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Worker threads of this process's runtime (and of the fakes').
    #[arg(long, default_value_t = 2, global = true)]
    threads: usize,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Serve the fake providers and print their URLs as one JSON line; runs until stdin closes.
    Fakes {
        /// What the fake model answers.
        #[arg(long, default_value = DEFAULT_REPLY)]
        reply: String,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Concurrent calls (default 50; 100 with --soak).
    #[arg(long)]
    calls: Option<u32>,
    /// Caller turns per call (when the calls are not held with --hold-secs).
    #[arg(long, default_value_t = 3)]
    turns: u32,
    /// Seconds over which calls are started.
    #[arg(long, default_value_t = 10)]
    ramp_secs: u64,
    /// Keep every call up until this long after the last one started, speaking a turn after each reply and pause
    /// (default with --soak: 300).
    #[arg(long)]
    hold_secs: Option<u64>,
    /// Soak: hold the calls, hang up, wait idle, then check Parley's memory, descriptors and threads against the
    /// plateau before the calls, and that every call was sealed.
    #[arg(long)]
    soak: bool,
    /// Idle seconds after the calls before the soak's last reading.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Place one call of one turn before reading the start plateau, so what Parley sets up once on its first call
    /// (worker threads, the tokenizer) is not taken for what the calls leave behind.
    #[arg(long)]
    warm_up: bool,
    /// Silence between a reply's end and the caller's next turn, ms.
    #[arg(long, default_value_t = 1000)]
    pause_ms: u64,
    /// Every this many turns the caller talks over the reply, 500 ms after its first audio (0: never).
    #[arg(long, default_value_t = 3)]
    barge_every: u32,
    /// Caller tasks that pace the calls (each writes its calls' frames from one 20 ms tick; the ticks are spread
    /// evenly over the 20 ms, so this many phases).
    #[arg(long, default_value_t = 10)]
    shards: usize,
    /// What the fake model answers.
    #[arg(long, default_value = DEFAULT_REPLY)]
    reply: String,
    /// The parley binary (default: next to this one).
    #[arg(long)]
    parley: Option<PathBuf>,
    /// Keep the archive folder of the run instead of deleting it.
    #[arg(long)]
    keep_archive: bool,
    /// Print the result as one JSON object too.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .context("building the runtime")?;
    match cli.command {
        Some(Sub::Fakes { reply }) => runtime.block_on(loadgen::fakes::serve(&reply)),
        None => runtime.block_on(run(cli.run, cli.threads)),
    }
}

/// The processes under measurement: Parley, the fakes, and this one.
struct Sides {
    parley: u32,
    fakes: u32,
}

/// One reading of every side.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    at: Option<Instant>,
    parley: ProcSample,
    fakes: ProcSample,
    me: ProcSample,
}

impl Sides {
    fn read(&self) -> anyhow::Result<Reading> {
        Ok(Reading {
            at: Some(Instant::now()),
            parley: procstat::sample(&self.parley.to_string()).context("reading Parley's /proc")?,
            fakes: procstat::sample(&self.fakes.to_string()).unwrap_or_default(),
            me: procstat::sample("self").unwrap_or_default(),
        })
    }
}

/// Peaks over a run.
#[derive(Debug, Clone, Copy, Default)]
struct Peaks {
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

impl Peaks {
    fn note(&mut self, sample: &ProcSample) {
        self.rss_kib = self.rss_kib.max(sample.rss_kib);
        self.fds = self.fds.max(sample.fds);
        self.threads = self.threads.max(sample.threads);
    }
}

async fn run(args: RunArgs, threads: usize) -> anyhow::Result<()> {
    let calls = args.calls.unwrap_or(if args.soak { 100 } else { 50 });
    let hold_secs = args.hold_secs.or(args.soak.then_some(300));
    let me = std::env::current_exe()?;
    let fakes = loadgen::fakes::spawn(&me, &args.reply, threads).await?;
    let parley_bin = args.parley.clone().unwrap_or_else(|| me.with_file_name("parley"));
    let archive = std::env::temp_dir().join(format!("parley-loadgen-{}", std::process::id()));
    let (mut parley, addr) = start_parley(&parley_bin, &fakes.urls, calls, &archive).await?;
    let sides = Sides { parley: parley.id().context("parley pid")?, fakes: fakes.pid };
    let url = format!("ws://{addr}/twilio/media");

    // The start plateau: Parley up, no calls yet (but one, with --warm-up).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cold = sides.read()?;
    let warm_up = if args.warm_up {
        let warm = Script { turns: 1, barge_every: 0, ..Script::default() };
        let result = lean::run(url.clone(), 1, Duration::ZERO, 1, warm, Arc::new(Progress::default())).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        result.iter().filter(|r| r.turns > 0).count()
    } else {
        0
    };
    let plateau = sides.read()?;
    if args.warm_up {
        println!(
            "before any call: RSS {} KiB, fds {}, threads {}; after the warm-up call: RSS {} KiB, fds {}, threads {}",
            cold.parley.rss_kib,
            cold.parley.fds,
            cold.parley.threads,
            plateau.parley.rss_kib,
            plateau.parley.fds,
            plateau.parley.threads
        );
    }
    let ramp = Duration::from_secs(args.ramp_secs);
    let started = Instant::now();
    let script = Script {
        turns: args.turns,
        hold_until: hold_secs.map(|secs| started + ramp + Duration::from_secs(secs)),
        barge_every: args.barge_every,
        pause: Duration::from_millis(args.pause_ms),
        ..Script::default()
    };
    let progress = Arc::new(Progress::default());
    let mut callers = tokio::spawn(lean::run(url, calls, ramp, args.shards, script, progress.clone()));

    // Sample every half second. The CPU window is while every call is live: from the first reading where every
    // call has connected (or failed to) to the first where one more has ended.
    let mut peaks = Peaks::default();
    let mut window: (Option<Reading>, Option<Reading>) = (None, None);
    let mut ended_at_open = 0;
    let mut max_live = 0;
    let results = loop {
        tokio::select! {
            done = &mut callers => break done.context("the callers' task")?,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let reading = sides.read()?;
        peaks.note(&reading.parley);
        let live = progress.live.load(Ordering::Relaxed);
        let ended = progress.ended.load(Ordering::Relaxed);
        max_live = max_live.max(live);
        match window {
            (None, _) if live + ended >= calls as usize => {
                window.0 = Some(reading);
                ended_at_open = ended;
            }
            (Some(_), None) if ended > ended_at_open => window.1 = Some(reading),
            _ => {}
        }
    };
    let after_calls = sides.read()?;
    peaks.note(&after_calls.parley);
    if window.0.is_some() && window.1.is_none() {
        window.1 = Some(after_calls);
    }
    let callers = summarise(&results);
    let placed = results.iter().filter(|r| r.turns > 0).count();

    // Every placed call should be sealed shortly after it ended; the soak waits idle first.
    let idle = if args.soak {
        let mut last = after_calls;
        let until = Instant::now() + Duration::from_secs(args.idle_secs);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(1)).await;
            last = sides.read()?;
        }
        Some(last)
    } else {
        None
    };
    let seal = sealed::wait_sealed(&archive, placed + warm_up, Duration::from_secs(10)).await?;

    let mut report =
        Report::new(calls, &plateau, &peaks, window, max_live, &callers, idle.as_ref(), &seal, placed + warm_up);
    let (stage_lines, stage_json) = parley_stages(&addr).await;
    report.lines.extend(stage_lines);
    report.json["parley_stages"] = stage_json;
    report.print();
    if args.json {
        println!("{}", serde_json::to_string(&report.json)?);
    }
    let _ = parley.kill().await;
    drop(fakes);
    if !args.keep_archive {
        let _ = std::fs::remove_dir_all(&archive);
    }
    let mut problems = Vec::new();
    if callers.failed > 0 {
        problems.push(format!("{} calls failed", callers.failed));
    }
    if callers.missing_replies > 0 {
        problems.push(format!("{} replies never came", callers.missing_replies));
    }
    if !seal.all_sealed(placed + warm_up) {
        problems.push(format!("{} of {} calls archived and sealed", seal.sealed, placed + warm_up));
    }
    problems.extend(report.soak_failures);
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

/// Parley's own share of the turns' latency, from its `/metrics` (see [`loadgen::stages`]): the report's lines and
/// their JSON. A scrape that fails is reported as such; it does not fail the run.
async fn parley_stages(addr: &str) -> (Vec<String>, serde_json::Value) {
    let scraped = async {
        let response = reqwest::get(format!("http://{addr}/metrics")).await?.error_for_status()?;
        response.text().await
    };
    let exposition = match scraped.await {
        Ok(text) => text,
        Err(err) => return (vec![format!("Parley's /metrics could not be read: {err}")], serde_json::Value::Null),
    };
    let mut lines = Vec::new();
    let mut json = serde_json::Map::new();
    for (stage, name) in stages::REPORTED_STAGES {
        if let Some(quantiles) = stages::stage_quantiles(&exposition, stage) {
            lines.push(stages::describe(name, &quantiles));
            json.insert(stage.to_owned(), serde_json::json!(quantiles));
        }
    }
    (lines, serde_json::Value::Object(json))
}

/// Starts `parley serve` on an ephemeral port with the fakes as its providers and every call archived under
/// `archive`; returns it and the address it listens on.
async fn start_parley(
    bin: &Path,
    urls: &loadgen::fakes::FakeUrls,
    calls: u32,
    archive: &Path,
) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(bin)
        .arg("serve")
        .env("PARLEY__SERVER__LISTEN", "127.0.0.1:0")
        .env("PARLEY__SERVER__MAX_CONCURRENT_CALLS", (calls + 10).to_string())
        .env("PARLEY__TWILIO__VALIDATE_SIGNATURES", "false")
        .env("PARLEY__AGENT__KIND", "cascade")
        .env("PARLEY__CONVERSATION__GREETING", "")
        .env("PARLEY__STT__DEEPGRAM__BASE_URL", &urls.deepgram)
        .env("PARLEY__LLM__OPENAI__BASE_URL", &urls.openai)
        .env("PARLEY__TTS__CARTESIA__BASE_URL", &urls.cartesia)
        .env("PARLEY__TTS__CARTESIA__VOICE_ID", "load-voice")
        .env("DEEPGRAM_API_KEY", "load")
        .env("OPENAI_API_KEY", "load")
        .env("CARTESIA_API_KEY", "load")
        .env("RUST_LOG", "warn")
        // Every call is archived, as in production, into a folder of this run; the offline transcription is for
        // after the calls and would compete with them for the cores, so it is off here.
        .env("PARLEY__ARCHIVE__ROOT", archive)
        .env("PARLEY__LOCAL__TRANSCRIBE__AFTER_CALL", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("parley stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next_line().await?.unwrap_or_default();
    let addr = first.strip_prefix("parley listening on ").context("parley did not report its address")?.to_owned();
    // Keep reading what else Parley prints, so a full pipe never blocks it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}

/// The run's figures, printed and as JSON.
struct Report {
    lines: Vec<String>,
    json: serde_json::Value,
    /// The soak's checks that failed.
    soak_failures: Vec<String>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn new(
        calls: u32,
        plateau: &Reading,
        peaks: &Peaks,
        window: (Option<Reading>, Option<Reading>),
        max_live: usize,
        callers: &CallerSummary,
        idle: Option<&Reading>,
        seal: &SealCheck,
        placed: usize,
    ) -> Report {
        let mut lines = Vec::new();
        let (cpu, fakes_cpu, me_cpu, window_secs) = match window {
            (Some(open), Some(close)) => {
                let secs = match (open.at, close.at) {
                    (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
                    _ => f64::NAN,
                };
                (
                    procstat::cpu_percent(&open.parley, &close.parley, secs),
                    procstat::cpu_percent(&open.fakes, &close.fakes, secs),
                    procstat::cpu_percent(&open.me, &close.me, secs),
                    secs,
                )
            }
            _ => (f64::NAN, f64::NAN, f64::NAN, 0.0),
        };
        let live = (calls as usize).saturating_sub(callers.failed);
        let per_call_cpu = cpu / live.max(1) as f64;
        let per_call_kib = peaks.rss_kib.saturating_sub(plateau.parley.rss_kib) as f64 / live.max(1) as f64;
        lines.push(format!(
            "calls: {calls} ({} failed, at most {max_live} live at once), turns {}, replies {}, missing replies {}",
            callers.failed, callers.turns, callers.replies, callers.missing_replies
        ));
        lines.push(format!(
            "parley CPU while all calls were live ({window_secs:.1} s): {cpu:.1}% of one core, {per_call_cpu:.3}% per call"
        ));
        lines.push(format!(
            "parley memory: idle {} KiB, peak {} KiB, {per_call_kib:.0} KiB per call; fds {} -> peak {}, threads {} -> peak {}",
            plateau.parley.rss_kib, peaks.rss_kib, plateau.parley.fds, peaks.fds, plateau.parley.threads, peaks.threads
        ));
        lines.push(format!(
            "load generator side over the same window: callers {me_cpu:.1}%, fakes {fakes_cpu:.1}%, total {:.1}% of one core",
            me_cpu + fakes_cpu
        ));
        lines.push(format!(
            "caller-observed speech end -> first audio (ms): p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
            callers.first_audio_p50_ms,
            callers.first_audio_p95_ms,
            callers.first_audio_p99_ms,
            callers.first_audio_max_ms
        ));
        lines.push(format!(
            "agent audio: {} frames received; playback ran dry > 60 ms inside a reply {} times",
            callers.frames_received, callers.late_gaps
        ));
        lines.push(format!(
            "barge-in onset -> clear (ms): {} clears, p50 {:.1}  p99 {:.1}  max {:.1}; {} barge-ins without a clear",
            callers.clears, callers.clear_p50_ms, callers.clear_p99_ms, callers.clear_max_ms, callers.missing_clears
        ));
        lines.push(format!("archive: {} of {placed} calls sealed ({} archived)", seal.sealed, seal.archived));
        for failure in &callers.failures {
            lines.push(format!("failed: {failure}"));
        }
        let mut soak_failures = Vec::new();
        let mut soak_json = serde_json::Value::Null;
        if let Some(idle) = idle {
            let start = &plateau.parley;
            let end = &idle.parley;
            let rss_ratio = end.rss_kib as f64 / start.rss_kib.max(1) as f64;
            lines.push(format!(
                "soak: start plateau RSS {} KiB, fds {}, threads {}; peak RSS {} KiB, fds {}, threads {}; after idle RSS {} KiB ({:+.1}%), fds {}, threads {}",
                start.rss_kib, start.fds, start.threads, peaks.rss_kib, peaks.fds, peaks.threads, end.rss_kib,
                (rss_ratio - 1.0) * 100.0, end.fds, end.threads
            ));
            if rss_ratio > 1.10 {
                soak_failures
                    .push(format!("RSS after idle {} KiB is not within 10 % of {} KiB", end.rss_kib, start.rss_kib));
            }
            if end.fds > start.fds {
                soak_failures.push(format!("fds after idle {} above the baseline {}", end.fds, start.fds));
            }
            if end.threads > start.threads {
                soak_failures.push(format!("threads after idle {} above the baseline {}", end.threads, start.threads));
            }
            lines.push(if soak_failures.is_empty() {
                "soak checks: passed".to_owned()
            } else {
                format!("soak checks failed: {}", soak_failures.join("; "))
            });
            soak_json = serde_json::json!({
                "start": sample_json(start), "peak": {"rss_kib": peaks.rss_kib, "fds": peaks.fds, "threads": peaks.threads},
                "after_idle": sample_json(end), "rss_change_percent": (rss_ratio - 1.0) * 100.0,
                "passed": soak_failures.is_empty(),
            });
        }
        let json = serde_json::json!({
            "calls": calls, "failed": callers.failed, "max_live": max_live, "turns": callers.turns,
            "replies": callers.replies, "missing_replies": callers.missing_replies,
            "cpu_percent": cpu, "cpu_window_secs": window_secs, "per_call_cpu_percent": per_call_cpu,
            "idle_rss_kib": plateau.parley.rss_kib, "peak_rss_kib": peaks.rss_kib, "per_call_kib": per_call_kib,
            "idle_fds": plateau.parley.fds, "peak_fds": peaks.fds,
            "idle_threads": plateau.parley.threads, "peak_threads": peaks.threads,
            "loadgen_cpu_percent": me_cpu, "fakes_cpu_percent": fakes_cpu,
            "p50_ms": callers.first_audio_p50_ms, "p95_ms": callers.first_audio_p95_ms,
            "p99_ms": callers.first_audio_p99_ms, "max_ms": callers.first_audio_max_ms,
            "frames_received": callers.frames_received, "late_gaps": callers.late_gaps,
            "clears": callers.clears, "clear_p50_ms": callers.clear_p50_ms, "clear_p99_ms": callers.clear_p99_ms,
            "missing_clears": callers.missing_clears,
            "sealed": seal.sealed, "archived": seal.archived, "placed": placed,
            "soak": soak_json,
        });
        Report { lines, json, soak_failures }
    }

    fn print(&self) {
        for line in &self.lines {
            println!("{line}");
        }
    }
}

fn sample_json(sample: &ProcSample) -> serde_json::Value {
    serde_json::json!({"rss_kib": sample.rss_kib, "fds": sample.fds, "threads": sample.threads})
}
