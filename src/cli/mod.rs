//! The `parley` command line: `serve` runs the proxy, `check` validates the configuration, `demo` and `eval` place
//! calls against it. Every command that answers calls, and `check`, builds its parts through [`crate::assembly`].

pub mod demo;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::assembly::{self, Assembly, SetupError};
use crate::config::{AgentKind, Config, ConfigError, Secrets};
use crate::edge;
use crate::mcp::{McpError, ServerStatus};
use crate::transcribe::AfterCall;

#[derive(Debug, Parser)]
#[command(name = "parley", version, about = "A voice-agent sidecar for Twilio Media Streams")]
pub struct Cli {
    /// Config file (TOML). Without one, defaults plus PARLEY__* environment overrides apply.
    #[arg(long, short, global = true, env = "PARLEY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer Twilio calls.
    Serve,
    /// Assemble everything `serve` would (providers, MCP servers, telemetry) without taking calls; print what is
    /// missing or unreachable; exit non-zero exactly when `serve` would not start.
    Check,
    /// Read the call archive.
    Archive {
        #[command(subcommand)]
        command: crate::archive::cli::ArchiveCommand,
    },
    /// One whole phone call on this machine, offline: local Whisper and eSpeak NG, the demo MCP backend and a
    /// simulated caller; prints the conversation, latencies and the Whisper transcript.
    Demo(demo::DemoArgs),
    /// Replay scenario files (a caller's recorded lines plus expected outcomes) through Parley and score each call:
    /// latency, barge-in, false interruptions, task success. Exits 1 when a scenario misses a threshold, 2 when the
    /// evaluation cannot run.
    Eval(crate::eval::EvalArgs),
    /// Turn archived calls into scenario files `parley eval` replays: the caller's lines cut from the recording at
    /// the turn boundaries, interruptions at their offsets, the tool calls and the backend's answers as
    /// expectations, thresholds from `[eval]`.
    Export(crate::eval::replay::ExportArgs),
    /// Transcribe archived calls offline (Whisper or an OpenAI-compatible server) and score the live transcript.
    Transcribe(crate::transcribe::cli::TranscribeArgs),
}

/// The offline set-up `parley demo` uses, lent to the evaluator for `parley eval --offline`.
pub struct CliAssembly;

impl crate::eval::Assembly for CliAssembly {
    fn configure_offline(&self, config: &mut Config) -> Result<PathBuf, crate::eval::AssemblyError> {
        Ok(demo::configure_offline(config)?)
    }
}

/// Errors the CLI reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Edge(#[from] edge::EdgeError),
    #[error("MCP bridge: {0}")]
    Mcp(#[from] McpError),
    #[error("archive: {0}")]
    Archive(#[from] crate::archive::ArchiveError),
    #[error("demo: {0}")]
    Demo(Box<demo::DemoError>),
    #[error("transcription: {0}")]
    Transcribe(#[from] crate::transcribe::TranscribeError),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("viewer: {0}")]
    Viewer(String),
    #[error("{0} call(s) not sealed in the archive before exiting; the next start seals them once their lease lapses")]
    Unsealed(usize),
}

/// Loads the configuration named on the command line with the process environment applied.
pub fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    Config::load(cli.config.as_deref(), std::env::vars())
}

/// `parley check`: assembles what `serve` would, prints every error and warning, the MCP servers and their tools,
/// and whether `serve` would start; returns how many errors (0 exactly when `serve` would start). Its report is the
/// only thing it writes to stdout.
pub async fn check(config: &Config, secrets: &Secrets, telemetry_problem: Option<String>) -> usize {
    let assembly = assembly::assemble(config, secrets).await;
    let mut warnings = assembly.warnings.clone();
    warnings.extend(telemetry_problem);
    warnings.extend(crate::telemetry::probe::unreachable_collectors(&config.telemetry).await);
    print!("{}", check_report(config, &assembly, &warnings));
    let errors = assembly.errors.len();
    assembly.close().await;
    errors
}

/// The text `parley check` prints.
fn check_report(config: &Config, assembly: &Assembly, warnings: &[String]) -> String {
    let mut out = String::new();
    for error in &assembly.errors {
        out.push_str(&format!("error: {error}\n"));
    }
    for warning in warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    if let Some(report) = &assembly.mcp {
        out.push_str(&report.to_string());
    }
    if !assembly.errors.is_empty() {
        out.push_str(&format!("`parley serve` would not start: {} error(s)\n", assembly.errors.len()));
        return out;
    }
    let mut summary = match config.agent.kind {
        AgentKind::Echo => "the echo agent".to_owned(),
        AgentKind::Cascade => format!(
            "the cascade agent: stt {}, llm {}, tts {}",
            chain(config.stt.provider, &config.stt.fallback),
            chain(config.llm.provider, &config.llm.fallback),
            chain(config.tts.provider, &config.tts.fallback)
        ),
    };
    let down = assembly.mcp.iter().flat_map(|r| &r.servers).filter(|s| s.status != ServerStatus::Up).count();
    if down > 0 {
        summary.push_str(&format!(
            "; {down} MCP server(s) unreachable: their tools are missing until they answer (retried in the background)"
        ));
    }
    out.push_str(&format!("configuration is valid: `parley serve` would start with {summary}\n"));
    out
}

/// `whisper`, or `deepgram then whisper` with fallbacks, in the configuration's spelling (`deepgram_flux`).
fn chain<K: std::fmt::Debug>(provider: K, fallback: &[K]) -> String {
    let name = |kind: &K| {
        let mut name = String::new();
        for (i, c) in format!("{kind:?}").chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_lowercase());
        }
        name
    };
    std::iter::once(name(&provider)).chain(fallback.iter().map(name)).collect::<Vec<_>>().join(" then ")
}

