//! `parley eval`: plays each scenario against Parley, reads the call back from the archive, scores it, and writes
//! the table, the JSON report and the waterfalls.
//!
//! Parley is either the one named by `--url` (already running; `--archive` points at its archive folder so tool
//! calls and answers can be scored) or started in this process from the configuration — the same providers `parley
//! serve` would use, real or fake — with its archive in a folder of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::caller::{SimCall, StartOptions, TwilioAuth};
use super::dialogue;
use super::report::EvalReport;
use super::scenario::{Scenario, ScenarioError};
use super::score::{score, ScenarioScore};
use crate::archive::{list_calls, read_call_timeline, Archive, ArchiveStore, CallStatus, LocalStore, TimelineEntry};
use crate::config::{AgentKind, Config, Secrets};
use crate::edge::RunningServer;
use crate::mcp::McpBridge;

/// An error of the composition root, passed through as text into [`EvalError::Start`].
pub type AssemblyError = Box<dyn std::error::Error + Send + Sync>;

/// What the evaluator needs from the command line to run Parley offline in this process: the set-up `parley demo`
/// uses. The binary passes it in (`cli` implements it), so the evaluator, which the CLI runs, does not reach back up
/// into the CLI; the providers themselves come from the composition root ([`crate::assembly`]).
pub trait Assembly: Sync {
    /// Rewrites `config` for an offline run, as `parley demo` does; returns a scratch file to remove afterwards.
    fn configure_offline(&self, config: &mut Config) -> Result<PathBuf, AssemblyError>;
}

/// How long after hanging up the archive has to seal the call.
const SEAL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Scenario files (TOML), or folders holding them.
    #[arg(required = true)]
    pub scenarios: Vec<PathBuf>,
    /// A running Parley's media stream URL (ws://…/twilio/media); without it Parley runs in this process from the
    /// configuration.
    #[arg(long)]
    pub url: Option<String>,
    /// The URL Twilio would sign for `--url` (Parley's public wss URL), when it validates signatures; the signature
    /// uses TWILIO_AUTH_TOKEN.
    #[arg(long, requires = "url")]
    pub signed_url: Option<String>,
    /// The archive folder Parley writes calls to: the running Parley's with `--url`, otherwise where this run's
    /// calls are kept (a temporary folder by default). With `--url` and no folder, an S3 archive configured in
    /// `[archive]` (`store = "s3"`) is read instead.
    #[arg(long)]
    pub archive: Option<PathBuf>,
    /// Run Parley offline, as `parley demo` does: local Whisper, eSpeak NG, the demo shop's MCP backend and, when no
    /// model is configured, the scripted dialogue policy.
    #[arg(long, conflicts_with = "url")]
    pub offline: bool,
    /// Where `report.json` and one `<scenario>.svg` waterfall per call are written.
    #[arg(long, default_value = "eval-results")]
    pub out: PathBuf,
}

