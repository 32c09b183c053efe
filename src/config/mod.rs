//! Configuration: a TOML file, overridden by `PARLEY__SECTION__KEY` environment variables; secrets only from the
//! environment.
//!
//! Unknown keys are errors that name the key, so a typo never silently falls back to a default.

#[cfg(test)]
mod example;
pub mod providers;
mod secrets;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use secrets::{read_secret, Secret, Secrets};

use crate::engine::config::ConversationConfig;
use crate::mcp::McpConfig;
use providers::{LlmSection, SttSection, TtsSection};

/// Prefix of environment variables that override file settings: `PARLEY__SERVER__LISTEN=0.0.0.0:8080`.
pub const ENV_PREFIX: &str = "PARLEY__";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {source}")]
    Toml { path: PathBuf, source: toml::de::Error },
    #[error("invalid configuration at `{path}`: {message}")]
    Invalid { path: String, message: String },
    #[error("environment variable {name} does not name a setting (expected {ENV_PREFIX}SECTION__KEY)")]
    BadEnvName { name: String },
}

/// Everything Parley reads from its config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub twilio: TwilioConfig,
    pub audio: AudioConfig,
    pub agent: AgentConfig,
    /// How the cascade agent converses: prompt, greeting, turn-taking and barge-in thresholds.
    pub conversation: ConversationConfig,
    pub stt: SttSection,
    pub llm: LlmSection,
    pub tts: TtsSection,
    /// The backend's MCP servers, whose tools the LLM may call.
    pub mcp: McpConfig,
    /// The call archive: recordings, timelines and metadata of every call.
    pub archive: crate::archive::ArchiveConfig,
    /// Local speech engines (Whisper, eSpeak NG) and the offline transcription worker.
    pub local: LocalConfig,
    /// Traces and metrics export (OpenTelemetry, Prometheus).
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// Prices per provider and model, for each call's cost.
    pub cost: crate::cost::PriceTable,
    /// The thresholds scenarios exported from archived calls are gated on (`parley export`).
    pub eval: EvalSettings,
    /// The read-only call viewer in the browser.
    pub viewer: ViewerConfig,
}

/// `[viewer]`: the call viewer (`crate::viewer`), off unless enabled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewerConfig {
    /// Serve the viewer at `/calls` on `parley serve`'s listener.
    pub enabled: bool,
    /// The environment variable holding the token every viewer request must present (bearer token, or basic-auth
    /// password); the viewer does not start without it.
    pub token_env: String,
}

impl Default for ViewerConfig {
    fn default() -> Self {
        ViewerConfig { enabled: false, token_env: "PARLEY_VIEWER_TOKEN".into() }
    }
}

/// `[eval]`: the thresholds a replay of an archived call must meet; `parley export` writes them into each scenario.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSettings {
    /// End of the caller's speech → first audio of the answer, caller-side: median and 95th percentile.
    pub first_audio_p50_ms: Option<u64>,
    pub first_audio_p95_ms: Option<u64>,
    /// Speech onset → `clear`, caller-side, worst interruption.
    pub barge_in_max_ms: Option<u64>,
    /// `clear`s the caller did not ask for.
    pub false_interruptions_max: u64,
}

/// `[local]`: the speech engines that run on this machine ([`crate::local`]) and the offline transcription worker
/// ([`crate::transcribe`]) that uses them. Assembled here so neither module needs the other's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    pub whisper: crate::local::WhisperSettings,
    pub espeak: crate::local::EspeakSettings,
    pub smart_turn: crate::local::SmartTurnSettings,
    pub transcribe: crate::transcribe::TranscribeConfig,
}