/// The background transcription of ended calls, when `[local.transcribe] after_call` is on. Without a usable
/// backend calls are still queued, for `parley transcribe --pending` to finish.
pub async fn transcribe_after_call(config: &Config) -> Result<Option<Arc<AfterCall>>, CliError> {
    if !config.local.transcribe.after_call {
        return Ok(None);
    }
    let backend = match crate::transcribe::cli::backend_from_config(config).await {
        Ok(backend) => Some(backend),
        Err(err) => {
            tracing::warn!(%err, "calls are queued for transcription but not transcribed until `parley transcribe --pending`");
            None
        }
    };
    let queue = crate::transcribe::cli::queue_from_config(config)?;
    Ok(Some(AfterCall::start(queue, backend, config.local.transcribe.concurrency)?))
}

/// The call viewer over the configured archive; its token must be in the environment.
fn viewer(config: &Config) -> Result<crate::viewer::Viewer, CliError> {
    let token_env = &config.viewer.token_env;
    let token = crate::config::read_secret(token_env).ok_or_else(|| {
        CliError::Viewer(format!("the call viewer needs its token in {token_env} (or {token_env}_FILE)"))
    })?;
    let store = config.archive.open_store()?;
    Ok(crate::viewer::Viewer::new(store, token.expose(), config.twilio.redact_numbers))
}

/// `parley archive serve`: the call viewer alone, until SIGTERM.
pub async fn serve_viewer(config: &Config, listen: std::net::SocketAddr) -> Result<(), CliError> {
    let router = viewer(config)?.router();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    // Scripts and tests read the bound address from this line.
    println!("parley call viewer on http://{}/calls", listener.local_addr()?);
    axum::serve(listener, router).with_graceful_shutdown(edge::wait_for_signal()).await?;
    Ok(())
}

/// `parley serve`: answers calls until SIGTERM, then drains.
pub async fn serve(config: Config, secrets: Secrets) -> Result<(), CliError> {
    let assembly = assembly::assemble(&config, &secrets).await;
    for warning in &assembly.warnings {
        tracing::warn!("{warning}");
    }
    for error in &assembly.errors {
        tracing::error!("{error}");
    }
    if let Some(report) = &assembly.mcp {
        tracing::info!("MCP tools:\n{report}");
    }
    let parts = assembly.into_parts()?;
    let archive = if config.archive.enabled {
        let after_call = transcribe_after_call(&config).await?;
        let hook = after_call.map(|a| a as Arc<dyn crate::archive::SealedCalls>);
        Some(Arc::new(crate::archive::Archive::start_with(&config.archive, config.twilio.redact_numbers, hook)?))
    } else {
        None
    };
    let taps: crate::call::tap::Taps = archive.clone().map(|a| a as _);
    let viewer = if config.viewer.enabled { viewer(&config)?.router() } else { axum::Router::new() };
    let server = edge::start_with(config, secrets, parts.agents, taps, viewer).await?;
    // Scripts and tests read the bound address from this line.
    println!("parley listening on {}", server.local_addr);
    edge::wait_for_signal().await;
    tracing::info!("shutdown requested");
    server.shutdown().await?;
    if let Some(bridge) = parts.bridge {
        bridge.shutdown().await;
    }
    if let Some(archive) = archive {
        // Every call has ended; exit only once the recorders have sealed them all.
        let unsealed = archive.wait_sealed(SEAL_TIMEOUT).await;
        if unsealed > 0 {
            return Err(CliError::Unsealed(unsealed));
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long shutdown waits for the archive to seal the drained calls (a seal is a final Ogg page, a timeline line
/// and the metadata: milliseconds on a local disk, a few uploads on an object store).
const SEAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