/// Why an evaluation could not run (as opposed to a scenario that ran and missed its thresholds).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("no scenario files (*.toml) in {0}")]
    NoScenarios(PathBuf),
    #[error("starting Parley: {0}")]
    Start(String),
    #[error("scenario {scenario}: the call failed: {detail}")]
    Call { scenario: String, detail: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Runs every scenario; the report says which passed.
pub async fn run(
    config: Config,
    secrets: Secrets,
    args: &EvalArgs,
    assembly: &dyn Assembly,
) -> Result<EvalReport, EvalError> {
    let scenarios = load_all(&args.scenarios)?;
    // The calls of a run nobody asked to keep go to a folder removed at the end.
    let mut temporary_archive = None;
    let target = match &args.url {
        Some(url) => Target::Remote {
            url: url.clone(),
            auth: secrets.twilio_auth_token.as_ref().map(|token| TwilioAuth {
                auth_token: token.expose().to_owned(),
                signed_url: args.signed_url.clone().unwrap_or_else(|| url.clone()),
            }),
            archive: match (&args.archive, config.archive.store) {
                (Some(root), _) => Some(local_store(root)?),
                (None, crate::archive::StoreKind::S3) => {
                    Some(config.archive.open_store().map_err(|e| EvalError::Start(format!("the archive: {e}")))?)
                }
                (None, crate::archive::StoreKind::Local) => None,
            },
        },
        None => {
            let archive_root = match &args.archive {
                Some(root) => root.clone(),
                None => temporary_archive.insert(temporary_dir()?).path().to_path_buf(),
            };
            Target::Local(LocalParley::start(config, secrets, &archive_root, args.offline, assembly).await?)
        }
    };

    let mut scores = Vec::with_capacity(scenarios.len());
    for scenario in &scenarios {
        eprintln!("parley eval: {} ({} lines)", scenario.name, scenario.lines.len());
        let result = play(scenario, &target).await;
        scores.push(result?);
    }
    if let Target::Local(local) = target {
        local.stop().await;
    }
    let report = EvalReport::new(scores);
    report.write(&args.out)?;
    Ok(report)
}

/// Every scenario named, folders expanded to the `.toml` files in them (sorted).
fn load_all(paths: &[PathBuf]) -> Result<Vec<Scenario>, EvalError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let read = std::fs::read_dir(path).map_err(|source| ScenarioError::Read { path: path.clone(), source })?;
            let mut found: Vec<PathBuf> =
                read.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
            if found.is_empty() {
                return Err(EvalError::NoScenarios(path.clone()));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    files.iter().map(|f| Scenario::load(f).map_err(EvalError::from)).collect()
}

fn temporary_dir() -> Result<tempfile::TempDir, EvalError> {
    tempfile::Builder::new()
        .prefix("parley-eval-")
        .tempdir()
        .map_err(|source| EvalError::Write { path: std::env::temp_dir(), source })
}

/// A number unique to this moment, for call SIDs.
fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// The Parley the scenarios are played against.
enum Target {
    Remote { url: String, auth: Option<TwilioAuth>, archive: Option<Arc<dyn ArchiveStore>> },
    Local(LocalParley),
}

impl Target {
    fn url(&self) -> String {
        match self {
            Target::Remote { url, .. } => url.clone(),
            Target::Local(local) => format!("ws://{}/twilio/media", local.server.local_addr),
        }
    }

    fn archive(&self) -> Result<Option<Arc<dyn ArchiveStore>>, String> {
        match self {
            Target::Remote { archive, .. } => Ok(archive.clone()),
            Target::Local(local) => local_store(&local.archive_root).map(Some).map_err(|e| e.to_string()),
        }
    }
}

/// Parley started in this process for the run.
struct LocalParley {
    server: RunningServer,
    bridge: Option<Arc<McpBridge>>,
    archive_root: PathBuf,
    /// The offline demo shop's database, removed at the end.
    scratch: Option<PathBuf>,
}

impl LocalParley {
    async fn start(
        mut config: Config,
        secrets: Secrets,
        archive_root: &Path,
        offline: bool,
        assembly: &dyn Assembly,
    ) -> Result<Self, EvalError> {
        let start_error = |e: &dyn std::fmt::Display| EvalError::Start(e.to_string());
        let scratch =
            if offline { Some(assembly.configure_offline(&mut config).map_err(|e| start_error(&e))?) } else { None };
        config.agent.kind = AgentKind::Cascade;
        config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        // The evaluator is the only caller, on loopback: there is no Twilio request to sign.
        config.twilio.validate_signatures = false;
        config.archive.enabled = true;
        config.archive.root = archive_root.to_path_buf();
        config.archive.store = crate::archive::StoreKind::Local;
        let parts = crate::assembly::assemble(&config, &secrets).await.into_parts().map_err(|e| start_error(&e))?;
        let (agents, bridge) = (parts.agents, parts.bridge);
        let archive = Archive::start(&config.archive, config.twilio.redact_numbers).map_err(|e| start_error(&e))?;
        let server =
            crate::edge::start(config, secrets, agents, Some(Arc::new(archive))).await.map_err(|e| start_error(&e))?;
        Ok(LocalParley { server, bridge, archive_root: archive_root.to_path_buf(), scratch })
    }

    async fn stop(self) {
        let _ = self.server.shutdown().await;
        if let Some(bridge) = self.bridge {
            bridge.shutdown().await;
        }
        if let Some(scratch) = self.scratch {
            let _ = std::fs::remove_file(scratch);
        }
    }
}

/// Plays one scenario and scores it.
async fn play(scenario: &Scenario, target: &Target) -> Result<ScenarioScore, EvalError> {
    let failed = |detail: String| EvalError::Call { scenario: scenario.name.clone(), detail };
    let lines = scenario.spoken_lines().await?;
    let auth = match target {
        Target::Remote { auth, .. } => auth.as_ref(),
        Target::Local(_) => None,
    };
    let id = unique();
    let call_sid = format!("CA{id:032x}");
    let mut call =
        SimCall::connect_as_twilio(&target.url(), auth, &call_sid).await.map_err(|e| failed(e.to_string()))?;
    let options = StartOptions {
        call_sid: call_sid.clone(),
        stream_sid: format!("MZ{:032x}", id.wrapping_add(1)),
        ..StartOptions::default()
    };
    call.start(&options).map_err(|e| failed(e.to_string()))?;
    let report = dialogue::speak(call, &scenario.pacing(), lines, |line| eprintln!("  {line}"))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let timeline = match target.archive().map_err(failed)? {
        Some(store) => Some(archived_timeline(store.as_ref(), &call_sid).await.map_err(failed)?),
        None => None,
    };
    Ok(score(scenario, &call_sid, &report, timeline.as_deref()))
}

/// The call's timeline, once the archive has sealed it.
async fn archived_timeline(store: &dyn ArchiveStore, call_sid: &str) -> Result<Vec<TimelineEntry>, String> {
    let deadline = tokio::time::Instant::now() + SEAL_TIMEOUT;
    loop {
        let calls = list_calls(store).map_err(|e| e.to_string())?;
        if let Some((key, _)) = calls.iter().find(|(_, m)| m.call_sid == call_sid && m.status == CallStatus::Sealed) {
            return read_call_timeline(store, key).map_err(|e| e.to_string());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the call {call_sid} was not sealed in the archive within {SEAL_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The archive folder as a store.
fn local_store(root: &Path) -> Result<Arc<dyn ArchiveStore>, EvalError> {
    LocalStore::new(root)
        .map(|store| Arc::new(store) as Arc<dyn ArchiveStore>)
        .map_err(|e| EvalError::Start(format!("opening the archive {}: {e}", root.display())))
}