/// The HTTP/WebSocket listener and call admission.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The public base URL Twilio uses to reach Parley (`https://voice.example.com`). Signatures are computed over
    /// it, because proxies rewrite scheme, host and port.
    pub public_url: Option<String>,
    /// Calls beyond this are refused (`/readyz` reports not ready while at the cap).
    pub max_concurrent_calls: usize,
    /// On SIGTERM, how long live calls may go on before they are closed.
    pub shutdown_grace_secs: u64,
    /// Largest WebSocket text frame accepted from Twilio.
    pub max_frame_bytes: usize,
    /// A request's headers must arrive within this (also between keep-alive requests), or the connection is closed.
    pub header_read_timeout_ms: u64,
    /// Connections that have not finished a request or their WebSocket upgrade; beyond it new ones are closed.
    pub max_pending_connections: usize,
    /// A Media Stream that sends no `start` within this is closed.
    pub start_timeout_ms: u64,
    /// A started Media Stream with no inbound frame for this long is a dead peer (Twilio sends media every 20 ms):
    /// it is closed (code 1008), its call slot freed and its recording sealed.
    pub media_idle_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            max_concurrent_calls: 100,
            shutdown_grace_secs: 30,
            max_frame_bytes: 64 * 1024,
            header_read_timeout_ms: 10_000,
            max_pending_connections: 512,
            start_timeout_ms: 10_000,
            media_idle_timeout_ms: 10_000,
        }
    }
}

/// How Parley talks to Twilio.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioConfig {
    /// Check `X-Twilio-Signature` on the webhook and the media upgrade (needs `TWILIO_AUTH_TOKEN`).
    pub validate_signatures: bool,
    /// Ask Twilio to report stream start/stop/errors to `/twilio/stream-status`.
    pub status_callback: bool,
    /// Extra `<Parameter>`s added to every stream, delivered back in `start.customParameters`.
    pub stream_parameters: BTreeMap<String, String>,
    /// Replace caller and callee numbers with a redacted form in logs and spans.
    pub redact_numbers: bool,
    /// Lifetime of the one-use token the voice webhook puts in each call's Stream URL (signature validation on).
    pub stream_token_ttl_secs: u64,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        TwilioConfig {
            validate_signatures: true,
            status_callback: true,
            stream_parameters: BTreeMap::new(),
            redact_numbers: false,
            stream_token_ttl_secs: 60,
        }
    }
}

/// Audio queues on both sides of the call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// Inbound: how many later 20 ms chunks may wait for a missing one before it is replaced by silence.
    pub jitter_max_held_frames: usize,
    /// Outbound: how far ahead of real time audio is sent to Twilio. Small keeps `clear` cheap; too small risks
    /// gaps under network jitter. Twilio is topped up to this in messages of up to 100 ms (at most half of it) when
    /// it holds this minus a message, so it always holds at least half of it while a reply plays.
    pub playout_lead_ms: u64,
    /// Inbound: how far the caller's audio may run ahead of the wall clock (counted from `start`); audio beyond it
    /// is dropped, counted and logged once, so a burst cannot make Parley record or process minutes at once.
    pub caller_ahead_margin_ms: u64,
    /// Inbound: the most silence one call's gaps (lost chunks, timestamp jumps) are filled with, in total.
    pub max_gap_fill_ms_per_call: u64,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            jitter_max_held_frames: 3,
            playout_lead_ms: 200,
            caller_ahead_margin_ms: 1_000,
            max_gap_fill_ms_per_call: 10_000,
        }
    }
}

/// Which agent answers calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub kind: AgentKind,
    /// Echo agent: delay before the caller's audio is played back.
    pub echo_delay_ms: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig { kind: AgentKind::Echo, echo_delay_ms: 500 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// Plays the caller's audio back after a delay: exercises the whole Twilio edge without any provider.
    Echo,
    /// The voice agent: streaming STT → LLM → TTS with turn-taking and barge-in, providers from `[stt]`, `[llm]`,
    /// `[tts]`.
    Cascade,
}

