//! The `parley` command line: `serve` runs the proxy, `check` validates the configuration, `demo` and `eval` place
//! calls against it.

pub mod agents;
pub mod demo;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, Problem, Secrets, Severity};
use crate::edge;
use crate::engine::tools::ToolExecutor;
use crate::mcp::{McpBridge, McpError, ServerStatus};
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
    /// Load and validate the configuration, print what is missing, exit non-zero on errors.
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
    /// Transcribe archived calls offline (Whisper or an OpenAI-compatible server) and score the live transcript.
    Transcribe(crate::transcribe::cli::TranscribeArgs),
}

/// Errors the CLI reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the configuration has {0} error(s); run `parley check` for the list")]
    Invalid(usize),
    #[error(transparent)]
    Edge(#[from] edge::EdgeError),
    #[error(transparent)]
    Agent(#[from] agents::AgentSetupError),
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
    #[error("{0} call(s) not sealed in the archive before exiting; the next start seals them once their lease lapses")]
    Unsealed(usize),
}

/// Loads the configuration named on the command line with the process environment applied.
pub fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    Config::load(cli.config.as_deref(), std::env::vars())
}

/// `parley check`: prints every problem and which MCP servers and tools are reachable; returns how many errors.
pub async fn check(config: &Config, secrets: &Secrets) -> usize {
    let problems = config.problems(secrets);
    for Problem { severity, message } in &problems {
        match severity {
            Severity::Error => println!("error: {message}"),
            Severity::Warning => println!("warning: {message}"),
        }
    }
    let mut errors = problems.iter().filter(|p| p.severity == Severity::Error).count();
    if !config.mcp.servers.is_empty() && config.mcp.validate().is_ok() {
        match McpBridge::connect(config.mcp.clone()).await {
            Ok(bridge) => {
                let report = bridge.report();
                print!("{report}");
                let unreachable = report.servers.iter().filter(|s| s.status != ServerStatus::Up).count();
                if unreachable > 0 {
                    println!("error: {unreachable} MCP server(s) unreachable");
                    errors += unreachable;
                }
                bridge.shutdown().await;
            }
            Err(err) => {
                println!("error: mcp: {err}");
                errors += 1;
            }
        }
    }
    if errors == 0 {
        println!("configuration is valid: listening on {}, agent {:?}", config.server.listen, config.agent.kind);
    }
    errors
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

/// `parley serve`: answers calls until SIGTERM, then drains.
pub async fn serve(config: Config, secrets: Secrets) -> Result<(), CliError> {
    let problems = config.problems(&secrets);
    for problem in &problems {
        match problem.severity {
            Severity::Error => tracing::error!("{}", problem.message),
            Severity::Warning => tracing::warn!("{}", problem.message),
        }
    }
    let errors = problems.iter().filter(|p| p.severity == Severity::Error).count();
    if errors > 0 {
        return Err(CliError::Invalid(errors));
    }
    let tools: Option<Arc<dyn ToolExecutor>> = if config.mcp.servers.is_empty() {
        None
    } else {
        let bridge = McpBridge::connect(config.mcp.clone()).await?;
        tracing::info!("MCP tools:\n{}", bridge.report());
        Some(Arc::new(bridge))
    };
    let agents = agents::agent_factory(&config, tools)?;
    let archive = if config.archive.enabled {
        let after_call = transcribe_after_call(&config).await?;
        let hook = after_call.map(|a| a as Arc<dyn crate::archive::SealedCalls>);
        Some(Arc::new(crate::archive::Archive::start_with(&config.archive, config.twilio.redact_numbers, hook)?))
    } else {
        None
    };
    let taps: crate::call::tap::Taps = archive.clone().map(|a| a as _);
    let server = edge::start(config, secrets, agents, taps).await?;
    // Scripts and tests read the bound address from this line.
    println!("parley listening on {}", server.local_addr);
    edge::wait_for_signal().await;
    tracing::info!("shutdown requested");
    server.shutdown().await?;
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
