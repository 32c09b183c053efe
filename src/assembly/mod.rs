//! The composition root: the one place that turns a configuration into a running Parley's parts — the agent with
//! its providers (fallbacks included), the MCP bridge to the backend's servers, and the telemetry exporters.
//!
//! `parley serve`, `parley check`, `parley demo` and `parley eval` all assemble through here, so `check` judges a
//! configuration by the very code `serve` runs: it exits 0 exactly when `serve` would start. What stops `serve`
//! (a configuration error, a missing key or setting of any provider in use, a Whisper model that does not load, an
//! invalid `[mcp]` section) is an error; what `serve` starts without and retries (an unreachable MCP server, a
//! telemetry exporter that cannot be built) is not.

pub mod providers;

use std::sync::Arc;
use std::time::Duration;

use crate::call::agent::AgentFactory;
use crate::call::echo::EchoFactory;
use crate::config::{read_secret, AgentKind, Config, Secrets, Severity};
use crate::engine::call_control::CallControl;
use crate::engine::cascade::{CascadeDeps, CascadeFactory};
use crate::engine::tools::{NoTools, ToolExecutor};
use crate::mcp::{McpBridge, McpReport};
use crate::telemetry::{Telemetry, TelemetryConfig};

/// What assembling a configuration found, and the parts when nothing stops `serve`.
pub struct Assembly {
    /// Each one stops `serve`.
    pub errors: Vec<String>,
    /// Worth an operator's attention; `serve` starts anyway.
    pub warnings: Vec<String>,
    /// The MCP servers and their tools, when any are configured (and the `[mcp]` section is valid).
    pub mcp: Option<McpReport>,
    parts: Option<Parts>,
}

/// What answers calls.
pub struct Parts {
    /// Makes the agent of each call.
    pub agents: Arc<dyn AgentFactory>,
    /// The MCP bridge the agent calls tools through, when servers are configured; shut it down after the server.
    pub bridge: Option<Arc<McpBridge>>,
}

/// The configuration cannot run; each entry is one problem, in plain words.
#[derive(Debug, thiserror::Error)]
#[error("the configuration has {} error(s): {}", .0.len(), .0.join("; "))]
pub struct SetupError(pub Vec<String>);

impl Assembly {
    /// The parts, or every error that stops `serve`.
    pub fn into_parts(self) -> Result<Parts, SetupError> {
        match self.parts {
            Some(parts) if self.errors.is_empty() => Ok(parts),
            _ => Err(SetupError(self.errors)),
        }
    }

    /// Stops what was started (the MCP connections), for callers that only wanted the findings.
    pub async fn close(self) {
        if let Some(bridge) = self.parts.and_then(|p| p.bridge) {
            bridge.shutdown().await;
        }
    }
}

/// Assembles everything `serve` needs from `config`: checks the configuration, builds every provider in use,
/// and connects to the MCP servers (waiting for each one's first attempt). Never fails: the findings say whether
/// the parts can run.
pub async fn assemble(config: &Config, secrets: &Secrets) -> Assembly {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for problem in config.problems(secrets) {
        match problem.severity {
            Severity::Error => errors.push(problem.message),
            Severity::Warning => warnings.push(problem.message),
        }
    }
    let providers = match config.agent.kind {
        AgentKind::Echo => None,
        AgentKind::Cascade => match providers::build(config) {
            Ok(providers) => Some(providers),
            Err(problems) => {
                errors.extend(problems);
                None
            }
        },
    };
    // An invalid `[mcp]` section is among the configuration's problems already.
    let bridge = if config.mcp.servers.is_empty() || config.mcp.validate().is_err() {
        None
    } else {
        match McpBridge::connect(config.mcp.clone()).await {
            Ok(bridge) => Some(Arc::new(bridge)),
            Err(err) => {
                errors.push(format!("mcp: {err}"));
                None
            }
        }
    };
    let mcp = bridge.as_ref().map(|b| b.report());
    if !errors.is_empty() {
        if let Some(bridge) = bridge {
            bridge.shutdown().await;
        }
        return Assembly { errors, warnings, mcp, parts: None };
    }
    let tools = bridge.clone().map(|b| b as Arc<dyn ToolExecutor>);
    let agents = agent_factory(config, providers, tools);
    Assembly { errors, warnings, mcp, parts: Some(Parts { agents, bridge }) }
}

/// The factory that makes an agent per call: the echo agent, or the cascade with its providers and tools (the
/// backend's, behind the built-in call-control tools).
fn agent_factory(
    config: &Config,
    providers: Option<providers::Providers>,
    tools: Option<Arc<dyn ToolExecutor>>,
) -> Arc<dyn AgentFactory> {
    let Some(providers) = providers.filter(|_| config.agent.kind == AgentKind::Cascade) else {
        return Arc::new(EchoFactory { delay: Duration::from_millis(config.agent.echo_delay_ms) });
    };
    let backend_tools = tools.unwrap_or_else(|| Arc::new(NoTools));
    let auth_token = read_secret("TWILIO_AUTH_TOKEN").map(|s| s.expose().to_owned());
    let call_control = Arc::new(CallControl::new(backend_tools, config.conversation.call_control.clone(), auth_token));
    // Loading a tokenizer takes a moment: once, here, before any call.
    let tokens =
        crate::llm::context::tokens::TokenCounter::for_context(&config.conversation.context, providers.llm.model());
    let deps = CascadeDeps {
        stt: providers.stt,
        route: providers.route,
        tokens,
        prices: Arc::new(config.cost.clone()),
        turn_model: providers.turn_model,
        llm: providers.llm,
        tts: providers.tts,
        tools: call_control.clone(),
        call_control: Some(call_control),
        config: Arc::new(config.conversation.clone()),
        redact_numbers: config.twilio.redact_numbers,
        turn_reports: None,
        vad: Default::default(),
    };
    Arc::new(CascadeFactory { deps })
}

/// Installs logging and, as `[telemetry]` asks, the OTLP exporters. An exporter that cannot be built leaves
/// logging on and export off, as `serve` runs then; the reason is returned for `parley check` to report.
pub fn telemetry(config: &TelemetryConfig) -> (Telemetry, Option<String>) {
    match crate::telemetry::init(config) {
        Ok(telemetry) => (telemetry, None),
        Err(err) => {
            crate::telemetry::init_logging_with(&config.log);
            tracing::error!(%err, "telemetry export is off");
            (Telemetry::default(), Some(format!("telemetry export is off: {err}")))
        }
    }
}