impl Config {
    /// Loads the file (if any), applies `PARLEY__*` overrides from `env`, and checks every key.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        for (name, value) in env {
            if let Some(key) = name.strip_prefix(ENV_PREFIX) {
                apply_override(&mut table, &name, key, &value)?;
            }
        }
        let value = toml::Value::Table(table);
        serde_path_to_error::deserialize(value)
            .map_err(|err| ConfigError::Invalid { path: err.path().to_string(), message: err.inner().to_string() })
    }

    /// Problems of the settings themselves that stop Parley from taking calls (errors) or that an operator should know
    /// (warnings). The providers' keys and settings are judged where the providers are built
    /// ([`crate::assembly`]), so `parley check` and `parley serve` cannot disagree.
    pub fn problems(&self, secrets: &Secrets) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.twilio.validate_signatures && secrets.twilio_auth_token.is_none() {
            problems.push(Problem::error(
                "TWILIO_AUTH_TOKEN is not set; it is needed to validate Twilio's signatures \
                 (twilio.validate_signatures = false turns validation off, for local testing only)",
            ));
        }
        match &self.server.public_url {
            None if self.twilio.validate_signatures => problems.push(Problem::error(
                "server.public_url is not set; signatures are computed over the URL Twilio used, so it is required \
                 while twilio.validate_signatures is on",
            )),
            None => problems.push(Problem::warning(
                "server.public_url is not set; stream URLs are derived from the request's Host header",
            )),
            Some(url) => problems.extend(check_public_url(url)),
        }
        for (key, value) in [
            ("server.header_read_timeout_ms", self.server.header_read_timeout_ms),
            ("server.max_pending_connections", self.server.max_pending_connections as u64),
            ("server.start_timeout_ms", self.server.start_timeout_ms),
            ("server.media_idle_timeout_ms", self.server.media_idle_timeout_ms),
            ("twilio.stream_token_ttl_secs", self.twilio.stream_token_ttl_secs),
        ] {
            if value == 0 {
                problems.push(Problem::error(format!("{key} is 0: no connection or call could get through")));
            }
        }
        if self.server.max_concurrent_calls == 0 {
            problems.push(Problem::error("server.max_concurrent_calls is 0: no call could ever be answered"));
        }
        for (name, value) in
            [("first_token_timeout_ms", self.llm.first_token_timeout_ms), ("idle_timeout_ms", self.llm.idle_timeout_ms)]
        {
            if value == Some(0) {
                problems.push(Problem::error(format!("llm.{name} is 0: every model request would time out")));
            }
        }
        if !self.twilio.validate_signatures {
            problems.push(Problem::warning("twilio.validate_signatures is off: anyone can place calls through Parley"));
        }
        if let Err(err) = self.mcp.validate() {
            problems.push(Problem::error(format!("mcp: {err}")));
        }
        for (name, value) in &self.twilio.stream_parameters {
            if name.len() + value.len() >= crate::twilio::twiml::MAX_PARAMETER_CHARS {
                problems.push(Problem::error(format!(
                    "twilio.stream_parameters.{name}: name and value together must be under 500 characters"
                )));
            }
        }
        problems
    }
}

fn check_public_url(url: &str) -> Option<Problem> {
    match url::Url::parse(url) {
        Err(err) => Some(Problem::error(format!("server.public_url `{url}` is not a URL: {err}"))),
        Ok(parsed) if !matches!(parsed.scheme(), "https" | "http") => {
            Some(Problem::error(format!("server.public_url `{url}` must be http or https")))
        }
        Ok(parsed) if parsed.query().is_some() => {
            Some(Problem::error(format!("server.public_url `{url}` must not have a query string")))
        }
        Ok(_) => None,
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    text.parse::<toml::Table>().map_err(|source| ConfigError::Toml { path: path.into(), source })
}

/// Sets `a.b.c` from `PARLEY__A__B__C`, reading the value as TOML where it parses (numbers, booleans) and as a
/// string otherwise.
fn apply_override(table: &mut toml::Table, name: &str, key: &str, raw: &str) -> Result<(), ConfigError> {
    let parts: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
    if parts.iter().any(String::is_empty) {
        return Err(ConfigError::BadEnvName { name: name.to_owned() });
    }
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let (last, sections) = parts.split_last().ok_or_else(|| ConfigError::BadEnvName { name: name.to_owned() })?;
    let mut current = table;
    for section in sections {
        let entry = current.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| ConfigError::Invalid {
            path: section.clone(),
            message: format!("{name} sets a key inside `{section}`, which is not a table"),
        })?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// One finding of [`Config::problems`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Problem {
    fn error(message: impl Into<String>) -> Self {
        Problem { severity: Severity::Error, message: message.into() }
    }
    fn warning(message: impl Into<String>) -> Self {
        Problem { severity: Severity::Warning, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("parley.example.toml");
        let config = Config::load(Some(&path), []).unwrap();
        assert_eq!(config.server.public_url.as_deref(), Some("https://voice.example.com"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = load_str("[server]\nlistn = \"0.0.0.0:1\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
        let err = load_str("[servr]\n", &[]).unwrap_err().to_string();
        assert!(err.contains("servr"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load_str(
            "[server]\nmax_concurrent_calls = 5\n",
            &[
                ("PARLEY__SERVER__MAX_CONCURRENT_CALLS", "7"),
                ("PARLEY__SERVER__PUBLIC_URL", "https://x.example"),
                ("PARLEY__TWILIO__STREAM_PARAMETERS__TENANT", "acme"),
                ("UNRELATED", "1"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.max_concurrent_calls, 7);
        assert_eq!(config.server.public_url.as_deref(), Some("https://x.example"));
        assert_eq!(config.twilio.stream_parameters.get("tenant").map(String::as_str), Some("acme"));
    }

    #[test]
    fn bad_override_names_the_key() {
        let err = load_str("", &[("PARLEY__SERVER__NOPE", "1")]).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        let err = load_str("", &[("PARLEY__SERVER__MAX_CONCURRENT_CALLS", "many")]).unwrap_err().to_string();
        assert!(err.contains("server.max_concurrent_calls"), "{err}");
    }

    #[test]
    fn problems_name_what_is_missing() {
        let config = Config::default();
        let problems = config.problems(&Secrets::default());
        let errors: Vec<_> = problems.iter().filter(|p| p.severity == Severity::Error).collect();
        assert!(errors.iter().any(|p| p.message.contains("TWILIO_AUTH_TOKEN")));
        assert!(errors.iter().any(|p| p.message.contains("server.public_url")));
        let secrets = Secrets { twilio_auth_token: Some(Secret::new("t".into())) };
        let config = load_str("[server]\npublic_url = \"https://v.example\"\n", &[]).unwrap();
        assert!(config.problems(&secrets).is_empty());
    }

    #[test]
    fn llm_timeouts_default_to_phone_sized_limits_and_zero_is_refused() {
        let config = load_str("[agent]\nkind = \"cascade\"\n", &[]).unwrap();
        assert_eq!(config.llm.first_token_timeout(), crate::llm::DEFAULT_FIRST_TOKEN_TIMEOUT);
        assert_eq!(config.llm.idle_timeout(), crate::llm::DEFAULT_IDLE_TIMEOUT);
        let config =
            load_str("[agent]\nkind = \"cascade\"\n[llm]\nfirst_token_timeout_ms = 2500\nidle_timeout_ms = 0\n", &[])
                .unwrap();
        assert_eq!(config.llm.first_token_timeout(), std::time::Duration::from_millis(2500));
        let problems = config.problems(&Secrets::default());
        assert!(problems.iter().any(|p| p.severity == Severity::Error && p.message.contains("llm.idle_timeout_ms")));
        assert!(!problems.iter().any(|p| p.message.contains("first_token_timeout_ms")));
    }

    #[test]
    fn a_zero_timeout_or_limit_is_an_error() {
        let secrets = Secrets { twilio_auth_token: Some(Secret::new("t".into())) };
        let config = load_str(
            "[server]\npublic_url = \"https://v.example\"\nmedia_idle_timeout_ms = 0\n[twilio]\nstream_token_ttl_secs = 0\n",
            &[],
        )
        .unwrap();
        let errors: Vec<String> = config.problems(&secrets).into_iter().map(|p| p.message).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("server.media_idle_timeout_ms") && errors[1].contains("twilio.stream_token_ttl_secs")
        );
    }
}
